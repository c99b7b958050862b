"""Every speed benchmark in one run: each command a fresh process, alternating with its peer where one exists,
median of --repeats; writes benchmarks/results/report.md and report.png.

One row per operation: median wall time, peak resident memory, the ratio to the peer or reference, and the goal
with whether it is met. Peers and references:
- interpolate: the `context-extension` package (0.1.3), `extend-context --interpolation_type cubic`;
- embed: sentence-transformers' own `SentenceTransformer(folder).encode(texts)` on the same documents;
- transfer, guide, flip, average: fixed goals (seconds, and memory as a multiple of the model's weights).

    pip install -e ".[test,bench]" && python benchmarks/report.py --repeats 3
    python benchmarks/report.py --only interpolate,transfer --repeats 3   # a subset
    python benchmarks/report.py --only guide --merge                      # one benchmark again, the rest kept
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from interpolate import measure, peer, peer_compatible  # this folder is on sys.path when run as a script

RESULTS = Path(__file__).resolve().parent / "results"
CTXEXT = [sys.executable, "-m", "ctxext"]
MiB = 2**20


@dataclass
class Goal:
    """``wall``: at most this many seconds, or this ratio to the peer (``relative``); ``memory``: at most this
    many times the peer's peak (``relative``) or the model's weights."""

    wall: float
    memory: float | None = None
    relative: bool = False

    def describe(self) -> str:
        wall = f"<= {self.wall:g}x peer time" if self.relative else f"<= {self.wall:g} s"
        if self.memory is None:
            return wall
        return wall + (f", <= {self.memory:g}x peer memory" if self.relative else f", <= {self.memory:g}x the weights")


@dataclass
class Row:
    operation: str
    goal: Goal
    ours: list[tuple[float, float]] = field(default_factory=list)
    peer: list[tuple[float, float]] = field(default_factory=list)
    weights: Path | None = None
    """The folder whose safetensors the memory goal is a multiple of (read after the runs)."""
    note: str = ""
    throughput_items: int | None = None

    def median(self, runs: list[tuple[float, float]]) -> tuple[float, float]:
        return statistics.median(t for t, _ in runs), max(m for _, m in runs)

    def summary(self) -> dict:
        wall, memory = self.median(self.ours)
        summary = {
            "operation": self.operation,
            "wall_s": wall,
            "peak_mib": memory,
            "runs": len(self.ours),
            "goal": self.goal.describe(),
            "note": self.note,
        }
        if self.peer:
            peer_wall, peer_memory = self.median(self.peer)
            summary.update(
                peer_wall_s=peer_wall,
                peer_peak_mib=peer_memory,
                wall_ratio=wall / peer_wall,
                memory_ratio=memory / peer_memory,
            )
        if self.weights is not None:
            size = weights_mib(self.weights)
            summary.update(weights_mib=size, memory_ratio_to_weights=memory / size)
        if self.throughput_items:
            summary["items_per_s"] = self.throughput_items / wall
            if self.peer:
                summary["peer_items_per_s"] = self.throughput_items / summary["peer_wall_s"]
        wall_met = summary["wall_ratio"] <= self.goal.wall if self.goal.relative else wall <= self.goal.wall
        memory_met = True
        if self.goal.memory is not None:
            ratio = summary["memory_ratio"] if self.goal.relative else summary["memory_ratio_to_weights"]
            memory_met = ratio <= self.goal.memory
        summary["met"] = bool(wall_met and memory_met)
        return summary


def alternate(
    row: Row,
    ours: Callable[[], list[str]],
    peer: Callable[[], list[str]] | None,
    repeats: int,
    before: Callable[[], None] = lambda: None,
) -> Row:
    for _ in range(repeats):
        if peer is not None:
            before()
            row.peer.append(measure(peer()))
        before()
        row.ours.append(measure(ours()))
    shown = {key: round(value, 3) if isinstance(value, float) else value for key, value in row.summary().items()}
    print(f"  {row.operation}: {json.dumps(shown)}", flush=True)
    return row


def weights_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / MiB


# ----------------------------------------------------------------------------- the benchmarks


def interpolate_rows(scratch: Path, repeats: int) -> list[Row]:
    from ctxext.presets import minilm_path, mpnet_path

    rows = []
    for name, source, offset in (("all-MiniLM-L6-v2", minilm_path(), 0), ("all-mpnet-base-v2", mpnet_path(), 2)):
        peer_source, note = peer_compatible(source, scratch)
        for check, goal in (("--check", Goal(0.5, 1.0, relative=True)), ("--no-check", Goal(0.1, 1.0, relative=True))):
            out = scratch / f"interpolate-{name}{check}"
            peer_out = scratch / f"peer-{name}"
            ours_command = [
                *CTXEXT,
                "interpolate",
                str(source),
                "--len",
                "4096",
                "--spline",
                "-o",
                str(out),
                "--force",
                check,
            ]
            rows.append(
                alternate(
                    Row(f"interpolate {name} --spline 4096 {check}", goal, note=note.strip(" ()")),
                    lambda command=ours_command: command,
                    lambda s=peer_source, o=offset, po=peer_out: peer(s, 4096, o, po),
                    repeats,
                    before=lambda po=peer_out: shutil.rmtree(po, ignore_errors=True),
                )
            )
    return rows


RANDOM_BERT_BASE = (
    "import sys, torch\nfrom transformers import BertConfig, BertModel\n"
    "torch.manual_seed(int(sys.argv[2]))\n"
    "BertModel(BertConfig()).save_pretrained(sys.argv[1], safe_serialization=True)\n"
)


def random_bert_base(folder: Path, seed: int) -> Path:
    """A BERT with bert-base's shape (110M parameters) and random weights, as a plain model folder. Built in a
    child process: a parent holding torch would pass its resident memory on to every child it measures."""
    if not folder.exists():
        subprocess.run([sys.executable, "-c", RANDOM_BERT_BASE, str(folder), str(seed)], check=True)
    return folder


def transfer_rows(scratch: Path, repeats: int) -> list[Row]:
    from ctxext.presets import minilm_path

    bert_base = random_bert_base(scratch / "bert-base-random", seed=0)
    rows = []
    for label, source, check, goal in (
        ("all-MiniLM-L6-v2, surgery", "all-MiniLM-L6-v2", "--no-check", Goal(3.0)),
        ("all-MiniLM-L6-v2, with checks", "all-MiniLM-L6-v2", "--check", Goal(15.0)),
        ("110M BERT (random, bert-base shape), surgery", str(bert_base), "--no-check", Goal(10.0, 1.5)),
    ):
        out = scratch / f"transfer-{label.split(',')[0]}"
        command = [*CTXEXT, "transfer", source, "bigbird", "--len", "4096", "-o", str(out), "--force", check]
        weights = bert_base if source == str(bert_base) else minilm_path()
        rows.append(
            alternate(
                Row(f"transfer {label} -> BigBird 4096", goal, weights=weights), lambda c=command: c, None, repeats
            )
        )
    return rows


def guide_rows(scratch: Path, repeats: int) -> list[Row]:
    from ctxext.presets import mpnet_path

    command = [
        *CTXEXT,
        "guide",
        "all-mpnet-base-v2",
        "--dim",
        "384",
        "--layers",
        "12",
        "-o",
        str(scratch / "guide"),
        "--force",
    ]
    return [
        alternate(
            Row("guide all-mpnet-base-v2 -> 384 x 12 (with checks)", Goal(30.0, 2.0), weights=mpnet_path()),
            lambda: command,
            None,
            repeats,
        )
    ]


def flip_rows(scratch: Path, repeats: int) -> list[Row]:
    """The first flip of a GGUF parses it (and caches the dequantized weights); later flips load the cache."""
    cache = scratch / "flip-cache"
    command = ["env", f"CTXEXT_CACHE={cache}", *CTXEXT, "flip", "gemma-3-270m", "-o", str(scratch / "flip"), "--force"]
    note = "memory goal: a multiple of the float32 model written"
    rows = [
        alternate(
            Row(
                "flip gemma-3-270m (Q4_K_M GGUF), first run: GGUF parsed",
                Goal(60.0, 3.0),
                weights=scratch / "flip",
                note=note,
            ),
            lambda: command,
            None,
            repeats,
            before=lambda: shutil.rmtree(cache / "gguf-dequantized", ignore_errors=True),
        )
    ]
    rows.append(
        alternate(
            Row(
                "flip gemma-3-270m (Q4_K_M GGUF), later runs: cached weights",
                Goal(60.0, 3.0),
                weights=scratch / "flip",
                note=note,
            ),
            lambda: command,
            None,
            repeats,
        )
    )
    return rows


def average_rows(scratch: Path, repeats: int) -> list[Row]:
    first, second = random_bert_base(scratch / "bert-base-random", 0), random_bert_base(scratch / "bert-base-b", 1)
    command = [*CTXEXT, "average", str(first), str(second), "-o", str(scratch / "average"), "--force"]
    return [alternate(Row("average of two 110M BERTs", Goal(10.0, 1.5), weights=first), lambda: command, None, repeats)]


ST_ENCODE = (
    "import json, sys\nfrom sentence_transformers import SentenceTransformer\n"
    "texts = [json.loads(line)['text'] for line in open(sys.argv[2])]\n"
    "model = SentenceTransformer(sys.argv[1], device='cpu')\n"
    "model.max_seq_length = int(sys.argv[3])  # the same truncation as ours\n"
    "model.encode(texts, batch_size=16)\n"
)


def embed_rows(scratch: Path, repeats: int) -> list[Row]:
    from ctxext.presets import minilm_path

    long_model = scratch / "minilm-4096"
    if not long_model.exists():
        subprocess.run(
            [*CTXEXT, "interpolate", "all-MiniLM-L6-v2", "--len", "4096", "--spline", "-o", str(long_model)],
            check=True,
            capture_output=True,
        )
    paragraph = (
        "Position embeddings tell an encoder where each token stands; stretching them lets a model read "
        "longer documents without training from scratch. "
    )
    rows = []
    for name, model, tokens, count in (
        ("all-MiniLM-L6-v2", minilm_path(), 512, 64),
        ("all-MiniLM-L6-v2 --spline 4096", long_model, 4096, 8),
    ):
        documents = scratch / f"documents-{tokens}.jsonl"
        documents.write_text(
            "".join(json.dumps({"text": f"Document {i}. " + paragraph * (tokens // 20)}) + "\n" for i in range(count))
        )
        ours = [
            *CTXEXT,
            "embed",
            str(model),
            str(documents),
            "-o",
            str(scratch / f"embed-{tokens}.npy"),
            "--force",
            "--max-len",
            str(tokens),
        ]
        peer = [sys.executable, "-c", ST_ENCODE, str(model), str(documents), str(tokens)]
        rows.append(
            alternate(
                Row(
                    f"embed {count} documents of {tokens} tokens ({name})",
                    Goal(1.1, 1.1, relative=True),
                    throughput_items=count,
                    note="peer: SentenceTransformer.encode",
                ),
                lambda c=ours: c,
                lambda c=peer: c,
                repeats,
            )
        )
    return rows


BENCHMARKS = {
    "interpolate": interpolate_rows,
    "transfer": transfer_rows,
    "guide": guide_rows,
    "flip": flip_rows,
    "average": average_rows,
    "embed": embed_rows,
}


# ----------------------------------------------------------------------------- the report


def markdown(summaries: list[dict], repeats: int) -> str:
    lines = [
        "# ctxext speed report",
        "",
        f"Each command a fresh process, alternating with its peer, median of {repeats} runs; peak resident memory "
        f"is the largest of the runs. Machine: {os.cpu_count()} cores. Reproduce: "
        "`python benchmarks/report.py --repeats 3`.",
        "",
        "| operation | wall s | peak MiB | peer s | peer MiB | time ratio | memory ratio | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        memory_ratio = s.get("memory_ratio", s.get("memory_ratio_to_weights"))
        memory_label = "" if "memory_ratio" in s else " of weights"
        peer = (
            f"{s['peer_wall_s']:.2f} | {s['peer_peak_mib']:.0f} | {s['wall_ratio']:.2f}x"
            if "peer_wall_s" in s
            else "| | "
        )
        rate = f" ({s['items_per_s']:.2f}/s vs {s['peer_items_per_s']:.2f}/s)" if "items_per_s" in s else ""
        lines.append(
            f"| {s['operation']}{rate} | {s['wall_s']:.2f} | {s['peak_mib']:.0f} | {peer} | "
            f"{'' if memory_ratio is None else f'{memory_ratio:.2f}x{memory_label}'} | {s['goal']} | "
            f"{'yes' if s['met'] else '**no**'} |"
        )
    notes = [f"- {s['operation']}: {s['note']}" for s in summaries if s["note"]]
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def plot(summaries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 0.5 * len(summaries) + 1.5))
    names = [s["operation"] for s in summaries]
    positions = range(len(summaries))
    axes.barh([p + 0.2 for p in positions], [s["wall_s"] for s in summaries], height=0.4, label="ctxext")
    axes.barh(
        [p - 0.2 for p in positions], [s.get("peer_wall_s", 0) for s in summaries], height=0.4, label="peer / reference"
    )
    axes.set_yticks(list(positions), names, fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("median wall time (s, log scale)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated: " + ", ".join(BENCHMARKS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of the other benchmarks from the "
        "report.json already in --out (rerun one benchmark after a change)",
    )
    args = parser.parse_args()
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    summaries = []
    with tempfile.TemporaryDirectory(prefix="ctxext-report-") as scratch:
        for name in chosen:
            print(f"{name}:", flush=True)
            summaries += [row.summary() for row in BENCHMARKS[name](Path(scratch), args.repeats)]
    if args.merge and (args.out / "report.json").is_file():
        kept = [
            row
            for row in json.loads((args.out / "report.json").read_text())
            if row["operation"].split()[0] not in chosen
        ]
        summaries = sorted(kept + summaries, key=lambda row: list(BENCHMARKS).index(row["operation"].split()[0]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(summaries, indent=2) + "\n")
    (args.out / "report.md").write_text(markdown(summaries, args.repeats))
    plot(summaries, args.out / "report.png")
    print(markdown(summaries, args.repeats))


if __name__ == "__main__":
    main()
