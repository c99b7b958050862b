from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import safetensors.torch
import torch

import train_helpers
from ctxext.data.pydocs import write_pydocs_beir
from ctxext.evaluate import beir_set
from ctxext.io import file_sha256
from ctxext.train import RunOptions, TrainSettings
from ctxext.train.distill import DistillModel, TextTargetCollator, distill, fit_projection


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    import tiny

    root = tmp_path_factory.mktemp("distill")
    teacher = tiny.make_sentence_transformer("bert", root / "teacher")  # 32 wide, mean pooling, normalised
    student = tiny.make_model("bert", root / "student", seed=1, hidden_size=16, intermediate_size=32)
    return {
        "teacher": teacher,
        "student": student,
        "texts": train_helpers.write_texts(root / "texts.jsonl"),
        "root": root,
    }


def settings(steps):
    return TrainSettings(steps=steps, batch_size=8, learning_rate=2e-3, save_every=100, **train_helpers.STEPS_SETTINGS)


def distill_tiny(parts, out, *, student=None, teacher=None, data=None, steps=2, **options):
    """``distill`` on the tiny parts at 32 tokens (the student, teacher and texts unless given)."""
    student, teacher = str(student or parts["student"]), str(teacher or parts["teacher"])
    return distill(student, teacher, data or [parts["texts"]], out, max_len=32, settings=settings(steps), **options)


def test_pca_projection_keeps_the_largest_directions_and_maps_the_mean_to_zero():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(200, 3)) * [5.0, 1.0, 0.1] + 7.0
    projection = fit_projection(table, 2, sample=200)
    assert abs(abs(projection.components[0, 0]) - 1) < 1e-2 and projection.explained_variance_ratio > 0.99
    assert np.allclose(projection.apply(projection.mean[None]), 0, atol=1e-5)


def test_mse_loss_falls_on_a_fixed_batch(parts):
    from transformers import AutoModel, AutoTokenizer

    backbone = AutoModel.from_pretrained(parts["student"])
    tokenizer = AutoTokenizer.from_pretrained(parts["student"])
    model = DistillModel(backbone, "mean", normalize=True).train()
    targets = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    batch = TextTargetCollator(tokenizer, 32)(
        [
            {"text": t, "target": targets[i].numpy()}
            for i, t in enumerate(["the model", "sky blue", "green grass here", "a paper"])
        ]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.8


def test_distillation_loss_is_the_mse_of_the_pooled_student_against_its_targets(parts):
    """The loss on a fixed batch, computed by hand: mean pooling over real tokens, L2 normalisation (the
    student normalises), then the mean of squared differences over every coordinate."""
    from transformers import AutoModel, AutoTokenizer

    backbone = AutoModel.from_pretrained(parts["student"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(parts["student"])
    targets = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    texts = ["the model", "sky blue and green grass here", "a paper"]
    batch = TextTargetCollator(tokenizer, 32)([{"text": t, "target": targets[i].numpy()} for i, t in enumerate(texts)])
    with torch.no_grad():
        loss = DistillModel(backbone, "mean", normalize=True)(**batch)["loss"]
        hidden = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    expected = 0.0
    for row, text_mask in enumerate(batch["attention_mask"]):
        real = hidden[row, text_mask.bool()]
        pooled = real.mean(0) / real.mean(0).norm()
        expected += float(((pooled - targets[row]) ** 2).sum())
    assert float(loss) == pytest.approx(expected / targets.numel(), rel=1e-5)


def test_resuming_distillation_continues_where_it_stopped(parts, tmp_path):
    import safetensors.torch

    common = {"max_len": 32, "settings": settings(4), "cache": tmp_path / "cache"}
    straight = distill(str(parts["student"]), str(parts["teacher"]), [parts["texts"]], tmp_path / "straight", **common)
    stopped = tmp_path / "stopped.work"
    distill(
        str(parts["student"]),
        str(parts["teacher"]),
        [parts["texts"]],
        tmp_path / "half",
        run_options=RunOptions(work_dir=stopped, keep_checkpoints=True, callbacks=[train_helpers.StopAt(2)]),
        **common,
    )
    resumed = distill(
        str(parts["student"]),
        str(parts["teacher"]),
        [parts["texts"]],
        tmp_path / "resumed",
        run_options=RunOptions(work_dir=stopped, resume=True),
        **common,
    )
    assert resumed.global_step == 4 and [step for step, _ in resumed.history["train"]] == [1, 2, 3, 4]
    assert resumed.manifest["operations"][0]["parameters"]["resumed_from"].endswith("checkpoint-2")
    a = safetensors.torch.load_file(next(straight.path.glob("**/model.safetensors")))
    b = safetensors.torch.load_file(next(resumed.path.glob("**/model.safetensors")))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_distill_writes_a_sentence_transformer_with_its_projection_and_caches_the_teacher(parts, tmp_path):
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    cache = tmp_path / "cache"
    first = distill_tiny(parts, tmp_path / "a", steps=3, cache=cache)
    assert not first.cached and all(path.is_file() for path in first.teacher_caches)
    second = distill_tiny(parts, tmp_path / "b", steps=3, cache=cache)
    assert second.cached and second.teacher_caches == first.teacher_caches
    more = train_helpers.write_texts(tmp_path / "more.jsonl", count=16, seed=3)
    written = first.teacher_caches[0].stat().st_mtime_ns
    third = distill_tiny(parts, tmp_path / "c", data=[parts["texts"], more], steps=1, cache=cache)
    assert third.teacher_caches[0] == first.teacher_caches[0] and len(third.teacher_caches) == 2
    assert not third.cached and first.teacher_caches[0].stat().st_mtime_ns == written  # only the added file
    assert third.manifest["operations"][-1]["parameters"]["texts"] == 32 + 16
    projection = load_file(tmp_path / "a" / "pca_projection.safetensors")
    assert projection["components"].shape == (32, 16) and projection["mean"].shape == (32,)
    record = json.loads((tmp_path / "a" / "manifest.json").read_text())["operations"][0]
    assert record["parameters"]["pca_projection_sha256"] == file_sha256(tmp_path / "a" / "pca_projection.safetensors")
    assert "teacher" in json.loads((tmp_path / "a" / "manifest.json").read_text())["sources"]
    vectors = SentenceTransformer(str(tmp_path / "a"), device="cpu").encode(["the model", "sky blue"])
    assert vectors.shape == (2, 16)


def test_distilling_a_distilled_student_on_other_texts_keeps_its_projection(parts, tmp_path):
    from safetensors.numpy import load_file

    first = distill_tiny(parts, tmp_path / "a", cache="none")
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": f"another text number {i} about {i % 7}"}) + "\n" for i in range(24)))
    second = distill_tiny(parts, tmp_path / "b", student=first.path, data=[other], cache="none")
    kept, fitted = (load_file(tmp_path / name / "pca_projection.safetensors") for name in ("b", "a"))
    assert all(np.array_equal(kept[key], fitted[key]) for key in ("components", "mean"))
    assert not first.manifest["operations"][-1]["parameters"]["pca_projection_kept_from_student"]
    assert second.manifest["operations"][-1]["parameters"]["pca_projection_kept_from_student"]
    other_teacher = tmp_path / "other-teacher"
    shutil.copytree(parts["teacher"], other_teacher)
    weights = safetensors.torch.load_file(other_teacher / "model.safetensors")
    safetensors.torch.save_file({k: v + 0.01 for k, v in weights.items()}, other_teacher / "model.safetensors")
    third = distill_tiny(parts, tmp_path / "c", student=first.path, teacher=other_teacher, data=[other], cache="none")
    assert not third.manifest["operations"][-1]["parameters"]["pca_projection_kept_from_student"]


def test_pydocs_retrieval_set_pairs_summaries_with_bodies_and_scores_during_training(parts, tmp_path):
    folder = write_pydocs_beir(tmp_path / "beir", limit=12)
    retrieval_set = beir_set(folder)
    assert len(retrieval_set.queries) == len(retrieval_set.documents) == 12
    assert all(
        query not in document for query, document in zip(retrieval_set.queries, retrieval_set.documents, strict=True)
    )
    result = distill(
        str(parts["student"]),
        str(parts["teacher"]),
        [parts["texts"]],
        tmp_path / "out",
        max_len=32,
        settings=TrainSettings(steps=2, batch_size=8, eval_every=1, save_every=100, **train_helpers.STEPS_SETTINGS),
        eval_beir=folder,
        cache="none",
    )
    steps = [entry["step"] for entry in result.history["retrieval"]]
    assert steps == [0, 1, 2]
    assert all(0.0 <= entry["retrieval_ndcg_at_10"] <= 1.0 for entry in result.history["retrieval"])


def test_the_projection_file_is_the_same_bytes_from_every_process(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys, numpy as np; from pathlib import Path; from ctxext.train.distill import Projection;"
        "Projection(np.eye(4, 2, dtype=np.float32), np.ones(4, np.float32), 0.5, 10).save(Path(sys.argv[1]))"
    )
    for name in ("a.safetensors", "b.safetensors", "c.safetensors"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True)
    written = {(tmp_path / name).read_bytes() for name in ("a.safetensors", "b.safetensors", "c.safetensors")}
    assert len(written) == 1
    from ctxext.train.distill import Projection

    loaded = Projection.load(tmp_path / "a.safetensors")
    assert loaded.components.shape == (4, 2) and loaded.sample == 10 and loaded.explained_variance_ratio == 0.5
