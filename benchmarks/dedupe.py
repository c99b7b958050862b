"""ctxext's near-duplicate detection (`ctxext.data.dedupe`, used by `data corpus --dedupe`) beside datasketch's
MinHash + MinHashLSH, on the same corpus with planted near-duplicates: wall time, peak memory of the index
(tracemalloc), recall of the planted near-duplicates and false positives (pairs flagged whose exact shingle
Jaccard similarity is under the threshold). Both at 64 permutations, threshold 0.8, 5-word shingles, the
first text seen kept; each in a fresh process.

    pip install datasketch
    python benchmarks/dedupe.py --documents 10000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RUNNER = r"""
import json, re, sys, time, tracemalloc
sys.path.insert(0, {src!r})
which, path = sys.argv[1:3]
texts = [json.loads(line)["text"] for line in open(path)]
tracemalloc.start()
start = time.perf_counter()
dropped = []
if which == "ctxext":
    from ctxext.data.dedupe import Deduplicator
    seen = Deduplicator(near=True, threshold=0.8, num_perm=64, bands=16, shingle=5)
    dropped = [i for i, text in enumerate(texts) if seen.check(text) is not None]
else:
    from datasketch import MinHash, MinHashLSH
    from ctxext.data.text import WORD_CHARACTERS
    lsh = MinHashLSH(threshold=0.8, num_perm=64)
    for i, text in enumerate(texts):
        words = WORD_CHARACTERS.findall(text.casefold())
        shingles = {{" ".join(words[j : j + 5]).encode() for j in range(max(1, len(words) - 4))}}
        signature = MinHash(num_perm=64, seed=0)
        signature.update_batch(list(shingles))
        if lsh.query(signature):
            dropped.append(i)
        else:
            lsh.insert(str(i), signature)
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_mb": tracemalloc.get_traced_memory()[1] / 2**20, "dropped": dropped}}))
"""


def write_corpus(path: Path, documents: int, seed: int = 0) -> dict[int, int]:
    """Documents of 200 Zipf words; every tenth is a near-copy of an earlier one (2 of its words replaced:
    shingle Jaccard about 0.9). Returns copy -> original."""
    generator = np.random.default_rng(seed)
    vocabulary = np.array([f"w{i}" for i in range(30000)])
    texts, planted = [], {}
    for number in range(documents):
        if number % 10 == 9:
            original = int(generator.integers(0, number))
            words = texts[original].split()
            for position in generator.choice(len(words), size=2, replace=False):
                words[position] = str(vocabulary[generator.integers(0, len(vocabulary))])
            texts.append(" ".join(words))
            planted[number] = original
        else:
            texts.append(" ".join(vocabulary[np.minimum(generator.zipf(1.1, 200), len(vocabulary)) - 1]))
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=10000)
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    corpus = Path("/tmp/ctxext-dedupe-corpus.jsonl")
    planted = write_corpus(corpus, arguments.documents)
    from ctxext.data.dedupe import jaccard

    texts = [json.loads(line)["text"] for line in corpus.open()]
    rows = []
    for which in ("ctxext", "datasketch"):
        script = RUNNER.format(src=str(ROOT / "src"))
        done = subprocess.run([sys.executable, "-c", script, which, str(corpus)], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-2000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
        dropped = set(result["dropped"])
        found = len(dropped & set(planted))
        false = [i for i in dropped - set(planted) if max(jaccard(texts[i], t) for t in texts[:i]) < 0.8]
        rows.append(
            {
                "method": which,
                "seconds": round(result["seconds"], 2),
                "index_peak_mb": round(result["peak_mb"], 1),
                "recall": round(found / len(planted), 4),
                "false_positives": len(false),
            }
        )
        print(rows[-1], flush=True)
    if arguments.json:
        arguments.json.write_text(json.dumps({"documents": arguments.documents, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
