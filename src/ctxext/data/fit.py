"""``ctxext data fit``: make every document fit a token budget, by truncation or extraction.

- ``head``: the first tokens, cut at the last word boundary before the budget.
- ``head-tail``: the first ``head_fraction`` of the budget and the end of the document, joined by
  ``separator``; Sun et al. (2019, "How to fine-tune BERT for text classification") found keeping both
  ends better than either alone for long documents.
- ``extractive``: the sentences closest (cosine) to the document's own embedding, kept in their original
  order until the budget is full. The document's embedding is the token-weighted mean of its sentence
  embeddings, so every part of a document longer than the encoder's window counts, not only its head.
  No generative model: the output is made of the document's own sentences.

The budget counts what the model sees, special tokens included; every output is re-tokenized and
checked against it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.encoders import LazyEncoder, as_encoder, unit_rows
from ctxext.data.formats import TEXT_FIELDS, record_id, record_text
from ctxext.data.options import DEFAULT_MODEL, InputFormat, OnError, OutputFormat, Strategy, parse_choice, plain
from ctxext.data.output import CountedOutput, FileOutput, InputRecord, open_writer, output_format
from ctxext.data.shards import Shard
from ctxext.data.sources import Problems, SourceFile, UnreadableSource, expand_sources, iter_records
from ctxext.data.text import (
    Tokenizer,
    cut_ranks,
    load_tokenizer,
    sentence_units,
    token_spans,
    word_cut_at_or_after,
    word_cut_at_or_before,
)
from ctxext.errors import InvalidArgument
from ctxext.options import with_fields

WORD_SEARCH = 64  # how far back (in tokens) a cut may move to land between two words


@dataclass
class Fitted:
    text: str
    tokens: int
    original_tokens: int


def fit_texts(
    texts: list[str],
    tokenizer: Tokenizer,
    budget: int,
    strategy: Strategy | str = Strategy.head,
    *,
    encoder: Any = None,
    head_fraction: float = 0.5,
    separator: str = "\n\n",
) -> list[Fitted]:
    """Fit each text into ``budget`` tokens (special tokens included). ``encoder`` (``ctxext.encode.Encoder``,
    or a ref to load) is needed only by ``extractive``, and loaded only when a text is over budget."""
    strategy = parse_strategy(strategy)
    content = budget - tokenizer.special_tokens
    if content < 1:
        raise InvalidArgument(f"budget {budget} leaves no room after {tokenizer.special_tokens} special tokens")
    if not 0.0 <= head_fraction <= 1.0:
        raise InvalidArgument("--head-fraction must lie between 0 and 1")
    encodings = tokenizer.encode(texts)
    results: list[str] = list(texts)
    over: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    separator_tokens = len(tokenizer.encode([separator])[0]) if strategy == Strategy.head_tail else 0
    for index, (text, encoding) in enumerate(zip(texts, encodings, strict=False)):
        if len(encoding) <= content:
            continue
        starts, ends = token_spans(encoding)
        ranks = cut_ranks(text, starts, ends)
        if strategy == Strategy.head:
            results[index] = head(text, ends, ranks, content)
        elif strategy == Strategy.head_tail:
            results[index] = head_tail(text, starts, ends, ranks, content, head_fraction, separator, separator_tokens)
        else:
            over.append((index, starts, ends, ranks))
    if over:
        for index, summary in extractive(texts, over, as_encoder(encoder), content).items():
            results[index] = summary
    counts = tokenizer.count(results)
    for index, tokens in enumerate(counts):
        while tokens > budget:  # rare: a tokenizer that merges differently across a cut or a join
            _, ends = token_spans(tokenizer.encode([results[index]])[0])
            results[index] = results[index][: ends[max(0, len(ends) - (tokens - budget) - 1)]]
            tokens = tokenizer.count([results[index]])[0]
        counts[index] = tokens
    return [
        Fitted(text, tokens, len(encoding) + tokenizer.special_tokens)
        for text, tokens, encoding in zip(results, counts, encodings, strict=False)
    ]


def parse_strategy(strategy: Strategy | str) -> Strategy:
    return parse_choice(Strategy, strategy, "unknown strategy {value!r}; choose one of {choices}")


def head(text: str, ends: np.ndarray, ranks: np.ndarray, content: int) -> str:
    cut = word_cut_at_or_before(ranks, content, max(0, content - WORD_SEARCH))
    return text[: ends[cut - 1]] if cut > 0 else ""


def head_tail(
    text: str,
    starts: np.ndarray,
    ends: np.ndarray,
    ranks: np.ndarray,
    content: int,
    head_fraction: float,
    separator: str,
    separator_tokens: int,
) -> str:
    count = len(starts)
    available = content - separator_tokens
    if available < 2:
        return head(text, ends, ranks, content)
    head_tokens = int(round(available * head_fraction))
    tail_tokens = available - head_tokens
    head_cut = word_cut_at_or_before(ranks, head_tokens, max(0, head_tokens - WORD_SEARCH)) if head_tokens else 0
    tail_start = word_cut_at_or_after(ranks, count - tail_tokens, min(count, count - tail_tokens + WORD_SEARCH))
    kept_head = text[: ends[head_cut - 1]] if head_cut > 0 else ""
    kept_tail = text[starts[tail_start] :] if tail_start < count else ""
    if not kept_head or not kept_tail:
        return kept_head or kept_tail
    return kept_head + separator + kept_tail


def extractive(
    texts: list[str], over: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], encoder: Any, content: int
) -> dict[int, str]:
    """Summaries of the texts in ``over`` (index, token starts, ends, cut ranks), embedded in one pass."""
    window = int(getattr(encoder, "max_length", 512) or 512)
    max_unit = max(8, min(content // 4, window - 2))
    documents = []
    unit_texts: list[str] = []
    for index, starts, ends, ranks in over:
        units = sentence_units(ranks, starts, ends, max_unit)
        documents.append((index, units, len(unit_texts)))
        unit_texts.extend(texts[index][u.start : u.end] for u in units)
    embeddings = unit_rows(encoder.encode(unit_texts, batch_size=32))
    summaries = {}
    for index, units, offset in documents:
        vectors = embeddings[offset : offset + len(units)]
        summaries[index] = select_sentences(texts[index], units, vectors, content)
    return summaries


def select_sentences(text: str, units: list[Any], vectors: np.ndarray, content: int) -> str:
    """Greedy by similarity to the token-weighted centroid; what fits is joined in original order."""
    weights = np.array([u.tokens for u in units], dtype=np.float32)
    centroid = (vectors * weights[:, None]).sum(axis=0)
    centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
    scores = vectors @ centroid
    keep = np.zeros(len(units), dtype=bool)
    used = 0
    for position in np.argsort(-scores, kind="stable"):
        if used + units[position].tokens <= content:
            keep[position] = True
            used += units[position].tokens
    kept = np.flatnonzero(keep)
    if not len(kept):
        best = units[int(np.argmax(scores))]
        return text[best.start : best.end]
    parts = []
    previous = None
    for position in kept:
        unit = units[position]
        if previous is not None:
            before = units[previous]
            if position == previous + 1:
                parts.append(text[before.end : unit.start])
            else:
                parts.append("\n\n" if unit.paragraph != before.paragraph else " ")
        parts.append(text[unit.start : unit.end])
        previous = position
    return "".join(parts)


# ----------------------------------------------------------------------------- the command


@dataclass
class FitCounts:
    documents: int = 0
    shortened: int = 0
    tokens_before: int = 0
    tokens_after: int = 0
    problems: int = 0
    other_shards: int = 0
    """Documents left to the other shards (``--shard I/N``)."""


@dataclass
class FitResult(CountedOutput):
    path: Path
    manifest_path: Path
    counts: FitCounts
    problems: list[str]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The output, its manifest, the strategy and budget, and the counts."""
        options = self.manifest.get("options", {})
        return {
            "output": str(self.path),
            "manifest": str(self.manifest_path),
            "strategy": options.get("strategy"),
            "budget": options.get("budget"),
            **vars(self.counts),
        }

    title = "fit"
    columns = ("documents", "shortened", "tokens_before", "tokens_after", "problems")

    def count_rows(self) -> dict[str, dict[str, Any]]:
        return {"documents": vars(self.counts)}


@dataclass(frozen=True)
class FitOptions:
    """How ``data fit`` reads its source and fits each document (the options of the command)."""

    budget: int = 4096
    tokenizer: str = DEFAULT_MODEL
    strategy: Strategy | str = Strategy.head
    encoder: str = DEFAULT_MODEL
    revision: str | None = None
    head_fraction: float = 0.5
    separator: str = "\n\n"
    input_format: InputFormat | str | None = None
    on_error: OnError | str = OnError.stop
    pdf_password: str | None = None
    shard: str | None = None
    """``I/N``: only the documents of the I-th share, by id (``data merge`` joins the N outputs)."""
    batch_documents: int = 64

    def recorded(self, source: str) -> dict[str, Any]:
        """The options as the manifest records them."""
        strategy = parse_strategy(self.strategy)
        return {
            "source": source,
            "budget": self.budget,
            "tokenizer": self.tokenizer,
            "strategy": strategy.value,
            "encoder": self.encoder if strategy == Strategy.extractive else None,
            "revision": self.revision,
            "head_fraction": self.head_fraction,
            "separator": self.separator,
            "format": plain(self.input_format),
            "on_error": plain(self.on_error),
            "shard": self.shard,
        }


def fit_file(
    source: str,
    out: str | Path,
    options: FitOptions | None = None,
    *,
    force: bool = False,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
    **fields: Any,
) -> FitResult:
    """Fit every document of ``source`` (a file or folder of any ``corpus`` format) into ``budget`` tokens.

    Records keep all their fields; the text field (text, body, abstract or content) is replaced, and
    ``tokens`` / ``original_tokens`` are added. Output: *.parquet or *.jsonl, by its suffix. ``fields``:
    :class:`FitOptions` fields given as keywords (over ``options``)."""
    options = with_fields(FitOptions, options, fields, "fit_file")
    strategy = parse_strategy(options.strategy)
    out = Path(out).expanduser().absolute()
    kind = output_format(out)
    problems = Problems(options.on_error)
    share = Shard.parse(options.shard)
    files = expand_sources([source], input_format=options.input_format)
    output = FileOutput(out, files, force=force)
    tok = load_tokenizer(options.tokenizer, options.revision)
    if options.budget <= tok.special_tokens:
        raise InvalidArgument(f"--budget {options.budget} leaves no room after {tok.special_tokens} special tokens")
    encoder = LazyEncoder(options.encoder, options.revision)
    fitting = _Fitting(tok, options.budget, strategy, encoder, options.head_fraction, options.separator)
    counts = FitCounts()
    inputs: list[InputRecord] = []
    total = sum(_record_estimate(f) for f in files) // (share.count if share else 1)
    schema = _parquet_schema(files) if kind == OutputFormat.parquet else None
    records = _RecordReader(problems, inputs, options.pdf_password, share, counts)
    with output.writing(lambda path: open_writer(path, kind, schema)) as writer:
        for batch in records.batches(files, options.batch_documents):
            writer.write(fitting.rows(batch, counts))
            progress("fitting documents", counts.documents, max(total, counts.documents))
        counts.problems = len(problems.messages)
        output.finish(
            writer,
            empty=f"{source}: no documents to fit{problems.count_note()}",
            command="data fit",
            options=options.recorded(source),
            inputs=inputs,
            counts=asdict(counts),
            problems=problems.messages,
            argv=argv,
            extra={"tokenizer": tok.describe()},
        )
    return FitResult(out, output.manifest_path, counts, problems.messages, output.manifest)


@dataclass
class _Fitting:
    """What ``fit_file`` fits each batch of records with."""

    tokenizer: Tokenizer
    budget: int
    strategy: Strategy
    encoder: LazyEncoder
    head_fraction: float
    separator: str

    def rows(self, batch: list[tuple[dict[str, Any], str, str]], counts: FitCounts) -> list[dict[str, Any]]:
        """The records of ``batch`` with their text fitted and the two token counts added; ``counts`` grow."""
        fitted = fit_texts(
            [text for _, _, text in batch],
            self.tokenizer,
            self.budget,
            self.strategy,
            head_fraction=self.head_fraction,
            separator=self.separator,
            encoder=self.encoder if self.strategy == Strategy.extractive else None,
        )
        rows = []
        for (record, text_field, _), result in zip(batch, fitted, strict=False):
            rows.append(
                {**record, text_field: result.text, "tokens": result.tokens, "original_tokens": result.original_tokens}
            )
            counts.documents += 1
            counts.shortened += result.tokens < result.original_tokens
            counts.tokens_before += result.original_tokens
            counts.tokens_after += result.tokens
        return rows


def _record_estimate(source: SourceFile) -> int:
    if source.format == InputFormat.parquet:
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(source.path).metadata.num_rows
        except Exception:
            return 1
    if source.format == InputFormat.jsonl:
        with open(source.path, "rb") as handle:
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(2**20), b""))
    return 1


def _parquet_schema(files: list[SourceFile]) -> Any:
    """The input's schema plus the two count columns, when the input is one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(files) != 1 or files[0].format != InputFormat.parquet:
        return None
    try:
        schema = pq.ParquetFile(files[0].path).schema_arrow
    except (pa.ArrowException, OSError):
        return None
    if "sections" in schema.names and not set(schema.names) & set(TEXT_FIELDS):  # fitted into a text column
        schema = schema.remove(schema.get_field_index("sections")).append(pa.field("text", pa.string()))
    for name in ("tokens", "original_tokens"):
        if name in schema.names:
            schema = schema.remove(schema.get_field_index(name))
        schema = schema.append(pa.field(name, pa.int32()))
    return schema.remove_metadata()


@dataclass
class _RecordReader:
    """The records ``fit_file`` fits, with the text field of each, a batch at a time; records of other shards are
    counted, not read further."""

    problems: Problems
    inputs: list[InputRecord]
    pdf_password: str | None
    share: Shard | None
    counts: FitCounts

    def batches(self, files: list[SourceFile], size: int) -> Iterator[list[tuple[dict[str, Any], str, str]]]:
        batch: list[tuple[dict[str, Any], str, str]] = []
        for source_file in files:
            self.inputs.append(InputRecord.of(source_file))
            documents = 0
            for where, record in iter_records(source_file, self.problems, pdf_password=self.pdf_password):
                if self.share is not None and not self.share.holds(record_id(record, where)):
                    self.counts.other_shards += 1
                    continue
                text_field, text, _ = record_text(record)
                if text is None or text_field in (None, "title"):
                    self.problems.report(
                        UnreadableSource(f"{where}: no text field to fit (text, body, abstract, content or sections)")
                    )
                    continue
                if source_file.format not in (InputFormat.jsonl, InputFormat.parquet):
                    record = {"file": str(source_file.path), **record}
                if text_field == "sections":  # the fitted text replaces the list, as Markdown (record_text)
                    record = {key: value for key, value in record.items() if key != "sections"}
                    text_field = "text"
                batch.append((record, text_field, text))
                documents += 1
                if len(batch) >= size:
                    yield batch
                    batch = []
            self.inputs[-1].counts = {"documents": documents}
        if batch:
            yield batch
