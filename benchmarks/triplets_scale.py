"""How `ctxext data` scales with the corpus: a deterministic synthetic corpus of structured documents (title + 4
sections of about 100 words, Zipf-distributed over a 20,000-word vocabulary), at growing sizes; each job a fresh
process, its wall time and peak RSS. Jobs (``--jobs``):

- ``bm25``: `ctxext data triplets CORPUS --queries section --negatives-from bm25 -o t.jsonl`;
- ``bm25-parquet``: the same written as Parquet;
- ``embedding``: `--negatives-from embedding` (all-MiniLM-L6-v2 embeds every document and query: on 2 CPU cores
  about a minute per thousand documents, so run it at the small sizes);
- ``corpus``: `ctxext data corpus CORPUS -o c.parquet` (tokenized rows, streamed).

Goal (issue 35): 100k documents to BM25 triplets in <= 10 minutes and <= 4 GB, and x10 documents <= x15 time.

    python benchmarks/triplets_scale.py --documents 1000 10000 100000 --jobs bm25 bm25-parquet corpus
    python benchmarks/triplets_scale.py --documents 1000 --ref HEAD~1   # the same at an earlier commit
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from decoders import measured  # one process's wall time and peak RSS, as the decoder benchmark measures

ROOT = Path(__file__).resolve().parent.parent
VOCABULARY = 20_000


def write_corpus(path: Path, documents: int, seed: int = 0) -> None:
    """``documents`` structured records (jsonl), the same for the same size and seed."""
    generator = np.random.default_rng(seed)
    words = np.array([f"w{index}" for index in range(VOCABULARY)])
    with path.open("w") as file:
        for number in range(documents):
            drawn = words[np.minimum(generator.zipf(1.2, 4 * 104 + 5) - 1, VOCABULARY - 1)]
            sections = [
                {
                    "heading": " ".join(drawn[5 + 104 * s : 9 + 104 * s]),
                    "text": " ".join(drawn[9 + 104 * s : 109 + 104 * s]),
                }
                for s in range(4)
            ]
            file.write(json.dumps({"id": f"doc-{number}", "title": " ".join(drawn[:5]), "sections": sections}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--ref", default=None, help="Run ctxext as it was at this commit (a git worktree).")
    parser.add_argument("--jobs", nargs="+", default=["bm25"], choices=sorted(JOBS))
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="ctxext-triplets-scale-") as scratch:
        source = ROOT / "src"
        if arguments.ref:
            subprocess.run(
                ["git", "worktree", "add", "-q", "--detach", f"{scratch}/tree", arguments.ref], cwd=ROOT, check=True
            )
            source = Path(scratch) / "tree" / "src"
        try:
            for count in arguments.documents:
                corpus = Path(scratch) / f"corpus-{count}.jsonl"
                write_corpus(corpus, count)
                for job in arguments.jobs:
                    rows.append(run_job(job, corpus, count, Path(scratch), source))
        finally:
            if arguments.ref:
                subprocess.run(["git", "worktree", "remove", "--force", f"{scratch}/tree"], cwd=ROOT, check=False)
    for job in arguments.jobs:
        ran = [row for row in rows if row["job"] == job]
        for before, after in zip(ran, ran[1:], strict=False):
            growth = after["documents"] / before["documents"]
            print(f"{job}: x{growth:g} documents -> x{after['seconds'] / before['seconds']:.1f} time")
    if arguments.json:
        ref = (
            arguments.ref
            or subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
            ).stdout.strip()
        )
        arguments.json.write_text(json.dumps({"ref": ref, "rows": rows}, indent=1) + "\n")


JOBS = {
    "bm25": (["data", "triplets", "{corpus}", "--queries", "section", "--negatives-from", "bm25"], "t.jsonl"),
    "bm25-parquet": (["data", "triplets", "{corpus}", "--queries", "section", "--negatives-from", "bm25"], "t.parquet"),
    "embedding": (["data", "triplets", "{corpus}", "--queries", "section", "--negatives-from", "embedding"], "t.jsonl"),
    "corpus": (["data", "corpus", "{corpus}"], "c.parquet"),
}


def run_job(job: str, corpus: Path, count: int, scratch: Path, source: Path) -> dict:
    """One job on one corpus, in a fresh process: its rows written, wall time and peak RSS."""
    arguments, name = JOBS[job]
    out = scratch / f"{job}-{count}-{name}"
    command = [part.format(corpus=corpus) for part in arguments] + ["-o", str(out)]
    launcher = (
        f"import sys, runpy; sys.path.insert(0, {str(source)!r}); sys.argv = ['ctxext', *sys.argv[1:]]; "
        "runpy.run_module('ctxext', run_name='__main__')"
    )
    seconds, peak_bytes = measured([sys.executable, "-c", launcher, *command])
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        written = pq.ParquetFile(out).metadata.num_rows
    else:
        written = sum(1 for _ in open(out))
    peak = peak_bytes / 2**30
    print(f"{job:>12} {count:>7} documents: {written} rows, {seconds:.1f} s, peak {peak:.2f} GiB", flush=True)
    return {
        "job": job,
        "documents": count,
        "rows": written,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak, 2),
    }


if __name__ == "__main__":
    main()
