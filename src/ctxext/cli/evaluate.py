"""`ctxext evaluate`: passkey, needle and BEIR retrieval scores per length, side by side for several models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ctxext.cli._common import JsonOpt, emit, progress_bars, reports_errors
from ctxext.evaluate import Task


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)


@reports_errors
def evaluate_command(  # noqa: PLR0913 (a typer command: one parameter per command-line option)
    checkpoints: Annotated[
        list[str],
        typer.Argument(help="One or more checkpoints (folders, hub IDs, embedded names), scored side by side."),
    ],
    task: Annotated[Task, typer.Option(help="passkey, needle or retrieval.")] = Task.passkey,
    lengths: Annotated[
        str, typer.Option(help="Comma-separated document lengths in tokens.")
    ] = "256,512,1024,2048,4096",
    truncate: Annotated[int | None, typer.Option(help="Truncate documents to this many tokens.")] = None,
    chunk: Annotated[
        int | None,
        typer.Option(
            help="Embed documents as the mean of chunks of this many tokens (with --forms: the chunk size, 512)."
        ),
    ] = None,
    forms: Annotated[
        str | None,
        typer.Option(
            help="Retrieval forms side by side: whole, chunk-mean, chunk-max, late-chunk, bm25, hybrid, hybrid:FORM "
            "(comma-separated; docs/evaluate.md)."
        ),
    ] = None,
    chunk_source: Annotated[
        str | None, typer.Option(help="With --forms: the model chunk-mean and chunk-max run (default: each model).")
    ] = None,
    overlap: Annotated[int, typer.Option(help="With --forms: tokens a late chunk shares with the one before.")] = 0,
    symmetric: Annotated[
        bool,
        typer.Option(
            "--symmetric", help="With --forms: queries are documents (data links), represented as the documents are."
        ),
    ] = False,
    beir: Annotated[Path | None, typer.Option(help="BEIR folder for --task retrieval.")] = None,
    documents: Annotated[int, typer.Option(help="Candidate documents per length (LongEmbed: 100).")] = 100,
    queries: Annotated[int, typer.Option(help="Queries per length (LongEmbed: 50).")] = 50,
    seed: Annotated[int, typer.Option(help="Draw other passkey / needle sets (names, keys, depths).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Documents per batch.")] = 8,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a PNG of score vs length here (its scores in <png>.manifest.json beside it)."),
    ] = None,
    adapter: Annotated[
        str | None,
        typer.Option(help="Adapter to run in every model: a name under MODEL/adapters/, a preset role, or a folder."),
    ] = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Branch, tag or commit of every hub model (folders have none).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a previous --plot.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score models on long-document retrieval: Acc@1 and nDCG@10 for each length.

    Examples:

      ctxext evaluate all-MiniLM-L6-v2 minilm-4096 --task passkey --lengths 256,1024,4096 --plot passkey.png

      ctxext evaluate minilm-4096 --task retrieval --beir ./scifact --lengths 512,4096
    """
    from ctxext.commands import CallContext, evaluate

    arguments = locals()
    with progress_bars() as progress:
        result = evaluate(arguments, CallContext(progress))
    emit(result, as_json)
