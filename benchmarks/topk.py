"""Embedding negatives at scale: ctxext's blockwise exact top-k (`ctxext.data.triplets.top_k`, what `data triplets
--negatives-from embedding` mines with) beside FAISS's exact inner-product index (`IndexFlatIP`), on the same random
float32 unit vectors (`--documents` x `--dim`, `--queries` x `--dim`, seeded): wall time of the search, peak RSS,
and whether the two find the same top-k.

Three ways to search:
- `blockwise`: `top_k` as `hard_negatives` asks it, blocks of `--block` queries (one BLAS product, a partial sort);
- `faiss`: `IndexFlatIP.search` asked the same way (blocks of `--block` queries, through the same `Search` shape);
- `faiss-one-call`: `IndexFlatIP.search` with a whole chunk of 4096 queries at once (FAISS blocks them itself).

Timing runs in one process, the three interleaved chunk by chunk (4096 queries each, the order rotating), so load
from other jobs on a shared machine falls on all three alike. Peak RSS is measured in a fresh process per method
(all the vectors made, the first 8192 queries searched: the search's memory does not grow with the queries).
Threads: whatever OpenBLAS and OpenMP take (2 on the 2-core machine). `--encode-sample N` also times encoding N
synthetic 300-word documents with `--encoder` (all-MiniLM-L6-v2, as `data triplets` does, batches of 32), the
step that precedes the search in an embedding-negatives run, and scales it to `--documents`.

    pip install faiss-cpu
    python benchmarks/topk.py --documents 100000 --queries 100000 --dim 384 --k 32 \
        --json benchmarks/results/topk-blockwise-vs-faiss.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("blockwise", "faiss", "faiss-one-call")
CHUNK = 4096
RUNNER = r"""
import json, resource, sys, time
sys.path.insert(0, {src!r})
import numpy as np
mode, documents, queries, dim, k, block, searched = sys.argv[1], *map(int, sys.argv[2:8])

def unit(rows, seed):
    vectors = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

document_vectors, query_vectors = unit(documents, 0), unit(queries, 1)
vectors_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def searcher(method):
    if method == "blockwise":
        from ctxext.data.triplets import top_k
        return top_k(lambda rows: query_vectors[rows] @ document_vectors.T), block
    import faiss
    index = faiss.IndexFlatIP(dim)
    index.add(document_vectors)
    def search(rows, k):
        scores, ids = index.search(query_vectors[rows], k)
        return ids, scores
    return search, block if method == "faiss" else {chunk}

methods = tuple(sys.argv[8].split(",")) if mode == "interleaved" else (mode,)
searchers = {{method: searcher(method) for method in methods}}
seconds = dict.fromkeys(methods, 0.0)
found = {{method: np.empty((searched, k), np.int64) for method in methods}}
for number, first in enumerate(range(0, searched, {chunk})):
    last = min(searched, first + {chunk})
    for method in methods[number % len(methods):] + methods[:number % len(methods)]:
        search, size = searchers[method]
        start = time.perf_counter()
        for low in range(first, last, size):
            rows = list(range(low, min(last, low + size)))
            ids, scores = search(rows, k)
            order = np.argsort(-scores, axis=1, kind="stable")  # hard_negatives ranks by score too
            found[method][low : low + len(rows)] = np.take_along_axis(ids, order, axis=1)
        seconds[method] += time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
same = {{}}
if mode == "interleaved":
    reference = found["blockwise"]
    for method in methods[1:]:  # blockwise first
        sets = np.mean([len(set(a) & set(b)) / k for a, b in zip(reference, found[method])])
        same[method] = {{"top_k_sets_shared": float(sets), "same_rank": float(np.mean(reference == found[method]))}}
print(json.dumps({{"seconds": seconds, "peak_rss_bytes": peak, "vectors_rss_bytes": vectors_rss, "same": same}}))
"""


def run(mode: str, arguments: argparse.Namespace, searched: int) -> dict:
    sizes = [arguments.documents, arguments.queries, arguments.dim, arguments.k, arguments.block, searched]
    code = RUNNER.format(src=str(ROOT / "src"), chunk=CHUNK)
    command = [sys.executable, "-c", code, mode, *map(str, sizes), ",".join(arguments.methods)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def encoding_seconds(encoder_name: str, sample: int) -> float:
    """Seconds to encode ``sample`` synthetic documents of 300 words each with ``encoder_name``, as triplets does."""
    import time

    import numpy as np

    sys.path.insert(0, str(ROOT / "src"))
    from ctxext.data.encoders import as_encoder

    encoder = as_encoder(encoder_name)
    vocabulary = np.array([f"word{index}" for index in range(5000)])
    generator = np.random.default_rng(0)
    texts = [" ".join(generator.choice(vocabulary, 300)) for _ in range(sample)]
    encoder.encode(texts[:4], batch_size=32)  # warm up
    start = time.perf_counter()
    encoder.encode(texts, batch_size=32)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--block", type=int, default=256, help="Queries per search call (hard_negatives' block).")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--encode-sample", type=int, default=0, help="Also time encoding this many documents.")
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2")
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    if arguments.methods[0] != "blockwise":
        parser.error("--methods starts with blockwise (the others are compared with it)")
    import faiss
    import numpy as np

    memory = {}
    for method in arguments.methods:
        measured = run(method, arguments, min(arguments.queries, 2 * CHUNK))
        memory[method] = measured
        print(f"{method}: peak RSS {measured['peak_rss_bytes'] / 2**30:.2f} GiB", flush=True)
    timed = run("interleaved", arguments, arguments.queries)
    for method, seconds in timed["seconds"].items():
        print(f"{method}: {seconds:.1f} s for {arguments.queries} queries", flush=True)
    print(json.dumps(timed["same"]))
    result = {
        "command": " ".join(["python", "benchmarks/topk.py", *sys.argv[1:]]),
        "sizes": {k: getattr(arguments, k) for k in ("documents", "queries", "dim", "k", "block", "methods")},
        "versions": {"faiss": faiss.__version__, "numpy": np.__version__},
        "results": {
            method: {
                "seconds": round(timed["seconds"][method], 2),
                "peak_rss_gib": round(memory[method]["peak_rss_bytes"] / 2**30, 3),
                "vectors_rss_gib": round(memory[method]["vectors_rss_bytes"] / 2**30, 3),
            }
            for method in arguments.methods
        },
        "agreement_with_blockwise": timed["same"],
    }
    if arguments.encode_sample:
        seconds = encoding_seconds(arguments.encoder, arguments.encode_sample)
        result["encoding"] = {
            "encoder": arguments.encoder,
            "documents": arguments.encode_sample,
            "seconds": round(seconds, 2),
            "seconds_for_all_documents": round(seconds * arguments.documents / arguments.encode_sample, 1),
        }
        print(f"encoding {arguments.encode_sample} documents: {seconds:.1f} s", flush=True)
    print(json.dumps(result, indent=1))
    if arguments.json:
        arguments.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
