"""ctxext's distillation loop (`ctxext distill`) against sentence-transformers' trainer with `MSELoss`, side by
side in one run: the same student, the same PCA-projected teacher targets (ctxext's cache), the same texts, batch,
learning rate, schedule and steps. Each arm runs in its own process (so its peak memory is its own): median
seconds per step after warm-up, peak RSS, the last logged loss, and nDCG@10 / Acc@1 on the retrieval set after.

    python benchmarks/distill.py --steps 400   # builds the student and texts this reuses
    python benchmarks/distill_loop.py --steps 60

Needs the `bench` extra (sentence-transformers' trainer needs `datasets`).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from distill import score_rows, training_settings  # this folder is on sys.path when run as a script

ARMS = ("ctxext", "sentence-transformers")
WARM_UP_STEPS = 5
TARGETS = {"pca_sample": 20000, "teacher_batch_size": 32}
"""How both arms get the teacher's targets: passed to ``distill`` and to ``distill_targets`` alike."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--work", type=Path, default=None, help="benchmarks/distill.py's folder")
    parser.add_argument("--student", default="guide-384x6-mlm-texts-4000-code0.5-beir300-200")
    parser.add_argument("--texts", default="texts-4000-code0.5-beir300.jsonl")
    parser.add_argument("--beir", default="pydocs-beir-300")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/distill-loop-cpu.json"))
    arguments = parser.parse_args()

    from ctxext.presets import cache_dir

    arguments.work = arguments.work or cache_dir() / "bench-distill"
    if arguments.arm:
        arguments.out.write_text(json.dumps(run_arm(arguments)))
        return
    for needed in (arguments.student, arguments.texts, arguments.beir):
        if not (arguments.work / needed).exists():
            sys.exit(f"{arguments.work / needed} is missing: run benchmarks/distill.py first")
    rows = {arm: arm_in_subprocess(arm, arguments) for arm in ARMS}
    print_rows(rows, arguments)
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    options = {k: str(v) for k, v in vars(arguments).items() if k not in ("arm", "out")}
    arguments.json.write_text(json.dumps({"options": options, "rows": rows}, indent=2))
    print(f"saved {arguments.json}")


def arm_in_subprocess(arm: str, arguments: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "row.json"
        forwarded = [f"--{k.replace('_', '-')}={v}" for k, v in vars(arguments).items() if k not in ("arm", "out")]
        subprocess.run([sys.executable, __file__, *forwarded, f"--arm={arm}", f"--out={out}"], check=True)
        return json.loads(out.read_text())


def run_arm(arguments: argparse.Namespace) -> dict[str, Any]:
    """Train one arm for ``--steps`` in this process; its timing, memory, loss and retrieval scores."""
    timer = step_timer()
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "student"
        train = train_with_ctxext if arguments.arm == "ctxext" else train_with_sentence_transformers
        started = time.perf_counter()
        last_loss = train(arguments, out, timer)
        wall = time.perf_counter() - started
        scores = score_rows([(arguments.arm, str(out))], arguments.work / arguments.beir, arguments.max_len)
    step_seconds = [b - a for a, b in zip(timer.ends[:-1], timer.ends[1:], strict=True)][WARM_UP_STEPS:]
    return {
        "median_s_per_step": statistics.median(step_seconds),
        "wall_s": wall,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "last_loss": last_loss,
        "ndcg_at_10": scores[arguments.arm]["ndcg_at_10"],
        "acc_at_1": scores[arguments.arm]["acc_at_1"],
    }


def step_timer() -> Any:
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.ends.append(time.perf_counter())

    return StepTimer()


def settings_for(arguments: argparse.Namespace) -> Any:
    return training_settings(arguments.steps, arguments.batch_size, arguments.lr, logging_every=5)


def train_with_ctxext(arguments: argparse.Namespace, out: Path, timer: Any) -> float:
    from ctxext.train import RunOptions
    from ctxext.train.distill import distill

    result = distill(
        str(arguments.work / arguments.student),
        str(teacher()),
        [arguments.work / arguments.texts],
        out,
        max_len=arguments.max_len,
        settings=settings_for(arguments),
        cache=teacher_cache(),
        run_options=RunOptions(callbacks=[timer]),
        **TARGETS,
    )
    return float(result.history["train"][-1][1])


def train_with_sentence_transformers(arguments: argparse.Namespace, out: Path, timer: Any) -> float:
    """The same targets ctxext computes (teacher cache, PCA), trained by SentenceTransformerTrainer + MSELoss."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers import SentenceTransformerTrainingArguments as Arguments
    from sentence_transformers.sentence_transformer.losses import MSELoss

    from ctxext.encode import sentence_transformers_settings
    from ctxext.io import open_model
    from ctxext.train.distill import distill_targets
    from ctxext.train.runner import training_arguments

    settings = settings_for(arguments)
    _, folder = open_model(arguments.work / arguments.student)
    _, normalize, _ = sentence_transformers_settings(folder)
    goal = distill_targets(
        teacher(),
        [arguments.work / arguments.texts],
        int(folder.config["hidden_size"]),
        normalize,
        arguments.max_len,
        pca_sample=TARGETS["pca_sample"],
        seed=settings.seed,
        cache=teacher_cache(),
        batch_size=TARGETS["teacher_batch_size"],
    )
    model = SentenceTransformer(str(folder.root), device="cpu")
    model.max_seq_length = arguments.max_len
    dataset = Dataset.from_dict({"text": goal.texts, "label": goal.targets.tolist()})
    # ctxext's own TrainingArguments for these settings, carried over field by field: the same schedule
    ours = training_arguments(out.with_name("st-work"), settings, save=False)
    training = Arguments(**{f.name: getattr(ours, f.name) for f in fields(ours) if f.init})
    trainer = SentenceTransformerTrainer(
        model=model, args=training, train_dataset=dataset, loss=MSELoss(model), callbacks=[timer]
    )
    trainer.train()
    model.save(str(out))
    return float([entry["loss"] for entry in trainer.state.log_history if "loss" in entry][-1])


def teacher_cache() -> Path:
    from ctxext.presets import cache_dir

    return cache_dir() / "distill"


def teacher() -> Path:
    from ctxext.presets import mpnet_path

    return mpnet_path()


def print_rows(rows: dict[str, dict[str, float]], arguments: argparse.Namespace) -> None:
    print(f"\n{arguments.steps} distillation steps, batch {arguments.batch_size}, {arguments.max_len} tokens, CPU")
    print(f"{'trainer':<24}{'s/step':>8}{'peak GiB':>10}{'last loss':>11}{'nDCG@10':>9}{'Acc@1':>8}")
    for arm, row in rows.items():
        print(
            f"{arm:<24}{row['median_s_per_step']:>8.2f}{row['peak_rss_gib']:>10.2f}{row['last_loss']:>11.5f}"
            f"{row['ndcg_at_10']:>9.3f}{row['acc_at_1']:>8.3f}"
        )
    ctxext, other = rows["ctxext"], rows["sentence-transformers"]
    ratio = other["median_s_per_step"] / ctxext["median_s_per_step"]
    print(f"sentence-transformers / ctxext seconds per step: {ratio:.2f}")


if __name__ == "__main__":
    main()
