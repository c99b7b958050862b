"""The distilled 384-wide student against its teacher (all-mpnet-base-v2) on a local retrieval set, in one run:
nDCG@10 and Acc@1 of both, their ratio, and encoding speed (documents per second) of both, their ratio.

    python benchmarks/distill.py --texts 4000 --steps 1000

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
from itertools import zip_longest
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=4000, help="texts to distil on")
    parser.add_argument("--code-share", type=float, default=0.5, help="share of the texts that are function sources")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--queries", type=int, default=300, help="retrieval set size")
    parser.add_argument("--work", type=Path, default=None)
    arguments = parser.parse_args()

    from ctxext.data.pydocs import public_functions, python_docstrings, write_pydocs_beir
    from ctxext.encode import load_encoder
    from ctxext.evaluate import accuracy_at_1, beir_set, ndcg_at_k, similarity
    from ctxext.guide import guide
    from ctxext.presets import cache_dir, mpnet_path
    from ctxext.train import TrainSettings
    from ctxext.train.distill import distill

    work = arguments.work or cache_dir() / "bench-distill"
    work.mkdir(parents=True, exist_ok=True)
    teacher = str(mpnet_path())
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
    student = work / f"guide-384x{arguments.layers}"
    if not student.exists():
        guide(teacher, student, 384, layers=arguments.layers)
    out = work / f"distilled-{texts.stem}-{arguments.steps}-lr{arguments.lr}"
    if not out.exists():
        started = time.perf_counter()
        result = distill(
            str(student),
            teacher,
            [texts],
            out,
            max_len=arguments.max_len,
            settings=TrainSettings(
                steps=arguments.steps,
                batch_size=arguments.batch_size,
                learning_rate=arguments.lr,
                warmup_ratio=0.1,
                logging_every=10,
                save_every=10**6,
                progress_bars=False,
            ),
        )
        losses = [loss for _, loss in result.history["train"]]
        print(
            f"distill: {time.perf_counter() - started:.0f} s, loss {losses[0]:.5f} -> {losses[-1]:.5f}, "
            f"teacher cache {'hit' if result.cached else 'written'}",
            flush=True,
        )

    retrieval_set = beir_set(beir)
    rows = {}
    for label, ref in (
        ("teacher all-mpnet-base-v2 (768)", teacher),
        ("GUIDE init, no training (384)", str(student)),
        ("distilled student (384)", str(out)),
    ):
        encoder = load_encoder(ref, max_length=arguments.max_len)
        encoder.encode(retrieval_set.queries[:8])  # warm-up
        started = time.perf_counter()
        documents = encoder.encode(retrieval_set.documents, batch_size=16, max_length=arguments.max_len)
        seconds = time.perf_counter() - started
        queries = encoder.encode(retrieval_set.queries, batch_size=16)
        scores = similarity(queries, documents)
        rows[label] = {
            "ndcg_at_10": ndcg_at_k(scores, retrieval_set.relevant),
            "acc_at_1": accuracy_at_1(scores, retrieval_set.relevant),
            "docs_per_s": len(retrieval_set.documents) / seconds,
        }
    teacher_row = rows["teacher all-mpnet-base-v2 (768)"]
    print(
        f"\nretrieval on {beir.name}: {len(retrieval_set.queries)} queries, {len(retrieval_set.documents)} "
        f"documents (max {arguments.max_len} tokens)"
    )
    print(f"{'model':<34}{'nDCG@10':>9}{'Acc@1':>8}{'docs/s':>9}{'score ratio':>13}{'speed ratio':>13}")
    for label, row in rows.items():
        print(
            f"{label:<34}{row['ndcg_at_10']:>9.3f}{row['acc_at_1']:>8.3f}{row['docs_per_s']:>9.1f}"
            f"{row['ndcg_at_10'] / teacher_row['ndcg_at_10']:>13.3f}"
            f"{row['docs_per_s'] / teacher_row['docs_per_s']:>13.2f}"
        )
    (work / "distill_benchmark.json").write_text(
        json.dumps({"options": {k: str(v) for k, v in vars(arguments).items()}, "rows": rows}, indent=2)
    )


if __name__ == "__main__":
    main()
