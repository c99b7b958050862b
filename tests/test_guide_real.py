"""GUIDE on the real all-mpnet-base-v2 (768 wide) -> a 384-wide student, against random init (slow)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ctxext.data.pydocs import python_docstrings
from ctxext.guide import Init
from ctxext.train.mlm import split_held_out
from ctxext.train.runner import TrainSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.guide import Variant, compare_initialisations  # noqa: E402  (an experiment: it trains)


@pytest.mark.slow
def test_guide_student_is_ahead_of_random_init_after_20_mlm_steps(mpnet, tmp_path):
    """Same data, steps, seed and held-out masks; a small budget (384 x 4, 20 steps of 8 x 64 tokens).
    Measured: random 7.30, GUIDE 6.94. The lead is early: in a 60-step run random init catches up on the
    unigram plateau and ends 0.1 lower (docs/guide.md, benchmarks/guide.py)."""
    train, held_out = split_held_out(python_docstrings(), 0.1)
    settings = TrainSettings(
        steps=20,
        batch_size=8,
        learning_rate=1e-3,
        warmup_ratio=0.1,
        eval_every=20,
        progress_bars=False,
        logging_every=5,
    )
    results = compare_initialisations(
        mpnet,
        384,
        4,
        train[:200],
        held_out[:24],
        embed_texts=held_out[:48],
        max_len=64,
        settings=settings,
        variants=(Variant("random", Init.none), Variant("GUIDE", Init.first)),
        work_dir=tmp_path,
    )
    random_init, guided = results["random"], results["GUIDE"]
    print({name: {k: v for k, v in r.items() if k != "train"} for name, r in results.items()})
    assert guided["final_loss"] < random_init["final_loss"] - 0.1
    assert 0.7 < guided["explained_variance_ratio"] < 0.85  # PCA of the real table keeps ~76% at 384 dims
    for result in results.values():
        assert -1.0 <= result["agreement_start"] <= 1.0 and -1.0 <= result["agreement_end"] <= 1.0
