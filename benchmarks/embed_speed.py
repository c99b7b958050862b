"""`ctxext embed` at 4096 tokens: BigBird on ctxext's block-sparse attention against the same weights with full
SDPA attention (all-MiniLM-L6-v2's BERT, positions tiled to 4096 by `interpolate --tile`), side by side.

Each measurement is a fresh process, the two models alternating, ``--repeats`` times; medians. Columns:

- ``command``: the whole `ctxext embed` command (interpreter, imports, model loading, tokenizing, encoding,
  writing), as a user runs it;
- ``encode``: `Encoder.encode` (or `late_chunks`) alone, in the same process, after the model is loaded.

Documents: the standard library's module pages (`ctxext data pydocs`), each cut to 4096 tokens; ``--late-chunk
512`` measures late chunking instead of one vector per document.

    python benchmarks/embed_speed.py --documents 12 48 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LENGTH = 4096
CHILD = r"""
import json, sys, time
started = time.perf_counter()
from ctxext.encode import load_encoder
from ctxext.data.formats import read_embedding_inputs
model, docs, late_chunk, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
encoder = load_encoder(model, max_length=4096)
texts = read_embedding_inputs(docs)
loaded = time.perf_counter()
if late_chunk:
    rows = encoder.late_chunks(texts, chunk=late_chunk, batch_size=batch).vectors
else:
    rows = encoder.encode(texts, batch_size=batch)
print(json.dumps({"encode_s": time.perf_counter() - loaded, "rows": len(rows), "attention": encoder.attention_type}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="embed's default")
    parser.add_argument("--late-chunk", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    work = arguments.work or Path(tempfile.mkdtemp(prefix="ctxext-embed-speed-"))
    models = prepared_models(work)
    results = []
    for count in arguments.documents:
        docs = documents(work, count)
        timings: dict[str, dict[str, list[float]]] = {name: {"command": [], "encode": []} for name in models}
        for _ in range(arguments.repeats):
            for name, folder in models.items():  # alternating, so drift hits both alike
                timings[name]["command"].append(command_seconds(folder, docs, work, arguments))
                timings[name]["encode"].append(encode_seconds(folder, docs, arguments))
        row = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in timings.items()}
        ratios = {k: row["sdpa full"][k] / row["block-sparse"][k] for k in ("command", "encode")}
        results.append({"documents": count, "seconds": row, "block_sparse_speedup": ratios})
        print(
            f"{count:>4} documents of {LENGTH} tokens: command {row['block-sparse']['command']:.1f} s vs "
            f"{row['sdpa full']['command']:.1f} s (x{ratios['command']:.2f}); encode "
            f"{row['block-sparse']['encode']:.1f} s vs {row['sdpa full']['encode']:.1f} s (x{ratios['encode']:.2f})",
            flush=True,
        )
    if arguments.json:
        machine = f"{platform.machine()}, {subprocess.check_output(['nproc']).decode().strip()} CPUs"
        options = {k: str(v) for k, v in vars(arguments).items()}
        arguments.json.write_text(json.dumps({"machine": machine, "options": options, "rows": results}, indent=2))


def prepared_models(work: Path) -> dict[str, Path]:
    from ctxext.positions import Method, interpolate
    from ctxext.transfer import transfer

    bigbird, tiled = work / "bigbird-4096", work / "bert-tile-4096"
    if not bigbird.exists():
        transfer("all-MiniLM-L6-v2", "bigbird", LENGTH, str(bigbird))
    if not tiled.exists():
        interpolate("all-MiniLM-L6-v2", LENGTH, str(tiled), method=Method.tile)
    return {"block-sparse": bigbird, "sdpa full": tiled}


def documents(work: Path, count: int) -> Path:
    """``count`` texts of the standard library's module pages, consecutive pages joined until each holds 3,500
    words (over 4096 tokens: embed cuts it there), as embed input."""
    import itertools

    from ctxext.data.pydocs import python_docs_documents

    path = work / f"docs-{count}.jsonl"
    if not path.exists():
        pages = itertools.cycle([page["text"] for page in python_docs_documents(limit=200)])
        texts = []
        for _ in range(count):
            text = ""
            while len(text.split()) < 3500:
                text += next(pages) + "\n\n"
            texts.append(text)
        path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


def command_seconds(model: Path, docs: Path, work: Path, arguments: argparse.Namespace) -> float:
    out = work / "out.npy"
    command = [sys.executable, "-m", "ctxext", "embed", str(model), str(docs), "-o", str(out), "--force"]
    command += ["--max-len", str(LENGTH), "--batch-size", str(arguments.batch_size)]
    command += ["--late-chunk", str(arguments.late_chunk)] if arguments.late_chunk else []
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def encode_seconds(model: Path, docs: Path, arguments: argparse.Namespace) -> float:
    child = [sys.executable, "-c", CHILD, str(model), str(docs), str(arguments.late_chunk), str(arguments.batch_size)]
    done = subprocess.run(child, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])["encode_s"]


if __name__ == "__main__":
    main()
