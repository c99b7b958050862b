from __future__ import annotations

import json
from pathlib import Path

import pytest

import train_helpers
from ctxext.train import RunOptions, TrainSettings, train_mlm

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return train_helpers.write_texts(tmp_path_factory.mktemp("mlm") / "texts.jsonl", count=48, words=30)


def test_mlm_resumes_from_a_checkpoint_and_finishes_the_run(tiny_models, texts, tmp_path):
    import train_helpers

    checkpoint = tiny_models("bert")
    settings = TrainSettings(steps=4, batch_size=4, learning_rate=1e-3, save_every=2, **train_helpers.STEPS_SETTINGS)
    work = tmp_path / "work"
    train_mlm(
        str(checkpoint),
        [texts],
        tmp_path / "half",
        max_len=16,
        settings=settings,
        run_options=RunOptions(work_dir=work, keep_checkpoints=True, callbacks=[train_helpers.StopAt(2)]),
    )
    assert (work / "checkpoint-2").is_dir()
    resumed = train_mlm(
        str(checkpoint),
        [texts],
        tmp_path / "out",
        max_len=16,
        settings=settings,
        run_options=RunOptions(work_dir=work, resume=True),
    )
    assert resumed.global_step == 4 and [s for s, _ in resumed.history["train"]] == [1, 2, 3, 4]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["operations"][0]["parameters"]["resumed_from"].endswith("checkpoint-2")


def test_mlm_loss_falls_over_a_few_steps(tiny_models, texts, tmp_path):
    settings = TrainSettings(steps=12, batch_size=8, learning_rate=3e-3, save_every=100, **train_helpers.STEPS_SETTINGS)
    result = train_mlm(str(tiny_models("bert")), [texts], tmp_path / "out", max_len=16, settings=settings)
    losses = [loss for _, loss in result.history["train"]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def _pipeline(config, work, **overrides):
    import runpy
    import sys

    argv = ["pipeline.py", str(ROOT / "configs" / config), "--work", str(work)]
    for key, value in overrides.items():
        argv += ["--set", f"{key}={value}"]
    saved = sys.argv
    sys.argv = argv
    try:
        runpy.run_path(str(ROOT / "scripts" / "pipeline.py"), run_name="__main__")
    except SystemExit as error:
        assert not error.code, error.code
    finally:
        sys.argv = saved


def test_tiny_guide_mlm_distill_pipeline_writes_every_stage_with_a_manifest(tmp_path):
    import tiny

    teacher = tiny.make_sentence_transformer("bert", tmp_path / "teacher")
    _pipeline("ci_guide_distill.json", tmp_path / "run", teacher=teacher)
    for stage in ("student", "student-mlm", "student-distilled"):
        assert (tmp_path / "run" / stage / "manifest.json").is_file(), stage
    assert (tmp_path / "run" / "student-distilled" / "pca_projection.safetensors").is_file()
    assert (tmp_path / "run" / "evaluate.png").is_file()


def test_tiny_transfer_finetune_pipeline_writes_every_stage_with_a_manifest(tmp_path):
    import tiny

    source = tiny.make_sentence_transformer("bert", tmp_path / "source")
    _pipeline("ci_transfer_finetune.json", tmp_path / "run", source=source)
    manifest = json.loads((tmp_path / "run" / "bigbird-finetuned" / "manifest.json").read_text())
    assert manifest["operations"][0]["parameters"]["attention_runs"] == {"block_sparse": 2}
    assert (tmp_path / "run" / "evaluate.png").is_file()


def test_tiny_interpolate_finetune_pipeline_fine_tunes_the_stretched_model(tmp_path):
    import tiny

    source = tiny.make_sentence_transformer("bert", tmp_path / "source")
    _pipeline("ci_interpolate_finetune.json", tmp_path / "run", source=source)
    manifest = json.loads((tmp_path / "run" / "interpolated-finetuned" / "manifest.json").read_text())
    parameters = manifest["operations"][0]["parameters"]
    assert parameters["max_len"] == 128 and parameters["global_step"] == 2
    assert json.loads((tmp_path / "run" / "interpolated" / "config.json").read_text())["max_position_embeddings"] == 256
    assert (tmp_path / "run" / "evaluate.png").is_file()


def test_ctxext_pipeline_reads_yaml_skips_finished_stages_and_replaces_its_plot_on_a_rerun(tmp_path):
    import yaml
    from typer.testing import CliRunner

    import tiny
    from ctxext.cli import app

    source = tiny.make_sentence_transformer("bert", tmp_path / "source")
    config = json.loads((ROOT / "configs" / "ci_interpolate_finetune.json").read_text())
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config))
    arguments = [
        "pipeline",
        str(tmp_path / "pipeline.yaml"),
        "--work",
        str(tmp_path / "run"),
        "--set",
        f"source={source}",
    ]
    first = CliRunner().invoke(app, arguments)
    assert first.exit_code == 0, first.stderr
    stretched = (tmp_path / "run" / "interpolated" / "manifest.json").read_bytes()
    second = CliRunner().invoke(app, arguments)
    assert second.exit_code == 0, second.stderr
    assert "skip interpolate" in second.stdout and "skip finetune" in second.stdout
    assert (tmp_path / "run" / "interpolated" / "manifest.json").read_bytes() == stretched
    assert (tmp_path / "run" / "evaluate.png.manifest.json").is_file()


def test_a_config_that_names_no_known_pipeline_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from ctxext.cli import app

    (tmp_path / "bad.json").write_text(json.dumps({"pipeline": "vibes"}))
    result = CliRunner().invoke(app, ["pipeline", str(tmp_path / "bad.json"), "--work", str(tmp_path / "run")])
    assert result.exit_code == 4 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'bad.json'}: 'pipeline' must be one of guide-distill, transfer-finetune, "
        "interpolate-finetune, interpolate-finetune-transfer-finetune"
    ]


def test_pipeline_docstrings_come_from_the_listed_packages_never_a_held_out_one(tmp_path, monkeypatch):
    from ctxext.data.pydocs import HELD_OUT_PACKAGES
    from ctxext.errors import InvalidArgument
    from ctxext.pipeline import build_data

    monkeypatch.setenv("CTXEXT_CACHE", str(tmp_path / "cache"))
    held_out = HELD_OUT_PACKAGES["test"][0]
    with pytest.raises(InvalidArgument, match=held_out):
        build_data(tmp_path, {"data": {"docstrings": {"packages": ["stdlib", held_out]}}})
    path = build_data(tmp_path, {"data": {"docstrings": {"packages": ["packaging"], "limit": 5}}})["docstrings"]
    assert len(path.read_text().splitlines()) == 5


def test_tiny_long_document_pipeline_trains_new_rows_and_evaluates_on_longdoc(tmp_path, capsys):
    import tiny

    source = tiny.make_sentence_transformer("bert", tmp_path / "source")
    _pipeline("ci_longdoc_positions.json", tmp_path / "run", source=source)
    manifest = json.loads((tmp_path / "run" / "interpolated-finetuned" / "manifest.json").read_text())
    assert manifest["options"]["positions_only"] is True
    assert (tmp_path / "run" / "longdoc" / "dev" / "qrels" / "test.tsv").is_file()
    printed = capsys.readouterr().out
    assert "mean of 64-token chunks" in printed and "MRR, 0-512" in printed


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (ROOT / "configs").glob("*.json") if p.name != "qa_special_tokens.json")
)
def test_every_shipped_config_is_checked_in_full_into_typed_steps(name, tmp_path):
    from ctxext.cli.pipeline import stage_arguments
    from ctxext.pipeline import check_config, read_config

    config = read_config(ROOT / "configs" / name)
    plan = check_config(config, name, tmp_path / "run", stage_arguments)
    steps = [*plan.data_steps.values(), *plan.stages, *plan.evaluations]
    assert [step.out.parent for step in plan.stages] == [tmp_path / "run"] * len(plan.stages)
    assert all(isinstance(step.arguments["force"], bool) for step in steps)
    for step in plan.stages:  # every option the config sets reaches the call, typed
        section = config.get(step.section.split(": ")[-1], {})
        assert all(key in step.values for key in section)
    assert not (tmp_path / "run").exists()


def test_a_misspelt_option_in_the_last_stage_is_one_usage_error_naming_it_before_anything_runs(tmp_path):
    import time

    from ctxext.cli.pipeline import stage_arguments
    from ctxext.errors import InvalidArgument
    from ctxext.pipeline import check_config, read_config

    config = read_config(ROOT / "configs" / "specter2_bigbird_minilm.json")
    config["finetune"]["stepz"] = 3
    started = time.monotonic()
    with pytest.raises(InvalidArgument, match=r"finetune: no such option: --stepz \(did you mean --steps\?\)"):
        check_config(config, "c.json", tmp_path / "run", stage_arguments)
    assert time.monotonic() - started < 2 and not (tmp_path / "run").exists()


def test_a_false_value_turns_off_an_option_that_defaults_to_on(tmp_path):
    from ctxext.cli.pipeline import stage_arguments
    from ctxext.pipeline import check_config, read_config

    config = read_config(ROOT / "configs" / "ci_transfer_finetune.json")
    config["transfer"]["check"] = False
    config["finetune"]["gradient_checkpointing"] = False
    transfer, finetune = check_config(config, "c.json", tmp_path, stage_arguments).stages
    assert transfer.arguments["check"] is False and finetune.arguments["gradient_checkpointing"] is False
    assert transfer.arguments["target_length"] == 256 and finetune.arguments["data"] == [tmp_path / "triplets.jsonl"]
