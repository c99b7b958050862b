"""`ctxext inspect` and `ctxext verify`: look at a checkpoint and check it against its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ctxext.cli._common import JsonOpt, emit, key_value_table, reports_errors, stdout


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)
    app.command("verify")(verify_command)


@reports_errors
def inspect_command(
    checkpoint: Annotated[str, typer.Argument(help="Model folder, hub ID or embedded model name.")],
    as_json: JsonOpt = False,
) -> None:
    """Architecture, position scheme and length, parameters, dtypes, adapters and manifest summary.

    Example: ctxext inspect minilm-4096 --json
    """
    from ctxext.inspect import describe

    emit(describe(checkpoint), as_json, lambda data: key_value_table(f"inspect {checkpoint}", data))


@reports_errors
def verify_command(
    checkpoint: Annotated[Path, typer.Argument(help="A folder written by ctxext.")],
    as_json: JsonOpt = False,
) -> None:
    """Re-hash every tensor against manifest.json; exits non-zero naming the first mismatch.

    Example: ctxext verify minilm-4096
    """
    from ctxext.manifest import verify

    result = verify(checkpoint)
    if as_json:
        emit({"ok": True, "tensors": result.tensors_checked, "files": result.files}, True)
    else:
        stdout.print(f"[green]ok[/]: {result.tensors_checked} tensors match the manifest")
