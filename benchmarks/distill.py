"""The 384-wide student after each stage (GUIDE init, MLM, distillation) against its teacher (all-mpnet-base-v2)
and the model a user would otherwise pick (all-MiniLM-L6-v2), on a local retrieval set, in one run: nDCG@10,
Acc@1, documents per second on this machine, score and speed ratios against the teacher, training wall time.

    python benchmarks/distill.py --texts 4000 --mlm-steps 200 --steps 1000
    python benchmarks/distill.py --steps 1600 --more 1200:1e-4   # then a second schedule from the first's output
    python benchmarks/distill.py --steps 1600 --more 1200:1e-4 --more 1200:1e-4:pandas,sqlalchemy  # a third, on
                                                                 # more texts: those packages' docstrings and code

Student: `guide` (all-mpnet-base-v2 -> 384 wide, --layers) then `distill` on standard-library text: docstrings
and, for a share of the texts (--code-share), the source of functions that are not in the retrieval set, so the
student sees both sides of the task (the full recipe puts `mlm` between guide and distill: scripts/pipeline.py
configs/modernbert_small_v2.json). Retrieval set: `write_pydocs_beir` (query = a function's docstring summary
line, document = its source without the docstring), on three sets of --queries queries: standard-library
functions the training texts leave out ("stdlib"), and the two package splits no training text comes from
(`HELD_OUT_PACKAGES`): "dev" (numpy, scikit-learn, ...), which the curve during training is scored on, and
"test" (torch, sympy, ...), scored once at the end.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from itertools import zip_longest
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Schedule:
    """A distillation schedule after the first: its steps, peak learning rate, and the packages whose texts
    join the training texts."""

    steps: int
    lr: float = 1e-4
    packages: tuple[str, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Schedule:
        steps, lr, packages = (spec.split(":", 2) + ["", ""])[:3]
        try:
            return cls(int(steps), float(lr or 1e-4), tuple(p for p in packages.split(",") if p))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{spec!r} is not STEPS[:LR[:PACKAGES]]") from None

    @property
    def name(self) -> str:
        """Its output folder's suffix; the package list as a short hash, to keep names short."""
        plus = f"-plus-{len(self.packages)}pkg-{stable_hash(','.join(self.packages))}" if self.packages else ""
        return f"{self.steps}-lr{self.lr}{plus}"


def main() -> None:
    from ctxext.guide import Init, guide
    from ctxext.presets import cache_dir, minilm_path, mpnet_path

    arguments = parse_arguments()
    work = arguments.work or cache_dir() / "bench-distill"
    work.mkdir(parents=True, exist_ok=True)
    teacher = str(mpnet_path())
    sets, texts = build_data(work, arguments)
    dev = sets["dev"]
    init = Init(arguments.init)
    student = (
        work / f"guide-384x{arguments.layers}" if init == Init.first else work / f"{init.value}-384x{arguments.layers}"
    )
    wall: dict[str, float] = {}
    wall["guide"] = timed_once(student, lambda: guide(teacher, student, dim=384, layers=arguments.layers, init=init))
    stages = [(f"init {init.value}, no training (384)", student)]
    start = student
    if arguments.mlm_steps:
        start = work / f"{student.name}-mlm-{texts.stem}-{arguments.mlm_steps}"
        wall["mlm"] = timed_once(
            start, lambda: train_stage("mlm", student, teacher, [texts], start, arguments, steps=arguments.mlm_steps)
        )
        stages.append((f"after {arguments.mlm_steps} MLM steps (384)", start))
    distilled = work / f"{start.name}-distilled-{arguments.steps}-lr{arguments.lr}"
    wall["distill"] = timed_once(
        distilled,
        lambda: train_stage("distill", start, teacher, [texts], distilled, arguments, steps=arguments.steps, beir=dev),
    )
    stages.append((f"after {arguments.steps} distillation steps (384)", distilled))
    curve = distill_curve(distilled)
    previous, done = distilled, arguments.steps
    for number, schedule in enumerate(arguments.more, start=2):
        data = [texts, *([package_texts(work, schedule.packages, arguments)] if schedule.packages else [])]
        more = work / f"{previous.name}-then-{schedule.name}"
        train = partial(
            train_stage,
            "distill",
            previous,
            teacher,
            data,
            more,
            arguments,
            steps=schedule.steps,
            lr=schedule.lr,
            beir=dev,
        )
        wall[f"distill, schedule {number}"] = timed_once(more, train)
        curve += [{**point, "step": point["step"] + done} for point in distill_curve(more)[1:]]
        done += schedule.steps
        more_texts = f" (+ {','.join(schedule.packages)})" if schedule.packages else ""
        stages.append((f"after {done} distillation steps{more_texts} (384)", more))
        previous = more

    models = [
        ("teacher all-mpnet-base-v2 (768)", teacher),
        ("all-MiniLM-L6-v2 (384, reference)", str(minilm_path())),
    ] + [(label, str(path)) for label, path in stages]
    tables = {name: score_rows(models, folder, arguments.max_len) for name, folder in sets.items()}
    for name, folder in sets.items():
        print_rows(tables[name], folder, arguments.max_len)
    print("training wall time: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in wall.items()))
    print_curve(curve, {folder.name: teacher_score(tables[name]) for name, folder in sets.items()})
    arguments.json.parent.mkdir(parents=True, exist_ok=True)
    arguments.json.write_text(
        json.dumps(
            {
                "options": {k: str(v) for k, v in vars(arguments).items()},
                "training_wall_s": wall,
                "rows": tables["stdlib"],
                "rows_by_set": tables,
                "distill_curve": curve,
            },
            indent=2,
        )
    )
    print(f"saved {arguments.json}")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=4000, help="texts to train on")
    parser.add_argument("--code-share", type=float, default=0.5, help="share of the texts that are function sources")
    parser.add_argument(
        "--mlm-steps", type=int, default=200, help="masked-LM steps between GUIDE and distill (0: none)"
    )
    parser.add_argument("--steps", type=int, default=1000, help="distillation steps")
    parser.add_argument(
        "--more",
        type=Schedule.parse,
        action="append",
        default=[],
        metavar="STEPS[:LR[:PACKAGES]]",
        help="one more distillation schedule from the previous one's output, repeatable; PACKAGES (comma-separated, "
        "installed, not held out) add --package-texts texts from their docstrings and code to the training texts",
    )
    parser.add_argument("--package-texts", type=int, default=4000, help="texts a --more schedule's packages add")
    parser.add_argument(
        "--eval-every", type=int, default=200, help="score the student on the dev set every N distillation steps"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--init", default="first", help="student init: first (GUIDE), uniform, none (random)")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--queries", type=int, default=300, help="retrieval set size")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/distill-cpu.json"))
    return parser.parse_args()


def build_data(work: Path, arguments: argparse.Namespace) -> tuple[dict[str, Path], Path]:
    """The retrieval sets (standard library; the packages held out for dev and for test), and the training
    texts: docstrings and sources of standard-library functions not in the standard-library set."""
    from ctxext.data.pydocs import HELD_OUT_PACKAGES, public_functions, python_docstrings, write_pydocs_beir

    beir = work / f"pydocs-beir-{arguments.queries}"
    sets = {"stdlib": beir}
    if not beir.exists():
        write_pydocs_beir(beir, limit=arguments.queries)
    for split, packages in HELD_OUT_PACKAGES.items():
        sets[split] = work / f"pydocs-beir-{split}-{arguments.queries}"
        if not sets[split].exists():
            write_pydocs_beir(sets[split], limit=arguments.queries, packages=packages)
    texts = work / f"texts-{arguments.texts}-code{arguments.code_share}-beir{arguments.queries}.jsonl"
    if not texts.exists():
        held_out = {json.loads(line)["function"] for line in (beir / "queries.jsonl").read_text().splitlines()}
        sources = [ast.unparse(node) for name, node in public_functions() if name not in held_out]
        prose = [text for _, text in python_docstrings()]
        write_texts(texts, prose, sources, arguments.texts, arguments.code_share)
    return sets, texts


def package_texts(work: Path, packages: tuple[str, ...], arguments: argparse.Namespace) -> Path:
    """--package-texts texts from the docstrings and function sources of installed ``packages`` (never the
    held-out ones), spread over all of them."""
    from ctxext.data.pydocs import check_training_packages, package_folder, public_functions, python_docstrings

    check_training_packages(packages)
    count = arguments.package_texts
    texts = work / f"texts-{count}-code{arguments.code_share}-{stable_hash(','.join(packages))}.jsonl"
    if not texts.exists():
        prose = [text for package in packages for _, text in python_docstrings(package=package)]
        folders = [package_folder(package) for package in packages]
        sources = [ast.unparse(node) for folder in folders for _, node in public_functions(folder)]
        write_texts(texts, prose, sources, count, arguments.code_share)
    return texts


def write_texts(path: Path, prose: list[str], sources: list[str], count: int, code_share: float) -> None:
    """``count`` texts, ``code_share`` of them function sources, both taken every k-th over their whole lists,
    prose and code alternating."""
    wanted = int(count * code_share)
    code = sources[:: max(1, len(sources) // max(wanted, 1))][:wanted]
    wanted = count - len(code)
    prose = prose[:: max(1, len(prose) // max(wanted, 1))][:wanted]
    mixed = [text for pair in zip_longest(prose, code) for text in pair if text]
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in mixed))


def stable_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


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
    data: list[Path],
    out: Path,
    arguments: argparse.Namespace,
    *,
    steps: int,
    lr: float | None = None,
    beir: Path | None = None,
) -> None:
    """``mlm`` or ``distill`` from ``start`` to ``out`` on the texts in ``data``; ``beir``: the retrieval set
    distillation is scored on every --eval-every steps."""
    from ctxext.train.distill import distill
    from ctxext.train.mlm import train_mlm

    eval_every = arguments.eval_every if beir else 0
    settings = training_settings(steps, arguments.batch_size, lr or arguments.lr, eval_every=eval_every)
    if stage == "mlm":
        result = train_mlm(str(start), data, out, mask=0.3, max_len=arguments.max_len, settings=settings)
    else:
        result = distill(str(start), teacher, data, out, max_len=arguments.max_len, settings=settings, eval_beir=beir)
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


def distill_curve(distilled: Path) -> list[dict[str, Any]]:
    """The retrieval scores logged during distillation (step, nDCG@10, Acc@1, the set's folder name), from the
    output's manifest."""
    manifest = json.loads((distilled / "manifest.json").read_text())
    scored_on = Path(manifest["options"].get("eval_beir") or "").name
    return [
        {
            "step": e["step"],
            "ndcg_at_10": e["retrieval_ndcg_at_10"],
            "acc_at_1": e["retrieval_acc_at_1"],
            "set": scored_on,
        }
        for e in manifest["operations"][-1]["parameters"]["loss_history"].get("retrieval", [])
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


def teacher_score(rows: dict[str, dict[str, float]]) -> float:
    return next(iter(rows.values()))["ndcg_at_10"]


def print_rows(rows: dict[str, dict[str, float]], beir: Path, max_len: int) -> None:
    print(f"\nretrieval on {beir.name} (documents up to {max_len} tokens)")
    print(f"{'model':<52}{'nDCG@10':>9}{'Acc@1':>8}{'docs/s':>9}{'score ratio':>13}{'speed ratio':>13}")
    for label, row in rows.items():
        print(
            f"{label:<52}{row['ndcg_at_10']:>9.3f}{row['acc_at_1']:>8.3f}{row['docs_per_s']:>9.1f}"
            f"{row['score_ratio']:>13.3f}{row['speed_ratio']:>13.2f}"
        )


def print_curve(curve: list[dict[str, Any]], teacher: dict[str, float]) -> None:
    """The curve, each point's score ratio against the teacher's nDCG@10 on the set it was scored on (``teacher``:
    by set folder name; runs made before the dev set existed were scored on the test set)."""
    if not curve:
        return
    print("\ndistillation curve")
    print(f"{'step':>6}{'set':>30}{'nDCG@10':>9}{'Acc@1':>8}{'score ratio':>13}")
    for point in curve:
        ratio = point["ndcg_at_10"] / teacher[point["set"]]
        print(f"{point['step']:>6}{point['set']:>30}{point['ndcg_at_10']:>9.3f}{point['acc_at_1']:>8.3f}{ratio:>13.3f}")


if __name__ == "__main__":
    main()
