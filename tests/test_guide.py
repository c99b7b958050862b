"""`ctxext guide` on tiny random teachers of each family: shapes, clean loading, manifest, the maths of M."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tiny
from ctxext.cli import app
from ctxext.guide import (
    FAMILIES,
    Init,
    Projection,
    Select,
    build_student,
    evenly_spaced,
    guide,
    head_prefixes,
    load_student,
    pca_projection,
    top_by_score,
)
from ctxext.io import CheckpointReader, ModelFolder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.guide import similarity_rank_correlation  # noqa: E402  (an experiment's measure, not surgery)

GUIDE_FAMILIES = ["bert", "roberta", "mpnet", "modernbert"]
runner = CliRunner()


@pytest.fixture(scope="session")
def teachers(tmp_path_factory: pytest.TempPathFactory):
    """Sentence-transformers teachers (ModernBERT: a plain folder), built once per session."""
    root = tmp_path_factory.mktemp("guide-teachers")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            folder = root / family
            built[family] = (
                tiny.make_model(family, folder)
                if family == "modernbert"
                else tiny.make_sentence_transformer(family, folder)
            )
        return built[family]

    return get


def _hidden(model_dir: Path, input_ids, attention_mask) -> np.ndarray:
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.double().numpy()


# ----------------------------------------------------------------------------- PCA


def test_pca_recovers_a_known_low_rank_subspace():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(48, 6)))[0]  # 6 orthonormal directions in 48 dims
    scores = rng.normal(size=(2000, 6)) * np.array([9.0, 7.0, 5.0, 4.0, 3.0, 2.0])
    table = scores @ basis.T + rng.normal(size=48) * 5 + rng.normal(size=(2000, 48)) * 1e-4
    projection = pca_projection(table, 6)
    recovered = projection.matrix @ projection.matrix.T
    assert np.abs(recovered - basis @ basis.T).max() < 1e-5
    assert projection.explained_variance_ratio > 0.999999
    assert np.allclose(projection.matrix.T @ projection.matrix, np.eye(6), atol=1e-12)


def test_pca_explained_variance_matches_scikit_learn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    table = rng.normal(size=(500, 24)) @ rng.normal(size=(24, 24)) + 3.0
    ours = pca_projection(table, 7)
    reference = PCA(n_components=7, svd_solver="full").fit(table)
    assert ours.explained_variance_ratio == pytest.approx(reference.explained_variance_ratio_.sum(), rel=1e-10)
    assert np.allclose(ours.component_variance_ratios, reference.explained_variance_ratio_, rtol=1e-8)
    # same subspace as scikit-learn's components
    assert np.allclose(ours.matrix @ ours.matrix.T, reference.components_.T @ reference.components_, atol=1e-8)


def test_explained_variance_is_the_share_of_centred_variance_the_projection_keeps():
    rng = np.random.default_rng(2)
    table = rng.normal(size=(300, 16)) * np.linspace(3, 0.1, 16) + 10.0
    projection = pca_projection(table, 5)
    centred = table - table.mean(axis=0)
    kept = ((centred @ projection.matrix) ** 2).sum() / (centred**2).sum()
    assert projection.explained_variance_ratio == pytest.approx(kept, rel=1e-10)


def test_selection_rules_keep_the_largest_or_evenly_spaced_indices_in_order():
    assert top_by_score(np.array([0.1, 5.0, 0.3, 4.0, 2.0]), 3).tolist() == [1, 3, 4]
    assert evenly_spaced(12, 6).tolist() == [0, 2, 4, 7, 9, 11]
    assert evenly_spaced(8, 8).tolist() == list(range(8))


def test_rank_correlation_of_similarities_is_one_for_a_rotation_and_low_for_noise():
    rng = np.random.default_rng(3)
    embeddings = rng.normal(size=(40, 16))
    rotation = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    assert similarity_rank_correlation(embeddings @ rotation, embeddings) == pytest.approx(1.0)
    assert abs(similarity_rank_correlation(rng.normal(size=(40, 16)), embeddings)) < 0.2


# ----------------------------------------------------------------------------- students of each family


@pytest.mark.parametrize("family", GUIDE_FAMILIES)
def test_student_loads_cleanly_with_the_right_shapes_and_origins(family, teachers, tmp_path):
    from transformers import AutoModel, AutoModelForMaskedLM

    result = guide(teachers(family), tmp_path / "student", dim=16, layers=3, init=Init.first)
    folder = ModelFolder.open(result.path)
    config = folder.config
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (16, 3, 2)
    assert config["intermediate_size"] == 32 and config["architectures"] == [FAMILIES[family].mlm_class]
    mlm = load_student(folder.model_dir, AutoModelForMaskedLM, (f"{FAMILIES[family].prefix}.pooler.",))
    base = load_student(folder.model_dir, AutoModel, head_prefixes(FAMILIES[family]))
    assert mlm.get_input_embeddings().weight.shape == (len(tiny.vocabulary()), 16)
    assert base.config.hidden_size == 16

    manifest = json.loads((result.path / "manifest.json").read_text())
    operation = manifest["operations"][0]
    parameters = operation["parameters"]
    assert parameters["block_sources"] == {"0": "teacher block 0", "1": "random init", "2": "random init"}
    assert set(parameters["origins"]) == set(manifest["tensors"])  # every written tensor has an origin
    layer = FAMILIES[family].layer
    prefix = FAMILIES[family].prefix
    block0 = [name for name in manifest["tensors"] if name.startswith(f"{prefix}.{layer.format(0)}")]
    block1 = [name for name in manifest["tensors"] if name.startswith(f"{prefix}.{layer.format(1)}")]
    assert block0 and all(parameters["origins"][n].startswith("teacher ") for n in block0)
    assert block1 and all(parameters["origins"][n].startswith("random init") for n in block1)
    table = f"{prefix}.{FAMILIES[family].token_table}"
    assert parameters["origins"][table].startswith("teacher ") and "rows @ M" in parameters["origins"][table]
    assert "teacher has no MLM head" in parameters["mlm_head"]
    teacher_table = CheckpointReader(ModelFolder.open(teachers(family))).array(
        next(
            n
            for n in CheckpointReader(ModelFolder.open(teachers(family))).names
            if n.endswith(FAMILIES[family].token_table)
        )
    )
    assert parameters["explained_variance_ratio"] == pytest.approx(
        pca_projection(teacher_table, 16).explained_variance_ratio, rel=1e-12
    )
    assert {c["name"]: c["passed"] for c in operation["checks"]}["written_student_matches_built"]


@pytest.mark.parametrize("family", GUIDE_FAMILIES)
def test_full_width_student_with_identity_projection_reproduces_the_teacher(family, teachers, tmp_path):
    """At the teacher's own width, with evenly spaced coordinates (M = I) and every head and unit kept, the
    mapping must give the teacher back exactly: a check of every rule in the family's table."""
    from ctxext.checks import random_batch

    teacher = teachers(family)
    result = guide(
        teacher,
        tmp_path / "same",
        dim=tiny.TINY["hidden_size"],
        init=Init.uniform,
        select=Select.norm,
        projection=Projection.even,
        check=False,
    )
    input_ids, attention_mask = random_batch(len(tiny.vocabulary()), [9, 5], low=5)
    expected = _hidden(ModelFolder.open(teacher).model_dir, input_ids, attention_mask)
    produced = _hidden(ModelFolder.open(result.path).model_dir, input_ids, attention_mask)
    mask = attention_mask.numpy()[..., None]
    assert np.abs((expected - produced) * mask).max() < 1e-5


def test_projected_block_follows_the_formulas(teachers):
    teacher = teachers("bert")
    student = build_student(teacher, dim=16, layers=2, init=Init.first, select=Select.norm)
    reader = CheckpointReader(ModelFolder.open(teacher))
    matrix = student.projection.matrix
    selection = student.record.parameters["selections"]["0"]
    heads = selection["heads"]
    rows = np.concatenate([np.arange(h * 8, h * 8 + 8) for h in heads])
    state = {k: v.double().numpy() for k, v in student.model.state_dict().items()}
    query = reader.array("encoder.layer.0.attention.self.query.weight").astype(np.float64)
    assert np.allclose(state["bert.encoder.layer.0.attention.self.query.weight"], query[rows] @ matrix, atol=1e-6)
    out = reader.array("encoder.layer.0.output.dense.weight").astype(np.float64)
    assert np.allclose(
        state["bert.encoder.layer.0.output.dense.weight"], matrix.T @ out[:, selection["units"]], atol=1e-6
    )
    gamma = reader.array("encoder.layer.0.output.LayerNorm.weight").astype(np.float64)
    assert np.allclose(state["bert.encoder.layer.0.output.LayerNorm.weight"], (matrix**2).T @ gamma, atol=1e-6)
    table = reader.array("embeddings.word_embeddings.weight").astype(np.float64)
    assert np.allclose(state["bert.embeddings.word_embeddings.weight"], table @ matrix, atol=1e-6)
    positions = reader.array("embeddings.position_embeddings.weight").astype(np.float64)
    assert np.allclose(state["bert.embeddings.position_embeddings.weight"], positions @ matrix, atol=1e-6)
    # the decoder is tied to the projected embeddings
    assert (
        student.model.get_output_embeddings().weight.data_ptr()
        == student.model.get_input_embeddings().weight.data_ptr()
    )


def test_norm_selection_keeps_the_heads_that_survive_projection_best(teachers):
    teacher = teachers("mpnet")
    student = build_student(teacher, dim=16, layers=1, heads=2, select=Select.norm)
    reader = CheckpointReader(ModelFolder.open(teacher))
    matrix = student.projection.matrix
    scores = np.zeros(4)
    for name in ("q", "k", "v"):
        weight = reader.array(f"encoder.layer.0.attention.attn.{name}.weight").astype(np.float64) @ matrix
        scores += (weight**2).sum(axis=1).reshape(4, 8).sum(axis=1)
    output = matrix.T @ reader.array("encoder.layer.0.attention.attn.o.weight").astype(np.float64)
    scores += (output**2).sum(axis=0).reshape(4, 8).sum(axis=1)
    assert student.record.parameters["selections"]["0"]["heads"] == sorted(np.argsort(-scores)[:2].tolist())
    # MPNet's relative attention bias is shared by all layers: it keeps block 0's heads
    bias = reader.array("encoder.relative_attention_bias.weight")
    kept = student.model.state_dict()["mpnet.encoder.relative_attention_bias.weight"].numpy()
    assert np.allclose(kept, bias[:, student.record.parameters["selections"]["0"]["heads"]])


def test_narrow_heads_select_dimensions_within_each_head(teachers):
    student = build_student(teachers("roberta"), dim=16, layers=1, heads=4)  # 4 heads of 4 dims from 4 heads of 8
    selection = student.record.parameters["selections"]["0"]
    assert selection["heads"] == [0, 1, 2, 3]
    assert all(len(dims) == 4 and dims == sorted(dims) for dims in selection["head_dims"])


def test_uniform_init_spreads_teacher_blocks_over_the_student(teachers):
    student = build_student(teachers("bert"), dim=16, layers=5, init=Init.uniform)
    sources = student.record.parameters["block_sources"]
    assert sources == {
        "0": "teacher block 0",
        "1": "teacher block 0",
        "2": "teacher block 0",
        "3": "teacher block 1",
        "4": "teacher block 1",
    }
    assert not any(
        origin.startswith("random")
        for name, origin in student.record.parameters["origins"].items()
        if ".encoder.layer." in name
    )


def test_random_baseline_takes_nothing_from_the_teacher(teachers):
    student = build_student(teachers("bert"), dim=16, layers=2, init=Init.none)
    assert all(origin.startswith("random init") for origin in student.record.parameters["origins"].values())


def test_teacher_with_a_trained_mlm_head_passes_it_through_the_projection(tmp_path):
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    config = RobertaConfig(vocab_size=len(tiny.vocabulary()), **tiny.TINY, max_position_embeddings=66, pad_token_id=1)
    torch.manual_seed(0)
    RobertaForMaskedLM(config).save_pretrained(tmp_path / "teacher")
    tiny.save_tokenizer(tmp_path / "teacher", 64)
    student = build_student(tmp_path / "teacher", dim=16, layers=2)
    reader = CheckpointReader(ModelFolder.open(tmp_path / "teacher"))
    matrix = student.projection.matrix
    dense = reader.array("lm_head.dense.weight").astype(np.float64)
    state = student.model.state_dict()
    assert np.allclose(state["lm_head.dense.weight"].double().numpy(), matrix.T @ dense @ matrix, atol=1e-6)
    assert np.allclose(state["lm_head.bias"].numpy(), reader.array("lm_head.bias"))
    assert student.record.parameters["mlm_head"] == "teacher head through M"
    assert student.record.parameters["origins"]["lm_head.dense.weight"].startswith("teacher lm_head.dense.weight")


def test_sentence_transformers_output_keeps_the_teacher_pooling_at_the_student_width(teachers, tmp_path):
    result = guide(teachers("mpnet"), tmp_path / "student", dim=16, layers=2)
    pooling = json.loads((result.path / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 16 and pooling["pooling_mode_mean_tokens"]
    assert json.loads((result.path / "modules.json").read_text()) == json.loads(
        (teachers("mpnet") / "modules.json").read_text()
    )


# ----------------------------------------------------------------------------- CLI


def test_cli_writes_a_student_and_reports_it(teachers, tmp_path):
    out = tmp_path / "cli-student"
    outcome = runner.invoke(
        app,
        ["guide", str(teachers("bert")), "--dim", "16", "--layers", "2", "--init", "uniform", "-o", str(out), "--json"],
    )
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.stdout)
    assert summary["blocks_from_teacher"] == "2 of 2"
    assert summary["checks"]["written_student_matches_built"].startswith("passed")
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("arguments", "code", "words"),
    [
        (["--dim", "64"], 4, "between 1 and the teacher's hidden size 32"),
        (["--dim", "16", "--heads", "3"], 4, "not divisible"),
        (["--dim", "16", "--heads", "1"], 4, "exceeds the teacher's 8"),
        (["--dim", "16", "--init", "middle"], 4, "middle"),
    ],
)
def test_cli_rejects_bad_options_in_one_line(arguments, code, words, teachers, tmp_path):
    outcome = runner.invoke(app, ["guide", str(teachers("bert")), *arguments, "-o", str(tmp_path / "x")])
    assert outcome.exit_code == code
    assert words in outcome.output and "Traceback" not in outcome.output
    assert not (tmp_path / "x").exists()


def test_cli_refuses_unsupported_families_and_existing_outputs(tiny_models, teachers, tmp_path):
    outcome = runner.invoke(app, ["guide", str(tiny_models("deberta-v2")), "--dim", "16", "-o", str(tmp_path / "d")])
    assert outcome.exit_code == 3 and "deberta-v2" in outcome.output
    (tmp_path / "exists").mkdir()
    outcome = runner.invoke(app, ["guide", str(teachers("bert")), "--dim", "16", "-o", str(tmp_path / "exists")])
    assert outcome.exit_code == 5 and "--force" in outcome.output
