"""Embed a JSONL file of documents with any checkpoint ctxext reads, optionally through one adapter.

Each line is ``{"title": ..., "abstract": ...}`` (joined as SPECTER2 does: ``title [SEP] abstract``) or
``{"text": ...}``. Rows come out in input order, one float32 row per line, written atomically as .npy with
``<output>.manifest.json`` beside it. Batching, pooling and BigBird's attention type are handled by
``ctxext.encode`` (BigBird is put back into its configured attention before every batch).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.bottleneck import ADAPTERS_DIR
from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.encode import LateChunks
from ctxext.errors import InvalidArgument
from ctxext.io import (
    ModelFolder,
    Source,
    atomic_files,
    check_output_target,
    file_manifest_path,
    file_sha256,
    open_model,
    resolve_source,
    write_json,
)
from ctxext.manifest import manifest_header


@dataclass(frozen=True)
class LateChunking:
    """Rows are chunks, not documents: ``chunk`` content tokens each (``overlap`` shared with the chunk before),
    pooled from one pass over the whole document (:meth:`ctxext.encode.Encoder.late_chunks`)."""

    chunk: int
    overlap: int = 0


@dataclass
class EmbedResult:
    path: Path
    manifest_path: Path
    rows: int
    dimension: int
    manifest: dict[str, Any]
    chunks_path: Path | None = None

    title = "embed"

    def summary(self) -> dict[str, Any]:
        options = self.manifest["options"]
        return {
            "output": str(self.path),
            **({"chunks": str(self.chunks_path)} if self.chunks_path else {}),
            "manifest": str(self.manifest_path),
            "rows": self.rows,
            "dimension": self.dimension,
            "pooling": options["pooling"],
            "max_length": options["max_length"],
            "adapter": (self.manifest["adapter"] or {}).get("name"),
        }


def resolve_checkpoint(
    ref: str, adapter: str | None, revision: str | None = None
) -> tuple[Source, ModelFolder, Source | None, str | None]:
    """The model folder and, if asked, the adapter folder and the name it is activated under.

    The adapter is looked up as ``<checkpoint>/adapters/NAME`` (what ``ctxext transfer`` writes), then as
    an adapter of a preset (``specter2`` + ``proximity``), then as a folder or hub ID.
    """
    from ctxext.transfer import ADAPTER_FILES, PRESETS, safe_adapter_name

    preset = PRESETS.get(ref)
    source, folder = open_model(preset.base if preset else ref, revision=revision)
    if adapter is None:
        return source, folder, None, None
    is_name = Path(adapter).name == adapter  # a path (absolute ones above all) is never a name inside the checkpoint
    for candidate in (folder.root / ADAPTERS_DIR / adapter, folder.model_dir / ADAPTERS_DIR / adapter):
        if is_name and candidate.is_dir():
            return source, folder, Source(ref=adapter, path=candidate), safe_adapter_name(adapter)
    if preset and adapter in preset.adapters:
        return (
            source,
            folder,
            resolve_source(
                preset.adapters[adapter], allow_patterns=ADAPTER_FILES, what=f"{preset.name} adapter {adapter}"
            ),
            adapter,
        )
    adapter_source = resolve_source(adapter, allow_patterns=ADAPTER_FILES, what="adapter")
    from ctxext.bottleneck import AdapterFolder

    return (source, folder, adapter_source, safe_adapter_name(AdapterFolder.open(adapter_source.path).stored_name))


def adapter_loader(adapter_path: Path, name: str) -> Callable[[Path], Any]:
    """A ``model_loader`` for ``ctxext.encode.load_encoder`` that loads the model with one active adapter."""

    def load(model_dir: Path) -> Any:
        from ctxext.bottleneck import activate_adapter, load_adapter_strictly, load_model_with_adapters

        model = load_model_with_adapters(model_dir)
        activate_adapter(model, load_adapter_strictly(model, adapter_path, name))
        return model

    return load


def embed_file(
    ref: str,
    input_path: str | Path,
    out: str | Path,
    *,
    adapter: str | None = None,
    pooling: str | None = None,
    max_length: int | None = None,
    batch_size: int = 16,
    revision: str | None = None,
    force: bool = False,
    device: str | None = None,
    late_chunking: LateChunking | None = None,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> EmbedResult:
    """Embed every line of ``input_path`` and write the rows to ``out`` (.npy) with a manifest beside it; with
    ``late_chunking``, one row per chunk, and where each chunk lies in ``OUT.chunks.jsonl`` beside them."""
    from ctxext.data.formats import read_embedding_inputs
    from ctxext.encode import load_encoder

    out = check_output_target(out, force=force, protect=[input_path], is_file=True)  # before the slow part
    if batch_size < 1:
        raise InvalidArgument("--batch-size must be at least 1")
    read_embedding_inputs(input_path)  # a bad file is refused before the model loads
    source, folder, adapter_source, adapter_name = resolve_checkpoint(ref, adapter, revision)
    loader = adapter_loader(adapter_source.path, adapter_name) if adapter_source and adapter_name else None
    encoder = load_encoder(folder.root, pooling=pooling, max_length=max_length, device=device, model_loader=loader)
    sep = encoder.tokenizer.sep_token or "[SEP]"
    texts = read_embedding_inputs(input_path, sep)
    rows, chunked = embedded_rows(encoder, texts, late_chunking, batch_size, max_length, progress)
    manifest_path = file_manifest_path(out)
    chunks_path = out.with_name(f"{out.stem}.chunks.jsonl") if chunked else None
    outputs: list[str | os.PathLike[str]] = [out, manifest_path, *([chunks_path] if chunks_path else [])]
    with atomic_files(outputs, force=force, protect=[input_path, source.path]) as temporaries:
        temporary, temporary_manifest = temporaries[:2]
        with open(temporary, "wb") as handle:
            np.save(handle, rows, allow_pickle=False)
        if chunked:
            write_chunk_offsets(temporaries[2], chunked)
        manifest = {
            **manifest_header("embed", argv),
            "checkpoint": source.describe(),
            "adapter": {"name": adapter_name, **adapter_source.describe()} if adapter_source else None,
            "input": {
                "path": str(Path(input_path).absolute()),
                "sha256": file_sha256(Path(input_path)),
                "lines": len(texts),
            },
            "options": {
                "pooling": encoder.pooling,
                "normalize": encoder.normalize,
                "max_length": max_length or encoder.max_length,
                "batch_size": batch_size,
                "attention_type": encoder.attention_type,
                "late_chunking": asdict(late_chunking) if late_chunking else None,
            },
            "output": {
                "file": out.name,
                "shape": list(rows.shape),
                "dtype": "float32",
                "sha256": file_sha256(temporary),
                **(
                    {"chunks": {"file": chunks_path.name, "sha256": file_sha256(temporaries[2])}} if chunks_path else {}
                ),
            },
        }
        write_json(temporary_manifest, manifest, sort_keys=True)
    dimension = rows.shape[1] if rows.ndim == 2 else 0
    return EmbedResult(out, manifest_path, rows.shape[0], dimension, manifest, chunks_path)


def embedded_rows(
    encoder: Any,
    texts: list[str],
    late_chunking: LateChunking | None,
    batch_size: int,
    max_length: int | None,
    progress: ProgressFn,
) -> tuple[np.ndarray, LateChunks | None]:
    """One float32 row per text, or with ``late_chunking`` per chunk (and the chunks' places)."""
    if not late_chunking:
        rows = encoder.encode(texts, batch_size=batch_size, max_length=max_length, progress=progress)
        return np.ascontiguousarray(rows, dtype=np.float32), None
    chunked = encoder.late_chunks(
        texts,
        chunk=late_chunking.chunk,
        overlap=late_chunking.overlap,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
    )
    return np.ascontiguousarray(chunked.vectors, dtype=np.float32), chunked


def write_chunk_offsets(path: Path, chunked: LateChunks) -> None:
    """One JSON line per row of the array: the input line it belongs to (``document``, from 0), its number in
    that document, its model-input tokens and its characters ([start, end); null without a fast tokenizer)."""
    import json

    previous, number = -1, 0
    with open(path, "w", encoding="utf-8") as handle:
        for row, (document, tokens, characters) in enumerate(
            zip(chunked.documents, chunked.token_spans, chunked.char_spans, strict=True)
        ):
            number = number + 1 if document == previous else 0
            previous = document
            record = {
                "row": row,
                "document": int(document),
                "chunk": int(number),
                "tokens": [int(v) for v in tokens],
                "characters": [int(v) for v in characters] if characters[0] >= 0 else None,
            }
            handle.write(json.dumps(record) + "\n")
