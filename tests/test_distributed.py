"""Training under ``torchrun --nproc_per_node 2`` on the CPU (gloo), as a user would launch it.

Both ranks train (the manifest records world size 2 and each step's loss is the mean over the ranks), only
rank 0 writes (one output, one printed summary, checkpoints removed), and the output matches its manifest.
Distillation (MSE, a per-example loss) and contrastive fine-tuning over the same global batch follow the
one-process run step for step: fine-tuning gathers every process's candidates, so two processes of 2 triplets
score each query against all 8, as one process of 4 triplets does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tiny
from ctxext.manifest import read_manifest, verify

STEPS = 4


def ctxext(arguments: list[str], cwd: Path, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    return subprocess.run(
        [sys.executable, *launcher, "-m", "ctxext", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A dropout-free student (so one and two processes compute the same thing), a teacher, 4 texts and 4
    triplets: one global batch holds all of them, so every step sees the same examples however they are
    split between processes."""
    root = tmp_path_factory.mktemp("distributed")
    student = tiny.make_sentence_transformer("bert", root / "student")
    config = json.loads((student / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (student / "config.json").write_text(json.dumps(config))
    tiny.make_sentence_transformer("bert", root / "teacher")
    rng = np.random.default_rng(0)

    def words(count: int) -> str:
        return " ".join(rng.choice(tiny.WORDS, count))

    (root / "texts.jsonl").write_text("".join(json.dumps({"text": words(12)}) + "\n" for _ in range(4)))
    triplets = [{"query": words(5), "positive": words(20), "negative": words(20)} for _ in range(4)]
    (root / "triplets.jsonl").write_text("".join(json.dumps(t) + "\n" for t in triplets))
    return root


def distill(work: Path, out: str, processes: int, batch_size: int) -> subprocess.CompletedProcess:
    arguments = ["distill", "student", "--teacher", "teacher", "--data", "texts.jsonl", "--max-len", "32"]
    arguments += ["--steps", str(STEPS), "--batch-size", str(batch_size), "--log-every", "1", "--json", "-o", out]
    return ctxext(arguments, work, processes)


def written_by_one_rank(work: Path, out: str, result: subprocess.CompletedProcess) -> dict:
    """The output is complete and matches its manifest; one summary was printed; no checkpoints are left."""
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('"output"') == 1  # rank 1 wrote and printed nothing
    assert verify(work / out).tensors_checked > 0
    assert not (work / f"{out}.checkpoints").exists()
    parameters = read_manifest(work / out)["operations"][0]["parameters"]
    assert parameters["world_size"] == 2 and parameters["global_step"] == STEPS
    return parameters


def test_distill_on_two_processes_follows_one_process_with_the_same_global_batch(work):
    two = written_by_one_rank(work, "two", distill(work, "two", processes=2, batch_size=2))
    assert distill(work, "one", processes=1, batch_size=4).returncode == 0
    one = read_manifest(work / "one")["operations"][0]["parameters"]
    losses_one, losses_two = (np.array(p["loss_history"]["train"]) for p in (one, two))
    assert losses_two.shape == (STEPS, 2) and np.abs(losses_one - losses_two).max() <= 2e-4  # logged to 4 digits
    from safetensors.numpy import load_file

    weights_one, weights_two = (load_file(work / name / "model.safetensors") for name in ("one", "two"))
    assert max(float(np.abs(weights_one[k] - weights_two[k]).max()) for k in weights_one) < 1e-5


def finetune(work: Path, out: str, processes: int, batch_size: int) -> subprocess.CompletedProcess:
    arguments = ["finetune", "student", "--data", "triplets.jsonl", "--max-len", "32", "--query-max-len", "16"]
    arguments += ["--steps", str(STEPS), "--batch-size", str(batch_size), "--log-every", "1", "--json", "-o", out]
    return ctxext(arguments, work, processes)


def test_finetune_on_two_processes_shares_negatives_and_follows_one_process(work):
    two = written_by_one_rank(work, "tuned-two", finetune(work, "tuned-two", processes=2, batch_size=2))
    assert finetune(work, "tuned-one", processes=1, batch_size=4).returncode == 0
    one = read_manifest(work / "tuned-one")["operations"][0]["parameters"]
    losses_one, losses_two = (np.array(p["loss_history"]["train"]) for p in (one, two))
    assert abs(losses_two[0, 1] - np.log(8)) < 0.5  # each query against all 8 candidates, not its process's 4
    assert two["candidates_per_query"] == one["candidates_per_query"] == 8
    assert losses_two.shape == (STEPS, 2) and np.abs(losses_one - losses_two).max() <= 2e-4
