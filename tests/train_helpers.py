"""Tiny training data for the training-stage tests: triplets and texts over the tiny vocabulary."""

from __future__ import annotations

import json
import random
from pathlib import Path

import tiny

STEPS_SETTINGS = {"logging_every": 1, "progress_bars": False, "warmup_ratio": 0.0}


def write_triplets(path: Path, count: int = 8, words: int = 120, seed: int = 0) -> Path:
    """Queries of three topic words; positives mention them often, negatives never."""
    rng = random.Random(seed)
    vocabulary = tiny.WORDS
    lines = []
    for index in range(count):
        topic = vocabulary[index * 3 : index * 3 + 3]
        others = [w for w in vocabulary if w not in topic]
        positive = " ".join(rng.choice(topic) if rng.random() < 0.3 else rng.choice(others) for _ in range(words))
        negative = " ".join(rng.choice(others) for _ in range(words))
        lines.append(
            json.dumps(
                {
                    "query": {"text": " ".join(topic), "kind": "title", "heading": None},
                    "positive": {"doc_id": f"p{index}", "title": None, "abstract": positive},
                    "negative": {"doc_id": f"n{index}", "title": "the", "abstract": negative},
                }
            )
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def write_texts(path: Path, count: int = 32, words: int = 20, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path.write_text(
        "".join(
            json.dumps({"text": " ".join(rng.choice(tiny.WORDS) for _ in range(words))}) + "\n" for _ in range(count)
        )
    )
    return path


def StopAt(step: int):  # noqa: N802  # reads as the callback class it builds
    """A TrainerCallback that stops training after ``step`` (a run interrupted after a checkpoint)."""
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step:
                control.should_training_stop = True
                control.should_save = True

    return Stop()


def assert_resumed_like_uninterrupted(resumed, whole, work: Path, stopped_at: int, steps: int) -> None:
    """A run resumed from ``checkpoint-<stopped_at>`` logged every step, matches the run that was never stopped
    (losses to 1e-4, weights to 1e-5), records where it resumed from and removed its work folder."""
    import numpy as np
    from safetensors.torch import load_file

    assert resumed.global_step == steps
    assert [step for step, _ in resumed.history["train"]] == list(range(1, steps + 1))
    assert np.allclose(resumed.history["train"], whole.history["train"], atol=1e-4)
    expected, produced = load_file(whole.path / "model.safetensors"), load_file(resumed.path / "model.safetensors")
    assert expected.keys() == produced.keys()
    assert max((expected[k] - produced[k]).abs().max().item() for k in expected) < 1e-5
    assert resumed.parameters["resumed_from"].endswith(f"checkpoint-{stopped_at}")
    assert not work.exists()  # removed after the successful run (no --keep-checkpoints)
