"""Throughput and peak memory of `ctxext data corpus` on a growing local text collection.

The collection is the Python standard library's own sources (every machine has them): the first files
(in sorted order) up to ``--base-mb`` MB, copied as .txt ``scale`` times into a scratch folder.
Each run is a fresh subprocess, so its peak RSS (ru_maxrss) is its own. Side by side in one run:

- streamed: ``build_corpus`` (batches of documents, Parquet row groups written as they fill);
- chunked:  the same with --chunk 512 --overlap 64;
- dedupe:   the same with --dedupe (exact + MinHash; its index grows with kept rows, by design);
- naive:    read every file, tokenize everything, one ``pa.table`` and one ``pq.write_table``
            (what a script would do), to show what streaming saves.

Goal: the streamed peak stays flat as the input grows (ratio of peaks ~1.0 across scales).

    python benchmarks/data.py                      # 4, 8, 16, 32 MB
    python benchmarks/data.py --base-mb 16 --scales 1 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RUNNER = r"""
import json, resource, sys, time
sys.path.insert(0, {src!r})
mode, folder, out, tokenizer = sys.argv[1:5]
start = time.perf_counter()
if mode == "naive":
    import pyarrow as pa, pyarrow.parquet as pq
    from pathlib import Path
    from ctxext.data.text import load_tokenizer
    tok = load_tokenizer(tokenizer)
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(Path(folder).rglob("*.txt"))]
    tokens = tok.count(texts)
    pq.write_table(pa.table({{"text": texts, "tokens": tokens}}), out, compression="zstd")
    documents, total_tokens = len(texts), sum(tokens)
else:
    from ctxext.data import build_corpus
    options = {{"streamed": {{}}, "chunked": {{"chunk": 512, "overlap": 64}},
               "dedupe": {{"dedupe": True}}}}[mode]
    result = build_corpus([folder], out, tokenizer=tokenizer, force=True, **options)
    documents, total_tokens = result.totals.documents, result.totals.tokens
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "documents": documents, "tokens": total_tokens,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def stdlib_texts() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for directory, subdirectories, names in os.walk(stdlib):
        subdirectories[:] = sorted(d for d in subdirectories if d not in ("site-packages", "__pycache__"))
        files.extend(Path(directory) / n for n in sorted(names) if n.endswith((".py", ".rst", ".txt")))
    return files


def build_collection(folder: Path, megabytes: float, sources: list[Path], copies: int) -> tuple[int, int]:
    """``copies`` copies of a base set of source files holding ``megabytes`` (as .txt files).

    Growing the input by copies keeps its mix, and its largest single document, the same at every
    scale, so a change in peak memory is due to the input's size alone."""
    base, size = [], 0
    for path in sources:
        if size >= megabytes * 2**20:
            break
        if path.stat().st_size:
            base.append(path)
            size += path.stat().st_size
    folder.mkdir(parents=True)
    for copy in range(copies):
        for index, path in enumerate(base):
            shutil.copyfile(path, folder / f"{copy:03d}_{index:05d}_{path.stem}.txt")
    return len(base) * copies, size * copies


def run(mode: str, folder: Path, out: Path, tokenizer: str) -> dict:
    script = RUNNER.format(src=str(ROOT / "src"))
    completed = subprocess.run(
        [sys.executable, "-c", script, mode, str(folder), str(out), tokenizer],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode:
        raise SystemExit(f"{mode} failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-mb", type=float, default=4.0)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--modes", nargs="+", default=["streamed", "chunked", "dedupe", "naive"])
    parser.add_argument("--tokenizer", default="all-MiniLM-L6-v2")
    args = parser.parse_args()

    sources = stdlib_texts()
    print(
        f"collection: {len(sources)} standard-library files (.py/.rst/.txt) "
        f"from {sysconfig.get_paths()['stdlib']}"
        f"; tokenizer {args.tokenizer}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs"
    )
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory(prefix="ctxext-bench-data-") as scratch:
        for scale in args.scales:
            folder = Path(scratch) / f"x{scale}"
            files, size = build_collection(folder, args.base_mb, sources, scale)
            for mode in args.modes:
                result = run(mode, folder, Path(scratch) / f"{mode}-x{scale}.parquet", args.tokenizer)
                result.update(files=files, input_mb=size / 2**20)
                results[(mode, scale)] = result
                print(
                    f"  {mode:9s} {size / 2**20:7.1f} MB  {result['documents']:7d} docs  "
                    f"{result['tokens'] / 1e6:7.2f} M tokens  {result['seconds']:6.1f} s  "
                    f"{result['documents'] / result['seconds']:8.0f} docs/s  "
                    f"{result['tokens'] / result['seconds'] / 1e3:7.0f} k tokens/s  "
                    f"peak {result['peak_mb']:6.0f} MB",
                    flush=True,
                )
            shutil.rmtree(folder)
    first, last = args.scales[0], args.scales[-1]
    print(f"\npeak memory, x{last} input vs x{first} (1.00 = flat):")
    for mode in args.modes:
        ratio = results[(mode, last)]["peak_mb"] / results[(mode, first)]["peak_mb"]
        low, high = results[(mode, first)]["peak_mb"], results[(mode, last)]["peak_mb"]
        print(f"  {mode:9s} {low:6.0f} MB -> {high:6.0f} MB  ratio {ratio:.2f}")
    if "naive" in args.modes and "streamed" in args.modes:
        print(
            f"\nat x{last}: naive peak / streamed peak = "
            f"{results[('naive', last)]['peak_mb'] / results[('streamed', last)]['peak_mb']:.2f}; "
            f"streamed time / naive time = "
            f"{results[('streamed', last)]['seconds'] / results[('naive', last)]['seconds']:.2f}"
        )


if __name__ == "__main__":
    main()
