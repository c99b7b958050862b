"""ctxext interpolate --spline against the context-extension package (0.1.3), side by side in one run.

For each real model (all-MiniLM-L6-v2, all-mpnet-base-v2) stretched to --len positions, both whole commands
run as fresh processes, alternating, ``--repeats`` times each; the script prints median wall time, peak RSS,
their ratios, and the max abs difference between the two position tables.

    pip install -e ".[test,bench]" && python benchmarks/interpolate.py --len 4096 --repeats 3
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
import time
from pathlib import Path

import numpy as np

from ctxext.io import CheckpointReader, ModelFolder
from ctxext.presets import minilm_path, mpnet_path

TABLE = "embeddings.position_embeddings.weight"


def measure(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{process.stderr.read().decode()[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


def ours(source: Path, length: int, offset: int, out: Path, check: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ctxext",
        "interpolate",
        str(source),
        "--len",
        str(length),
        "--spline",
        "--offset",
        str(offset),
        "-o",
        str(out),
        "--force",
        "--check" if check else "--no-check",
    ]


def peer(source: Path, length: int, offset: int, out: Path) -> list[str]:
    runner = shutil.which("extend-context")
    if runner is None:
        raise SystemExit("the peer is not installed: pip install context-extension==0.1.3")
    return [
        runner,
        "--model_name_or_path",
        str(source),
        "--max_seq_length",
        str(length),
        "--offset",
        str(offset),
        "--interpolation_type",
        "cubic",
        "--output_dir",
        str(out),
    ]


def peer_compatible(source: Path, scratch: Path) -> tuple[Path, str]:
    """context-extension 0.1.3 reads config.type_vocab_size, which MPNet lacks (AttributeError): give its
    copy of the model a type_vocab_size of 1 so it runs at all. Our command reads the original."""
    config = json.loads((source / "config.json").read_text())
    if "type_vocab_size" in config:
        return source, ""
    patched = scratch / f"{source.name}-for-peer"
    shutil.copytree(source, patched)
    (patched / "config.json").write_text(json.dumps({**config, "type_vocab_size": 1}))
    return patched, " (peer needed type_vocab_size added to its config)"


def table(folder: Path) -> np.ndarray:
    return CheckpointReader(ModelFolder.open(folder)).array(TABLE).astype(np.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--len", type=int, default=4096, dest="length")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    models = {"all-MiniLM-L6-v2": (minilm_path(), 0), "all-mpnet-base-v2": (mpnet_path(), 2)}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, (source, offset) in models.items():
            runs: dict[str, list[tuple[float, float]]] = {"peer": [], "ours": [], "ours+check": []}
            outputs = {key: Path(scratch) / f"{name}-{key}" for key in runs}
            peer_source, note = peer_compatible(source, Path(scratch))
            for _ in range(args.repeats):
                shutil.rmtree(outputs["peer"], ignore_errors=True)
                runs["peer"].append(measure(peer(peer_source, args.length, offset, outputs["peer"])))
                runs["ours"].append(measure(ours(source, args.length, offset, outputs["ours"], check=False)))
            runs["ours+check"].append(measure(ours(source, args.length, offset, outputs["ours+check"], check=True)))
            difference = float(np.max(np.abs(table(outputs["ours"]) - table(outputs["peer"]))))
            wall = {k: statistics.median(t for t, _ in v) for k, v in runs.items()}
            memory = {k: max(m for _, m in v) for k, v in runs.items()}
            rows.append((name + note, wall, memory, difference))
    header = (
        f"{'model':<20} {'peer s':>8} {'ours s':>8} {'speed-up':>9} {'+check s':>9} {'peer MiB':>9} "
        f"{'ours MiB':>9} {'mem ratio':>9} {'max|table diff|':>16}"
    )
    print(f"interpolate --spline to {args.length} positions, median of {args.repeats} runs, {os.cpu_count()} cores")
    print(header)
    notes: list[str] = []
    for name, wall, memory, difference in rows:
        label, _, note = name.partition(" (")
        notes.append(f"{label}: ({note}") if note else None
        print(
            f"{label:<20} {wall['peer']:>8.2f} {wall['ours']:>8.2f} {wall['peer'] / wall['ours']:>8.1f}x "
            f"{wall['ours+check']:>9.2f} {memory['peer']:>9.0f} {memory['ours']:>9.0f} "
            f"{memory['ours'] / memory['peer']:>9.2f} {difference:>16.2e}"
        )
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
