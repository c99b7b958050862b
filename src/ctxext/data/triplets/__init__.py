"""``ctxext data triplets``: SciRepEval-style (query, positive, hard negative) triplets from a local corpus.

Each document with structure (a title, or sections under headings) gives queries:
- ``title``: the query is the title; the positive is the document's body. The title is left out of the
  positive (the query would be a verbatim span of it) and, to leave no shortcut, out of the negative too.
- ``section``: the query is one section (its first ``max_query_words`` words); the positive is the title
  and the rest of the document, without that section.
- ``passage``: the inverse cloze task with the context kept (Lee et al. 2019): the query is a run of
  ``passage_words`` words taken at a uniformly random depth of the body (within its first
  ``max_depth_words`` words when given, so that it survives truncation at training time); the positive is the
  whole document, passage included. It teaches a long encoder to carry content from anywhere in its input.
- ``summary``: the query is the summary line of a section (its first paragraph, as a docstring's; see
  ``text.summary_line``), within the first ``max_depth_words`` words when given; the positive is the document
  without that line, the rest of the section kept. Natural text about a place in the document, never a
  verbatim span of it: the query ``data longdoc`` evaluates on.
A title or section query that still occurs verbatim in its positive (case and whitespace ignored) is dropped unless
``allow_verbatim``. The negative is the most similar *other* document to the query, under an embedding
model (cosine) or BM25 (``ctxext.data.bm25``), read as a top-k; the positive itself, and any
document with the same title or the same text, is never a negative. ``skip_top`` passes over the nearest
candidates (which are more often unlabelled positives). For passage queries the negative can instead be
``swap``: the positive itself with the passage replaced by as many words of another document, so that it differs
from the positive only there.

The corpus is held in memory (texts, BM25's sparse score matrix or one embedding per document); negatives are
read from each query's top-k (widened where exclusions or ties need it), so mining is linear in the documents
per query, not a sort of all of them (``benchmarks/triplets_scale.py``: 100k documents in minutes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.encoders import LazyEncoder
from ctxext.data.formats import triplet_schema
from ctxext.data.options import (
    DEFAULT_MODEL,
    InputFormat,
    NegativesFrom,
    OnError,
    OutputFormat,
    Queries,
    parse_choice,
    plain,
)
from ctxext.data.output import CountedOutput, FileOutput, InputRecord, open_writer, output_format
from ctxext.data.shards import Shard
from ctxext.data.sources import EmptySource, Problems, expand_sources
from ctxext.data.triplets.documents import (
    Section,
    StructuredDocument,
    _read_corpus,
    read_documents,
    split_sections,
    structured_document,
)
from ctxext.data.triplets.negatives import Search, _negatives, bm25_scores, embedding_scores, hard_negatives, top_k
from ctxext.data.triplets.queries import (
    Query,
    QueryOptions,
    TripletCounts,
    make_queries,
    parse_queries,
    swapped_negatives,
)
from ctxext.errors import InvalidArgument
from ctxext.options import with_fields

__all__ = [
    "Queries",
    "Query",
    "QueryOptions",
    "Search",
    "Section",
    "StructuredDocument",
    "TripletCounts",
    "TripletsResult",
    "bm25_scores",
    "build_triplets",
    "embedding_scores",
    "hard_negatives",
    "make_queries",
    "open_writer",
    "parse_queries",
    "read_documents",
    "split_sections",
    "structured_document",
    "swapped_negatives",
    "top_k",
]


@dataclass
class TripletsResult(CountedOutput):
    path: Path
    manifest_path: Path
    counts: TripletCounts
    problems: list[str]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The output, its manifest, and the counts."""
        return {"output": str(self.path), "manifest": str(self.manifest_path), **vars(self.counts)}

    title = "triplets"
    columns = (
        "documents",
        "title_queries",
        "section_queries",
        "passage_queries",
        "summary_queries",
        "dropped_verbatim",
        "triplets",
        "problems",
    )

    def count_rows(self) -> dict[str, dict[str, Any]]:
        return {"corpus": vars(self.counts)}


def triplet_record(
    query: Query,
    document: StructuredDocument,
    negative: StructuredDocument,
    score: float | None,
    rank: int,
    method: NegativesFrom,
) -> dict[str, Any]:
    """One output line; the schema is documented in docs/data.md."""
    if query.kind == Queries.titles:
        negative_title, negative_text = None, negative.body()
    else:
        negative_title, negative_text = negative.title, negative.body()
    return {
        "query": {"text": query.text, "kind": query.kind.value, "heading": query.heading},
        "positive": {"doc_id": document.doc_id, "title": query.positive_title, "abstract": query.positive_text},
        "negative": {"doc_id": negative.doc_id, "title": negative_title, "abstract": negative_text},
        "negative_method": method.value,
        "negative_score": None if score is None else round(score, 6),
        "negative_rank": rank,
    }


def build_triplets(
    corpus: str,
    out: str | Path,
    options: QueryOptions | None = None,
    *,
    negatives_from: NegativesFrom | str = NegativesFrom.embedding,
    encoder: str = DEFAULT_MODEL,
    revision: str | None = None,
    negatives: int = 1,
    skip_top: int = 0,
    input_format: InputFormat | str | None = None,
    on_error: OnError | str = OnError.stop,
    pdf_password: str | None = None,
    shard: str | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
    **fields: Any,
) -> TripletsResult:
    """Read ``corpus`` (file or folder, any ``corpus`` format), write triplets to ``out`` (JSON lines, or Parquet
    when it is named *.parquet: the same records, one column per key) for the queries ``options`` asks for; with
    ``shard`` (``I/N``) only the queries of the I-th share of the documents (negatives still from all of them).
    ``fields``: :class:`QueryOptions` fields given as keywords (over ``options``)."""
    options = with_fields(QueryOptions, options, fields, "build_triplets")
    out, negatives_from = _checked_options(out, options.queries, negatives_from, negatives, skip_top)
    share = Shard.parse(shard)
    problems = Problems(on_error)
    files = expand_sources([corpus], input_format=input_format)
    output = FileOutput(out, files, force=force)
    inputs: list[InputRecord] = []
    documents = _read_corpus(files, problems, inputs, pdf_password, progress)
    counts = TripletCounts(documents=len(documents))
    if len(documents) < 2:
        raise EmptySource(f"{corpus}: a hard negative needs at least two documents; found {len(documents)}")
    made = make_queries(documents, options, counts=counts)
    if share is not None:
        made = [query for query in made if share.holds(documents[query.document].doc_id)]
    if not made:
        raise EmptySource(
            f"{corpus}: no document gave a query (titles, or two or more sections with "
            f"{options.min_query_words}+ words, and {options.min_positive_words}+ words left for the positive)"
        )
    embedder = LazyEncoder(encoder, revision)  # loaded only for embedding negatives
    found = _negatives(documents, made, negatives_from, embedder, negatives, skip_top, options.seed, progress)
    recorded = _recorded_options(dict(locals()), options, problems.on_error, embedder.folder)
    triplets = (  # made one query at a time as they are written: never all the texts at once
        [triplet_record(query, documents[query.document], *negative, negatives_from) for negative in picked]
        for query, picked in zip(made, found, strict=False)
    )
    _write_triplets(output, output_format(out), triplets, counts, problems, recorded, inputs, argv)
    return TripletsResult(out, output.manifest_path, counts, problems.messages, output.manifest)


RECORDED_ARGUMENTS = ("corpus", "revision", "negatives", "skip_top", "shard")
RECORDED_QUERY_OPTIONS = (
    "sections_per_document",
    "min_query_words",
    "max_query_words",
    "min_positive_words",
    "allow_verbatim",
    "seed",
)


def _recorded_options(
    arguments: dict[str, Any], options: QueryOptions, on_error: OnError, encoder_folder: str | None
) -> dict[str, Any]:
    """What the manifest records of ``build_triplets``'s arguments and query options; an option that did not
    apply is None."""
    queries, negatives_from = options.queries, arguments["negatives_from"]
    passage = queries == Queries.passages
    return {
        **{name: arguments[name] for name in RECORDED_ARGUMENTS},
        **{name: getattr(options, name) for name in RECORDED_QUERY_OPTIONS},
        "queries": queries.value,
        "negatives_from": negatives_from.value,
        "encoder": arguments["encoder"] if negatives_from == NegativesFrom.embedding else None,
        "encoder_folder": encoder_folder,
        "passage_words": options.passage_words if passage else None,
        "max_depth_words": options.max_depth_words if passage or queries == Queries.summaries else None,
        "format": plain(arguments["input_format"]),
        "on_error": on_error.value,
    }


def _checked_options(
    out: str | Path, queries: Queries, negatives_from: NegativesFrom | str, negatives: int, skip_top: int
) -> tuple[Path, NegativesFrom]:
    """The output path and the parsed choice of negatives, refused before any reading when they cannot work."""
    out = Path(out).expanduser().absolute()
    output_format(out)
    negatives_from = parse_choice(NegativesFrom, negatives_from, "--negatives-from must be one of {choices}")
    if negatives < 1 or skip_top < 0:
        raise InvalidArgument("--negatives must be at least 1 and --skip-top at least 0")
    if negatives_from == NegativesFrom.swap and queries != Queries.passages:
        raise InvalidArgument("--negatives-from swap needs --queries passage (it swaps the passage out)")
    return out, negatives_from


TRIPLET_ROWS_PER_GROUP = 2048
"""Triplets per Parquet row group (each holds two documents' text: a few MB a group)."""


def _write_triplets(
    output: FileOutput,
    kind: OutputFormat,
    triplets: Iterable[list[dict[str, Any]]],
    counts: TripletCounts,
    problems: Problems,
    options: dict[str, Any],
    inputs: list[InputRecord],
    argv: list[str] | None,
) -> None:
    """The triplets of each query as JSON lines or Parquet rows (``kind``), written as they come, and the manifest
    with the counts beside them."""
    with output.writing(lambda path: open_writer(path, kind, triplet_schema(), TRIPLET_ROWS_PER_GROUP)) as writer:
        for records in triplets:
            counts.queries_without_negative += not records
            writer.write(records)
        counts.triplets = writer.rows
        counts.problems = len(problems.messages)
        output.finish(
            writer,
            empty=f"{options['corpus']}: no triplet could be made (every candidate negative was excluded)",
            command="data triplets",
            options=options,
            inputs=inputs,
            counts=asdict(counts),
            problems=problems.messages,
            argv=argv,
            extra={"schema": "ctxext-triplets/1 (docs/data.md)"},
        )
