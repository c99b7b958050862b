"""A hub source at a named revision: ``--revision`` reaches the download, and the manifest records the
revision asked for and the commit the files came from (read from a local Hugging Face cache, offline)."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from ctxext.cli import app

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_revision_is_used_and_recorded_with_its_commit(tiny_models, tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--ctxext-tests--tiny-bert"
    shutil.copytree(tiny_models("bert"), repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "v1").write_text(COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()
    arguments = ["interpolate", "ctxext-tests/tiny-bert", "--len", "128", "--tile"]
    result = runner.invoke(app, [*arguments, "--revision", "v1", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    source = json.loads((tmp_path / "out" / "manifest.json").read_text())["sources"]["model"]
    assert source["hub_id"] == "ctxext-tests/tiny-bert" and source["revision"] == "v1" and source["commit"] == COMMIT
    missing = runner.invoke(app, [*arguments, "--revision", "v2", "-o", str(tmp_path / "other")])
    assert missing.exit_code == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "other").exists()
