"""GUIDE against random init and weight selection: masked-LM on the same data, steps and seed.

Teacher: the real all-mpnet-base-v2 (768 wide, 12 layers); student: 384 wide. Text: docstrings of the Python
standard library (no downloads), split into train and held-out parts by name. Prints a table (held-out MLM
loss at step 0 and at the end, rank correlation of the student's pairwise sentence similarities with the
teacher's at step 0 and at the end) and saves a PNG of held-out loss against step, plus the numbers as JSON.

    python benchmarks/guide.py                          # 12 layers, 300 steps, seeds 0,1,2
    python benchmarks/guide.py --layers 4 --steps 60 --eval-every 15 --held-out-docs 24 --train-docs 400

The comparison itself (``compare_initialisations``) lives here, not in ``ctxext.guide``: it trains, and the
surgery module does not depend on ``ctxext.train``. Tests import it from here.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ctxext.checkpoint import ProgressFn, no_progress  # noqa: E402
from ctxext.guide import Init, Projection, Select, build_student  # noqa: E402
from ctxext.io import open_model  # noqa: E402

# ----------------------------------------------------------------------------- measuring agreement


def similarity_rank_correlation(student_embeddings: np.ndarray, teacher_embeddings: np.ndarray) -> float:
    """Spearman correlation between the two models' pairwise cosine similarities over the same texts."""
    from scipy.stats import spearmanr

    def pairwise(embeddings: np.ndarray) -> np.ndarray:
        unit = embeddings / np.clip(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12, None)
        similarity = unit @ unit.T
        return similarity[np.triu_indices(len(unit), k=1)]

    return float(spearmanr(pairwise(student_embeddings), pairwise(teacher_embeddings)).statistic)


# ----------------------------------------------------------------------------- GUIDE against baselines


@dataclass
class Variant:
    """One way to initialise the student, for comparisons."""

    name: str
    init: Init = Init.first
    select: Select = Select.norm
    projection: Projection = Projection.pca


STANDARD_VARIANTS = (
    Variant("random", Init.none),
    Variant("weight selection (even, uniform)", Init.uniform, Select.even, Projection.even),
    Variant("GUIDE first block", Init.first),
    Variant("GUIDE uniform", Init.uniform),
)


@dataclass
class Comparison:
    """What every variant shares: the teacher, the packed data, the held-out masks and the texts embedded."""

    teacher: str | Path
    dim: int
    layers: int
    tokenizer: Any
    train_sequences: Any
    held_out: Any
    embed_texts: list[str]
    teacher_embeddings: np.ndarray
    max_len: int
    mask: float
    settings: Any
    seed: int


def compare_initialisations(
    teacher: str | Path,
    dim: int,
    layers: int,
    train_texts: list[str],
    held_out_texts: list[str],
    *,
    variants: tuple[Variant, ...] = STANDARD_VARIANTS,
    embed_texts: list[str] | None = None,
    max_len: int = 64,
    mask: float = 0.3,
    settings: Any = None,
    work_dir: Path,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> dict[str, dict[str, Any]]:
    """Train each variant with masked-LM on the same packed data, same steps, same seed; report the held-out
    loss (same masks for all) at step 0 and every ``settings.eval_every`` steps, and the Spearman correlation
    between the student's and the teacher's pairwise similarities of ``embed_texts`` (teacher pooling) at
    step 0 and after training."""
    from ctxext.encode import load_encoder
    from ctxext.train.mlm import masked_held_out, pack_documents
    from ctxext.train.runner import ListDataset, TrainSettings

    settings = settings or TrainSettings(steps=50, batch_size=16, eval_every=10, progress_bars=False)
    teacher_encoder = load_encoder(teacher, max_length=max_len)
    tokenizer = teacher_encoder.tokenizer
    embed_texts = embed_texts or held_out_texts[:64]
    teacher_embeddings = teacher_encoder.encode(embed_texts)
    del teacher_encoder
    comparison = Comparison(
        teacher,
        dim,
        layers,
        tokenizer,
        pack_documents(tokenizer, train_texts, max_len),
        ListDataset(masked_held_out(tokenizer, pack_documents(tokenizer, held_out_texts, max_len), mask)),
        embed_texts,
        teacher_embeddings,
        max_len,
        mask,
        settings,
        seed,
    )
    results: dict[str, dict[str, Any]] = {}
    for number, variant in enumerate(variants):
        progress("variants", number, len(variants))
        results[variant.name] = train_variant(comparison, variant, work_dir / f"variant-{number}")
    progress("variants", len(variants), len(variants))
    return results


def train_variant(comparison: Comparison, variant: Variant, work_dir: Path) -> dict[str, Any]:
    """One variant: its student, masked-LM training, held-out loss and agreement with the teacher."""
    from ctxext.encode import Encoder, sentence_transformers_settings
    from ctxext.train.mlm import mlm_trainer
    from ctxext.train.runner import loss_history

    started = time.perf_counter()
    student = build_student(
        comparison.teacher,
        dim=comparison.dim,
        layers=comparison.layers,
        init=variant.init,
        select=variant.select,
        projection=variant.projection,
        seed=comparison.seed,
    )
    model = student.model
    _, folder = open_model(comparison.teacher)
    pooling, normalize, _ = sentence_transformers_settings(folder)
    encoder = Encoder(
        model=model.base_model,
        tokenizer=comparison.tokenizer,
        pooling=pooling or "mean",
        normalize=normalize,
        max_length=comparison.max_len,
    )
    agreement_start = similarity_rank_correlation(encoder.encode(comparison.embed_texts), comparison.teacher_embeddings)
    trainer = mlm_trainer(
        model,
        comparison.tokenizer,
        comparison.train_sequences,
        comparison.held_out,
        mask=comparison.mask,
        settings=comparison.settings,
        work_dir=work_dir,
        save=False,
    )
    start_loss = float(trainer.evaluate()["eval_loss"])
    trainer.train()
    history = loss_history(trainer)
    model.eval()
    agreement_end = similarity_rank_correlation(encoder.encode(comparison.embed_texts), comparison.teacher_embeddings)
    return {
        "eval": [[0, start_loss], *history["eval"]],
        "train": history["train"],
        "final_loss": history["eval"][-1][1] if history["eval"] else start_loss,
        "agreement_start": agreement_start,
        "agreement_end": agreement_end,
        "explained_variance_ratio": student.projection.explained_variance_ratio,
        "seconds": time.perf_counter() - started,
    }


TRAINING_ARGUMENTS = (
    "dim",
    "layers",
    "steps",
    "batch_size",
    "max_len",
    "lr",
    "train_docs",
    "held_out_docs",
    "eval_every",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-docs", type=int, default=1200)
    parser.add_argument("--held-out-docs", type=int, default=48)
    parser.add_argument("--eval-every", type=int, default=0, help="default: steps / 10")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; one JSON per seed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.eval_every = args.eval_every or max(1, args.steps // 10)

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"guide-{args.dim}x{args.layers}-{args.steps}steps"
    by_seed = {seed: seed_results(args, seed, args.out / f"{stem}-seed{seed}.json") for seed in parse_seeds(args.seeds)}
    summary = summarise(by_seed)
    print_summary(args, summary)
    (args.out / f"{stem}.json").write_text(
        json.dumps({"arguments": training_arguments(args), "summary": summary, "seeds": by_seed}, indent=2)
    )
    plot(summary, args.out / f"{stem}.png", f"MLM from all-mpnet-base-v2: {args.dim} wide x {args.layers} deep")
    print(f"saved {args.out / (stem + '.png')} and {args.out / (stem + '.json')}")


def parse_seeds(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def training_arguments(args: argparse.Namespace) -> dict[str, str]:
    return {name: str(getattr(args, name)) for name in TRAINING_ARGUMENTS}


def seed_results(args: argparse.Namespace, seed: int, path: Path) -> dict[str, Any]:
    """One seed's comparison, reused from ``path`` when it was run with the same training arguments (so a run
    that was cut off resumes at the next seed)."""
    if path.exists():
        stored = json.loads(path.read_text())
        if {name: stored["arguments"].get(name) for name in TRAINING_ARGUMENTS} == training_arguments(args):
            print(f"seed {seed}: reusing {path}")
            return stored["results"]
    import torch

    from ctxext.data.pydocs import python_docstrings
    from ctxext.presets import mpnet_path
    from ctxext.train.mlm import split_held_out
    from ctxext.train.runner import TrainSettings

    train, held_out = split_held_out(python_docstrings(), 0.1)
    settings = TrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        eval_every=args.eval_every,
        seed=seed,
        progress_bars=False,
        logging_every=10,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        results = compare_initialisations(
            mpnet_path(),
            args.dim,
            args.layers,
            train[: args.train_docs],
            held_out[: args.held_out_docs],
            embed_texts=held_out[:64],
            max_len=args.max_len,
            settings=settings,
            variants=STANDARD_VARIANTS,
            work_dir=Path(work),
            seed=seed,
        )
    record = {
        "arguments": {**training_arguments(args), "seed": str(seed)},
        "results": results,
        "seconds": time.perf_counter() - started,
        "machine": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }
    path.write_text(json.dumps(record, indent=2))
    return results


def summarise(by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per variant: the held-out loss curve and final scores as mean and standard deviation over seeds."""
    summary: dict[str, Any] = {}
    for name in next(iter(by_seed.values())):
        runs = [results[name] for results in by_seed.values()]
        steps = [step for step, _ in runs[0]["eval"]]
        curves = np.array([[loss for _, loss in run["eval"]] for run in runs])
        summary[name] = {
            "steps": steps,
            "eval_mean": curves.mean(axis=0).tolist(),
            "eval_std": curves.std(axis=0).tolist(),
            **{
                key: {"mean": float(np.mean(values)), "std": float(np.std(values))}
                for key in ("final_loss", "agreement_start", "agreement_end", "seconds")
                for values in [[run[key] for run in runs]]
            },
            "seeds": len(runs),
        }
    return summary


def print_summary(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    seeds = next(iter(summary.values()))["seeds"]
    print(
        f"all-mpnet-base-v2 (768x12) -> {args.dim}x{args.layers}; {args.steps} steps of {args.batch_size} x "
        f"{args.max_len} tokens, lr {args.lr}; mean +- std over {seeds} seeds"
    )
    header = f"{'init':34s} {'loss@0':>8s} {'loss@end':>15s} {'rho@0':>7s} {'rho@end':>8s} {'s/seed':>7s}"
    print(header)
    print("-" * len(header))
    for name, row in summary.items():
        final = row["final_loss"]
        print(
            f"{name:34s} {row['eval_mean'][0]:8.3f} {final['mean']:8.3f} +-{final['std']:.3f} "
            f"{row['agreement_start']['mean']:7.3f} {row['agreement_end']['mean']:8.3f} {row['seconds']['mean']:7.0f}"
        )
    baseline = summary["random"]["final_loss"]["mean"]
    for name, row in summary.items():
        if name != "random":
            print(f"{name}: final loss {row['final_loss']['mean'] - baseline:+.3f} vs random")


def plot(summary: dict[str, Any], path: Path, title: str) -> None:
    """Held-out loss against step, mean and standard deviation over seeds: every step, and beside it the steps
    after the first evaluation, where the variants differ by less than the first drop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for axis, first in zip(axes, (0, 1), strict=True):
        for name, row in summary.items():
            steps = row["steps"][first:]
            mean, std = np.array(row["eval_mean"][first:]), np.array(row["eval_std"][first:])
            axis.plot(steps, mean, marker="o", markersize=3, label=name)
            axis.fill_between(steps, mean - std, mean + std, alpha=0.15)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    seeds = next(iter(summary.values()))["seeds"]
    axes[0].set_ylabel(f"held-out masked-LM loss (mean +- std, {seeds} seeds)")
    axes[0].set_title(title)
    axes[1].set_title("after the first evaluation")
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
