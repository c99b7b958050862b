"""The ctxext command line: parses arguments, calls one library function, renders its result."""

from __future__ import annotations

import typer

from ctxext import __version__
from ctxext.cli import checkpoints, data, embed, evaluate, extend, flip, guide, interpolate, pipeline, train, transfer
from ctxext.cli._common import OneLineUsageErrors

app = typer.Typer(
    name="ctxext",
    cls=OneLineUsageErrors,
    help="Transformer checkpoint surgery and context extension.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ctxext {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Transformer checkpoint surgery and context extension."""


for module in (interpolate, checkpoints, transfer, embed, guide, data, train, evaluate, flip, pipeline, extend):
    module.register(app)


def main() -> None:
    app()
