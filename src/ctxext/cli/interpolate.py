"""`ctxext interpolate`: stretch position embeddings (or RoPE) to a longer window."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ctxext.cli._common import (
    ForceOpt,
    GridOpt,
    JsonOpt,
    LenOpt,
    LinearOpt,
    OutOpt,
    RevisionOpt,
    TileOpt,
    emit,
    progress_bars,
    reports_errors,
)
from ctxext.positions import Grid, RopeScaling


def register(app: typer.Typer) -> None:
    app.command("interpolate")(interpolate_command)


@reports_errors
def interpolate_command(
    source: Annotated[
        str,
        typer.Argument(
            help="Model folder, sentence-transformers folder, hub ID, or an "
            "embedded model name (all-MiniLM-L6-v2, all-mpnet-base-v2)."
        ),
    ],
    target_length: LenOpt,
    out: OutOpt,
    linear: LinearOpt = False,
    spline: Annotated[bool, typer.Option("--spline", help="Cubic spline through the original rows (default).")] = False,
    tile: TileOpt = False,
    offset: Annotated[str, typer.Option(help="Rows reserved before position 0: 'auto' or a number.")] = "auto",
    grid: GridOpt = Grid.pinned,
    rope_scaling: Annotated[
        RopeScaling, typer.Option(help="RoPE models: linear, dynamic or yarn.")
    ] = RopeScaling.linear,
    check: Annotated[
        bool,
        typer.Option(
            help="Check the written folder against the source before it is moved "
            "into place (no model load: see --full-check)."
        ),
    ] = True,
    full_check: Annotated[
        bool, typer.Option("--full-check", help="Also load both models with transformers and run the whole encoder.")
    ] = False,
    revision: RevisionOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Stretch learned absolute position embeddings (or RoPE, through the config) to --len positions.

    Examples:

      ctxext interpolate all-MiniLM-L6-v2 --len 4096 --spline -o minilm-4096

      ctxext interpolate ./roberta-base --len 2048 --tile -o roberta-2048 --force
    """
    from ctxext.commands import CallContext, interpolate

    arguments = locals()
    with progress_bars() as progress:
        result = interpolate(arguments, CallContext(progress, sys.argv))
    emit(result, as_json)
