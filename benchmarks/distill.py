"""The 384-wide student after each stage (GUIDE init, MLM, distillation) against its teacher (all-mpnet-base-v2)
and the model a user would otherwise pick (all-MiniLM-L6-v2), on a local retrieval set, in one run: nDCG@10,
Acc@1, documents per second on this machine, score and speed ratios against the teacher, training wall time.

    python benchmarks/distill.py --texts 4000 --mlm-steps 200 --steps 1000
    python benchmarks/distill.py --steps 1600 --more-steps 1200   # then a second schedule from the first's output

Student: `guide` (all-mpnet-base-v2 -> 384 wide, --layers) then `distill` on standard-library text: docstrings
and, for a share of the texts (--code-share), the source of functions that are not in the retrieval set, so the
student sees both sides of the task (the full recipe puts `mlm` between guide and distill: scripts/pipeline.py
configs/modernbert_small_v2.json). Retrieval set: `write_pydocs_beir` (query = a function's docstring summary
line, document = its source without the docstring).
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from collections.abc import Callable
from itertools import zip_longest
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=4000, help="texts to train on")
    parser.add_argument("--code-share", type=float, default=0.5, help="share of the texts that are function sources")
    parser.add_argument(
        "--mlm-steps", type=int, default=200, help="masked-LM steps between GUIDE and distill (0: none)"
    )
    parser.add_argument("--steps", type=int, default=1000, help="distillation steps")
    parser.add_argument(
        "--more-steps",
        type=int,
        default=0,
        help="a second distillation schedule of N steps from the first one's output (same texts and targets)",
    )
    parser.add_argument("--more-lr", type=float, default=1e-4, help="peak learning rate of the second schedule")
    parser.add_argument(
        "--eval-every", type=int, default=200, help="score the student on the retrieval set every N distillation steps"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--init", default="first", help="student init: first (GUIDE), uniform, none (random)")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--queries", type=int, default=300, help="retrieval set size")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/distill-cpu.json"))
    arguments = parser.parse_args()

    from ctxext.guide import Init, guide
    from ctxext.presets import cache_dir, minilm_path, mpnet_path

    work = arguments.work or cache_dir() / "bench-distill"
    work.mkdir(parents=True, exist_ok=True)
    teacher = str(mpnet_path())
    beir, texts = build_data(work, arguments)
    init = Init(arguments.init)
    student = (
        work / f"guide-384x{arguments.layers}" if init == Init.first else work / f"{init.value}-384x{arguments.layers}"
    )
    wall: dict[str, float] = {}
    wall["guide"] = timed_once(student, lambda: guide(teacher, student, 384, layers=arguments.layers, init=init))
    stages = [(f"init {init.value}, no training (384)", student)]
    start = student
    if arguments.mlm_steps:
        start = work / f"{student.name}-mlm-{texts.stem}-{arguments.mlm_steps}"
        wall["mlm"] = timed_once(
            start, lambda: train_stage("mlm", student, teacher, texts, start, arguments, steps=arguments.mlm_steps)
        )
        stages.append((f"after {arguments.mlm_steps} MLM steps (384)", start))
    distilled = work / f"{start.name}-distilled-{arguments.steps}-lr{arguments.lr}"
    wall["distill"] = timed_once(
        distilled,
        lambda: train_stage("distill", start, teacher, texts, distilled, arguments, steps=arguments.steps, beir=beir),
    )
    stages.append((f"after {arguments.steps} distillation steps (384)", distilled))
    curve = distill_curve(distilled)
    if arguments.more_steps:
        more = work / f"{distilled.name}-then-{arguments.more_steps}-lr{arguments.more_lr}"
        wall["distill, second schedule"] = timed_once(
            more,
            lambda: train_stage(
                "distill",
                distilled,
                teacher,
                texts,
                more,
                arguments,
                steps=arguments.more_steps,
                lr=arguments.more_lr,
                beir=beir,
            ),
        )
        stages.append((f"after {arguments.steps} + {arguments.more_steps} distillation steps (384)", more))
        curve += [{**point, "step": point["step"] + arguments.steps} for point in distill_curve(more)[1:]]

    rows = score_rows(
        [("teacher all-mpnet-base-v2 (768)", teacher), ("all-MiniLM-L6-v2 (384, reference)", str(minilm_path()))]
        + [(label, str(path)) for label, path in stages],
        beir,
        arguments.max_len,
    )
    print_rows(rows, beir, arguments.max_len, wall)
    print_curve(curve, rows)
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(
        json.dumps(
            {
                "options": {k: str(v) for k, v in vars(arguments).items()},
                "training_wall_s": wall,
                "rows": rows,
                "distill_curve": curve,
            },
            indent=2,
        )
    )
    print(f"saved {arguments.json}")


def build_data(work: Path, arguments: argparse.Namespace) -> tuple[Path, Path]:
    """The retrieval set, and the training texts: docstrings and sources of functions not in it."""
    from ctxext.data.pydocs import public_functions, python_docstrings, write_pydocs_beir

    beir = work / f"pydocs-beir-{arguments.queries}"
    if not beir.exists():
        write_pydocs_beir(beir, limit=arguments.queries)
    texts = work / f"texts-{arguments.texts}-code{arguments.code_share}-beir{arguments.queries}.jsonl"
    if not texts.exists():
        held_out = {json.loads(line)["function"] for line in (beir / "queries.jsonl").read_text().splitlines()}
        sources = [ast.unparse(node) for name, node in public_functions() if name not in held_out]
        wanted = int(arguments.texts * arguments.code_share)
        code = sources[:: max(1, len(sources) // max(wanted, 1))][:wanted]  # spread over the whole library
        prose = [t for _, t in python_docstrings()][: arguments.texts - len(code)]
        mixed = [text for pair in zip_longest(prose, code) for text in pair if text]
        texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in mixed))
    return beir, texts


def timed_once(out: Path, make: Callable[[], Any]) -> float:
    """Build ``out`` unless it exists; its wall time, kept beside it so a rerun reports it too."""
    record = out.with_name(out.name + ".wall_s")
    if not out.exists():
        started = time.perf_counter()
        make()
        record.write_text(f"{time.perf_counter() - started:.1f}")
    return float(record.read_text()) if record.exists() else float("nan")


def train_stage(
    stage: str,
    start: Path,
    teacher: str,
    texts: Path,
    out: Path,
    arguments: argparse.Namespace,
    *,
    steps: int,
    lr: float | None = None,
    beir: Path | None = None,
) -> None:
    """``mlm`` or ``distill`` from ``start`` to ``out``; ``beir``: the retrieval set distillation is scored on
    every --eval-every steps."""
    from ctxext.train.distill import distill
    from ctxext.train.mlm import train_mlm

    eval_every = arguments.eval_every if beir else 0
    settings = training_settings(steps, arguments.batch_size, lr or arguments.lr, eval_every=eval_every)
    if stage == "mlm":
        result = train_mlm(str(start), [texts], out, mask=0.3, max_len=arguments.max_len, settings=settings)
    else:
        result = distill(
            str(start), teacher, [texts], out, max_len=arguments.max_len, settings=settings, eval_beir=beir
        )
    losses = [loss for _, loss in result.history["train"]] or [float("nan")]
    print(f"{stage}: loss {losses[0]:.5f} -> {losses[-1]:.5f}", flush=True)


def training_settings(steps: int, batch_size: int, lr: float, *, eval_every: int = 0, logging_every: int = 10) -> Any:
    """The benchmarks' training settings: 10% warm-up, no checkpoints, no progress bars."""
    from ctxext.train import TrainSettings

    return TrainSettings(
        steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        warmup_ratio=0.1,
        logging_every=logging_every,
        save_every=10**6,
        eval_every=eval_every,
        progress_bars=False,
    )


def distill_curve(distilled: Path) -> list[dict[str, float]]:
    """The retrieval scores logged during distillation (step, nDCG@10, Acc@1), from the output's manifest."""
    record = json.loads((distilled / "manifest.json").read_text())["operations"][-1]
    return [
        {"step": e["step"], "ndcg_at_10": e["retrieval_ndcg_at_10"], "acc_at_1": e["retrieval_acc_at_1"]}
        for e in record["parameters"]["loss_history"].get("retrieval", [])
    ]


def score_rows(models: list[tuple[str, str]], beir: Path, max_len: int) -> dict[str, dict[str, float]]:
    """nDCG@10, Acc@1 and documents per second of each model on the retrieval set, one after another."""
    from ctxext.encode import load_encoder
    from ctxext.evaluate import accuracy_at_1, beir_set, ndcg_at_k, similarity

    retrieval_set = beir_set(beir)
    rows = {}
    for label, ref in models:
        encoder = load_encoder(ref, max_length=max_len)
        encoder.encode(retrieval_set.queries[:8])  # warm-up
        started = time.perf_counter()
        documents = encoder.encode(retrieval_set.documents, batch_size=16, max_length=max_len)
        seconds = time.perf_counter() - started
        scores = similarity(encoder.encode(retrieval_set.queries, batch_size=16), documents)
        rows[label] = {
            "ndcg_at_10": ndcg_at_k(scores, retrieval_set.relevant),
            "acc_at_1": accuracy_at_1(scores, retrieval_set.relevant),
            "docs_per_s": len(retrieval_set.documents) / seconds,
        }
    teacher = next(iter(rows.values()))
    for row in rows.values():
        row["score_ratio"] = row["ndcg_at_10"] / teacher["ndcg_at_10"]
        row["speed_ratio"] = row["docs_per_s"] / teacher["docs_per_s"]
    return rows


def print_rows(rows: dict[str, dict[str, float]], beir: Path, max_len: int, wall: dict[str, float]) -> None:
    print(f"\nretrieval on {beir.name} (documents up to {max_len} tokens)")
    print(f"{'model':<40}{'nDCG@10':>9}{'Acc@1':>8}{'docs/s':>9}{'score ratio':>13}{'speed ratio':>13}")
    for label, row in rows.items():
        print(
            f"{label:<40}{row['ndcg_at_10']:>9.3f}{row['acc_at_1']:>8.3f}{row['docs_per_s']:>9.1f}"
            f"{row['score_ratio']:>13.3f}{row['speed_ratio']:>13.2f}"
        )
    print("training wall time: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in wall.items()))


def print_curve(curve: list[dict[str, float]], rows: dict[str, dict[str, float]]) -> None:
    if not curve:
        return
    teacher = next(iter(rows.values()))["ndcg_at_10"]
    print("\ndistillation curve (same retrieval set)")
    print(f"{'step':>6}{'nDCG@10':>9}{'Acc@1':>8}{'score ratio':>13}")
    for point in curve:
        ratio = point["ndcg_at_10"] / teacher
        print(f"{point['step']:>6}{point['ndcg_at_10']:>9.3f}{point['acc_at_1']:>8.3f}{ratio:>13.3f}")


if __name__ == "__main__":
    main()
