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
from ctxext.data.output import (
    InputRecord,
    atomic_file_with_manifest,
    checked_output,
    open_writer,
    output_format,
    write_file_manifest,
)
from ctxext.data.sources import (
    EmptySource,
    Problems,
    SourceFile,
    UnreadableSource,
    expand_sources,
    iter_records,
    record_text,
)
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

STRATEGIES = ("head", "head-tail", "extractive")
DEFAULT_ENCODER = "all-MiniLM-L6-v2"
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
    strategy: str = "head",
    *,
    encoder: Any = None,
    head_fraction: float = 0.5,
    separator: str = "\n\n",
) -> list[Fitted]:
    """Fit each text into ``budget`` tokens (special tokens included). ``encoder`` (``ctxext.encode.Encoder``,
    or a ref to load) is needed only by ``extractive``, and loaded only when a text is over budget."""
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    content = budget - tokenizer.special_tokens
    if content < 1:
        raise InvalidArgument(
            f"budget {budget} leaves no room after {tokenizer.special_tokens} special tokens"
        )
    if not 0.0 <= head_fraction <= 1.0:
        raise InvalidArgument("--head-fraction must lie between 0 and 1")
    encodings = tokenizer.encode(texts)
    results: list[str] = list(texts)
    over: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    separator_tokens = len(tokenizer.encode([separator])[0]) if strategy == "head-tail" else 0
    for index, (text, encoding) in enumerate(zip(texts, encodings, strict=False)):
        if len(encoding) <= content:
            continue
        starts, ends = token_spans(encoding)
        ranks = cut_ranks(text, starts, ends)
        if strategy == "head":
            results[index] = head(text, ends, ranks, content)
        elif strategy == "head-tail":
            results[index] = head_tail(
                text, starts, ends, ranks, content, head_fraction, separator, separator_tokens
            )
        else:
            over.append((index, starts, ends, ranks))
    if over:
        if encoder is None or isinstance(encoder, (str, Path)):
            from ctxext.encode import load_encoder

            encoder = load_encoder(encoder or DEFAULT_ENCODER)
        for index, summary in extractive(texts, over, encoder, content).items():
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
    head_cut = (
        word_cut_at_or_before(ranks, head_tokens, max(0, head_tokens - WORD_SEARCH)) if head_tokens else 0
    )
    tail_start = word_cut_at_or_after(
        ranks, count - tail_tokens, min(count, count - tail_tokens + WORD_SEARCH)
    )
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
    embeddings = np.asarray(encoder.encode(unit_texts, batch_size=32), dtype=np.float32)
    embeddings /= np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
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


@dataclass
class FitResult:
    path: Path
    manifest_path: Path
    counts: FitCounts
    problems: list[str]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def fit_file(
    source: str,
    out: str | Path,
    *,
    budget: int,
    tokenizer: str,
    strategy: str = "head",
    encoder: str = DEFAULT_ENCODER,
    head_fraction: float = 0.5,
    separator: str = "\n\n",
    input_format: str | None = None,
    on_error: str = "stop",
    pdf_password: str | None = None,
    force: bool = False,
    batch_documents: int = 64,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> FitResult:
    """Fit every document of ``source`` (a file or folder of any ``corpus`` format) into ``budget`` tokens.

    Records keep all their fields; the text field (text, body, abstract or content) is replaced, and
    ``tokens`` / ``original_tokens`` are added. Output: *.parquet or *.jsonl, by its suffix."""
    if strategy not in STRATEGIES:
        raise InvalidArgument(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    out = Path(out).expanduser().absolute()
    kind = output_format(out)
    problems = Problems(on_error)
    files = expand_sources([source], input_format=input_format)
    checked_output(out, force=force, inputs=files)
    tok = load_tokenizer(tokenizer)
    if budget <= tok.special_tokens:
        raise InvalidArgument(f"--budget {budget} leaves no room after {tok.special_tokens} special tokens")
    loaded_encoder: list[Any] = []

    def get_encoder() -> Any:
        if not loaded_encoder:
            from ctxext.encode import load_encoder

            loaded_encoder.append(load_encoder(encoder))
        return loaded_encoder[0]

    counts = FitCounts()
    inputs: list[InputRecord] = []
    total = sum(_record_estimate(f) for f in files)
    with atomic_file_with_manifest(out, force=force, inputs=files) as (temporary, temporary_manifest):
        writer = open_writer(temporary, kind, _parquet_schema(files) if kind == "parquet" else None)
        try:
            for batch in _record_batches(files, problems, inputs, pdf_password, batch_documents):
                texts = [text for _, _, text in batch]
                fitted = fit_texts(
                    texts,
                    tok,
                    budget,
                    strategy,
                    head_fraction=head_fraction,
                    separator=separator,
                    encoder=_LazyEncoder(get_encoder) if strategy == "extractive" else None,
                )
                rows = []
                for (record, text_field, _), result in zip(batch, fitted, strict=False):
                    rows.append(
                        {
                            **record,
                            text_field: result.text,
                            "tokens": result.tokens,
                            "original_tokens": result.original_tokens,
                        }
                    )
                    counts.documents += 1
                    counts.shortened += result.tokens < result.original_tokens
                    counts.tokens_before += result.original_tokens
                    counts.tokens_after += result.tokens
                writer.write(rows)
                progress("fitting documents", counts.documents, max(total, counts.documents))
        finally:
            writer.close()
        counts.problems = len(problems.messages)
        if writer.rows == 0:
            raise EmptySource(
                f"{source}: no documents to fit"
                + (f" ({len(problems.messages)} problems)" if problems.messages else "")
            )
        options = {
            "source": source,
            "budget": budget,
            "tokenizer": tokenizer,
            "strategy": strategy,
            "encoder": encoder if strategy == "extractive" else None,
            "head_fraction": head_fraction,
            "separator": separator,
            "format": input_format,
            "on_error": on_error,
        }
        manifest = write_file_manifest(
            temporary_manifest,
            command="data fit",
            options=options,
            inputs=inputs,
            counts=asdict(counts),
            output=out,
            written=temporary,
            rows=writer.rows,
            problems=problems.messages,
            argv=argv,
            extra={
                "tokenizer": {"ref": tokenizer, "special_tokens": tok.special_tokens, "folder": str(tok.path)}
            },
        )
    return FitResult(out, out.with_name(out.name + ".manifest.json"), counts, problems.messages, manifest)


class _LazyEncoder:
    """Loads the encoder on first use, so a batch with nothing over budget never loads a model."""

    def __init__(self, get: Any):
        self._get = get

    @property
    def max_length(self) -> int:
        return self._get().max_length

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        return self._get().encode(texts, **kwargs)


def _record_estimate(source: SourceFile) -> int:
    if source.format == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(source.path).metadata.num_rows
        except Exception:
            return 1
    if source.format == "jsonl":
        with open(source.path, "rb") as handle:
            return sum(block.count(b"\n") for block in iter(lambda: handle.read(2**20), b""))
    return 1


def _parquet_schema(files: list[SourceFile]) -> Any:
    """The input's schema plus the two count columns, when the input is one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(files) != 1 or files[0].format != "parquet":
        return None
    try:
        schema = pq.ParquetFile(files[0].path).schema_arrow
    except (pa.ArrowException, OSError):
        return None
    for name in ("tokens", "original_tokens"):
        if name in schema.names:
            schema = schema.remove(schema.get_field_index(name))
        schema = schema.append(pa.field(name, pa.int32()))
    return schema.remove_metadata()


def _record_batches(
    files: list[SourceFile],
    problems: Problems,
    inputs: list[InputRecord],
    pdf_password: str | None,
    size: int,
) -> Iterator[list[tuple[dict[str, Any], str, str]]]:
    batch: list[tuple[dict[str, Any], str, str]] = []
    for source_file in files:
        inputs.append(InputRecord.of(source_file))
        documents = 0
        for where, record in iter_records(source_file, problems, pdf_password=pdf_password):
            text_field, text, _ = record_text(record)
            if text_field is None or text_field == "title":
                problems.report(
                    UnreadableSource(f"{where}: no text field to fit (text, body, abstract or content)")
                )
                continue
            if source_file.format not in ("jsonl", "parquet"):
                record = {"file": str(source_file.path), **record}
            batch.append((record, text_field, text))
            documents += 1
            if len(batch) >= size:
                yield batch
                batch = []
        inputs[-1].counts = {"documents": documents}
    if batch:
        yield batch
