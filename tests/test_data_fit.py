"""`ctxext data fit`: every strategy within budget; extractive keeps original order and the on-topic text."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ctxext.cli import app
from ctxext.data import Strategy, fit_file, fit_texts, load_tokenizer
from ctxext.data.sources import UnreadableSource
from ctxext.data.text import cut_ranks, sentence_units, split_sentences, token_spans
from ctxext.errors import InvalidArgument
from data_helpers import long_text, paragraph, write_jsonl, write_parquet

SENTENCE = re.compile(r"[^.]+\.")


@pytest.fixture(scope="module")
def tok(minilm: Path):
    return load_tokenizer(minilm)


@pytest.fixture(scope="module")
def tiny_encoder(tiny_models):
    from ctxext.encode import load_encoder

    return load_encoder(tiny_models("bert"))


def documents() -> list[str]:
    return [
        long_text(topic, paragraphs=6, seed=seed)
        for seed, topic in enumerate(["astronomy", "cooking", "football", "geology"])
    ] + ["A short one."]


@pytest.mark.parametrize("strategy", Strategy)
def test_every_strategy_fits_the_budget_special_tokens_included(strategy: str, tok, tiny_encoder):
    texts = documents()
    fitted = fit_texts(texts, tok, 100, strategy, encoder=tiny_encoder)
    assert all(f.tokens <= 100 for f in fitted)
    assert [f.tokens for f in fitted] == tok.count([f.text for f in fitted])
    assert all(f.original_tokens > 300 for f in fitted[:4])
    assert all(f.tokens > 60 for f in fitted[:4])  # the budget is used, not wasted
    assert fitted[4].text == "A short one." and fitted[4].tokens == fitted[4].original_tokens


def test_head_keeps_a_prefix_cut_between_words(tok):
    text = documents()[0]
    result = fit_texts([text], tok, 64, "head")[0].text
    assert text.startswith(result) and text[len(result)] in " \n"


def test_head_tail_keeps_both_ends(tok):
    text = documents()[1]
    result = fit_texts([text], tok, 80, "head-tail", head_fraction=0.25, separator="\n\n")[0].text
    head, tail = result.split("\n\n", 1) if result.count("\n\n") == 1 else (None, None)
    assert head is not None and text.startswith(head) and text.rstrip().endswith(tail.rstrip())
    head_tokens, tail_tokens = (n - tok.special_tokens for n in tok.count([head, tail]))
    assert head_tokens < tail_tokens  # a quarter of the budget for the head


def test_extractive_keeps_whole_sentences_in_their_original_order(tok, tiny_encoder):
    text = documents()[2]
    result = fit_texts([text], tok, 120, "extractive", encoder=tiny_encoder)[0].text
    kept = [s.strip() for s in SENTENCE.findall(result)]
    assert len(kept) >= 3
    positions = [text.index(sentence) for sentence in kept]
    assert positions == sorted(positions)
    assert len(set(positions)) == len(positions)


PATHS_AND_NAMES = (
    "Clone the project into /path/to/repo.git/ before you build it. Then call os.path.join on the "
    "parts and read the value 3.14 from config.v2.yaml. Run ./scripts/build.sh --release now! "
    "Is https://example.org/a.b/c.d?x=1.2 reachable?\n\nA new paragraph about the repo.git/ folder."
)


def test_sentence_splitter_never_cuts_inside_a_path_or_dotted_name(tok, tiny_encoder):
    words = set(PATHS_AND_NAMES.split())
    assert split_sentences(PATHS_AND_NAMES) == [
        "Clone the project into /path/to/repo.git/ before you build it.",
        "Then call os.path.join on the parts and read the value 3.14 from config.v2.yaml.",
        "Run ./scripts/build.sh --release now!",
        "Is https://example.org/a.b/c.d?x=1.2 reachable?",
        "A new paragraph about the repo.git/ folder.",
    ]
    text = "\n\n".join([PATHS_AND_NAMES] * 4)
    starts, ends = token_spans(tok.encode([text])[0])
    ranks = cut_ranks(text, starts, ends)
    for max_tokens in (8, 12, 16, 24):  # sentences longer than max_tokens are split between words
        units = sentence_units(ranks, starts, ends, max_tokens)
        assert all(set(text[u.start : u.end].split()) <= words for u in units)
        assert all(u.start == 0 or text[u.start - 1].isspace() for u in units)
        assert all(u.end == len(text) or text[u.end].isspace() for u in units)
    fitted = fit_texts([text], tok, 40, "extractive", encoder=tiny_encoder)[0]
    assert fitted.tokens <= 40 and set(fitted.text.split()) <= words


@pytest.mark.slow
def test_extractive_drops_off_topic_sentences(minilm: Path, tok):
    from ctxext.encode import load_encoder

    rng = random.Random(5)
    on_topic = [paragraph("astronomy", rng, 4) for _ in range(6)]
    off_topic = [
        "Preheat the oven and knead the dough with butter and garlic for the sauce.",
        "The striker scored a penalty goal after the referee stopped the match.",
    ]
    text = "\n\n".join(on_topic[:3] + [off_topic[0]] + on_topic[3:] + [off_topic[1]])
    result = fit_texts([text], tok, 160, "extractive", encoder=load_encoder(minilm))[0]
    assert result.tokens <= 160 < result.original_tokens
    assert not any(sentence in result.text for sentence in off_topic)


def test_fit_file_keeps_other_fields_and_records_counts(tmp_path: Path, minilm: Path, tok):
    texts = documents()
    write_jsonl(tmp_path / "docs.jsonl", [{"id": i, "title": f"Doc {i}", "text": t} for i, t in enumerate(texts)])
    result = fit_file(
        str(tmp_path / "docs.jsonl"), tmp_path / "fit.jsonl", budget=64, tokenizer=str(minilm), strategy="head-tail"
    )
    rows = [json.loads(line) for line in (tmp_path / "fit.jsonl").read_text().splitlines()]
    assert [(r["id"], r["title"]) for r in rows] == [(i, f"Doc {i}") for i in range(len(texts))]
    assert all(r["tokens"] <= 64 for r in rows) and [r["tokens"] for r in rows] == tok.count([r["text"] for r in rows])
    assert result.counts.shortened == 4 and result.counts.documents == 5
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["options"]["strategy"] == "head-tail" and manifest["counts"]["shortened"] == 4


def test_fit_file_parquet_to_parquet_keeps_the_schema(tmp_path: Path, minilm: Path):
    write_parquet(tmp_path / "c.parquet", [{"source": "s", "title": None, "text": t, "tokens": 0} for t in documents()])
    fit_file(str(tmp_path / "c.parquet"), tmp_path / "fit.parquet", budget=50, tokenizer=str(minilm))
    table = pq.read_table(tmp_path / "fit.parquet")
    assert table.column_names == ["source", "title", "text", "tokens", "original_tokens"]
    assert max(table.column("tokens").to_pylist()) <= 50


def test_fit_refuses_bad_options_and_bad_records(tmp_path: Path, minilm: Path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": "fine"}, {"title": "no body"}])
    with pytest.raises(InvalidArgument, match="unknown strategy"):
        fit_file(str(tmp_path / "d.jsonl"), tmp_path / "o.jsonl", budget=64, tokenizer=str(minilm), strategy="tail")
    with pytest.raises(InvalidArgument, match=r"\*\.parquet or \*\.jsonl"):
        fit_file(str(tmp_path / "d.jsonl"), tmp_path / "o.csv", budget=64, tokenizer=str(minilm))
    with pytest.raises(UnreadableSource, match=r"d\.jsonl:2: no text field to fit"):
        fit_file(str(tmp_path / "d.jsonl"), tmp_path / "o.jsonl", budget=64, tokenizer=str(minilm))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


def test_cli_fit_prints_a_summary(tmp_path: Path, minilm: Path):
    (tmp_path / "a.txt").write_text(documents()[0])
    result = CliRunner().invoke(
        app,
        [
            "data",
            "fit",
            str(tmp_path / "a.txt"),
            "-o",
            str(tmp_path / "a.jsonl"),
            "--budget",
            "32",
            "--tokenizer",
            str(minilm),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["shortened"] == 1 and summary["tokens_after"] <= 32


def test_fit_shards_merge_into_the_records_of_one_run(tmp_path: Path, minilm: Path):
    texts = documents()
    write_jsonl(tmp_path / "docs.jsonl", [{"id": f"d{i}", "text": t} for i, t in enumerate(texts)])
    options = {"budget": 40, "tokenizer": str(minilm), "strategy": "head-tail"}
    fit_file(str(tmp_path / "docs.jsonl"), tmp_path / "whole.jsonl", **options)
    parts = []
    for index in range(2):
        parts.append(tmp_path / f"part-{index}.jsonl")
        part = fit_file(str(tmp_path / "docs.jsonl"), parts[-1], shard=f"{index}/2", **options)
        assert part.counts.documents + part.counts.other_shards == len(texts)
    merged = CliRunner().invoke(app, ["data", "merge", *map(str, parts[::-1]), "-o", str(tmp_path / "merged.jsonl")])
    assert merged.exit_code == 0, merged.output
    by_id = lambda path: sorted(path.read_text().splitlines())  # noqa: E731
    assert by_id(tmp_path / "merged.jsonl") == by_id(tmp_path / "whole.jsonl")
    assert json.loads((tmp_path / "part-1.jsonl.manifest.json").read_text())["options"]["shard"] == "1/2"


def test_fit_writes_a_record_of_sections_as_fitted_text(tmp_path: Path, minilm: Path):
    sections = [{"heading": f"Part {i}", "text": long_text(paragraphs=1, seed=i)} for i in range(4)]
    write_jsonl(tmp_path / "d.jsonl", [{"id": "d0", "sections": sections}])
    write_parquet(tmp_path / "d.parquet", [{"id": "d0", "sections": sections}])
    fit_file(str(tmp_path / "d.jsonl"), tmp_path / "f.jsonl", budget=40, tokenizer=str(minilm))
    fit_file(str(tmp_path / "d.parquet"), tmp_path / "f.parquet", budget=40, tokenizer=str(minilm))
    (line,) = [json.loads(text) for text in (tmp_path / "f.jsonl").read_text().splitlines()]
    (row,) = pq.read_table(tmp_path / "f.parquet").to_pylist()
    assert "sections" not in line and line["text"].startswith("## Part 0") and line["tokens"] <= 40
    assert row == line
