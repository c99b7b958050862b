"""`ctxext flip`: a decoder turned into a bidirectional encoder, with pooling or an extractive-QA head."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ctxext.cli._common import (
    ForceOpt,
    JsonOpt,
    OutOpt,
    RevisionOpt,
    SpecialTokensOpt,
    emit,
    progress_bars,
    reports_errors,
)
from ctxext.flip import Head, Pooling


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ctxext app."""
    app.command("flip")(flip_command)


@reports_errors
def flip_command(
    source: Annotated[
        str,
        typer.Argument(
            help="Causal decoder: folder, hub ID, the folder holding --gguf, or "
            "'gemma-3-270m' (the GGUF from the package index)."
        ),
    ],
    out: OutOpt,
    gguf: Annotated[str | None, typer.Option("--gguf", help="GGUF file name inside SOURCE.")] = None,
    pooling: Annotated[
        Pooling | None, typer.Option(help="Also save as sentence-transformers: mean, last or cls.")
    ] = None,
    head: Annotated[
        Head, typer.Option(help="none, or qa (start/end span logits + prompt special tokens).")
    ] = Head.none,
    special_tokens: SpecialTokensOpt = None,
    sliding_window: Annotated[
        int | None,
        typer.Option(
            "--sliding-window",
            help="Half-width w of the symmetric window of sliding layers (|q-k| < w); default: causal window // 2 + 1.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the QA head's initialisation.")] = 0,
    check: Annotated[
        bool,
        typer.Option("--check/--no-check", help="Run the forward checks (a model over 1 GiB: on its first layers)."),
    ] = True,
    revision: RevisionOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn a causal decoder (Gemma 3, Gemma 2, Llama, Mistral, Qwen2) into a bidirectional encoder.

    Checks run before anything is written: the source is causal, the output at position 0 now depends on
    the last token, left and right padding agree, and the written folder reloads equal to the in-memory
    model (with Gemma 3's sliding window intact). Non-Gemma-3 outputs load after `ctxext.flip.register()`.

    Examples:

      ctxext flip gemma-3-270m --pooling mean -o gemma3-encoder

      ctxext flip ./models --gguf gemma-3-270m-q4_k_m.gguf --head qa -o gemma3-qa

      ctxext flip ./qwen2-0.5b --head qa --special-tokens configs/qa_special_tokens.json -o qwen2-qa
    """
    from ctxext.flip import flip

    with progress_bars() as progress:
        result = flip(
            source,
            out,
            gguf_file=gguf,
            pooling=pooling,
            head=head,
            check=check,
            special_tokens=special_tokens,
            sliding_window=sliding_window,
            seed=seed,
            revision=revision,
            force=force,
            progress=progress,
            argv=sys.argv,
        )
    emit(result, as_json)
