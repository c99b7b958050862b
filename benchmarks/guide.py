"""GUIDE against random init and weight selection: masked-LM on the same data, steps and seed.

Teacher: the real all-mpnet-base-v2 (768 wide, 12 layers); student: 384 wide. Text: docstrings of the Python
standard library (no downloads), split into train and held-out parts by name. Prints a table (held-out MLM
loss at step 0 and at the end, rank correlation of the student's pairwise sentence similarities with the
teacher's at step 0 and at the end) and saves a PNG of held-out loss against step, plus the numbers as JSON.

    python benchmarks/guide.py                          # 12 layers, 300 steps (the longer budget)
    python benchmarks/guide.py --layers 6 --steps 60    # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ctxext.guide import STANDARD_VARIANTS, compare_initialisations  # noqa: E402
from ctxext.presets import mpnet_path  # noqa: E402
from ctxext.train import TrainSettings, python_docstrings, split_held_out  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train-docs", type=int, default=1200)
    parser.add_argument("--held-out-docs", type=int, default=48)
    parser.add_argument("--eval-every", type=int, default=0, help="default: steps / 10")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    import torch

    train, held_out = split_held_out(python_docstrings(), 0.1)
    settings = TrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_ratio=0.1,
        eval_every=args.eval_every or max(1, args.steps // 10),
        seed=args.seed,
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
            seed=args.seed,
        )
    elapsed = time.perf_counter() - started

    header = f"{'init':34s} {'loss@0':>8s} {'loss@end':>9s} {'rho@0':>7s} {'rho@end':>8s} {'seconds':>8s}"
    print(
        f"all-mpnet-base-v2 (768x12) -> {args.dim}x{args.layers}; {args.steps} steps of {args.batch_size} x "
        f"{args.max_len} tokens, lr {args.lr}, seed {args.seed}; torch threads {torch.get_num_threads()}"
    )
    print(header)
    print("-" * len(header))
    baseline = results["random"]["final_loss"]
    for name, result in results.items():
        print(
            f"{name:34s} {result['eval'][0][1]:8.3f} {result['final_loss']:9.3f} "
            f"{result['agreement_start']:7.3f} {result['agreement_end']:8.3f} {result['seconds']:8.0f}"
        )
    for name, result in results.items():
        if name != "random":
            print(
                f"{name}: final loss {result['final_loss'] - baseline:+.3f} vs random "
                f"({result['final_loss'] / baseline:.3f}x)"
            )
    print(
        f"explained variance of M (PCA, 384 of 768 dims): "
        f"{results['GUIDE first block']['explained_variance_ratio']:.4f}; "
        f"evenly spaced coordinates: "
        f"{results['weight selection (even, uniform)']['explained_variance_ratio']:.4f}"
    )
    print(f"total {elapsed:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"guide-{args.dim}x{args.layers}-{args.steps}steps"
    (args.out / f"{stem}.json").write_text(
        json.dumps(
            {
                "arguments": {k: str(v) for k, v in vars(args).items()},
                "results": results,
                "seconds": elapsed,
                "machine": platform.platform(),
                "torch_threads": torch.get_num_threads(),
            },
            indent=2,
        )
    )
    plot(
        results, args.out / f"{stem}.png", f"MLM from all-mpnet-base-v2: {args.dim} wide x {args.layers} deep"
    )
    print(f"saved {args.out / (stem + '.png')} and {args.out / (stem + '.json')}")


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name, result in results.items():
        steps, losses = zip(*result["eval"], strict=True)
        axis.plot(steps, losses, marker="o", markersize=3, label=name)
    axis.set_xlabel("step")
    axis.set_ylabel("held-out masked-LM loss")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    main()
