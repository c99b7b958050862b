"""`ctxext mntp`: masked next-token prediction on a flipped decoder (LLM2Vec's adaptation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train_helpers
from ctxext.flip import Head, Pooling, flip
from ctxext.train import RunOptions, TrainSettings
from ctxext.train.mntp import mntp_loss, train_mntp


def write_texts(path: Path) -> Path:
    """Text in the tiny tokenizer's vocabulary (other words are all [UNK], which is never masked)."""
    import tiny

    lines = (" ".join(tiny.WORDS[(i * 7 + j) % len(tiny.WORDS)] for j in range(30)) for i in range(40))
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    return path


def test_each_masked_token_is_predicted_from_the_position_before_it():
    vocabulary, tokens = 5, torch.tensor([[0, 3, 1, 4, 2]])
    labels = torch.full_like(tokens, -100)
    labels[0, 2] = tokens[0, 2]  # token 2 masked: its label is the original token, 1
    logits = torch.zeros(1, 5, vocabulary)
    logits[0, 1, 1] = 10.0  # position 1 predicts token 1 for position 2
    logits[0, 2, 4] = 10.0  # what position 2 itself predicts does not count for its own label
    expected = torch.nn.functional.cross_entropy(logits[0, 1:2], torch.tensor([1]))
    assert mntp_loss(logits, labels) == pytest.approx(float(expected))
    assert float(mntp_loss(logits, labels)) < 1e-3
    nothing_masked = torch.full_like(tokens, -100)
    assert float(mntp_loss(logits, nothing_masked)) == 0.0  # not NaN: a batch without a mask trains nothing


@pytest.mark.parametrize(("family", "head"), [("llama", Head.none), ("llama", Head.qa), ("gemma3", Head.qa)])
def test_mntp_trains_the_backbone_of_a_flipped_model_and_writes_it_back_loadable(family, head, tiny_models, tmp_path):
    from safetensors.torch import load_file

    flipped = flip(str(tiny_models(family)), tmp_path / "flipped", head=head, pooling=Pooling.mean).path
    texts = write_texts(tmp_path / "texts.jsonl")
    settings = TrainSettings(
        steps=3, batch_size=4, learning_rate=1e-3, save_every=100, progress_bars=False, logging_every=1
    )
    result = train_mntp(str(flipped), [texts], tmp_path / "adapted", max_len=32, settings=settings)
    assert result.manifest["operations"][0]["name"] == "mntp"
    assert all(loss > 0 for _, loss in result.history["train"])
    before = load_file(next(flipped.glob("**/model.safetensors")))
    after = load_file(next(result.path.glob("**/model.safetensors")))
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and not any("qa_outputs" in name for name in changed)
    config = json.loads(next(result.path.glob("**/config.json")).read_text())
    assert config == {**json.loads(next(flipped.glob("**/config.json")).read_text()), **config}
    if head == Head.qa:  # the adapted folder goes on to QA fine-tuning as the flipped one does
        from ctxext.data.formats import QAExample, write_squad_jsonl
        from ctxext.train.qa import finetune_qa

        context = "the sky is blue . the pass key is green here we go"
        example = QAExample("0", "what is the pass key", context, ["green"], [context.index("green")])
        write_squad_jsonl(tmp_path / "qa.jsonl", [example] * 4)
        tuned = finetune_qa(
            str(result.path), tmp_path / "qa.jsonl", tmp_path / "tuned", settings=settings, max_length=48
        )
        assert (tuned.path / "config.json").is_file()


def test_cli_mntp_refuses_a_model_that_was_not_flipped(tiny_models, tmp_path):
    from typer.testing import CliRunner

    from ctxext.cli import app

    (tmp_path / "t.txt").write_text("some text " * 50)
    result = CliRunner().invoke(
        app, ["mntp", str(tiny_models("llama")), "--data", str(tmp_path / "t.txt"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code != 0 and "not a flipped model" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("head", [Head.none, Head.qa])
def test_lora_adapters_merge_into_weights_that_reproduce_the_adapted_model(head, tiny_models, tmp_path):
    """MNTP through LoRA: the adapted model, rebuilt unmerged from the run's last checkpoint (base + trained
    adapters), gives the written, merged folder's outputs to 1e-5; it loads as the flipped folder does and
    its manifest records the adaptation."""
    from safetensors.torch import load_file

    from ctxext.io import open_model
    from ctxext.train.lora import with_lora
    from ctxext.train.mntp import MntpModel, load_flipped

    flipped = flip(str(tiny_models("llama")), tmp_path / "flipped", head=head, pooling=Pooling.mean).path
    texts = write_texts(tmp_path / "texts.jsonl")
    settings = TrainSettings(steps=3, batch_size=4, learning_rate=5e-3, save_every=3, progress_bars=False)
    work = tmp_path / "work"
    result = train_mntp(
        str(flipped),
        [texts],
        tmp_path / "adapted",
        max_len=32,
        lora_rank=4,
        settings=settings,
        run_options=RunOptions(work_dir=work, keep_checkpoints=True),
    )
    lora = result.manifest["operations"][0]["parameters"]["lora"]
    assert lora["rank"] == 4 and lora["merged"] and "q_proj" in lora["targets"]

    unmerged = MntpModel(with_lora(load_flipped(open_model(str(flipped))[1])[0], 4)[0])
    trained = load_file(work / "checkpoint-3" / "model.safetensors")
    assert any("lora_B" in name for name in trained)
    assert unmerged.load_state_dict(trained, strict=False).missing_keys == []
    merged, _ = load_flipped(open_model(str(result.path))[1])  # loads as the flipped folder does
    input_ids = torch.tensor([[3, 8, 13, 21, 34, 5, 9]])
    with torch.no_grad():
        expected = unmerged.eval()(input_ids)["logits"]
        got = MntpModel(merged.eval())(input_ids)["logits"]
    assert (expected - MntpModel(load_flipped(open_model(str(flipped))[1])[0])(input_ids)["logits"]).abs().max() > 1e-4
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_resuming_mntp_from_a_checkpoint_continues_where_it_stopped(lora_rank, tiny_models, tmp_path):
    """A run stopped after step 2 keeps checkpoint-2; rerun with --resume it goes on to step 4, with the loss log
    and the written weights of the run that was never interrupted (LoRA too: adapters and optimizer state)."""

    flipped = flip(str(tiny_models("llama")), tmp_path / "flipped", head=Head.qa, pooling=Pooling.mean).path
    texts = write_texts(tmp_path / "texts.jsonl")
    settings = TrainSettings(steps=4, batch_size=4, learning_rate=1e-3, save_every=2, **train_helpers.STEPS_SETTINGS)
    common = {"max_len": 32, "lora_rank": lora_rank, "settings": settings}
    whole = train_mntp(str(flipped), [texts], tmp_path / "whole", **common)
    work = tmp_path / "work"
    stopped = train_mntp(
        str(flipped),
        [texts],
        tmp_path / "stopped",
        run_options=RunOptions(work_dir=work, keep_checkpoints=True, callbacks=[train_helpers.StopAt(2)]),
        **common,
    )
    assert stopped.global_step == 2 and (work / "checkpoint-2").is_dir()
    resumed = train_mntp(
        str(flipped), [texts], tmp_path / "resumed", run_options=RunOptions(work_dir=work, resume=True), **common
    )
    train_helpers.assert_resumed_like_uninterrupted(resumed, whole, work, stopped_at=2, steps=4)


def test_mntp_writes_the_weights_its_in_memory_core_trains_and_the_core_leaves_what_trains(tiny_models, tmp_path):
    """train_mntp is train_mntp_in_memory run in a TrainingRun: the same model, texts, options and settings give
    every written tensor; alone, the core writes nothing and leaves trainable what was (MNTP froze the QA head)."""
    from safetensors.torch import load_file

    from ctxext.data.sources import read_documents
    from ctxext.io import open_model
    from ctxext.train.mntp import MntpOptions, load_flipped, train_mntp_in_memory

    flipped = flip(str(tiny_models("llama")), tmp_path / "flipped", head=Head.qa, pooling=Pooling.mean).path
    texts = write_texts(tmp_path / "texts.jsonl")
    settings = TrainSettings(steps=3, batch_size=4, learning_rate=1e-3, save_every=100, progress_bars=False)
    options = MntpOptions(mask=0.25, max_len=32)
    result = train_mntp(str(flipped), [texts], tmp_path / "adapted", options, settings=settings)
    model, tokenizer = load_flipped(open_model(str(flipped))[1])
    before = set(tmp_path.iterdir())
    adapted = train_mntp_in_memory(model, tokenizer, read_documents([texts]), settings, options)
    assert set(tmp_path.iterdir()) == before
    assert all(parameter.requires_grad for parameter in adapted.model.parameters())
    written = load_file(result.path / "model.safetensors")
    state = adapted.model.state_dict()
    assert written.keys() == state.keys()
    assert all(torch.equal(written[name], state[name]) for name in written)
    assert result.parameters["mask"] == 0.25 and result.parameters["train_sequences"] == adapted.train_sequences


def test_mntp_options_refuse_bad_values_before_reading_any_input(tmp_path):
    from ctxext.errors import InvalidArgument
    from ctxext.train.mntp import MntpOptions

    with pytest.raises(InvalidArgument, match="--mask 1.5"):
        train_mntp("nowhere", [tmp_path / "nothing.txt"], tmp_path / "out", mask=1.5)
    with pytest.raises(InvalidArgument, match="--lora-rank -2"):
        train_mntp("nowhere", [tmp_path / "nothing.txt"], tmp_path / "out", MntpOptions(lora_rank=-2))
    with pytest.raises(TypeError, match="max_length"):
        train_mntp("nowhere", [tmp_path / "nothing.txt"], tmp_path / "out", max_length=32)
    assert not (tmp_path / "out").exists()
