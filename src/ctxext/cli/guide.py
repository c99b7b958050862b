"""`ctxext guide`: a deep and narrow student initialised from a wide teacher (GUIDE)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ctxext.cli._common import ForceOpt, JsonOpt, OutOpt, RevisionOpt, emit, progress_bars, reports_errors
from ctxext.guide import Init, Projection, Select


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ctxext app."""
    app.command("guide")(guide_command)


@reports_errors
def guide_command(
    teacher: Annotated[
        str,
        typer.Argument(
            help="Teacher: model folder, sentence-transformers folder, hub ID or "
            "embedded name (BERT, RoBERTa, MPNet or ModernBERT)."
        ),
    ],
    dim: Annotated[int, typer.Option("--dim", min=1, help="Student hidden size.")],
    out: OutOpt,
    layers: Annotated[int | None, typer.Option(min=1, help="Student depth (default: the teacher's).")] = None,
    heads: Annotated[
        int | None, typer.Option(min=1, help="Attention heads (default: keep the teacher's head size).")
    ] = None,
    intermediate: Annotated[
        int | None, typer.Option(min=1, help="Feed-forward units (default: the teacher's ratio).")
    ] = None,
    init: Annotated[
        Init,
        typer.Option(
            help="first: block 0 from the teacher's block 0 (GUIDE); uniform: teacher "
            "blocks spread over all student blocks; none: random baseline."
        ),
    ] = Init.first,
    select: Annotated[
        Select,
        typer.Option(help="Which heads and units to keep: norm (largest after projection) or even (evenly spaced)."),
    ] = Select.norm,
    projection: Annotated[
        Projection, typer.Option(help="pca (GUIDE) or even (evenly spaced coordinates, weight selection).")
    ] = Projection.pca,
    seed: Annotated[int, typer.Option(help="Seed of the random init of everything not taken from the teacher.")] = 0,
    check: Annotated[
        bool,
        typer.Option(
            help="Load the result with AutoModel, AutoModelForMaskedLM and "
            "sentence-transformers before moving it into place."
        ),
    ] = True,
    revision: RevisionOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Initialise a narrow student from a wide teacher: PCA of the teacher's token embeddings gives the
    projection M; blocks are projected through M with heads and feed-forward units selected.

    Examples:

      ctxext guide all-mpnet-base-v2 --dim 384 --layers 12 -o mpnet-guide-384

      ctxext guide ./bert-base --dim 256 --layers 8 --init uniform -o bert-256x8
    """
    from ctxext.commands import CallContext, guide

    arguments = locals()
    with progress_bars() as progress:
        result = guide(arguments, CallContext(progress, sys.argv))
    emit(result, as_json)
