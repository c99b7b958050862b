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
from ctxext.data.dedupe import Deduplicator, Duplicate
from ctxext.data.formats import ROLE_OF_KEY, TEXT_RECORD_FIELDS
from ctxext.data.options import DEFAULT_MODEL, InputFormat, OnError, plain
from ctxext.data.output import CountedOutput, FileOutput, InputRecord, ParquetRowWriter
from ctxext.data.shards import Shard
from ctxext.data.sources import (
    Document,
    Problems,
    SourceFile,
    UnreadableSource,
    expand_sources,
    iter_records,
    record_documents,
)
from ctxext.data.text import WORD, Tokenizer, cut_ranks, load_tokenizer, token_spans
from ctxext.errors import InvalidArgument
from ctxext.options import with_fields

CORPUS_COLUMNS = ("source", "file", "doc_id", "field", "title", "chunk", "text", "tokens")
READ_COLUMNS = ("doc_id", "id", *TEXT_RECORD_FIELDS, *ROLE_OF_KEY)


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


@dataclass(frozen=True)
class CorpusOptions:
    """How a corpus is read, cut and filtered, and the sizes it is streamed in (the CLI builds it from its
    options)."""

    tokenizer: str = DEFAULT_MODEL
    """Checkpoint whose tokenizer counts tokens: folder, hub ID or embedded name."""
    revision: str | None = None
    chunk: int | None = None
    """The most tokens a row may have, special tokens included (what the model sees); None: one row per text."""
    overlap: int = 0
    """The fewest tokens consecutive chunks of one document share."""
    dedupe: bool = False
    near_duplicates: bool = True
    """With ``dedupe``: near duplicates (MinHash, Jaccard >= ``near_threshold``) too, not only exact ones."""
    near_threshold: float = 0.8
    input_format: InputFormat | str | None = None
    """Read every source as this format, whatever its suffix."""
    pattern: str | None = None
    """Glob for files inside folders."""
    on_error: OnError | str = OnError.stop
    pdf_password: str | None = None
    shard: str | None = None
    """``I/N``: keep only the documents of the I-th share (by their ids; ``data merge`` joins the N outputs)."""
    batch_documents: int = 256
    batch_chars: int = 1_000_000
    """Documents are tokenized in batches of at most ``batch_documents`` documents or about this many
    characters."""
    rows_per_group: int = 8192
    group_chars: int = 4_000_000
    """A Parquet row group is written when ``rows_per_group`` rows or this many characters have gathered."""

    def share(self) -> Shard | None:
        """The share of the documents ``shard`` keeps (None: all); refused with ``dedupe``."""
        share = Shard.parse(self.shard)
        if share is not None and self.dedupe:
            raise InvalidArgument(
                "--shard with --dedupe would miss duplicates across shards: merge the shards, then run "
                "`ctxext data corpus merged.parquet --dedupe`"
            )
        return share

    def recorded(self, sources: list[str]) -> dict[str, Any]:
        """The options as the manifest records them: not the batch sizes (they change no row), nor the PDF
        password."""
        return {
            "sources": sources,
            "tokenizer": self.tokenizer,
            "revision": self.revision,
            "chunk": self.chunk,
            "overlap": self.overlap,
            "dedupe": self.dedupe,
            "near_duplicates": self.near_duplicates,
            "near_threshold": self.near_threshold,
            "format": plain(self.input_format),
            "pattern": self.pattern,
            "on_error": plain(self.on_error),
            "pdf_password": "***" if self.pdf_password else None,
            "shard": self.shard,
        }


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
    other_shards: int = 0
    """Documents left to the other shards (``--shard I/N``)."""


@dataclass
class CorpusResult(CountedOutput):
    path: Path
    manifest_path: Path
    sources: dict[str, SourceCounts]
    totals: SourceCounts
    problems: list[str]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The output, its manifest, and the counts of each source and of all (``total``)."""
        return {"output": str(self.path), "manifest": str(self.manifest_path), "sources": self.count_rows()}

    title = "corpus"
    columns = (
        "files",
        "documents",
        "rows",
        "tokens",
        "chunked_documents",
        "exact_duplicates",
        "near_duplicates",
        "problems",
    )

    def count_rows(self) -> dict[str, dict[str, Any]]:
        rows = {label: vars(counts) for label, counts in self.sources.items()}
        rows["total"] = vars(self.totals)
        return rows


def build_corpus(
    sources: list[str],
    out: str | Path,
    options: CorpusOptions | None = None,
    *,
    force: bool = False,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
    **fields: Any,
) -> CorpusResult:
    """Flatten ``sources`` (files or folders; ``label=path`` names one) into a Parquet corpus at ``out``, read,
    chunked and deduplicated as ``options`` says (:class:`CorpusOptions`).
    ``fields``: :class:`CorpusOptions` fields given as keywords (over ``options``)."""
    options = with_fields(CorpusOptions, options, fields, "build_corpus")
    out = Path(out).expanduser().absolute()
    if out.suffix.lower() != ".parquet":
        raise InvalidArgument(f"output {out.name}: the corpus is written as Parquet; name it *.parquet")
    share = options.share()
    problems = Problems(options.on_error)
    files = expand_sources(sources, input_format=options.input_format, pattern=options.pattern)
    output = FileOutput(out, files, force=force)
    tok = load_tokenizer(options.tokenizer, options.revision)
    limit = content_limit(options.chunk, options.overlap, tok)
    near, threshold = options.near_duplicates, options.near_threshold
    deduplicator = Deduplicator(near=near, threshold=threshold) if options.dedupe else None
    counts = {label: SourceCounts() for label in dict.fromkeys(f.label for f in files)}
    inputs: list[InputRecord] = []
    reading = _Reading(files, problems, counts, inputs, options.pdf_password, progress, share)
    with output.writing(lambda path: ParquetRowWriter(path, corpus_schema())) as writer:
        groups = _RowGroups(writer, options.rows_per_group, options.group_chars)
        for batch in reading.batches(options.batch_documents, options.batch_chars):
            for document, row_chunk, text, tokens in _rows(batch, tok, limit, options.overlap):
                if _counted_and_kept(counts[document.source], document, row_chunk, text, tokens, deduplicator):
                    groups.add(_row(document, row_chunk, text, tokens))
        groups.flush()
        totals = SourceCounts(**{key: sum(getattr(c, key) for c in counts.values()) for key in asdict(SourceCounts())})
        output.finish(
            writer,
            empty=f"no rows to write: every source was empty{problems.count_note(' or skipped ')}",
            command="data corpus",
            options=options.recorded(sources),
            inputs=inputs,
            problems=problems.messages,
            argv=argv,
            counts={"sources": {k: asdict(v) for k, v in counts.items()}, "totals": asdict(totals)},
            extra={"tokenizer": tok.describe(), "dedupe": _dedupe_description(deduplicator)},
        )
    return CorpusResult(out, output.manifest_path, counts, totals, problems.messages, output.manifest)


def _row(document: Any, row_chunk: int, text: str, tokens: int) -> tuple[Any, ...]:
    """One corpus row, in the column order of ``corpus_schema``."""
    return (document.source, document.file, document.doc_id, document.field, document.title, row_chunk, text, tokens)


def content_limit(chunk: int | None, overlap: int, tok: Tokenizer) -> int | None:
    """The most content tokens (special tokens left out) a row may have; None when rows are not chunked."""
    if chunk is None:
        if overlap:
            raise InvalidArgument("--overlap needs --chunk")
        return None
    limit = chunk - tok.special_tokens
    if limit < 8:
        raise InvalidArgument(
            f"--chunk {chunk} leaves {limit} content tokens after {tok.special_tokens} "
            "special tokens; use at least 8 more"
        )
    if overlap < 0 or (overlap and overlap >= limit // 2):
        raise InvalidArgument(f"--overlap {overlap} must be below half of the chunk's {limit} content tokens")
    return limit


def _counted_and_kept(
    source_counts: SourceCounts,
    document: Document,
    row_chunk: int,
    text: str,
    tokens: int,
    deduplicator: Deduplicator | None,
) -> bool:
    """Count one row in its source's counts; False when it is a duplicate to drop."""
    if row_chunk == 0 and document.chunked:
        source_counts.chunked_documents += 1
    verdict = deduplicator.check(text) if deduplicator is not None else None
    if verdict == Duplicate.exact:
        source_counts.exact_duplicates += 1
    elif verdict == Duplicate.near:
        source_counts.near_duplicates += 1
    else:
        source_counts.rows += 1
        source_counts.tokens += tokens
    return verdict is None


class _RowGroups:
    """The rows to write, as columns; written as one Parquet row group when ``rows`` rows or ``chars``
    characters of text have gathered."""

    def __init__(self, writer: ParquetRowWriter, rows: int, chars: int):
        self.writer = writer
        self.rows = rows
        self.chars = chars
        self._start()

    def _start(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in CORPUS_COLUMNS}
        self.buffered_chars = 0

    def add(self, row: tuple[Any, ...]) -> None:
        """One row, its values in the order of CORPUS_COLUMNS."""
        for name, value in zip(CORPUS_COLUMNS, row, strict=True):
            self.columns[name].append(value)
        self.buffered_chars += len(self.columns["text"][-1])
        if len(self.columns["text"]) >= self.rows or self.buffered_chars >= self.chars:
            self.flush()

    def flush(self) -> None:
        self.writer.write_columns(self.columns)
        self._start()


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


@dataclass
class _Reading:
    """The documents of every source file in order, counted per source and per file as they are read."""

    files: list[SourceFile]
    problems: Problems
    counts: dict[str, SourceCounts]
    inputs: list[InputRecord]
    pdf_password: str | None
    progress: ProgressFn
    share: Shard | None = None

    def batches(self, batch_documents: int, batch_chars: int) -> Iterator[list[Document]]:
        """Batches of at most ``batch_documents`` documents or about ``batch_chars`` characters."""
        total_bytes = sum(f.path.stat().st_size for f in self.files)
        read_bytes = 0
        batch: list[Document] = []
        chars = 0
        for source_file in self.files:
            for document in self._documents(source_file):
                batch.append(document)
                chars += len(document.text)
                if len(batch) >= batch_documents or chars >= batch_chars:
                    yield batch
                    batch, chars = [], 0
            read_bytes += source_file.path.stat().st_size
            self.progress("reading sources", read_bytes, total_bytes)
        if batch:
            yield batch

    def _documents(self, source_file: SourceFile) -> Iterator[Document]:
        """The non-empty documents of one file; a record that cannot be read is a problem."""
        record = InputRecord.of(source_file)
        self.inputs.append(record)
        source_counts = self.counts[source_file.label]
        source_counts.files += 1
        problems_before = len(self.problems.messages)
        documents = 0
        for where, raw in iter_records(
            source_file, self.problems, pdf_password=self.pdf_password, columns=READ_COLUMNS
        ):
            try:
                found = record_documents(raw, where, source_file)
            except UnreadableSource as error:
                self.problems.report(error)
                continue
            for document in found:
                if not document.text.strip():
                    source_counts.empty_texts += 1
                    continue
                if self.share is not None and not self.share.holds(document.doc_id):
                    source_counts.other_shards += 1
                    continue
                documents += 1
                yield document
        source_counts.documents += documents
        source_counts.problems += self.problems.since(problems_before)
        record.counts = {"documents": documents, "problems": self.problems.since(problems_before)}


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
