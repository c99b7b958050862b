"""Bad input: one line, a non-zero exit, no traceback, and nothing left on disk."""

from __future__ import annotations

import json
import struct

import pytest
from typer.testing import CliRunner

from ctxext.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, text


def assert_nothing_written(parent, name: str = "out") -> None:
    leftovers = [p.name for p in parent.iterdir() if name in p.name]
    assert leftovers == [], leftovers


def test_missing_folder(tmp_path):
    result = run("interpolate", tmp_path / "nope", "--len", 128, "-o", tmp_path / "out")
    assert_one_line_error(result, "does not exist")
    assert_nothing_written(tmp_path)


def test_folder_without_weights(tiny_models, tmp_path):
    source = tiny_models("bert", copy_to=tmp_path / "src")
    (source / "model.safetensors").unlink()
    result = run("interpolate", source, "--len", 128, "-o", tmp_path / "out")
    assert_one_line_error(result, "has no weights")
    assert_nothing_written(tmp_path)


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("interpolate", tmp_path / "empty", "--len", 128, "-o", tmp_path / "out")
    assert_one_line_error(result, "no config.json")


def test_unsupported_architecture(tiny_models, tmp_path):
    result = run("interpolate", tiny_models("deberta-v2"), "--len", 128, "-o", tmp_path / "out")
    assert_one_line_error(result, "relative positions", "no learned absolute position table")
    assert_nothing_written(tmp_path)


def test_unknown_model_type(tiny_models, tmp_path):
    source = tiny_models("bert", copy_to=tmp_path / "src")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "model_type": "mystery"}))
    result = run("interpolate", source, "--len", 128, "-o", tmp_path / "out")
    assert_one_line_error(result, "'mystery' is not supported")


@pytest.mark.parametrize("length", [64, 32])
def test_length_not_above_current(tiny_models, tmp_path, length):
    result = run("interpolate", tiny_models("bert"), "--len", length, "-o", tmp_path / "out")
    assert_one_line_error(result, f"--len {length} is not above the current length 64")
    assert_nothing_written(tmp_path)


def test_existing_output_is_refused_without_force_and_replaced_with_it(tiny_models, tmp_path):
    assert run("interpolate", tiny_models("bert"), "--len", 96, "-o", tmp_path / "out", "--no-check").exit_code == 0
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = run("interpolate", tiny_models("bert"), "--len", 128, "-o", tmp_path / "out")
    assert_one_line_error(result, "already exists", "--force")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    forced = run("interpolate", tiny_models("bert"), "--len", 128, "-o", tmp_path / "out", "--force", "--no-check")
    assert forced.exit_code == 0, forced.output
    assert not (tmp_path / "out" / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_refuses_a_folder_that_ctxext_did_not_write(tiny_models, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = run("interpolate", tiny_models("bert"), "--len", 128, "-o", tmp_path / "out", "--force")
    assert_one_line_error(result, "not a ctxext output")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("corruption", ["huge header length", "not json", "offsets past the end", "truncated"])
def test_corrupt_safetensors(tiny_models, tmp_path, corruption):
    source = tiny_models("bert", copy_to=tmp_path / "src")
    weights = source / "model.safetensors"
    raw = weights.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    if corruption == "huge header length":
        raw = struct.pack("<Q", 2**40) + raw[8:]
    elif corruption == "not json":
        raw = raw[:8] + b"{" * header_len + raw[8 + header_len :]
    elif corruption == "offsets past the end":
        header = json.loads(raw[8 : 8 + header_len])
        name = next(k for k in header if k != "__metadata__")
        header[name]["data_offsets"][1] += 10**9
        encoded = json.dumps(header).encode()
        raw = struct.pack("<Q", len(encoded)) + encoded + raw[8 + header_len :]
    else:
        raw = raw[: len(raw) // 2]
    weights.write_bytes(raw)
    result = run("interpolate", source, "--len", 128, "-o", tmp_path / "out")
    assert_one_line_error(result, "model.safetensors")
    assert_nothing_written(tmp_path)


def test_failure_while_writing_leaves_no_output(tiny_models, tmp_path, monkeypatch):
    import ctxext.io

    calls = {"n": 0}
    original = ctxext.io.SafetensorsFile.chunks

    def failing_chunks(self, name, chunk_bytes=ctxext.io.CHUNK_BYTES):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(28, "No space left on device")
        return original(self, name, chunk_bytes)

    monkeypatch.setattr(ctxext.io.SafetensorsFile, "chunks", failing_chunks)
    result = run("interpolate", tiny_models("bert"), "--len", 128, "-o", tmp_path / "out", "--no-check")
    assert_one_line_error(result, "disk full")
    assert_nothing_written(tmp_path)


def test_interrupt_while_writing_leaves_no_output(tiny_models, tmp_path, monkeypatch):
    import ctxext.io

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ctxext.io, "write_json", interrupted)
    result = run("interpolate", tiny_models("bert"), "--len", 128, "-o", tmp_path / "out")
    assert result.exit_code == 130
    assert_nothing_written(tmp_path)


def test_malicious_pickle_is_refused(tiny_models, tmp_path):
    import pickle

    source = tiny_models("bert", copy_to=tmp_path / "src")
    (source / "model.safetensors").unlink()

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(source / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"x": Exploit()}, handle)
    result = run("interpolate", source, "--len", 128, "-o", tmp_path / "out")
    assert_one_line_error(result, "weights_only=True")
    assert "pwned" not in result.output


def test_two_methods_at_once(tiny_models, tmp_path):
    result = run("interpolate", tiny_models("bert"), "--len", 128, "--tile", "--spline", "-o", tmp_path / "out")
    assert_one_line_error(result, "choose one of")


def test_verify_on_folder_without_manifest(tiny_models):
    result = run("verify", tiny_models("bert"))
    assert_one_line_error(result, "no manifest.json")


def test_offline_hub_id_not_cached_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    result = run("interpolate", "someone/some-bert", "--len", 1024, "-o", tmp_path / "out")
    assert_one_line_error(result, "someone/some-bert", "not in the Hugging Face cache")


def test_inspect_json_reports_positions(tiny_models):
    result = run("inspect", tiny_models("roberta"), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["positions"] == {"kind": "learned absolute", "length": 64, "offset": 2, "rows": 66}
    assert data["model_type"] == "roberta" and data["parameters"] > 0
