"""`ctxext transfer`: a BERT-family checkpoint and its adapters into BigBird."""

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
    SplineOpt,
    emit,
    progress_bars,
    reports_errors,
)
from ctxext.positions import Grid


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ctxext app."""
    app.command("transfer")(transfer_command)


@reports_errors
def transfer_command(  # noqa: PLR0913 (a typer command: one parameter per command-line option)
    source: Annotated[
        str,
        typer.Argument(
            help="The preset 'specter2' (base + its four adapters), or a BERT-family model folder or hub ID."
        ),
    ],
    target: Annotated[str, typer.Argument(help="Target architecture: bigbird.")],
    target_length: LenOpt,
    out: OutOpt,
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            "--adapter",
            help="Add an adapter (adapters-library format): a folder or hub ID, or NAME=FOLDER_OR_ID. Repeatable.",
        ),
    ] = None,
    adapter_path: Annotated[
        list[str] | None,
        typer.Option(
            "--adapter-path",
            help="Point one adapter of the preset elsewhere: ROLE=FOLDER_OR_ID (specter2 roles: "
            "proximity, adhoc_query, classification, regression). Repeatable.",
        ),
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="Point the preset's base model elsewhere (folder or hub ID).")
    ] = None,
    linear: LinearOpt = False,
    spline: SplineOpt = False,
    tile: Annotated[
        bool,
        typer.Option("--tile", help="Repeat the original rows (default): inputs up to the source length stay exact."),
    ] = False,
    grid: GridOpt = Grid.pinned,
    block_size: Annotated[int, typer.Option("--block-size", help="BigBird block size.")] = 64,
    random_blocks: Annotated[int, typer.Option("--random-blocks", help="BigBird random blocks per query block.")] = 3,
    global_registers: Annotated[
        bool,
        typer.Option(
            help="Fill BigBird's global blocks (first and last) with reserved tokens added by the "
            "tokenizer, so no text sits where every token attends (see docs/transfer.md)."
        ),
    ] = False,
    check: Annotated[bool, typer.Option(help="Compare the result with the source, adapter by adapter.")] = True,
    revision: RevisionOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Transfer a BERT-family model and its adapters into BigBird with --len positions (block-sparse).

    Examples:

      ctxext transfer specter2 bigbird --len 4096 -o specter2-bigbird-4096

      ctxext transfer specter2 bigbird --len 4096 --base ./specter2_base \\
          --adapter-path proximity=./specter2 --adapter-path adhoc_query=./specter2_adhoc_query \\
          --adapter-path classification=./specter2_classification \\
          --adapter-path regression=./specter2_regression -o out

      ctxext transfer all-MiniLM-L6-v2 bigbird --len 4096 --adapter mine=./my-adapter -o minilm-bigbird
    """
    from ctxext.commands import CallContext, transfer

    arguments = locals()
    with progress_bars() as progress:
        result = transfer(arguments, CallContext(progress, sys.argv))
    emit(result, as_json)
