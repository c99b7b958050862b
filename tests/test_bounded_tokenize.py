"""Texts are tokenized from bounded prefixes (``ctxext.encode.truncated_input_ids``): the ids equal whole-text
truncation on ordinary text, and one huge record costs memory in proportion to the length kept."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

import tiny
from ctxext import encode
from ctxext.encode import truncated_input_ids, word_prefix

EXTRA_WORDS = ["café", "naïve", "Zürich", "1984", "3.14", "don't", "e-mail", "(see", "below)", "x86_64", "日本語"]


def ordinary_text(words: int, seed: int) -> str:
    """Prose-like text: the tiny vocabulary and some harder words, punctuation, single and double spaces,
    tabs and newlines."""
    rng = random.Random(seed)
    vocabulary = tiny.WORDS + EXTRA_WORDS
    pieces = []
    for index in range(words):
        word = rng.choice(vocabulary)
        if rng.random() < 0.08:
            word += rng.choice([",", ".", ";", "!", "?"])
        pieces.append(word)
        if index < words - 1:
            pieces.append(rng.choice([" "] * 12 + ["  ", "\n", "\n\n", "\t", " \n "]))
    return "".join(pieces)


def trained_tokenizer(kind: str):
    """A small BPE tokenizer trained here: byte-level (GPT-2, Llama 3, Qwen) or Metaspace (SentencePiece)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None if kind == "byte-level" else "<unk>"))
    if kind == "byte-level":
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        backend.normalizer = normalizers.NFKC()
        backend.pre_tokenizer = pre_tokenizers.Metaspace()
        backend.decoder = decoders.Metaspace()
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "</s>", "<unk>"], initial_alphabet=alphabet)
    backend.train_from_iterator([ordinary_text(400, seed) for seed in range(20)], trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", backend.token_to_id("<s>")), ("</s>", backend.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module", params=["word-level", "byte-level", "metaspace"])
def tokenizer(request, tiny_models):
    if request.param == "word-level":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(tiny_models("bert"))
    return trained_tokenizer(request.param)


def whole_text_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    return [list(row) for row in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]


@pytest.mark.parametrize("characters_per_token", [2, 16])
@pytest.mark.parametrize("max_length", [8, 13, 33, 64, 200])
def test_prefix_tokenization_equals_whole_text_truncation_on_ordinary_text(
    tokenizer, max_length, characters_per_token, monkeypatch
):
    """2 characters per token start every long text too short, so the prefix has to grow (ordinary words are
    shorter than the first prefix: only a longer word is cut)."""
    monkeypatch.setattr(encode, "PREFIX_CHARACTERS_PER_TOKEN", characters_per_token)
    texts = [ordinary_text(words, seed) for seed, words in enumerate([0, 1, 3, 7, 30, 31, 32, 90, 250, 2000, 6000])]
    texts += ["   leading spaces then words", "trailing spaces   ", " " * 5000 + "word after a long run of spaces"]
    texts += ["tabs\tand\nnewlines\n\nbetween\twords " * 30, "x" * 2000]
    assert truncated_input_ids(tokenizer, texts, max_length) == whole_text_ids(tokenizer, texts, max_length)


def test_a_tokenizer_that_truncates_on_the_left_reads_whole_texts(tokenizer):
    tokenizer.truncation_side = "left"
    try:
        texts = [ordinary_text(3000, 1), ordinary_text(5, 2)]
        ids = truncated_input_ids(tokenizer, texts, 16)
        assert ids == whole_text_ids(tokenizer, texts, 16)
    finally:
        tokenizer.truncation_side = "right"


def test_word_prefix_ends_between_words_and_cuts_only_a_word_longer_than_the_size():
    assert word_prefix("short text", 100) == "short text"
    assert word_prefix("alpha beta gamma", 12) == "alpha beta"
    assert word_prefix("alpha beta  gamma", 11) == "alpha beta"  # the space after "beta" is seen, not kept
    assert word_prefix("alpha\n\tbeta gamma", 9) == "alpha"
    assert word_prefix("alpha beta\ngamma", 15) == "alpha"  # before a space first: Metaspace splits at spaces alone
    assert word_prefix("alpha\nbeta\ngamma", 15) == "alpha\nbeta"
    assert word_prefix("abcdefghij klm", 4) == "abcd"
    assert word_prefix("    abcdefghij", 6) == "    ab"


@pytest.mark.slow
def test_prefix_tokenization_equals_whole_text_truncation_with_minilm(minilm):
    from transformers import AutoTokenizer

    from ctxext.evaluate import haystack_sentences

    tokenizer = AutoTokenizer.from_pretrained(minilm)
    sentences = haystack_sentences()
    texts = [" ".join(sentences[start : start + count]) for start, count in [(0, 1), (5, 40), (60, 400), (500, 900)]]
    for max_length in (16, 256, 512):
        assert truncated_input_ids(tokenizer, texts, max_length) == whole_text_ids(tokenizer, texts, max_length)


MEMORY_PROBE = """
import json, resource, sys
from pathlib import Path
from ctxext.embed import embed_file

model, work = sys.argv[1], Path(sys.argv[2])
embed_file(model, work / "small.jsonl", work / "small.npy")  # imports and first load: the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
embed_file(model, work / "big.jsonl", work / "big.npy", max_length=32)
print(json.dumps({"growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
"""


def test_a_20_mb_single_line_record_embeds_with_memory_in_proportion_to_the_length_kept(tiny_models, tmp_path):
    """Tokenizing the whole 20 MB line held about 2.7 GB (and a 50 MB one ended the process)."""
    words = " ".join(tiny.WORDS) + " "
    (tmp_path / "small.jsonl").write_text(json.dumps({"text": words}) + "\n")
    (tmp_path / "big.jsonl").write_text(json.dumps({"text": words * (20_000_000 // len(words))}) + "\n")
    source = str(Path(__file__).parents[1] / "src")
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(tiny_models("bert")), str(tmp_path)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": source},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    growth_mib = json.loads(done.stdout.strip().splitlines()[-1])["growth_kib"] / 1024
    assert growth_mib < 300, f"embedding one 20 MB line raised the peak by {growth_mib:.0f} MiB"


def test_long_texts_are_batched_by_tokens_and_short_ones_by_batch_size():
    import numpy as np

    from ctxext.encode import BATCH_TOKENS, token_bounded_batches

    lengths = [4096] * 9 + [100] * 40
    batches = [batch.tolist() for batch in token_bounded_batches(np.arange(len(lengths)), lengths, 16)]
    assert [len(b) for b in batches] == [4, 4, 4, 16, 16, 5] and BATCH_TOKENS // 4096 == 4
    assert all(len(b) * lengths[b[0]] <= BATCH_TOKENS for b in batches)
    assert sum(batches, []) == list(range(len(lengths)))
    assert [b.tolist() for b in token_bounded_batches(np.arange(3), [10**6] * 3, 8)] == [[0], [1], [2]]
