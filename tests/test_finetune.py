from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

import train_helpers
from ctxext.cli import app
from ctxext.data.formats import read_triplets
from ctxext.errors import InvalidArgument
from ctxext.train import RunOptions, TrainSettings
from ctxext.train.contrastive import ContrastiveModel, TripletCollator, skipped_position_ids
from ctxext.train.finetune import finetune
from ctxext.transfer import transfer

BLOCK = 8  # tiny BigBird: block-sparse needs more than (5 + 2 * 1) * 8 = 56 tokens


@pytest.fixture(scope="module")
def tiny_bigbird(tmp_path_factory):
    import tiny

    root = tmp_path_factory.mktemp("finetune")
    bert = tiny.make_sentence_transformer("bert", root / "bert")
    return transfer(str(bert), "bigbird", 256, root / "bigbird", block_size=BLOCK, num_random_blocks=1).path


@pytest.fixture(scope="module")
def triplets(tmp_path_factory):
    return train_helpers.write_triplets(tmp_path_factory.mktemp("triplets") / "t.jsonl")


def settings(steps, **extra):
    return TrainSettings(
        steps=steps, batch_size=4, learning_rate=2e-3, save_every=2, **train_helpers.STEPS_SETTINGS, **extra
    )


def test_contrastive_loss_falls_on_a_fixed_batch_in_block_sparse_mode(tiny_bigbird):
    from transformers import AutoModel, AutoTokenizer

    backbone = AutoModel.from_pretrained(tiny_bigbird)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bigbird)
    model = ContrastiveModel(backbone, "mean", temperature=0.05).train()
    backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    rows = read_triplets([train_helpers.write_triplets(tiny_bigbird.parent / "fixed.jsonl", count=4)])
    batch = TripletCollator(tokenizer, 128)([{"query": q, "positive": p, "negative": n} for q, p, n in rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    torch.manual_seed(0)
    losses = []
    for _ in range(6):
        loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7
    # queries run full attention (too short), documents block-sparse every time, even after a short batch
    assert model.attention_runs == {"block_sparse": 6}


def test_gradient_checkpointing_recomputes_the_same_random_blocks(tiny_bigbird):
    """BigBird draws its random blocks with numpy, which checkpointing does not restore; transformers reseeds
    numpy with the layer index on every call, so recomputation sees the forward pass's blocks."""
    from transformers import AutoModel

    gradients = []
    for checkpointing in (False, True):
        backbone = AutoModel.from_pretrained(
            tiny_bigbird, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
        ).train()
        if checkpointing:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        input_ids = torch.arange(5, 5 + 12 * BLOCK).unsqueeze(0) % backbone.config.vocab_size
        hidden = backbone(input_ids=input_ids).last_hidden_state
        (hidden * torch.randn(hidden.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
        gradients.append(backbone.encoder.layer[0].attention.self.query.weight.grad.clone())
    assert backbone.attention_type == "block_sparse"
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-4, atol=1e-4 * gradients[0].abs().max().item())


def test_finetune_writes_a_model_that_loads_with_its_pooling_and_block_sparse_config(tiny_bigbird, triplets, tmp_path):
    from sentence_transformers import SentenceTransformer

    result = finetune(str(tiny_bigbird), [triplets], tmp_path / "out", max_len=128, settings=settings(4))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    parameters = manifest["operations"][0]["parameters"]
    assert parameters["attention_type"] == "block_sparse" and parameters["attention_runs"] == {"block_sparse": 4}
    assert json.loads((tmp_path / "out" / "config.json").read_text())["attention_type"] == "block_sparse"
    assert result.global_step == 4 and not (tmp_path / "out.checkpoints").exists()
    vectors = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(["the model", "sky blue"])
    assert vectors.shape == (2, 32)
    before = json.loads((tiny_bigbird / "manifest.json").read_text())["tensors"]
    changed = [n for n, t in manifest["tensors"].items() if n in before and t["sha256"] != before[n]["sha256"]]
    assert changed  # training moved the weights


def test_resuming_continues_from_the_checkpoint_to_the_same_weights(tiny_bigbird, triplets, tmp_path):
    import safetensors.torch

    straight = finetune(str(tiny_bigbird), [triplets], tmp_path / "straight", max_len=128, settings=settings(4))
    stopped = tmp_path / "stopped.work"
    finetune(
        str(tiny_bigbird),
        [triplets],
        tmp_path / "half",
        max_len=128,
        settings=settings(4),
        run_options=RunOptions(work_dir=stopped, keep_checkpoints=True, callbacks=[train_helpers.StopAt(2)]),
    )
    assert (stopped / "checkpoint-2").is_dir()
    resumed = finetune(
        str(tiny_bigbird),
        [triplets],
        tmp_path / "resumed",
        max_len=128,
        settings=settings(4),
        run_options=RunOptions(work_dir=stopped, resume=True),
    )
    # it went on from step 3: two more steps ran, the log history carries the first two from the checkpoint
    assert resumed.global_step == 4 and resumed.attention_runs == {"block_sparse": 2}
    assert [step for step, _ in resumed.history["train"]] == [1, 2, 3, 4]
    assert resumed.manifest["operations"][0]["parameters"]["resumed_from"].endswith("checkpoint-2")
    a = safetensors.torch.load_file(straight.path / "model.safetensors")
    b = safetensors.torch.load_file(resumed.path / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_adapter_only_training_keeps_the_base_and_saves_an_adapters_format_adapter(tiny_bigbird, triplets, tmp_path):
    from ctxext.bottleneck import load_adapter_strictly, load_model_with_adapters

    result = finetune(
        str(tiny_bigbird), [triplets], tmp_path / "out", adapter="proximity", max_len=128, settings=settings(3)
    )
    record = result.manifest["operations"][0]
    assert {c["name"] for c in record["checks"]} >= {"base_weights_unchanged"}
    assert (tmp_path / "out" / "adapters" / "proximity" / "adapter_config.json").is_file()
    model = load_model_with_adapters(tmp_path / "out")
    load_adapter_strictly(model, tmp_path / "out" / "adapters" / "proximity", "proximity")
    weights = [p for n, p in model.named_parameters() if "proximity" in n]
    assert weights and any(w.abs().sum() > 0 for w in weights)
    assert result.history["train"][0][1] > 0


def test_plain_sentence_transformers_models_train_too(tmp_path, triplets):
    import tiny

    model = tiny.make_sentence_transformer("bert", tmp_path / "st")
    result = finetune(
        str(model), [triplets], tmp_path / "out", max_len=48, settings=settings(2), gradient_checkpointing=False
    )
    assert result.attention_runs == {} and (tmp_path / "out" / "modules.json").is_file()


def test_skipped_position_ids_start_at_the_offset_keep_order_and_reach_the_span():
    torch.manual_seed(0)
    lengths = [10, 6, 1]
    highest = []
    for _ in range(200):
        ids = skipped_position_ids(lengths, 10, 40, offset=2)
        for row, length in zip(ids, lengths, strict=True):
            real = row[:length]
            assert real[0] == 2 and bool((real[1:] > real[:-1]).all()) and row.max() <= 41
            highest.append(int(real.max()))
    assert max(highest) == 41 and min(highest) == 2  # the one-token document stays at the first position


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_position_span_trains_rows_beyond_max_len_and_leaves_reserved_rows(kind, tmp_path, triplets):
    import safetensors.torch

    import tiny

    model = tiny.make_sentence_transformer(kind, tmp_path / kind)
    result = finetune(
        str(model),
        [triplets],
        tmp_path / "out",
        max_len=24,
        position_span=64,
        settings=settings(3, weight_decay=0.0),
        gradient_checkpointing=False,
    )
    assert result.manifest["operations"][0]["parameters"]["position_span"] == 64

    def table(folder):
        tensors = safetensors.torch.load_file(folder / "model.safetensors")
        return next(t for n, t in tensors.items() if n.endswith("position_embeddings.weight"))

    before, after = table(model), table(tmp_path / "out")
    offset = 2 if kind == "roberta" else 0
    moved = (after - before).abs().amax(dim=1) > 0
    assert bool(moved[offset + 24 :].any())  # positions no 24-token document reaches without skips
    assert not bool(moved[:offset].any())


def test_bad_triplets_and_lengths_are_one_line_errors(tiny_bigbird, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive": "p"}\n')
    with pytest.raises(InvalidArgument, match="no 'negative' field"):
        read_triplets([bad])
    runner = CliRunner()
    result = runner.invoke(
        app, ["finetune", str(tiny_bigbird), "--data", str(bad), "--max-len", "100000", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code != 0 and "exceeds the model's 256 positions" in result.output
    assert not (tmp_path / "o").exists()
    for span in ("64", "512"):
        result = runner.invoke(
            app,
            [
                "finetune",
                str(tiny_bigbird),
                "--data",
                str(bad),
                "--max-len",
                "64",
                "--position-span",
                span,
                "-o",
                str(tmp_path / "o"),
            ],
        )
        assert result.exit_code != 0 and "must be above --max-len 64 and at most the model's 256" in result.output


def test_training_options_reach_the_trainer_and_missing_integrations_are_refused(tmp_path):
    import subprocess
    import sys

    # in a child process: TrainingArguments(bf16=True) sets accelerate's process-wide mixed-precision state,
    # which would leak into every later Trainer of this test session
    script = (
        "from pathlib import Path\nfrom ctxext.train import TrainSettings\n"
        "from ctxext.train.runner import training_arguments\n"
        f"a = training_arguments(Path({str(tmp_path)!r}), TrainSettings(gradient_accumulation=3, bf16=True))\n"
        "print(a.gradient_accumulation_steps, a.bf16, a.report_to)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["3", "True", "[]"]
    with pytest.raises(InvalidArgument, match="tensorboard or wandb"):
        TrainSettings(report_to=("mlflow",))
    with pytest.raises(InvalidArgument, match="--grad-accum"):
        TrainSettings(gradient_accumulation=0)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_positions_only_training_changes_only_the_rows_interpolate_added(kind, tmp_path, triplets):
    """LongEmbed's recipe: the added rows train (skip-wise positions reach them); the original rows, the
    reserved rows before them (RoBERTa) and every other tensor stay byte for byte."""
    import safetensors.torch

    import tiny
    from ctxext.positions import Grid, Method, interpolate

    source = tiny.make_sentence_transformer(kind, tmp_path / kind)
    original = json.loads((source / "config.json").read_text())["max_position_embeddings"]
    offset = 2 if kind == "roberta" else 0
    stretched = interpolate(
        str(source), 2 * (original - offset), str(tmp_path / "long"), method=Method.linear, grid=Grid.scaled
    ).path
    result = finetune(
        str(stretched),
        [triplets],
        tmp_path / "out",
        max_len=24,
        position_span=2 * (original - offset),
        positions_only=True,
        settings=settings(3),
        gradient_checkpointing=False,
    )
    parameters = result.manifest["operations"][0]["parameters"]
    assert result.manifest["options"]["positions_only"] is True
    assert (
        re.match(r"trained \d+ of \d+ position rows", parameters["trained"])
        and result.manifest["options"]["weight_decay"] == 0
    )
    before = safetensors.torch.load_file(stretched / "model.safetensors")
    after = safetensors.torch.load_file(tmp_path / "out" / "model.safetensors")
    table = next(name for name in before if name.endswith("position_embeddings.weight"))
    unchanged = [name for name in before if name != table and name in after]
    assert unchanged and all(torch.equal(before[name], after[name]) for name in unchanged)
    # --grid scaled at twice the length: original row i sits at new row 2i, after the reserved rows
    kept = [*range(offset), *(offset + 2 * i for i in range(original - offset))]
    added = sorted(set(range(len(before[table]))) - set(kept))
    assert torch.equal(before[table][kept], after[table][kept])
    assert not torch.equal(before[table][added], after[table][added])


def test_positions_only_keeps_the_original_rows_where_each_stretch_puts_them(tmp_path):
    import tiny
    from ctxext.io import open_model
    from ctxext.positions import Grid, Method, interpolate
    from ctxext.train.positions_only import kept_rows

    source = tiny.make_sentence_transformer("roberta", tmp_path / "roberta")
    n = json.loads((source / "config.json").read_text())["max_position_embeddings"] - 2
    expected = {
        (Method.tile, Grid.pinned): [0, 1, *range(2, 2 + n)],
        (Method.linear, Grid.scaled): [0, 1, *range(2, 2 + 4 * n, 4)],
        # pinned: new row j samples j (n - 1) / (4n - 1); only where that is whole is an original row
        (Method.spline, Grid.pinned): [0, 1, *(2 + j for j in range(4 * n) if j * (n - 1) % (4 * n - 1) == 0)],
    }
    for (method, grid), rows in expected.items():
        out = interpolate(str(source), 4 * n, str(tmp_path / f"{method.value}-{grid.value}"), method=method, grid=grid)
        kept, total = kept_rows(open_model(str(out.path))[1])
        assert kept.tolist() == rows and total == 2 + 4 * n


def test_positions_only_needs_an_interpolate_output_and_no_adapter(tmp_path, triplets):
    import tiny

    source = tiny.make_sentence_transformer("bert", tmp_path / "bert")
    with pytest.raises(InvalidArgument, match="not an interpolate output"):
        finetune(str(source), [triplets], tmp_path / "out", max_len=24, positions_only=True, settings=settings(1))
    with pytest.raises(InvalidArgument, match="choose one"):
        finetune(
            str(source),
            [triplets],
            tmp_path / "out",
            max_len=24,
            positions_only=True,
            adapter="x",
            settings=settings(1),
        )


def test_gradient_caching_gives_the_loss_and_gradients_of_the_whole_batch(tmp_path):
    """Chunks of 1 and 3 texts, cached, against the whole batch at once (dropout off: same computation)."""
    import copy

    import tiny
    from ctxext.io import ModelFolder
    from ctxext.train.embedding import load_backbone

    backbone, tokenizer = load_backbone(ModelFolder.open(tiny.make_sentence_transformer("bert", tmp_path / "st")))
    words = tiny.WORDS
    examples = [
        {
            "query": " ".join(words[i : i + 4]),
            "positive": " ".join(words[i : i + 20]),
            "negative": " ".join(words[i + 7 :]),
        }
        for i in range(0, 20, 5)
    ]
    batch = TripletCollator(tokenizer, 32, 16)(examples)
    results = []
    for chunk in (None, 1, 3):
        model = ContrastiveModel(copy.deepcopy(backbone), "mean", cache_chunk=chunk).eval()
        loss = model(**batch)["loss"]
        loss.backward()
        results.append(
            (float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        )
    (whole_loss, whole), *cached = results
    for loss, gradients in cached:
        assert abs(loss - whole_loss) < 1e-6 and gradients.keys() == whole.keys()
        assert max(float((gradients[n] - whole[n]).abs().max()) for n in whole) < 1e-5
