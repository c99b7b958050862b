"""What ``ctxext extend`` adds to the stages it runs: the judgement against chunking on the user's own held-out
documents, and the published model that carries it (manifest and card).

The stages themselves (``data longdoc --corpus``, ``data triplets``, ``interpolate --tile``, ``finetune
--positions-only``, and for the ``bigbird`` recipe ``transfer`` and ``finetune``) are the ordinary commands'
library calls, run by ``ctxext.pipeline`` from the config :func:`extend_config` builds; this module holds the
recipes and never trains.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxext.card import write_model_card
from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.errors import InvalidArgument
from ctxext.io import atomic_output
from ctxext.manifest import read_manifest, write_manifest

if TYPE_CHECKING:
    from ctxext.pipeline import Events, OptionParser


class Recipe(str, Enum):
    auto = "auto"
    bigbird = "bigbird"
    positions = "positions"


# The recipes `extend` runs, compared on the dev split of `ctxext data longdoc` (benchmarks/longdoc.py,
# docs/train.md). Both tile the position table (the source's rows stay, so short inputs are unchanged) and train
# only the new rows on summary-line triplets, inputs of the source's window whose position ids span the new one.
# `bigbird` then moves that model into block-sparse BigBird and fine-tunes every weight on longer inputs: the
# only recipe past chunking on dev (+0.029 MRR), for BERT-family sources. `auto`: bigbird where it applies.
# Its fine-tuning trains for late chunking (the chunk-level objective, chunks of --chunk tokens): on the dev split
# (benchmarks/results/longdoc-forms.json) it beat the document-level objective of the same run in the late-chunk
# form (MRR 0.808 against 0.792) and whole (0.784 against 0.777).
TRIPLETS = {"queries": "summary", "negatives_from": "bm25", "sections_per_document": 40, "max_depth_words": 250}
POSITIONS_STAGE = {"positions_only": True, "batch_size": 8, "lr": 5e-4, "warmup": 0.1}
BIGBIRD_STAGE = {"max_len": 1024, "batch_size": 4, "lr": 2e-5, "warmup": 0.1}  # max_len: at most half the window
PIPELINES = {Recipe.positions: "interpolate-finetune", Recipe.bigbird: "interpolate-finetune-transfer-finetune"}


def chosen_recipe(recipe: Recipe, config: dict[str, Any], length: int) -> Recipe:
    """``auto`` is ``bigbird`` where it applies (a source ``transfer`` reads, a window long enough for
    block-sparse attention), else ``positions``; an explicit ``bigbird`` that cannot apply is refused before
    anything runs. ``config``: the source's."""
    from ctxext.transfer import SOURCE_MODEL_TYPES, full_attention_up_to

    model_type = config.get("model_type")
    why_not = (
        f"a {'/'.join(SOURCE_MODEL_TYPES)} source, not {model_type!r}"
        if model_type not in SOURCE_MODEL_TYPES
        else f"--len above {full_attention_up_to()} (below it BigBird runs full attention)"
        if length <= full_attention_up_to()
        else None
    )
    if recipe == Recipe.auto:
        return Recipe.positions if why_not else Recipe.bigbird
    if recipe == Recipe.bigbird and why_not:
        raise InvalidArgument(f"--recipe bigbird needs {why_not}; use --recipe positions")
    return recipe


def extend_config(
    source: str,
    length: int,
    corpus: str,
    work: Path,
    *,
    revision: str | None,
    recipe: Recipe,
    window: int,
    steps: int,
    held_out: float,
    min_tokens: int,
    chunk: int = 512,
) -> dict[str, Any]:
    """The recipe's pipeline on the user's documents (``ctxext.extend`` holds the recipes); ``window``: the
    positions the source reads; ``revision``: of a hub source, for every stage that reads it; ``chunk``: the
    late chunks the bigbird recipe trains for (those the held-out comparison scores)."""
    longdoc = {
        "corpus": corpus,
        "held_out": held_out,
        "tokenizer": source,
        "revision": revision,
        "min_tokens": min_tokens,
        "max_tokens": length,
    }
    bigbird = {
        "transfer": {"len": length},
        "finetune_bigbird": {
            **BIGBIRD_STAGE,
            "max_len": min(BIGBIRD_STAGE["max_len"], length // 2),
            "position_span": length,
            "late_chunk": chunk,
            "steps": steps,
        },
    }
    return {
        "pipeline": PIPELINES[recipe],
        "source": source,
        "revision": revision,
        "data": {
            "longdoc": longdoc,
            "triplets": {"corpus": str(work / "longdoc" / "train.jsonl"), "options": TRIPLETS},
        },
        "interpolate": {"len": length, "tile": True},
        "finetune": {**POSITIONS_STAGE, "max_len": window, "position_span": length, "steps": steps},
        **(bigbird if recipe == Recipe.bigbird else {}),
    }


HELD_OUT_FORMS = "chunk-mean,chunk-max,whole,late-chunk,bm25,hybrid:chunk-max,hybrid:late-chunk"
"""What users do today (the source over chunks, BM25, their fusion) beside the extended model's two forms."""
ROLES = {"source": "source", "extended": "this model"}


@dataclass
class HeldOutComparison:
    """Every retrieval form on held-out documents: the source over chunks (what users do today), BM25 and their
    fusion, against the extended model whole and late-chunked (``ctxext.retrieval``)."""

    set_name: str
    length: int
    chunk: int
    rows: list[dict[str, Any]]
    """``form``, ``model`` (``source``, ``extended``, ``bm25`` or ``bm25 + ...``) and the metrics."""
    metrics: tuple[str, ...] = ("mrr", "acc_at_1", "ndcg_at_10")

    def row(self, form: str) -> dict[str, Any]:
        return next(row for row in self.rows if row["form"] == form)

    @property
    def gain(self) -> float:
        """MRR of the extended model (one vector per document) minus the source's chunk mean's."""
        return self.row("whole")["mrr"] - self.row("chunk-mean")["mrr"]

    @property
    def best(self) -> dict[str, Any]:
        """The row of highest MRR (the first listed, on a tie)."""
        return max(self.rows, key=lambda row: row["mrr"])

    def advice(self) -> str | None:
        """What to use instead, when a form without the extended model scores best."""
        best = self.best
        if "extended" in best["model"]:
            return None
        ours = max((row for row in self.rows if "extended" in row["model"]), key=lambda row: row["mrr"])

        def named(row: dict[str, Any]) -> str:
            return row["form"] if row["model"] == "bm25" else f"{row['form']} ({row['model']})"

        return (
            f"on your held-out documents {named(best)} scores best (MRR {best['mrr']:.3f}; this model at its best, "
            f"{named(ours)}, {ours['mrr']:.3f}): keep that, or train longer (--steps) on more documents"
        )

    def record(self) -> dict[str, Any]:
        """What the manifest keeps (the set by its place in the work folder, never a machine's path)."""
        first = self.rows[0]
        scores = {metric: first.get(metric) for metric in ("queries", "documents")}
        return {
            "set": self.set_name,
            "length": self.length,
            **scores,
            "chunk_mean": {"form": f"mean of {self.chunk}-token chunks", **self._metrics(self.row("chunk-mean"))},
            "extended": {"form": "full", **self._metrics(self.row("whole"))},
            "mrr_gain": round(self.gain, 4),
            "forms": [{"form": row["form"], "model": row["model"], **self._metrics(row)} for row in self.rows],
        }

    def _metrics(self, row: dict[str, Any]) -> dict[str, float]:
        return {metric: row[metric] for metric in self.metrics}


@dataclass
class ExtendResult:
    output: Path
    comparison: HeldOutComparison
    stages: list[str] = field(default_factory=list)
    view = "held_out"

    def summary(self) -> dict[str, Any]:
        return {"output": str(self.output), "held_out": self.comparison.record(), "stages": self.stages}


def source_window(config: dict[str, Any]) -> int:
    """Positions the source reads (its learned table less RoBERTa's offset rows): the training input length."""
    from ctxext.architectures import learned_offset

    return int(config.get("max_position_embeddings", 512)) - learned_offset(config)


def compare_on_held_out(
    source: str,
    extended: str | Path,
    beir: Path,
    *,
    length: int,
    chunk: int = 512,
    batch_size: int = 2,
    revision: str | None = None,
    progress: ProgressFn = no_progress,
) -> HeldOutComparison:
    """Every form of :data:`HELD_OUT_FORMS` on the held-out BEIR folder: the source (a hub source at
    ``revision``) over ``chunk``-token chunks, the extended model over whole documents up to ``length`` tokens."""
    from ctxext.encode import load_encoder
    from ctxext.evaluate import beir_sets
    from ctxext.retrieval import FormOptions, evaluate_forms, parse_forms

    roles = {str(source): "source", str(extended): "extended"}
    options = FormOptions(parse_forms(HELD_OUT_FORMS), chunk, 0, str(source), batch_size)
    evaluations = evaluate_forms(
        [str(extended)],
        beir_sets(beir, [length]),
        options,
        lambda ref: load_encoder(ref, revision=revision if ref == str(source) else None),
        progress=progress,
    )
    rows = []
    for evaluation in evaluations:
        score = evaluation.scores[0]
        model = " + ".join(roles.get(part, "bm25") for part in evaluation.model.split(" + "))
        metrics = {metric: round(float(getattr(score, metric)), 4) for metric in ("mrr", "acc_at_1", "ndcg_at_10")}
        rows.append(
            {"form": evaluation.form, "model": model, **metrics, "queries": score.queries, "documents": score.documents}
        )
    return HeldOutComparison(f"{beir.parent.name}/{beir.name}", length, chunk, rows)


def publish(trained: Path, out: str | Path, comparison: HeldOutComparison, *, force: bool = False) -> Path:
    """Copy the trained folder to ``out`` (built beside it, renamed into place), its manifest and card
    extended with the held-out comparison."""
    with atomic_output(out, force=force, protect=[trained]) as staging:
        shutil.copytree(trained, staging, dirs_exist_ok=True)
        manifest = {**read_manifest(staging), "held_out_evaluation": comparison.record()}
        write_manifest(staging, manifest)
        write_model_card(staging, manifest, name=Path(out).name, source_card=trained / "README.md")
    return Path(out).expanduser().absolute()


@dataclass(frozen=True)
class ExtendOptions:
    """``ctxext extend``'s options besides the source, the length, the documents and the output (their defaults
    are the command's)."""

    recipe: Recipe
    steps: int
    held_out: float
    min_tokens: int
    chunk: int
    work: Path | None
    resume: bool
    revision: str | None
    force: bool


def extend(
    source: str,
    length: int,
    corpus: str,
    out: Path,
    options: ExtendOptions,
    *,
    parse: OptionParser,
    events: Events | None = None,
) -> ExtendResult | None:
    """Extend ``source``'s window to ``length`` for the documents in ``corpus``: the recipe's pipeline
    (:func:`extend_config`; every option checked by ``parse`` before any stage runs; ``events`` hear each stage)
    in the work folder, then the comparison with chunking on the held-out documents, published to ``out``.
    Everything a user can get wrong (the corpus, the output, the length, the recipe) is refused before any stage
    runs. Under a distributed launch every process trains; the main one evaluates and writes ``out`` (the
    others return None)."""
    from ctxext.errors import SourceNotFound
    from ctxext.io import check_output_target, open_model, register_input
    from ctxext.pipeline import Events, check_config, run_stages, work_folder
    from ctxext.positions import check_target_length
    from ctxext.train.runner import is_main_process

    if not Path(corpus).expanduser().exists():
        raise SourceNotFound(f"--corpus {corpus} does not exist")
    register_input(corpus)  # never replaced by OUT, whatever --force says
    source_config = open_model(source, revision=options.revision)[1].config
    check_output_target(out, force=options.force)  # refused now, not after the training
    check_target_length(source_window(source_config), length)
    if options.min_tokens > length:
        raise InvalidArgument(
            f"--min-tokens {options.min_tokens} is above --len {length}: no held-out document could qualify"
        )
    work = (options.work or out.parent / f"{out.name}.ctxext-work").expanduser().absolute()
    config = extend_config(
        source,
        length,
        corpus,
        work,
        revision=options.revision,
        recipe=chosen_recipe(options.recipe, source_config, length),
        window=source_window(source_config),
        steps=options.steps,
        held_out=options.held_out,
        min_tokens=options.min_tokens,
        chunk=options.chunk,
    )
    plan = check_config(config, "extend", work, parse)
    with work_folder(work):
        data, written = run_stages(plan, resume=options.resume, force=False, events=events)
    if not is_main_process():
        return None
    with (events or Events()).progress() as progress:
        comparison = compare_on_held_out(
            source,
            written[-1],
            data["longdoc"] / "test",
            length=length,
            chunk=options.chunk,
            revision=options.revision,
            progress=progress,
        )
    published = publish(written[-1], out, comparison, force=options.force)
    return ExtendResult(published, comparison, [str(path) for path in written])
