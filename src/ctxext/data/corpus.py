"""``ctxext data corpus``: many local sources flattened into one Parquet corpus, streamed in batches.

Documents are read one at a time, tokenized a batch at a time with the fast tokenizer, chunked on
paragraph / sentence / word boundaries, optionally deduplicated, and appended to the Parquet file a row
group at a time: memory is bounded by one batch (plus the dedupe index when asked), not by the input.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.chunking import chunk_spans
from ctxext.data.dedupe import Deduplicator
from ctxext.data.output import (
    InputRecord,
    ParquetRowWriter,
    atomic_file_with_manifest,
    checked_output,
    write_file_manifest,
)
from ctxext.data.sources import (
    TEXT_FIELDS,
    TRIPLET_FIELDS,
    Document,
    EmptySource,
    Problems,
    SourceFile,
    UnreadableSource,
    expand_sources,
    iter_records,
    record_documents,
)
from ctxext.data.text import WORD, Tokenizer, cut_ranks, load_tokenizer, token_spans
from ctxext.errors import InvalidArgument

DEFAULT_TOKENIZER = "all-MiniLM-L6-v2"
CORPUS_COLUMNS = ("source", "file", "doc_id", "field", "title", "chunk", "text", "tokens")
READ_COLUMNS = ("doc_id", "id", "title", *TEXT_FIELDS, *TRIPLET_FIELDS)


def corpus_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("source", pa.string()),
            ("file", pa.string()),
            ("doc_id", pa.string()),
            ("field", pa.string()),
            ("title", pa.string()),
            ("chunk", pa.int32()),
            ("text", pa.string()),
            ("tokens", pa.int32()),
        ]
    )


@dataclass
class SourceCounts:
    """What one source (one SOURCES argument) gave: documents read, rows written, tokens, drops."""

    files: int = 0
    documents: int = 0
    rows: int = 0
    tokens: int = 0
    chunked_documents: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0
    empty_texts: int = 0
    problems: int = 0


@dataclass
class CorpusResult:
    path: Path
    manifest_path: Path
    sources: dict[str, SourceCounts]
    totals: SourceCounts
    problems: list[str]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def build_corpus(
    sources: list[str],
    out: str | Path,
    *,
    tokenizer: str = DEFAULT_TOKENIZER,
    chunk: int | None = None,
    overlap: int = 0,
    dedupe: bool = False,
    near_duplicates: bool = True,
    near_threshold: float = 0.8,
    input_format: str | None = None,
    pattern: str | None = None,
    on_error: str = "stop",
    pdf_password: str | None = None,
    force: bool = False,
    batch_documents: int = 256,
    batch_chars: int = 1_000_000,
    rows_per_group: int = 8192,
    group_chars: int = 4_000_000,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> CorpusResult:
    """Flatten ``sources`` (files or folders; ``label=path`` names one) into a Parquet corpus at ``out``.

    ``chunk`` is the most tokens a row may have, special tokens included (what the model sees);
    ``overlap`` the fewest tokens consecutive chunks of one document share.
    """
    out = Path(out).expanduser().absolute()
    if out.suffix.lower() != ".parquet":
        raise InvalidArgument(f"output {out.name}: the corpus is written as Parquet; name it *.parquet")
    problems = Problems(on_error)
    files = expand_sources(sources, input_format=input_format, pattern=pattern)
    checked_output(out, force=force, inputs=files)
    tok = load_tokenizer(tokenizer)
    limit = None
    if chunk is not None:
        limit = chunk - tok.special_tokens
        if limit < 8:
            raise InvalidArgument(
                f"--chunk {chunk} leaves {limit} content tokens after {tok.special_tokens} "
                "special tokens; use at least 8 more"
            )
        if overlap < 0 or (overlap and overlap >= limit // 2):
            raise InvalidArgument(
                f"--overlap {overlap} must be below half of the chunk's {limit} content tokens"
            )
    elif overlap:
        raise InvalidArgument("--overlap needs --chunk")
    deduplicator = Deduplicator(near=near_duplicates, threshold=near_threshold) if dedupe else None
    counts = {label: SourceCounts() for label in dict.fromkeys(f.label for f in files)}
    inputs: list[InputRecord] = []
    total_bytes = sum(f.path.stat().st_size for f in files)

    with atomic_file_with_manifest(out, force=force, inputs=files) as (temporary, temporary_manifest):
        writer = ParquetRowWriter(temporary, corpus_schema())
        columns: dict[str, list[Any]] = {name: [] for name in CORPUS_COLUMNS}
        try:
            read_bytes = buffered_chars = 0
            for source_file, batch in _document_batches(
                files, problems, counts, inputs, pdf_password, batch_documents, batch_chars
            ):
                if source_file is not None:  # a file finished
                    read_bytes += source_file.path.stat().st_size
                    progress("reading sources", read_bytes, total_bytes)
                    continue
                for document, row_chunk, text, tokens in _rows(batch, tok, limit, overlap):
                    source_counts = counts[document.source]
                    if row_chunk == 0 and document.chunked:
                        source_counts.chunked_documents += 1
                    if deduplicator is not None:
                        verdict = deduplicator.check(text)
                        if verdict is not None:
                            setattr(
                                source_counts,
                                f"{verdict}_duplicates",
                                getattr(source_counts, f"{verdict}_duplicates") + 1,
                            )
                            continue
                    source_counts.rows += 1
                    source_counts.tokens += tokens
                    for name, value in zip(
                        CORPUS_COLUMNS,
                        (
                            document.source,
                            document.file,
                            document.doc_id,
                            document.field,
                            document.title,
                            row_chunk,
                            text,
                            tokens,
                        ),
                        strict=False,
                    ):
                        columns[name].append(value)
                    buffered_chars += len(text)
                    if len(columns["text"]) >= rows_per_group or buffered_chars >= group_chars:
                        writer.write_columns(columns)
                        columns = {name: [] for name in CORPUS_COLUMNS}
                        buffered_chars = 0
            writer.write_columns(columns)
        finally:
            writer.close()
        if writer.rows == 0:
            raise EmptySource(
                "no rows to write: every source was empty"
                + (f" or skipped ({len(problems.messages)} problems)" if problems.messages else "")
            )
        totals = SourceCounts(
            **{key: sum(getattr(c, key) for c in counts.values()) for key in asdict(SourceCounts())}
        )
        options = {
            "sources": sources,
            "tokenizer": tokenizer,
            "chunk": chunk,
            "overlap": overlap,
            "dedupe": dedupe,
            "near_duplicates": near_duplicates,
            "near_threshold": near_threshold,
            "format": input_format,
            "pattern": pattern,
            "on_error": on_error,
            "pdf_password": "***" if pdf_password else None,
        }
        manifest = write_file_manifest(
            temporary_manifest,
            command="data corpus",
            options=options,
            inputs=inputs,
            counts={"sources": {k: asdict(v) for k, v in counts.items()}, "totals": asdict(totals)},
            output=out,
            written=temporary,
            rows=writer.rows,
            problems=problems.messages,
            argv=argv,
            extra={
                "tokenizer": {
                    "ref": tokenizer,
                    "special_tokens": tok.special_tokens,
                    "folder": str(tok.path),
                },
                "dedupe": _dedupe_description(deduplicator),
            },
        )
    return CorpusResult(
        out, out.with_name(out.name + ".manifest.json"), counts, totals, problems.messages, manifest
    )


def _dedupe_description(deduplicator: Deduplicator | None) -> dict[str, Any] | None:
    if deduplicator is None:
        return None
    hasher = deduplicator.hasher
    return {
        "exact": "blake2b-128 of whitespace-collapsed, case-folded text",
        "near": deduplicator.near,
        "method": "minhash-lsh",
        "threshold_jaccard": deduplicator.threshold,
        "num_perm": hasher.num_perm,
        "bands": deduplicator.bands,
        "shingle_words": hasher.shingle,
    }


def _document_batches(
    files: list[SourceFile],
    problems: Problems,
    counts: dict[str, SourceCounts],
    inputs: list[InputRecord],
    pdf_password: str | None,
    batch_documents: int,
    batch_chars: int,
) -> Iterator[tuple[SourceFile | None, list[Document]]]:
    """Batches of documents in file order; ``(file, [])`` marks the end of each file."""
    batch: list[Document] = []
    chars = 0
    for source_file in files:
        record = InputRecord.of(source_file)
        inputs.append(record)
        source_counts = counts[source_file.label]
        source_counts.files += 1
        problems_before = len(problems.messages)
        documents = 0
        for where, raw in iter_records(
            source_file, problems, pdf_password=pdf_password, columns=READ_COLUMNS
        ):
            try:
                found = record_documents(raw, where, source_file)
            except UnreadableSource as error:
                problems.report(error)
                continue
            for document in found:
                if not document.text.strip():
                    source_counts.empty_texts += 1
                    continue
                documents += 1
                batch.append(document)
                chars += len(document.text)
                if len(batch) >= batch_documents or chars >= batch_chars:
                    yield None, batch
                    batch, chars = [], 0
        source_counts.documents += documents
        source_counts.problems += len(problems.messages) - problems_before
        record.counts = {"documents": documents, "problems": len(problems.messages) - problems_before}
        yield source_file, []
    if batch:
        yield None, batch


def _rows(
    batch: list[Document], tok: Tokenizer, limit: int | None, overlap: int
) -> Iterator[tuple[Document, int, str, int]]:
    """(document, chunk index, text, tokens incl. special tokens) for every row of a batch."""
    encodings = tok.encode([d.text for d in batch])
    rows: list[tuple[Document, int, str, int | None]] = []
    for document, encoding in zip(batch, encodings, strict=False):
        count = len(encoding)
        if limit is None or count <= limit:
            rows.append((document, 0, document.text, count + tok.special_tokens))
            continue
        starts, ends = token_spans(encoding)
        ranks = cut_ranks(document.text, starts, ends)
        document.chunked = True
        for index, (begin, end) in enumerate(chunk_spans(ranks, limit, overlap)):
            # Cut between words, a whitespace-splitting tokenizer gives the span's tokens again; any
            # other cut (inside a word, or a byte-level BPE / Metaspace tokenizer) is re-tokenized.
            exact = tok.stable_cuts and ranks[begin] >= WORD and ranks[end] >= WORD
            tokens = end - begin + tok.special_tokens if exact else None
            rows.append((document, index, document.text[starts[begin] : ends[end - 1]], tokens))
    pending = [row[2] for row in rows if row[3] is None]
    counted = iter(tok.count(pending) if pending else [])
    for document, index, text, tokens in rows:
        if tokens is None:
            tokens = next(counted)
            while limit is not None and tokens - tok.special_tokens > limit:
                _, ends = token_spans(tok.encode([text])[0])
                text = text[: ends[2 * limit - (tokens - tok.special_tokens) - 1]]
                tokens = tok.count([text])[0]
        yield document, index, text, tokens
