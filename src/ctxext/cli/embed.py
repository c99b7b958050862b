"""`ctxext embed`: one embedding per document of a JSONL file, written as .npy with a manifest."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ctxext.cli._common import ForceOpt, JsonOpt, RevisionOpt, emit, progress_bars, reports_errors
from ctxext.encode import Pooling


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ctxext app."""
    app.command("embed")(embed_command)


@reports_errors
def embed_command(
    checkpoint: Annotated[
        str,
        typer.Argument(help="Any checkpoint ctxext reads (folder, hub ID, embedded name, or the preset 'specter2')."),
    ],
    input_path: Annotated[Path, typer.Argument(help='JSONL: {"title", "abstract"} or {"text"} per line.')],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .npy (written atomically, manifest beside).")],
    adapter: Annotated[
        str | None,
        typer.Option(
            help="Adapter to activate: a name under CHECKPOINT/adapters/, a preset role, or an adapter folder / hub ID."
        ),
    ] = None,
    pooling: Annotated[
        Pooling | None,
        typer.Option(
            help="cls, mean, max or last; default: the sentence-transformers "
            "pooling, else CLS (last token for decoders)."
        ),
    ] = None,
    max_len: Annotated[int | None, typer.Option("--max-len", min=1, help="Truncate inputs to N tokens.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per batch.")] = 16,
    late_chunk: Annotated[
        int | None,
        typer.Option(
            "--late-chunk",
            min=1,
            help="One row per chunk of N tokens, pooled from one pass over the whole document (late chunking); "
            "where each chunk lies goes to OUT.chunks.jsonl.",
        ),
    ] = None,
    overlap: Annotated[int, typer.Option(min=0, help="With --late-chunk: tokens shared with the chunk before.")] = 0,
    revision: RevisionOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Embed documents: one float32 row per input line, in input order (length-bucketed batches).

    Examples:

      ctxext embed specter2-bigbird-4096 papers.jsonl --adapter proximity -o papers.npy

      ctxext embed all-MiniLM-L6-v2 docs.jsonl -o docs.npy --max-len 256

      ctxext embed minilm-4096 docs.jsonl -o chunks.npy --late-chunk 512 --overlap 64
    """
    from ctxext.embed import LateChunking, embed_file
    from ctxext.errors import InvalidArgument

    if overlap and late_chunk is None:
        raise InvalidArgument("--overlap goes with --late-chunk N")

    with progress_bars() as progress:
        result = embed_file(
            checkpoint,
            input_path,
            out,
            adapter=adapter,
            pooling=pooling.value if pooling else None,
            max_length=max_len,
            batch_size=batch_size,
            revision=revision,
            force=force,
            late_chunking=LateChunking(late_chunk, overlap) if late_chunk else None,
            progress=progress,
            argv=sys.argv,
        )
    emit(result, as_json)
