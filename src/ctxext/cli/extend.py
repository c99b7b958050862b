"""`ctxext extend`: a longer window for your own documents in one command, judged against chunking on a
held-out part of them.

Stages (each the library call of the ctxext command of that name, run by `ctxext.extend.extend`; its output
kept under --work so a rerun skips what is done and --resume continues the training):

  1. data longdoc --corpus DOCS: a held-out share of the documents becomes the test set (a section's first
     paragraph is the query, its document without it the target); the rest is the training text.
  2. data triplets on the training text (summary-line queries, BM25 hard negatives).
  3. interpolate --tile --len LEN: the source's position rows stay; the new rows repeat them.
  4. finetune --positions-only: only the new rows train, on inputs of the source's window (512 tokens for
     BERT-sized models) whose position ids span LEN.
  5. --recipe bigbird (the default for BERT-family sources): transfer to block-sparse BigBird, then finetune
     every weight on 1024-token inputs spanning LEN, under block-sparse attention.

Then the source over CHUNK-token chunks and the trained model are scored on the held-out documents, and the
model is written to OUT with that comparison in its manifest and card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ctxext.cli._common import ForceOpt, JsonOpt, RevisionOpt, emit, reports_errors, stderr
from ctxext.extend import Recipe


def register(app: typer.Typer) -> None:
    app.command("extend")(extend_command)


@reports_errors
def extend_command(
    source: Annotated[str, typer.Argument(help="The model to extend: a folder, hub ID or embedded name.")],
    length: Annotated[int, typer.Option("--len", help="The new window, in tokens.")],
    corpus: Annotated[str, typer.Option(help="Your documents: a file or folder (jsonl, Markdown, text, PDF...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the extended model.")],
    recipe: Annotated[
        Recipe, typer.Option(help="bigbird (BERT-family sources), positions (any), auto: bigbird where it applies.")
    ] = Recipe.auto,
    steps: Annotated[int, typer.Option(min=1, help="Steps of each training stage.")] = 60,
    held_out: Annotated[float, typer.Option(help="Share of the documents kept out of training, for the test.")] = 0.2,
    min_tokens: Annotated[int, typer.Option(min=16, help="Shortest held-out document used as a target.")] = 1024,
    chunk: Annotated[int, typer.Option(min=8, help="The baseline: the source over chunks of this many tokens.")] = 512,
    work: Annotated[
        Path | None, typer.Option(help="Folder for the stages' outputs (default: OUT.ctxext-work beside OUT).")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted training stage.")] = False,
    revision: RevisionOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Extend a model's window for your documents: stretch, train the new positions, and compare with the
    source over chunks on documents held out of training (docs/train.md).

    Example:

      ctxext extend all-MiniLM-L6-v2 --len 4096 --corpus my-docs/ -o minilm-4096-my-docs
    """
    from dataclasses import fields

    from ctxext.cli.pipeline import cli_events, stage_arguments
    from ctxext.extend import ExtendOptions, extend

    arguments = locals()
    options = ExtendOptions(**{field.name: arguments[field.name] for field in fields(ExtendOptions)})
    result = extend(source, length, corpus, out, options, parse=stage_arguments, events=cli_events())
    if result is None:
        return  # under a distributed launch every process trains; the main one evaluates and writes OUT
    advice = result.comparison.advice()
    if advice:
        stderr.print(f"[yellow]{escape(advice)}[/]")
    emit(result, as_json)
