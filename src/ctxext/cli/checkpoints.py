"""`ctxext inspect`, `verify` and `average`: look at a checkpoint, check it against its manifest, average
checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ctxext.cli._common import ForceOpt, JsonOpt, OutOpt, RevisionOpt, emit, progress_bars, reports_errors


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)
    app.command("verify")(verify_command)
    app.command("average")(average_command)


@reports_errors
def inspect_command(
    checkpoint: Annotated[str, typer.Argument(help="Model folder, hub ID or embedded model name.")],
    revision: RevisionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Architecture, position scheme and length, parameters, dtypes, adapters and manifest summary.

    Example: ctxext inspect minilm-4096 --json
    """
    from ctxext.inspect import describe

    emit(describe(checkpoint, revision=revision), as_json)


@reports_errors
def verify_command(
    checkpoint: Annotated[Path, typer.Argument(help="A folder written by ctxext.")], as_json: JsonOpt = False
) -> None:
    """Re-hash every tensor against manifest.json; exits non-zero naming the first mismatch.

    Example: ctxext verify minilm-4096
    """
    from ctxext.manifest import verify

    emit(verify(checkpoint), as_json)


@reports_errors
def average_command(
    checkpoints: Annotated[
        list[str], typer.Argument(help="Two or more model folders or hub IDs fine-tuned from one starting point.")
    ],
    out: OutOpt,
    revision: RevisionOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Average checkpoints tensor by tensor (a uniform model soup): same config, same tensors; support files
    come from the first.

    Example: ctxext average run-a run-b -o soup
    """
    import sys

    from ctxext.average import average

    with progress_bars() as progress:
        result = average(checkpoints, out, revision=revision, force=force, progress=progress, argv=sys.argv)
    emit(result, as_json)
