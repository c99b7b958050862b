"""`ctxext mntp`: masked next-token prediction on a flipped decoder (LLM2Vec's adaptation)."""

from __future__ import annotations

import json

import pytest
import torch

from ctxext.flip import Head, Pooling, flip
from ctxext.train import TrainSettings
from ctxext.train.mntp import mntp_loss, train_mntp


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


@pytest.mark.parametrize(("family", "head"), [("llama", Head.none), ("llama", Head.qa), ("gemma3", Head.qa)])
def test_mntp_trains_the_backbone_of_a_flipped_model_and_writes_it_back_loadable(family, head, tiny_models, tmp_path):
    from safetensors.torch import load_file

    flipped = flip(str(tiny_models(family)), tmp_path / "flipped", head=head, pooling=Pooling.mean).path
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"word{i % 7} text number {i} " * 8}) + "\n" for i in range(40)))
    settings = TrainSettings(steps=3, batch_size=4, learning_rate=1e-3, save_every=100, progress_bars=False)
    result = train_mntp(str(flipped), [texts], tmp_path / "adapted", max_len=32, settings=settings)
    assert result.manifest["operations"][0]["name"] == "mntp"
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
