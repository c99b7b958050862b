"""What ``ctxext extend`` adds to the stages it runs: the judgement against chunking on the user's own held-out
documents, and the published model that carries it (manifest and card).

The stages themselves (``data longdoc --corpus``, ``data triplets``, ``interpolate --tile``, ``finetune
--positions-only``, and for the ``bigbird`` recipe ``transfer`` and ``finetune``) are the ordinary commands,
run by ``ctxext.cli.extend``; this module holds the recipes and never trains.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ctxext.card import write_model_card
from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.errors import InvalidArgument
from ctxext.evaluate import Evaluation, Task, evaluate
from ctxext.io import atomic_output
from ctxext.manifest import read_manifest, write_manifest


class Recipe(str, Enum):
    auto = "auto"
    bigbird = "bigbird"
    positions = "positions"


# The recipes `extend` runs, compared on the dev split of `ctxext data longdoc` (benchmarks/longdoc.py,
# docs/train.md). Both tile the position table (the source's rows stay, so short inputs are unchanged) and train
# only the new rows on summary-line triplets, inputs of the source's window whose position ids span the new one.
# `bigbird` then moves that model into block-sparse BigBird and fine-tunes every weight on longer inputs: the
# only recipe past chunking on dev (+0.029 MRR), for BERT-family sources. `auto`: bigbird where it applies.
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


@dataclass
class HeldOutComparison:
    """The source over chunks (what users do today) against the extended model, on held-out documents."""

    beir: str
    length: int
    chunk: Evaluation
    extended: Evaluation
    metrics: tuple[str, ...] = ("mrr", "acc_at_1", "ndcg_at_10")

    def scores(self, evaluation: Evaluation) -> dict[str, float]:
        score = evaluation.scores[0]
        return {metric: round(float(getattr(score, metric)), 4) for metric in self.metrics}

    @property
    def gain(self) -> float:
        """MRR of the extended model minus the chunk mean's."""
        return self.scores(self.extended)["mrr"] - self.scores(self.chunk)["mrr"]

    def record(self) -> dict[str, Any]:
        """What the manifest keeps."""
        score = self.extended.scores[0]
        return {
            "set": self.beir,
            "length": self.length,
            "queries": score.queries,
            "documents": score.documents,
            "chunk_mean": {"form": self.chunk.form, **self.scores(self.chunk)},
            "extended": {"form": self.extended.form, **self.scores(self.extended)},
            "mrr_gain": round(self.gain, 4),
        }


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
    """Both models on the held-out BEIR folder: the source (a hub source at ``revision``) as the mean of
    ``chunk``-token windows, the extended model over whole documents up to ``length`` tokens."""

    def scored(model: str, chunked: int | None, model_revision: str | None = None) -> Evaluation:
        return evaluate(
            model,
            Task.retrieval,
            lengths=[length],
            chunk=chunked,
            beir=str(beir),
            batch_size=batch_size,
            revision=model_revision,
            progress=progress,
        )

    return HeldOutComparison(
        str(beir), length, chunk=scored(source, chunk, revision), extended=scored(str(extended), None)
    )


def publish(trained: Path, out: str | Path, comparison: HeldOutComparison, *, force: bool = False) -> Path:
    """Copy the trained folder to ``out`` (built beside it, renamed into place), its manifest and card
    extended with the held-out comparison."""
    with atomic_output(out, force=force, protect=[trained]) as staging:
        shutil.copytree(trained, staging, dirs_exist_ok=True)
        manifest = {**read_manifest(staging), "held_out_evaluation": comparison.record()}
        write_manifest(staging, manifest)
        write_model_card(staging, manifest, name=Path(out).name, source_card=trained / "README.md")
    return Path(out).expanduser().absolute()
