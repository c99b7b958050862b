from __future__ import annotations

import json

import numpy as np
import pytest

import tiny
from ctxext.checks import last_hidden_state, load_model_strictly, random_batch
from ctxext.io import CheckpointReader, ModelFolder
from ctxext.manifest import verify
from ctxext.positions import Grid, Method, anchor_rows, extend_table, interpolate, stretch_spline

TARGET = 200


def position_table(folder):
    reader = CheckpointReader(ModelFolder.open(folder))
    name = next(n for n in reader.names if n.endswith("embeddings.position_embeddings.weight"))
    return reader.array(name)


def offset_of(family: str) -> int:
    return 2 if tiny.FAMILIES[family][2].get("pad_token_id") == 1 else 0


@pytest.mark.parametrize("family", tiny.LEARNED_FAMILIES)
def test_tile_reproduces_source_on_inputs_up_to_original_length(family, tiny_models, tmp_path):
    source = tiny_models(family)
    interpolate(str(source), TARGET, str(tmp_path / "out"), method=Method.tile)
    original_length = 64
    batch = random_batch(len(tiny.vocabulary()), [original_length, 17], low=5)
    before = last_hidden_state(load_model_strictly(source), *batch)
    after = last_hidden_state(load_model_strictly(tmp_path / "out"), *batch)
    assert np.max(np.abs(before - after)) <= 1e-5


@pytest.mark.parametrize("family", tiny.LEARNED_FAMILIES)
@pytest.mark.parametrize("method", [Method.linear, Method.spline])
def test_stretch_keeps_anchor_rows_and_offset_rows(family, method, tiny_models, tmp_path):
    source = tiny_models(family)
    offset = offset_of(family)
    result = interpolate(str(source), TARGET, str(tmp_path / "out"), method=method)
    old, new = position_table(source), position_table(tmp_path / "out")
    assert new.shape == (TARGET + offset, old.shape[1])
    np.testing.assert_array_equal(new[:offset], old[:offset])
    new_rows, old_rows = anchor_rows(64, TARGET, Grid.pinned)
    assert len(new_rows) >= 2  # both ends at least
    np.testing.assert_array_equal(new[offset:][new_rows], old[offset:][old_rows])
    assert np.isfinite(new).all()
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["max_position_embeddings"] == TARGET + offset
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["model_max_length"] == TARGET
    assert any(
        c["name"].startswith(f"a {TARGET}-token input runs") and c["passed"]
        for c in result.manifest["operations"][0]["checks"]
    )


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_full_length_input_gives_finite_outputs(family, tiny_models, tmp_path):
    interpolate(str(tiny_models(family)), TARGET, str(tmp_path / "out"), method=Method.spline, check=False)
    model = load_model_strictly(tmp_path / "out")
    outputs = last_hidden_state(model, *random_batch(len(tiny.vocabulary()), [TARGET], low=5))
    assert outputs.shape[1] == TARGET and np.isfinite(outputs).all()


@pytest.mark.parametrize("rows", [4, 5, 50, 514])
def test_spline_equals_per_dimension_scipy_cubic_interpolation(rows):
    from scipy.interpolate import CubicSpline, interp1d

    rng = np.random.default_rng(rows)
    table = rng.normal(size=(rows, 7)).astype(np.float32)
    ours = stretch_spline(table, 3 * rows + 1, Grid.pinned)
    grid = np.linspace(0, rows - 1, 3 * rows + 1)
    peer = np.stack([interp1d(np.arange(rows), table[:, d], kind="cubic")(grid) for d in range(7)], axis=1)
    assert np.max(np.abs(ours - peer)) < 1e-9
    scaled = stretch_spline(table, 4 * rows, Grid.scaled)
    reference = CubicSpline(np.arange(rows), table.astype(np.float64), axis=0)(np.arange(4 * rows) * rows / (4 * rows))
    assert np.max(np.abs(scaled - reference)) < 1e-9


def test_scaled_grid_keeps_every_original_row_at_integer_scale():
    table = np.random.default_rng(1).normal(size=(16, 3))
    stretched = extend_table(table, 0, 64, Method.linear, Grid.scaled)
    np.testing.assert_allclose(stretched[::4], table, atol=0)


def test_tile_repeats_rows_after_offset():
    table = np.arange(12, dtype=np.float64).reshape(6, 2)
    stretched = extend_table(table, 2, 9, Method.tile)
    np.testing.assert_array_equal(stretched[:2], table[:2])
    np.testing.assert_array_equal(stretched[2:], table[2:][np.arange(9) % 4])


def test_verify_passes_then_fails_after_one_flipped_byte(tiny_models, tmp_path):
    out = tmp_path / "out"
    interpolate(str(tiny_models("bert")), TARGET, str(out), method=Method.linear, check=False)
    assert verify(out).tensors_checked > 0
    weights = out / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-5] ^= 0x01
    weights.write_bytes(bytes(raw))
    from ctxext.errors import CheckFailed

    with pytest.raises(CheckFailed, match="does not match its sha256"):
        verify(out)


def test_manifest_records_sources_tensors_and_checks(tiny_models, tmp_path):
    result = interpolate(str(tiny_models("roberta")), TARGET, str(tmp_path / "out"), method=Method.spline)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest == json.loads(json.dumps(result.manifest, sort_keys=True))
    assert manifest["sources"]["model"]["weight_files_sha256"]["model.safetensors"]
    assert "transformers" in manifest["libraries"]
    operation = manifest["operations"][0]
    assert operation["modified"] == ["embeddings.position_embeddings.weight"]
    assert operation["parameters"]["offset"] == 2
    assert set(manifest["tensors"]) == set(operation["copied"]) | set(operation["modified"])
    assert all(len(record["sha256"]) == 64 for record in manifest["tensors"].values())


@pytest.mark.parametrize("family", tiny.ROPE_FAMILIES)
def test_rope_models_get_scaling_in_config_and_unchanged_weights(family, tiny_models, tmp_path):
    source = tiny_models(family)
    result = interpolate(str(source), 512, str(tmp_path / "out"))
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["max_position_embeddings"] == 512
    assert config["rope_scaling"]["rope_type"] == "linear" and config["rope_scaling"]["factor"] == 4.0
    assert (tmp_path / "out" / "model.safetensors").read_bytes()[-1000:] == (source / "model.safetensors").read_bytes()[
        -1000:
    ]
    operation = result.manifest["operations"][0]
    assert operation["name"] == "scale_rope" and not operation["modified"]


def test_sentence_transformers_folder_keeps_modules_and_new_length(tmp_path):
    from sentence_transformers import SentenceTransformer

    source = tiny.make_sentence_transformer("bert", tmp_path / "st")
    interpolate(str(source), TARGET, str(tmp_path / "out"), method=Method.tile)
    model = SentenceTransformer(str(tmp_path / "out"), device="cpu")
    assert model.max_seq_length == TARGET
    reference = SentenceTransformer(str(source), device="cpu")
    text = ["the model of the long document"]
    np.testing.assert_allclose(model.encode(text), reference.encode(text), atol=1e-6)


def test_sharded_output_has_index_and_loads(tiny_models, tmp_path, monkeypatch):
    import ctxext.io

    monkeypatch.setattr(ctxext.io, "DEFAULT_MAX_SHARD_BYTES", 20_000)
    interpolate(str(tiny_models("bert")), TARGET, str(tmp_path / "out"), method=Method.tile)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert verify(tmp_path / "out").tensors_checked == len(index["weight_map"])


def test_pytorch_bin_source_is_read_with_weights_only(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file

    source = tiny_models("bert", copy_to=tmp_path / "bin")
    state = load_file(source / "model.safetensors")
    (source / "model.safetensors").unlink()
    torch.save(state, source / "pytorch_model.bin")
    interpolate(str(source), TARGET, str(tmp_path / "out"), method=Method.tile)
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "pytorch_model.bin").exists()


def test_sentence_transformers_dense_module_is_kept_and_stale_exports_left_out(tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Dense

    source = tiny.make_sentence_transformer("bert", tmp_path / "st")
    (source / "3_Dense").mkdir()
    Dense(tiny.TINY["hidden_size"], 8).save(str(source / "3_Dense"))
    modules = json.loads((source / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (source / "modules.json").write_text(json.dumps(modules))
    (source / "onnx").mkdir()
    (source / "onnx" / "model.onnx").write_bytes(b"stale")
    (source / "pytorch_model.bin").write_bytes(b"stale")
    result = interpolate(str(source), TARGET, str(tmp_path / "out"), method=Method.tile)
    left_out = result.manifest["operations"][0]["files"]["left_out"]
    assert "onnx/model.onnx" in left_out and "pytorch_model.bin" in left_out
    assert not (tmp_path / "out" / "onnx").exists()
    text = ["the model of the long document"]
    reference = SentenceTransformer(str(source), device="cpu").encode(text)
    stretched = SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(text)
    assert stretched.shape == (1, 8)
    np.testing.assert_allclose(stretched, reference, atol=1e-6)


# ----------------------------------------------------------------------------- the default check, without a model


@pytest.mark.parametrize("family", tiny.LEARNED_FAMILIES)
@pytest.mark.parametrize("method", [Method.tile, Method.spline])
def test_default_check_computes_the_embedding_layer_as_transformers_does(family, method, tiny_models, tmp_path):
    """The check's numpy embedding layer equals the model's own, so what it compares is what the model sees."""
    import torch

    from ctxext.positions import EmbeddingLayer

    result = interpolate(str(tiny_models(family)), TARGET, str(tmp_path / "out"), method=method)
    names = {c["name"] for c in result.manifest["operations"][0]["checks"]}
    assert {"every other tensor is the source's byte for byte", f"a {TARGET}-token input runs"} <= names
    model = load_model_strictly(tmp_path / "out").base_model
    reader = CheckpointReader(ModelFolder.open(tmp_path / "out"))
    table = next(n for n in reader.names if n.endswith("embeddings.position_embeddings.weight"))
    layer = EmbeddingLayer.read(
        reader,
        table.removesuffix("embeddings.position_embeddings.weight"),
        json.loads((tmp_path / "out" / "config.json").read_text()),
    )
    ids = torch.randint(6, len(tiny.vocabulary()), (1, TARGET))
    with torch.no_grad():
        expected = model.embeddings(input_ids=ids).double().numpy()
    np.testing.assert_allclose(layer.outputs(ids.numpy(), offset_of(family)), expected, atol=1e-5)


def test_default_check_fails_on_a_changed_tensor_that_should_have_been_copied(tiny_models, tmp_path):
    from ctxext.errors import CheckFailed
    from ctxext.positions import learned_layout, written_table_checks

    source = tiny_models("bert")
    result = interpolate(str(source), TARGET, str(tmp_path / "out"), method=Method.tile, check=False)
    weights = tmp_path / "out" / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0xFF  # the last tensor's last bytes: a copied tensor
    weights.write_bytes(bytes(raw))
    reader = CheckpointReader(ModelFolder.open(source))
    layout = learned_layout(ModelFolder.open(source).config, {n: i.shape for n, i in reader.infos.items()}, None)
    with pytest.raises(CheckFailed, match="byte for byte"):
        written_table_checks(
            reader,
            ModelFolder.open(tmp_path / "out"),
            layout,
            TARGET,
            Method.tile,
            result.manifest["operations"][0]["copied"],
        )


def test_full_check_also_runs_the_whole_encoder(tiny_models, tmp_path):
    from ctxext.positions import CheckLevel

    result = interpolate(
        str(tiny_models("roberta")), TARGET, str(tmp_path / "out"), method=Method.tile, check=CheckLevel.full
    )
    checks = {c["name"]: c for c in result.manifest["operations"][0]["checks"]}
    assert checks[f"a {TARGET}-token input runs through the whole encoder"]["passed"]
    assert checks["whole encoder: inputs of up to 64 tokens match the source"]["value"] <= 1e-5
    assert result.manifest["options"]["check"] == "full"


@pytest.mark.parametrize("check", ["--no-check", "--check"])
def test_interpolate_imports_neither_transformers_nor_sentence_transformers(check, tiny_models, tmp_path):
    import subprocess
    import sys

    arguments = ["interpolate", str(tiny_models("bert")), "--len", "128", "-o", str(tmp_path / "out"), check]
    script = (
        f"import sys\nfrom ctxext.cli import app\napp({arguments!r}, standalone_mode=False)\n"
        "heavy = {'torch', 'transformers', 'sentence_transformers'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "manifest.json").is_file()
