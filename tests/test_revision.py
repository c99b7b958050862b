"""A hub source at a named revision: ``--revision`` reaches the download, and the manifest records the
revision asked for and the commit the files came from (read from a local Hugging Face cache, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tiny
import train_helpers
from ctxext.cli import app

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HUB_ID = "ctxext-tests/tiny-bert"


def make_hub_cache(cache: Path) -> Path:
    """A Hugging Face cache at ``cache`` holding a tiny sentence-transformers BERT at tag ``v1`` (no ``main``)."""
    repo = cache / "models--ctxext-tests--tiny-bert"
    tiny.make_sentence_transformer("bert", repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v1").write_text(COMMIT)
    return cache


def use_offline_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An offline Hugging Face cache holding a tiny sentence-transformers BERT at tag ``v1`` (no ``main``)."""
    use_offline_cache(make_hub_cache(tmp_path / "hub"), monkeypatch)
    return tmp_path / "hub"


def invoke(*arguments):
    return CliRunner().invoke(app, [str(a) for a in arguments])


def recorded(folder, name: str = "model") -> dict:
    return json.loads((folder / "manifest.json").read_text())["sources"][name]


def test_revision_is_used_and_recorded_with_its_commit(hub, tmp_path):
    arguments = ["interpolate", HUB_ID, "--len", "128", "--tile"]
    result = invoke(*arguments, "--revision", "v1", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    source = recorded(tmp_path / "out")
    assert source["hub_id"] == HUB_ID and source["revision"] == "v1" and source["commit"] == COMMIT
    missing = invoke(*arguments, "--revision", "v2", "-o", tmp_path / "other")
    assert missing.exit_code == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()


def test_inspect_and_average_read_the_revision(hub, tmp_path):
    described = invoke("inspect", HUB_ID, "--revision", "v1", "--json")
    assert described.exit_code == 0, described.output
    assert json.loads(described.stdout)["commit"] == COMMIT
    assert invoke("inspect", HUB_ID, "--json").exit_code == 2  # no main in this cache: the revision mattered
    averaged = invoke("average", HUB_ID, HUB_ID, "--revision", "v1", "-o", tmp_path / "soup")
    assert averaged.exit_code == 0, averaged.output
    assert recorded(tmp_path / "soup", "checkpoint_1")["commit"] == COMMIT


def test_evaluate_scores_the_revision_and_says_which(hub, tmp_path):
    result = invoke(
        "evaluate", HUB_ID, "--revision", "v1", "--lengths", "64", "--documents", 4, "--queries", 2, "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["revision"] == "v1"


def test_distill_reads_a_hub_teacher_at_its_revision(hub, tiny_models, tmp_path):
    texts = train_helpers.write_texts(tmp_path / "t.jsonl")
    arguments = ["distill", tiny_models("bert"), "--teacher", HUB_ID, "--data", texts, "--steps", 1]
    result = invoke(*arguments, "--teacher-revision", "v1", "--batch-size", 2, "--max-len", 32, "-o", tmp_path / "d")
    assert result.exit_code == 0, result.output
    teacher = recorded(tmp_path / "d", "teacher")
    assert teacher["hub_id"] == HUB_ID and teacher["revision"] == "v1" and teacher["commit"] == COMMIT


def test_a_pipeline_config_revision_reaches_the_stages_that_read_the_source():
    from ctxext.pipeline import PIPELINE_STAGES

    config = {"source": HUB_ID, "teacher": HUB_ID, "revision": "v1"}
    firsts = {name: stages[0].arguments(config, {}, None) for name, stages in PIPELINE_STAGES.items()}
    assert all(arguments[-2:] == ["--revision", "v1"] for arguments in firsts.values())
    distill = PIPELINE_STAGES["guide-distill"][2].arguments(config, {"docstrings": "d", "beir": "b"}, Path("student"))
    assert distill[distill.index("--teacher-revision") + 1] == "v1"
    assert "--revision" not in PIPELINE_STAGES["interpolate-finetune"][1].arguments(config, {"triplets": "t"}, "x")


def test_data_commands_read_a_hub_tokenizer_and_encoder_at_the_revision(hub, tmp_path):
    from data_helpers import structured_record, write_jsonl

    write_jsonl(
        tmp_path / "docs.jsonl", [structured_record(t, i, seed=i) for t in ("geology", "cooking") for i in (1, 2)]
    )
    corpus = invoke(
        "data",
        "corpus",
        tmp_path / "docs.jsonl",
        "--tokenizer",
        HUB_ID,
        "--revision",
        "v1",
        "-o",
        tmp_path / "c.parquet",
    )
    assert corpus.exit_code == 0, corpus.output
    tokenizer = json.loads((tmp_path / "c.parquet.manifest.json").read_text())["tokenizer"]
    assert tokenizer["revision"] == "v1" and COMMIT in tokenizer["folder"]
    triplets = invoke(
        "data", "triplets", tmp_path / "docs.jsonl", "--encoder", HUB_ID, "--revision", "v1", "-o", tmp_path / "t.jsonl"
    )
    assert triplets.exit_code == 0, triplets.output
    assert COMMIT in json.loads((tmp_path / "t.jsonl.manifest.json").read_text())["options"]["encoder_folder"]
    unpinned = ["data", "triplets", tmp_path / "docs.jsonl", "--encoder", HUB_ID, "-o", tmp_path / "u.jsonl"]
    assert invoke(*unpinned).exit_code == 2  # no main in this cache: the encoder was read at v1


def test_extend_reads_its_source_at_the_revision_in_every_stage_that_reads_it(tmp_path):
    from ctxext.extend import Recipe, extend_config
    from ctxext.pipeline import PIPELINE_STAGES

    config = extend_config(
        HUB_ID,
        1024,
        "docs",
        tmp_path,
        revision="v1",
        recipe=Recipe.bigbird,
        window=512,
        steps=1,
        held_out=0.2,
        min_tokens=64,
    )
    assert config["data"]["longdoc"]["tokenizer"] == HUB_ID and config["data"]["longdoc"]["revision"] == "v1"
    first = PIPELINE_STAGES[config["pipeline"]][0].arguments(config, {}, None)
    assert first[0] == HUB_ID and first[-2:] == ["--revision", "v1"]


VALID_REVISIONS = ["main", "v1", "refs/pr/1", COMMIT, "release-1.2", "feature/long-context", "v1.0-rc.2"]
INVALID_REVISIONS = [
    "",
    "@",
    "..",
    "../../x",
    "/etc",
    "a/../../b",
    "main/",
    "a//b",
    ".hidden",
    "refs/.x",
    "v1.",
    "v1.lock",
    "refs/heads/x.lock/y",
    "with space",
    "tab\there",
    "new\nline",
    "nul\x00",
    "del\x7f",
    "main@{1}",
    "main~1",
    "main^",
    "a:b",
    "what?",
    "glob*",
    "a[0]",
    "back\\slash",
]


@pytest.mark.parametrize("revision", VALID_REVISIONS)
def test_git_ref_names_are_accepted_as_revisions(revision):
    from ctxext.io import check_revision, revision_problem

    assert revision_problem(revision) is None and check_revision(revision) == revision


@pytest.mark.parametrize("revision", INVALID_REVISIONS, ids=[repr(r) for r in INVALID_REVISIONS])
def test_what_git_refuses_as_a_ref_name_is_refused_as_a_revision_naming_it(revision):
    from ctxext.errors import InvalidArgument
    from ctxext.io import check_revision, resolve_source

    with pytest.raises(InvalidArgument, match="is not a branch, tag or commit name") as raised:
        check_revision(revision)
    assert repr(revision) in str(raised.value)
    with pytest.raises(InvalidArgument):  # before any folder or download is looked at
        resolve_source(HUB_ID, revision=revision)


def test_a_revision_the_cache_lacks_is_one_line_naming_it(hub, tmp_path):
    result = invoke("inspect", HUB_ID, "--revision", "v9")
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no revision 'v9' in the Hugging Face cache" in lines[0], lines
    assert "HF_HUB_OFFLINE is set" in lines[0]
    unknown = invoke("inspect", "ctxext-tests/not-cached", "--revision", "v1")
    assert unknown.exit_code == 2 and "not in the Hugging Face cache" in unknown.stderr


def test_a_revision_with_a_local_folder_or_an_embedded_name_is_refused(tmp_path):
    from ctxext.errors import InvalidArgument
    from ctxext.io import resolve_source

    assert resolve_source(tmp_path).revision is None
    with pytest.raises(InvalidArgument, match="is a local folder"):
        resolve_source(tmp_path, revision="v1")
    with pytest.raises(InvalidArgument, match="'all-MiniLM-L6-v2' is an embedded model"):
        resolve_source("all-MiniLM-L6-v2", revision="main")
