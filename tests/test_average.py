from __future__ import annotations

import json
import shutil

import pytest
import safetensors.torch
from typer.testing import CliRunner

from ctxext.average import average
from ctxext.cli import app


@pytest.fixture
def two_runs(tmp_path):
    """A tiny sentence-transformers model and a copy whose float weights moved (as fine-tuning would)."""
    import tiny

    first = tiny.make_sentence_transformer("bert", tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    weights = safetensors.torch.load_file(second / "model.safetensors")
    moved = {name: t + 0.5 if t.is_floating_point() else t for name, t in weights.items()}
    safetensors.torch.save_file(moved, second / "model.safetensors", metadata={"format": "pt"})
    return first, second


def test_average_writes_the_mean_of_every_float_tensor_and_loads(two_runs, tmp_path):
    from sentence_transformers import SentenceTransformer

    first, second = two_runs
    result = average([str(first), str(second)], tmp_path / "soup")
    a, b, soup = (safetensors.torch.load_file(f / "model.safetensors") for f in (first, second, tmp_path / "soup"))
    assert soup.keys() == a.keys()
    for name in a:
        expected = (a[name] + b[name]) / 2 if a[name].is_floating_point() else a[name]
        assert (soup[name] - expected).abs().max() <= 1e-6
    record = result.manifest["operations"][0]
    assert record["name"] == "average" and len(record["modified"]) == sum(t.is_floating_point() for t in a.values())
    assert record["checks"][0]["name"] == "max_abs_error_vs_mean" and record["checks"][0]["value"] <= 1e-6
    assert SentenceTransformer(str(tmp_path / "soup"), device="cpu").encode(["a soup"]).shape == (1, 32)


def test_a_model_averaged_with_itself_encodes_the_same(two_runs, tmp_path):
    from sentence_transformers import SentenceTransformer

    first, _ = two_runs
    average([str(first), str(first)], tmp_path / "self")
    texts = ["one sentence", "and another, longer one"]
    before = SentenceTransformer(str(first), device="cpu").encode(texts)
    after = SentenceTransformer(str(tmp_path / "self"), device="cpu").encode(texts)
    assert abs(before - after).max() <= 1e-6


def test_different_models_are_a_one_line_error_and_nothing_is_written(two_runs, tmp_path):
    first, second = two_runs
    config = json.loads((second / "config.json").read_text())
    (second / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 128}))
    runner = CliRunner()
    for arguments, message in (
        (["average", str(first), str(second)], "config differs"),
        (["average", str(first)], "two checkpoints or more"),
    ):
        result = runner.invoke(app, [*arguments, "-o", str(tmp_path / "out")])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
