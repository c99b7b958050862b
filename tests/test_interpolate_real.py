"""interpolate on the real all-MiniLM-L6-v2 (BERT) and all-mpnet-base-v2 (MPNet, offset 2)."""

from __future__ import annotations

import numpy as np
import pytest

from ctxext.checks import last_hidden_state, load_model_strictly, random_batch
from ctxext.io import CheckpointReader, ModelFolder
from ctxext.manifest import verify
from ctxext.positions import Grid, Method, anchor_rows, interpolate

pytestmark = pytest.mark.slow
TABLE = "embeddings.position_embeddings.weight"


@pytest.fixture(scope="module")
def real_models(minilm, mpnet):
    return {"minilm": (minilm, 0, 30522), "mpnet": (mpnet, 2, 30527)}


@pytest.mark.parametrize("name", ["minilm", "mpnet"])
def test_tile_reproduces_real_model_up_to_512_tokens(name, real_models, tmp_path):
    source, _, vocab_size = real_models[name]
    result = interpolate(str(source), 1024, str(tmp_path / "out"), method=Method.tile, check=False)
    batch = random_batch(vocab_size, [512, 100], seed=3)
    before = last_hidden_state(load_model_strictly(source), *batch)
    after = last_hidden_state(load_model_strictly(tmp_path / "out"), *batch)
    assert np.max(np.abs(before - after)) <= 1e-5
    assert verify(tmp_path / "out").tensors_checked == len(result.manifest["tensors"])


# mpnet's eager attention with relative bias is slow on 2 CPU cores at 4096 tokens: 2048 keeps CI short.
@pytest.mark.parametrize(("name", "length"), [("minilm", 4096), ("mpnet", 2048)])
def test_spline_keeps_anchors_offset_rows_and_runs_full_length(name, length, real_models, tmp_path):
    source, offset, _ = real_models[name]
    result = interpolate(str(source), length, str(tmp_path / "out"), method=Method.spline)
    old = CheckpointReader(ModelFolder.open(source)).array(TABLE)
    new = CheckpointReader(ModelFolder.open(tmp_path / "out")).array(TABLE)
    assert new.shape[0] == length + offset
    np.testing.assert_array_equal(new[:offset], old[:offset])
    new_rows, old_rows = anchor_rows(512, length, Grid.pinned)
    np.testing.assert_array_equal(new[offset:][new_rows], old[offset:][old_rows])
    checks = {c["name"]: c for c in result.manifest["operations"][0]["checks"]}
    assert checks[f"a {length}-token input runs"]["passed"]
