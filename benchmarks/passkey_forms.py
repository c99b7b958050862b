"""Passkey Acc@1 per length for all-MiniLM-L6-v2 in every form, side by side, in one run.

Forms: the source truncated at 512 tokens; the mean of 512-token chunk embeddings; `interpolate --spline`
and `--tile` to the longest length; `transfer` to BigBird (block-sparse) before fine-tuning; and the
transferred model after `finetune` on long documents: the Python standard library's documentation
(`ctxext data pydocs`) made into inverse-cloze triplets (`ctxext data triplets --queries passage`: a 32-word
passage from a random depth is the query, its whole module page the positive, and the negative that page
with the passage swapped out, or with `--negatives bm25` the BM25-nearest other page). Never on passkey data.
`--global-registers` and `--cls-pooling` transfer with reserved tokens in BigBird's global blocks and pool its
[CLS] (docs/transfer.md). `--finetune-from spline` fine-tunes the `--spline` model (full attention) instead.

    python benchmarks/passkey_forms.py --documents 50 --queries 25 --train-len 2048 --steps 150
    python benchmarks/passkey_forms.py --finetune-from spline --train-len 2048 --steps 100 --lr 5e-5 \
        --passages-per-document 20
    # on a GPU (docs/train.md):
    python benchmarks/passkey_forms.py --forms bigbird,finetuned --global-registers --cls-pooling \
        --train-len 4096 --steps 250 --batch-size 16 --lr 5e-5 --passages-per-document 20 --bf16 --eval-batch-size 16

Intermediate checkpoints go to --work (default: a folder in ctxext's cache dir); they are reused when
present, and so are evaluations (WORK/evaluations), so forms can be evaluated in separate runs and printed side
by side by the last. Results are printed and written to WORK/passkey_forms.json.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path


def main() -> None:  # noqa: C901, PLR0912, PLR0915 (a benchmark script read top to bottom: options, then each form)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="256,512,1024,2048,4096")
    parser.add_argument("--documents", type=int, default=50, help="passkey documents per length (LongEmbed: 100)")
    parser.add_argument("--queries", type=int, default=25, help="passkey queries per length (LongEmbed: 50)")
    parser.add_argument("--seed", type=int, default=0, help="draw other passkey sets (a held-out check)")
    parser.add_argument("--train-len", type=int, default=2048, help="fine-tuning document length (tokens)")
    parser.add_argument(
        "--position-span",
        type=int,
        default=None,
        help="fine-tune with position ids spread over this many positions (PoSE)",
    )
    parser.add_argument("--steps", type=int, default=150, help="fine-tuning steps")
    parser.add_argument("--passages-per-document", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--pydocs-limit", type=int, default=None, help="modules in the training corpus")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument(
        "--negatives",
        default="swap",
        choices=["swap", "bm25"],
        help="swap: the positive with its passage swapped out; bm25: the nearest other page",
    )
    parser.add_argument(
        "--global-registers",
        action="store_true",
        help="transfer with --global-registers (reserved tokens fill BigBird's global blocks)",
    )
    parser.add_argument("--cls-pooling", action="store_true", help="pool BigBird's [CLS] (a global token)")
    parser.add_argument("--bf16", action="store_true", help="fine-tune in bfloat16 mixed precision (GPUs)")
    parser.add_argument("--eval-batch-size", type=int, default=2)
    parser.add_argument("--source", default=None, help="all-MiniLM-L6-v2 folder (default: the installed package's)")
    parser.add_argument("--forms", default="truncate,chunk,spline,tile,bigbird,finetuned")
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="FOLDER",
        help="another model to evaluate beside the forms (for example a further `ctxext finetune`)",
    )
    parser.add_argument(
        "--finetune-from",
        default="bigbird",
        choices=["bigbird", "spline"],
        help="the long model to fine-tune: the BigBird transfer, or the --spline one (full attention)",
    )
    arguments = parser.parse_args()

    from ctxext.data import write_python_docs_corpus
    from ctxext.data.triplets import build_triplets
    from ctxext.evaluate import FIRST_NAMES, Task, evaluate
    from ctxext.positions import Method, interpolate
    from ctxext.presets import cache_dir, minilm_path
    from ctxext.train import RunOptions, TrainSettings
    from ctxext.train.finetune import FinetuneOptions, finetune
    from ctxext.transfer import transfer

    lengths = [int(x) for x in arguments.lengths.split(",")]
    longest = max(lengths)
    work = arguments.work or cache_dir() / "bench-passkey-forms"
    work.mkdir(parents=True, exist_ok=True)
    source = arguments.source or str(minilm_path())
    print(
        f"passkey: {arguments.documents} documents, {arguments.queries} queries per length "
        f"(LongEmbed uses 100/50); chance Acc@1 = {1 / arguments.documents:.3f}",
        flush=True,
    )
    timings: dict[str, float] = {}

    def build(name: str, make) -> str:  # noqa: ANN001
        path = work / name
        if not path.exists():
            started = time.perf_counter()
            make(path)
            timings[f"build {name}"] = time.perf_counter() - started
            print(f"built {name} in {timings[f'build {name}']:.0f} s", flush=True)
        return str(path)

    forms = arguments.forms.split(",")
    plan: list[tuple[str, str, dict]] = []
    if "truncate" in forms:
        plan.append(("source, truncated at 512", source, {"max_length": 512}))
    if "chunk" in forms:
        plan.append(("source, mean of 512-token chunks", source, {"chunk": 512}))

    def spline() -> str:
        return build("spline", lambda p: interpolate(source, longest, str(p), method=Method.spline))

    if "spline" in forms:
        plan.append((f"interpolate --spline {longest}", spline, {}))
    if "tile" in forms:
        plan.append(
            (
                f"interpolate --tile {longest}",
                lambda: build("tile", lambda p: interpolate(source, longest, str(p), method=Method.tile)),
                {},
            )
        )
    bigbird = None
    if "bigbird" in forms or ("finetuned" in forms and arguments.finetune_from == "bigbird"):

        def make_bigbird(path: Path) -> None:
            transfer(source, "bigbird", longest, path, global_registers=arguments.global_registers)
            if arguments.cls_pooling:
                pooling = path / "1_Pooling" / "config.json"
                pooling.write_text(
                    json.dumps(
                        {
                            **json.loads(pooling.read_text()),
                            "pooling_mode_cls_token": True,
                            "pooling_mode_mean_tokens": False,
                        },
                        indent=2,
                    )
                )

        bigbird = build(
            "bigbird" + "-registers" * arguments.global_registers + "-cls" * arguments.cls_pooling, make_bigbird
        )
    if "bigbird" in forms:
        plan.append((f"transfer -> {Path(bigbird).name} (no training)", bigbird, {}))
    if "finetuned" in forms:
        corpus = work / "pydocs.jsonl"
        if not corpus.exists():
            write_python_docs_corpus(corpus, limit=arguments.pydocs_limit)
        recipe = f"{arguments.negatives}-{arguments.passages_per_document}-{arguments.train_len}"
        triplets = work / f"pydocs-passages-{recipe}.jsonl"
        if not triplets.exists():
            # About 1.75 tokens per word in this corpus: passages end within the first train-len tokens.
            build_triplets(
                str(corpus),
                triplets,
                queries="passage",
                negatives_from=arguments.negatives,
                seed=0,
                sections_per_document=arguments.passages_per_document,
                max_depth_words=arguments.train_len // 2,
            )
        settings = TrainSettings(
            steps=arguments.steps,
            batch_size=arguments.batch_size,
            learning_rate=arguments.lr,
            warmup_ratio=0.1,
            logging_every=1,
            save_every=25,
            progress_bars=False,
            extra={"bf16": True} if arguments.bf16 else {},
        )
        base = bigbird if arguments.finetune_from == "bigbird" else spline()
        span = f"-span{arguments.position_span}" if arguments.position_span else ""
        name = (
            f"{Path(base).name}-finetuned-{recipe}{span}-b{arguments.batch_size}-lr{arguments.lr:g}-{arguments.steps}"
        )
        result_holder: dict = {}

        def make_finetuned(path: Path) -> None:
            result = finetune(
                base,
                [triplets],
                path,
                FinetuneOptions(max_len=arguments.train_len, position_span=arguments.position_span),
                settings=settings,
                run_options=RunOptions(
                    work_dir=work / f"{name}.checkpoints",
                    resume=(work / f"{name}.checkpoints").exists()
                    and any((work / f"{name}.checkpoints").glob("checkpoint-*")),
                ),
            )
            result_holder["history"] = result.history
            result_holder["attention_runs"] = result.attention_runs

        def build_finetuned() -> str:
            path = build(name, make_finetuned)
            if result_holder:
                report_losses()
            return path

        over = f" over {arguments.position_span} positions" if arguments.position_span else ""
        plan.append(
            (
                f"{Path(base).name} + finetune ({arguments.train_len} tok{over}, {arguments.steps} steps)",
                build_finetuned,
                {},
            )
        )
        # the fine-tuned model over windows of the length it was trained at
        if arguments.train_len < longest and not arguments.position_span:
            plan.append(
                (
                    f"  the same, mean of {arguments.train_len}-token windows",
                    build_finetuned,
                    {"chunk": arguments.train_len},
                )
            )

        def report_losses() -> None:
            losses = [loss for _, loss in result_holder["history"]["train"]]
            print(
                f"finetune loss: first {losses[0]:.4f}, last {losses[-1]:.4f}, mean of first 5 "
                f"{sum(losses[:5]) / len(losses[:5]):.4f}, of last 5 {sum(losses[-5:]) / len(losses[-5:]):.4f}; "
                f"attention runs {result_holder['attention_runs']}",
                flush=True,
            )

    plan += [(Path(folder).name, str(Path(folder).absolute()), {}) for folder in arguments.also]
    rows = []
    for label, ref, options in plan:
        ref = ref() if callable(ref) else ref
        setting = "".join(f"-{key}{value}" for key, value in options.items())
        # the names and the seed draw the sets
        sizes = f"{arguments.documents}x{arguments.queries}-names{len(FIRST_NAMES)}" + (
            f"-seed{arguments.seed}" if arguments.seed else ""
        )
        cached = work / "evaluations" / f"{Path(ref).name}{setting}-{sizes}.json"
        if cached.is_file():
            row = json.loads(cached.read_text())
        else:
            started = time.perf_counter()
            evaluation = evaluate(
                ref,
                Task.passkey,
                lengths=lengths,
                documents=arguments.documents,
                queries=arguments.queries,
                seed=arguments.seed,
                batch_size=arguments.eval_batch_size,
                **options,
            )
            scores = {str(score.length): score.acc_at_1 for score in evaluation.scores}
            row = {"form": label, "model": ref, "acc_at_1": scores, "seconds": round(time.perf_counter() - started, 1)}
            cached.parent.mkdir(exist_ok=True)
            cached.write_text(json.dumps(row))
        if not all(str(n) in row["acc_at_1"] for n in lengths):
            cached.unlink()
            raise SystemExit(f"{cached} lacks some of --lengths; run again to re-evaluate")
        rows.append(row)
        print(
            f"{label:<48}"
            + " ".join(f"{row['acc_at_1'][str(n)]:>6.2f}" for n in lengths)
            + f"   ({row['seconds']:.0f} s)",
            flush=True,
        )

    print()
    print(f"{'passkey Acc@1':<48}" + " ".join(f"{n:>6}" for n in lengths))
    for row in rows:
        print(f"{row['form']:<48}" + " ".join(f"{row['acc_at_1'][str(n)]:>6.2f}" for n in lengths))
    global_needles = needles_in_global_blocks(source, lengths, arguments.documents, arguments.queries)
    print(
        "\ndocuments whose pass key sentence touches BigBird's global blocks (first or last 64 tokens), per "
        "length: " + ", ".join(f"{n}: {len(global_needles[n])}/{arguments.documents}" for n in lengths)
    )
    (work / "passkey_forms.json").write_text(
        json.dumps(
            {
                "options": {k: str(v) for k, v in vars(arguments).items()},
                "rows": rows,
                "timings": timings,
                "needles_in_global_blocks": global_needles,
            },
            indent=2,
        )
    )


def needles_in_global_blocks(
    model: str, lengths: list[int], documents: int, queries: int, block: int = 64
) -> dict[int, list[int]]:
    """Per length, the passkey documents whose needle lies (partly) in the first or last block: BigBird's global
    tokens, which every token attends to, so such a document's embedding is pulled toward its needle."""
    from transformers import AutoTokenizer

    from ctxext.evaluate import passkey_sets

    tokenizer = AutoTokenizer.from_pretrained(model)
    found = {}
    for retrieval_set in passkey_sets(tokenizer, lengths, documents=documents, queries=queries):
        touching = []
        for index, document in enumerate(retrieval_set.documents):
            needle = re.search(r"(\w+)'s pass key is (\d+)\. Remember it\. \2 is the pass key for \1\.", document)
            spans = tokenizer(document, return_offsets_mapping=True)["offset_mapping"]
            inside = [i for i, (a, b) in enumerate(spans) if b > a and a < needle.end() and b > needle.start()]
            padded = -(-len(spans) // block) * block  # BigBird pads to whole blocks
            if inside[0] < block or inside[-1] >= padded - block:
                touching.append(index)
        found[retrieval_set.length] = touching
    return found


if __name__ == "__main__":
    main()
