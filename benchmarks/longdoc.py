"""Long-document retrieval with all-MiniLM-L6-v2 in every form and after each training recipe, side by side.

The real task is `ctxext data longdoc` (docs/data.md): a definition's summary line is the query, its module
page from an installed package's documentation (without that line) the target; pages up to 4096 tokens;
dev and test splits share no package, and no training stage reads either (training uses the standard
library). Rows:

- the source truncated at 512, and the mean of its 512-token chunks (what users do today);
- `interpolate` to 4096 with no training: `--spline`, `--tile`, and `--linear --grid scaled` (LongEmbed's PI);
- the training recipes (`ctxext finetune`, on `data triplets --queries summary` of the standard library):
  - `positions`: LongEmbed's E5-4k recipe: the `--grid scaled` model, only the new position rows train
    (`--positions-only`), 512-token inputs whose position ids span 4096 (`--position-span`);
  - `tile-positions`: the same from the `--tile` model, whose rows 0-511 are the original ones, so inputs up
    to 512 tokens stay exactly the source's;
  - `full`: every weight trains, from the `--spline` model, 1024-token inputs spanning 4096;
  - `positions+full`: the `positions` model, then a short `full` run;
  - `positions-cached`: `positions` with 32 candidates per query through gradient caching (`--cache-chunk`).
- swapped attention (`--swaps`, the BigBird issue): `transfer` into a block-sparse BigBird, run with ctxext's
  fixed-pattern attention: `bigbird` from the source, `bigbird-tile-positions` from that recipe's model (the
  seed's order: the full-attention long model first), and the `bigbird-full` recipe fine-tunes the latter
  under block-sparse attention (1024-token inputs spanning 4096 positions).

With --retrieval-forms, every way users retrieve long documents side by side (`ctxext evaluate --forms`,
issue 34): the source's 512-token chunks (mean and max), BM25, and for each recipe and swap the model whole,
late-chunked (one 4096-token pass pooled per 512 tokens) and fused with BM25 (reciprocal rank, k=60), beside
BM25 fused with the source's chunk-max; both splits; and the same forms on document-to-document search (`data
links` over the module pages of each split's held-out packages: a page is the query, the pages it names by
qualified name or that name it are relevant). Choose on dev, look once at test:

    python benchmarks/longdoc.py --forms chunk --recipes bigbird-full --swaps bigbird --synthetic-documents 0 \
        --retrieval-forms dev,test          # writes benchmarks/results/longdoc-forms.json

Columns: MRR and R@1 at 4096 tokens on the chosen split, MRR per depth bucket (where the answer starts);
passkey and needle Acc@1 at 1024 / 2048 / 4096 (a held-out draw, --seed 1); nDCG@10 on a short set
(function summary line -> its code, from the test packages, at 512 tokens) against the source; training wall
time and peak memory (each recipe trains in a child process).

    python benchmarks/longdoc.py --split dev              # choose here
    python benchmarks/longdoc.py --split test             # look once; writes benchmarks/results/longdoc-test.json

Models, triplets and evaluations are cached under --work, so a second run only evaluates what is new.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

LENGTH = 4096
SWAPS = {"bigbird": "source", "bigbird-tile-positions": "tile-positions"}  # BigBird form: the model it comes from
RECIPES = {
    # name: (base form, finetune options, triplets max depth in words, steps)
    "positions": (
        "scaled",
        {"positions_only": True, "max_len": 512, "position_span": 4096, "batch_size": 8, "lr": 5e-4},
        250,
    ),
    "tile-positions": (
        "tile",
        {"positions_only": True, "max_len": 512, "position_span": 4096, "batch_size": 8, "lr": 5e-4},
        250,
    ),
    "full": ("spline", {"max_len": 1024, "position_span": 4096, "batch_size": 4, "lr": 2e-5}, 500),
    "positions+full": ("positions", {"max_len": 1024, "position_span": 4096, "batch_size": 4, "lr": 2e-5}, 500),
    "bigbird-full": (
        "bigbird-tile-positions",
        {"max_len": 1024, "position_span": 4096, "batch_size": 4, "lr": 2e-5},
        500,
    ),
    # the chunk-level objective (issue 34): bigbird-full's run, each query against every 512-token chunk
    "bigbird-late-chunk": (
        "bigbird-tile-positions",
        {"max_len": 1024, "position_span": 4096, "batch_size": 4, "lr": 2e-5, "late_chunk": 512},
        500,
    ),
    "positions-cached": (
        "scaled",
        {"positions_only": True, "max_len": 512, "position_span": 4096, "batch_size": 32, "lr": 5e-4, "cache_chunk": 8},
        250,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["dev", "test"], default="dev")
    parser.add_argument("--forms", default="truncate,chunk,spline,tile,scaled")
    parser.add_argument("--recipes", default=",".join(name for name in RECIPES if not name.startswith("bigbird")))
    parser.add_argument("--swaps", default="", help=f"BigBird forms, of {','.join(SWAPS)}")
    parser.add_argument("--steps", type=int, default=60, help="training steps per recipe (second stage: half)")
    parser.add_argument("--pages", type=int, default=120, help="pages per split of the longdoc set")
    parser.add_argument(
        "--synthetic-documents", type=int, default=100, help="passkey / needle documents (LongEmbed: 100; 0: skip)"
    )
    parser.add_argument("--synthetic-lengths", default="1024,2048,4096")
    parser.add_argument("--synthetic-tasks", default="passkey,needle")
    parser.add_argument("--synthetic-queries", type=int, default=50, help="passkey / needle queries (50)")
    parser.add_argument("--batch-size", type=int, default=2, help="evaluation batch")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON (default: benchmarks/results/longdoc-SPLIT.json)")
    parser.add_argument("--retrieval-forms", default="", help="splits to score every retrieval form on (dev,test)")
    arguments = parser.parse_args()

    from ctxext.presets import cache_dir, minilm_path

    work = arguments.work or cache_dir() / "bench-longdoc"
    work.mkdir(parents=True, exist_ok=True)
    source = str(minilm_path())
    data = build_data(work, arguments.pages)
    models = {"source": source}
    rows = []
    for form in arguments.forms.split(","):
        ref, options = zero_training_form(form, source, work, models)
        rows.append(evaluate_row(form, ref, options, data, arguments, work))
    for name in filter(None, arguments.recipes.split(",")):
        ref, training = trained_recipe(name, work, data, models, arguments.steps)
        rows.append({**evaluate_row(name, ref, {}, data, arguments, work), "training": training})
    for name in filter(None, arguments.swaps.split(",")):
        ref = swapped_form(name, work, data, models, arguments.steps)
        rows.append(evaluate_row(name, ref, {}, data, arguments, work))
    if arguments.retrieval_forms:
        trained = {row["form"]: row for row in rows if row["form"] in RECIPES or row["form"] in SWAPS}
        splits = arguments.retrieval_forms.split(",")
        forms = forms_table(source, trained, data, splits, arguments.batch_size, work)
        out = arguments.out or Path(__file__).parent / "results" / "longdoc-forms.json"
        out.write_text(
            json.dumps({"options": {k: str(v) for k, v in vars(arguments).items()}, "rows": forms}, indent=2)
        )
        print(f"\nwrote {out}")
        return
    source_short = next((r["short_ndcg_at_10"] for r in rows if r["form"] in ("truncate", "chunk")), None)
    print_table(rows, source_short, arguments.split)
    out = arguments.out or Path(__file__).parent / "results" / f"longdoc-{arguments.split}.json"
    out.write_text(
        json.dumps(
            {"options": {k: str(v) for k, v in vars(arguments).items()}, "recipes": RECIPES, "rows": rows}, indent=2
        )
        + "\n"
    )
    print(f"\nwrote {out}")


def build_data(work: Path, pages: int) -> dict[str, Path]:
    """The longdoc splits, the short set, and summary triplets from the standard library (per depth)."""
    from ctxext.data import write_python_docs_corpus
    from ctxext.data.longdoc import write_longdoc
    from ctxext.data.pydocs import HELD_OUT_PACKAGES, write_pydocs_beir
    from ctxext.data.triplets import build_triplets

    longdoc = work / f"longdoc-{pages}"
    if not longdoc.exists():
        write_longdoc(longdoc, tokenizer="all-MiniLM-L6-v2", pages=pages)
    short = work / "short-test-packages"
    if not short.exists():
        write_pydocs_beir(short, packages=HELD_OUT_PACKAGES["test"])
    corpus = work / "pydocs.jsonl"
    if not corpus.exists():
        write_python_docs_corpus(corpus)
    found = {"dev": longdoc / "dev", "test": longdoc / "test", "short": short}
    for depth in sorted({recipe[2] for recipe in RECIPES.values()}):
        triplets = work / f"summary-triplets-{depth}.jsonl"
        if not triplets.exists():
            build_triplets(
                str(corpus),
                triplets,
                queries="summary",
                negatives_from="bm25",
                sections_per_document=40,
                max_depth_words=depth,
            )
        found[f"triplets-{depth}"] = triplets
    return found


def zero_training_form(form: str, source: str, work: Path, models: dict[str, str]) -> tuple[str, dict]:
    from ctxext.positions import Grid, Method, interpolate

    if form == "truncate":
        return source, {"max_length": 512}
    if form == "chunk":
        return source, {"chunk": 512}
    made = {
        "spline": {"method": Method.spline},
        "tile": {"method": Method.tile},
        "scaled": {"method": Method.linear, "grid": Grid.scaled},
    }[form]
    path = work / form
    if not path.exists():
        interpolate(source, LENGTH, str(path), **made)
    models[form] = str(path)
    return str(path), {}


def swapped_form(name: str, work: Path, data: dict[str, Path], models: dict[str, str], steps: int) -> str:
    """A block-sparse BigBird made by ``transfer`` from the source or a recipe's model (no training)."""
    from ctxext.transfer import transfer

    base = SWAPS[name]
    if base not in models:
        models[base] = trained_recipe(base, work, data, models, steps)[0]
    path = work / name
    if not path.exists():
        transfer(models[base], "bigbird", LENGTH, str(path))
    models[name] = str(path)
    return str(path)


def trained_recipe(
    name: str, work: Path, data: dict[str, Path], models: dict[str, str], steps: int
) -> tuple[str, dict]:
    """Train (in a child process, for its wall time and peak memory) unless cached; the model and its costs."""
    base, options, depth = RECIPES[name]
    if base in SWAPS:
        swapped_form(base, work, data, models, steps)
    elif base in RECIPES and base not in models:
        models[base] = trained_recipe(base, work, data, models, steps)[0]
    elif base not in models:
        zero_training_form(base, models["source"], work, models)
    recipe_steps = steps // 2 if base in RECIPES else steps
    path = work / f"{name}-{recipe_steps}"
    record = work / f"{path.name}.training.json"
    if not record.exists():
        job = {
            "base": models[base],
            "data": str(data[f"triplets-{depth}"]),
            "out": str(path),
            "steps": recipe_steps,
            "work_dir": str(work / f"{path.name}.checkpoints"),
            **options,
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--train-child", json.dumps(job)], capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"training {name} failed:\n{done.stderr[-3000:]}")
        child = json.loads(done.stdout.strip().splitlines()[-1])
        record.write_text(
            json.dumps({**child, "wall_s": round(time.perf_counter() - started, 1), "steps": recipe_steps})
        )
        print(f"trained {name} in {time.perf_counter() - started:.0f} s", flush=True)
    models[name] = str(path)
    return str(path), json.loads(record.read_text())


def train_child(job: dict) -> None:
    """One `finetune` run; prints its first/last losses and the process's peak memory as the last line."""
    from ctxext.train import RunOptions, TrainSettings
    from ctxext.train.finetune import FinetuneOptions, finetune

    settings = TrainSettings(
        steps=job["steps"],
        batch_size=job["batch_size"],
        learning_rate=job["lr"],
        warmup_ratio=0.1,
        logging_every=1,
        save_every=max(25, job["steps"] // 2),
        progress_bars=False,
    )
    options = FinetuneOptions(
        max_len=job["max_len"],
        position_span=job.get("position_span"),
        positions_only=job.get("positions_only", False),
        cache_chunk=job.get("cache_chunk"),
        late_chunk=job.get("late_chunk"),
    )
    result = finetune(
        job["base"],
        [job["data"]],
        job["out"],
        options,
        settings=settings,
        run_options=RunOptions(
            work_dir=job["work_dir"],
            resume=Path(job["work_dir"]).exists() and any(Path(job["work_dir"]).glob("checkpoint-*")),
            force=True,  # a model left by a run that died before its record was written
        ),
    )
    losses = [loss for _, loss in result.history["train"]]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"first_loss": losses[0], "last_loss": losses[-1], "peak_rss_mib": round(peak_mib)}))


def evaluate_row(form: str, ref: str, options: dict, data: dict[str, Path], arguments, work: Path) -> dict:  # noqa: ANN001
    """The row's scores, each evaluation cached under WORK/evaluations."""
    from ctxext.evaluate import Task, evaluate

    def cached(kind: str, run) -> dict:  # noqa: ANN001
        setting = "".join(f"-{key}{value}" for key, value in options.items())
        path = work / "evaluations" / f"{Path(ref).name}{setting}-{kind}.json"
        if not path.is_file():
            started = time.perf_counter()
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps({**run(), "seconds": round(time.perf_counter() - started, 1)}))
        return json.loads(path.read_text())

    def retrieval(folder: Path, length: int) -> dict:
        score = evaluate(
            ref, Task.retrieval, beir=str(folder), lengths=[length], batch_size=arguments.batch_size, **options
        ).scores[0]
        return {"mrr": score.mrr, "r_at_1": score.acc_at_1, "ndcg_at_10": score.ndcg_at_10, "groups": score.groups}

    def synthetic(task: Task) -> dict:
        evaluation = evaluate(
            ref,
            task,
            lengths=lengths,
            documents=arguments.synthetic_documents,
            queries=arguments.synthetic_queries,
            seed=1,
            batch_size=arguments.batch_size,
            **options,
        )
        return {str(score.length): score.acc_at_1 for score in evaluation.scores}

    lengths = [int(n) for n in arguments.synthetic_lengths.split(",")]
    sizes = f"{arguments.synthetic_documents}x{arguments.synthetic_queries}-{'-'.join(map(str, lengths))}"
    skip = arguments.synthetic_documents == 0
    row = {
        "form": form,
        "model": ref,
        "options": options,
        arguments.split: cached(
            f"longdoc{arguments.pages}-{arguments.split}", lambda: retrieval(data[arguments.split], LENGTH)
        ),
        **{
            task.value: {} if skip else cached(f"{task.value}-{sizes}-seed1", lambda task=task: synthetic(task))
            for task in (Task.passkey, Task.needle)
            if task.value in arguments.synthetic_tasks.split(",")
        },
        "short_ndcg_at_10": cached("short", lambda: retrieval(data["short"], 512))["ndcg_at_10"],
    }
    print(f"{form}: {json.dumps({k: v for k, v in row.items() if k not in ('model', 'options')})}", flush=True)
    return row


def forms_table(
    source: str, trained: dict[str, dict], data: dict[str, Path], splits: list[str], batch: int, work: Path
):
    """Every retrieval form of the source (chunks), BM25 and each trained model, per split, on the longdoc set
    and on document-to-document search (``data links`` over the split's packages); cached per model and set."""
    rows: dict[tuple[str, str, str], dict] = {}
    for task in ("longdoc", "links"):
        for split in splits:
            folder = data[split] if task == "longdoc" else links_set(work, split)
            for name, row in [("source", None), *trained.items()]:
                found = scored_forms(
                    source,
                    name,
                    row,
                    folder,
                    batch,
                    work / "evaluations" / f"forms-{task}-{name}-{split}.json",
                    task == "links",
                )
                for scored in found["rows"]:
                    key = (task, scored["form"], scored["model"])
                    entry = rows.setdefault(
                        key, {"task": task, "form": key[1], "model": key[2], "training": (row or {}).get("training")}
                    )
                    entry[split] = {k: scored[k] for k in ("mrr", "acc_at_1", "ndcg_at_10", "queries", "documents")}
                    entry[f"{split}_seconds"] = found["seconds"]
    for task in ("longdoc", "links"):
        print(f"\n{task} at {LENGTH} tokens, every retrieval form (MRR / R@1)")
        print(
            f"{'form':<20}{'model':<32}"
            + "".join(f"{split + ' MRR':>10}{'R@1':>7}" for split in splits)
            + f"{'train s':>9}{'peak MiB':>9}"
        )
        for entry in (entry for entry in rows.values() if entry["task"] == task):
            training = entry["training"] or {}
            print(
                f"{entry['form']:<20}{entry['model']:<32}"
                + "".join(f"{entry[s]['mrr']:>10.3f}{entry[s]['acc_at_1']:>7.3f}" for s in splits)
                + (f"{training['wall_s']:>9.0f}{training['peak_rss_mib']:>9}" if training else "")
            )
    return list(rows.values())


def scored_forms(
    source: str, name: str, row: dict | None, folder: Path, batch: int, cache: Path, symmetric: bool
) -> dict:
    """The source's chunk forms, BM25 and their fusion (``row`` None), or a trained model's forms, on one set."""
    from ctxext.encode import load_encoder
    from ctxext.evaluate import beir_sets
    from ctxext.retrieval import FormOptions, evaluate_forms, parse_forms

    if not cache.is_file():
        forms = "chunk-mean,chunk-max,bm25,hybrid:chunk-max" if row is None else "whole,late-chunk,hybrid:late-chunk"
        model = source if row is None else row["model"]
        started = time.perf_counter()
        options = FormOptions(parse_forms(forms), 512, 0, source, batch, symmetric)
        evaluations = evaluate_forms([model], beir_sets(folder, [LENGTH]), options, load_encoder)
        names = {source: "source", model: name}
        scored = [
            {
                "form": e.form,
                "model": " + ".join(names.get(p, "bm25") for p in e.model.split(" + ")),
                **vars(e.scores[0]),
            }
            for e in evaluations
        ]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        cache.parent.mkdir(exist_ok=True)
        cache.write_text(
            json.dumps(
                {"rows": scored, "seconds": round(time.perf_counter() - started, 1), "peak_rss_mib": round(peak)}
            )
        )
    return json.loads(cache.read_text())


def links_set(work: Path, split: str) -> Path:
    """Document-to-document search over the module pages of the split's held-out packages (``data links``)."""
    from ctxext.data.links import write_links
    from ctxext.data.pydocs import HELD_OUT_PACKAGES, write_python_docs_corpus

    folder = work / f"links-{split}"
    if not folder.exists():
        pages = work / f"pages-{split}.jsonl"
        if not pages.exists():
            write_python_docs_corpus(pages, packages=HELD_OUT_PACKAGES[split], allow_held_out=True)
        write_links(str(pages), folder)
    return folder


def print_table(rows: list[dict], source_short: float | None, split: str) -> None:
    buckets = list(rows[0][split]["groups"])
    lengths = [n for n in rows[0]["passkey"] if n != "seconds"]
    head = (
        f"{'form / recipe':<24}{'MRR':>6}{'R@1':>6}"
        + "".join(f"{b:>11}" for b in buckets)
        + "".join(f"{'pk' + n:>7}" for n in lengths)
        + "".join(f"{'nd' + n:>7}" for n in lengths)
        + f"{'short':>7}{'Δshort':>8}{'train s':>9}{'peak MiB':>9}"
    )
    print(f"\nlongdoc {split} at {LENGTH} tokens (MRR per depth bucket); passkey / needle Acc@1; short nDCG@10")
    print(head)
    for row in rows:
        scores, training = row[split], row.get("training", {})
        delta = row["short_ndcg_at_10"] - source_short if source_short is not None else float("nan")
        print(
            f"{row['form']:<24}{scores['mrr']:>6.3f}{scores['r_at_1']:>6.3f}"
            + "".join(f"{scores['groups'][b]['mrr']:>11.3f}" for b in buckets)
            + "".join(f"{row['passkey'][n]:>7.2f}" for n in lengths)
            + "".join(f"{row['needle'][n]:>7.2f}" if "needle" in row else f"{'-':>7}" for n in lengths)
            + f"{row['short_ndcg_at_10']:>7.3f}{delta:>+8.3f}"
            + (f"{training['wall_s']:>9.0f}{training['peak_rss_mib']:>9}" if training else f"{'':>18}")
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--train-child":
        train_child(json.loads(sys.argv[2]))
    else:
        main()
