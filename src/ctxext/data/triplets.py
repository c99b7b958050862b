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
model (cosine) or BM25 (``bm25s``'s sparse score matrix), read as a top-k; the positive itself, and any
document with the same title or the same text, is never a negative. ``skip_top`` passes over the nearest
candidates (which are more often unlabelled positives). For passage queries the negative can instead be
``swap``: the positive itself with the passage replaced by as many words of another document, so that it differs
from the positive only there.

The corpus is held in memory (texts, BM25's sparse score matrix or one embedding per document); negatives are
read from each query's top-k (widened where exclusions or ties need it), so mining is linear in the documents
per query, not a sort of all of them (``benchmarks/triplets_scale.py``: 100k documents in minutes).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.bm25 import BM25Index
from ctxext.data.encoders import LazyEncoder, as_encoder, unit_rows
from ctxext.data.formats import record_id, record_text, triplet_schema
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
from ctxext.data.sources import (
    EmptySource,
    Problems,
    SourceFile,
    UnreadableSource,
    expand_sources,
    iter_records,
    markdown_title,
)
from ctxext.data.text import normalize, summary_line
from ctxext.errors import InvalidArgument

MARKDOWN_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
RST_HEADING = re.compile(r"^([^\n]+)\n([=\-~^\"'`#*+]{3,})[ \t]*$", re.MULTILINE)
NON_SPACE = re.compile(r"\S+")


@dataclass
class Section:
    heading: str | None
    text: str


@dataclass
class StructuredDocument:
    """A document as title plus sections; ``body`` joins the sections back with their headings."""

    doc_id: str
    title: str | None
    sections: list[Section]
    source: str = ""

    def body(self, without: int | None = None) -> str:
        parts = []
        for index, section in enumerate(self.sections):
            if index == without:
                continue
            parts.append(f"{section.heading}\n\n{section.text}" if section.heading else section.text)
        return "\n\n".join(part for part in parts if part.strip())


def split_sections(text: str) -> list[Section]:
    """Sections under Markdown (``## Heading``) or reStructuredText (underlined) headings; text before the
    first heading is a section without one."""
    marks = [(m.start(), m.end(), m.group(2).strip()) for m in MARKDOWN_HEADING.finditer(text)]
    if not marks:
        marks = [
            (m.start(), m.end(), m.group(1).strip())
            for m in RST_HEADING.finditer(text)
            if len(m.group(2)) >= len(m.group(1).strip()) and m.group(1).strip()
        ]
    sections = []
    previous_end, heading = 0, None
    for start, end, name in marks:
        chunk = text[previous_end:start].strip()
        if chunk or heading:
            sections.append(Section(heading, chunk))
        previous_end, heading = end, name
    sections.append(Section(heading, text[previous_end:].strip()))
    return [s for s in sections if s.text or s.heading]


def structured_document(record: dict[str, Any], where: str, default_title: str | None = None) -> StructuredDocument:
    """A record's title and sections: a ``sections`` list when given, else headings parsed from its text."""
    _, text, title = record_text(record)
    raw_sections = record.get("sections")
    if isinstance(raw_sections, list) and raw_sections:
        sections = []
        for item in raw_sections:
            if isinstance(item, dict):
                sections.append(Section(item.get("heading") or item.get("title"), str(item.get("text") or "")))
            elif isinstance(item, str):
                sections.append(Section(None, item))
    elif text is not None:
        sections = split_sections(text)
    else:
        raise UnreadableSource(f"{where}: no text field and no sections")
    title = title or default_title
    if title is None and sections and sections[0].heading and text is not None and markdown_title(text):
        title = sections[0].heading
        sections[0] = Section(None, sections[0].text)
    elif title and sections and sections[0].heading and normalize(sections[0].heading) == normalize(title):
        sections[0] = Section(None, sections[0].text)
    sections = [s for s in sections if s.text.strip() or s.heading]
    return StructuredDocument(record_id(record, where), title, sections, where)


@dataclass
class Query:
    document: int
    kind: Queries
    text: str
    heading: str | None
    positive_title: str | None
    positive_text: str
    span: tuple[int, int] | None = None  # a passage's character span in positive_text


@dataclass
class TripletCounts:
    documents: int = 0
    queries: int = 0
    title_queries: int = 0
    section_queries: int = 0
    passage_queries: int = 0
    summary_queries: int = 0
    dropped_verbatim: int = 0
    documents_without_structure: int = 0
    queries_without_negative: int = 0
    triplets: int = 0
    problems: int = 0


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


def make_queries(
    documents: list[StructuredDocument],
    *,
    kinds: Queries | str = Queries.both,
    sections_per_document: int = 1,
    min_query_words: int = 8,
    max_query_words: int = 128,
    min_positive_words: int = 20,
    allow_verbatim: bool = False,
    passage_words: int = 32,
    max_depth_words: int | None = None,
    seed: int = 0,
    counts: TripletCounts | None = None,
) -> list[Query]:
    """Title, section or passage queries with their positives; verbatim title and section queries dropped
    unless allowed (a passage is verbatim by design). ``sections_per_document`` also counts passages."""
    kinds = parse_queries(kinds)
    counts = counts if counts is not None else TripletCounts()
    generator = np.random.default_rng(seed)
    queries: list[Query] = []
    for index, document in enumerate(documents):
        made = []
        if kinds in (Queries.titles, Queries.both):
            made.extend(_title_queries(index, document, min_positive_words))
        if kinds in (Queries.sections, Queries.both):
            made.extend(
                _section_queries(
                    index,
                    document,
                    sections_per_document,
                    min_query_words,
                    max_query_words,
                    min_positive_words,
                    generator,
                )
            )
        if kinds == Queries.passages:
            made.extend(
                _passage_queries(
                    index,
                    document,
                    sections_per_document,
                    passage_words,
                    max_depth_words,
                    min_positive_words,
                    generator,
                )
            )
        if kinds == Queries.summaries:
            made.extend(
                _summary_queries(index, document, sections_per_document, max_depth_words, min_positive_words, generator)
            )
        if not made:
            counts.documents_without_structure += 1
        queries.extend(_kept_queries(made, allow_verbatim, counts))
    counts.queries = len(queries)
    return queries


def parse_queries(kinds: Queries | str) -> Queries:
    return parse_choice(Queries, kinds, "--queries must be one of {choices}, not {value!r}")


def _title_queries(index: int, document: StructuredDocument, min_positive_words: int) -> list[Query]:
    """The title as the query, the body (without the title) as the positive."""
    if not document.title:
        return []
    body = document.body()
    if _words(body) < min_positive_words:
        return []
    return [Query(index, Queries.titles, document.title, None, None, body)]


def _section_queries(
    index: int,
    document: StructuredDocument,
    count: int,
    min_query_words: int,
    max_query_words: int,
    min_positive_words: int,
    generator: np.random.Generator,
) -> list[Query]:
    """Up to ``count`` sections chosen at random as queries, each with the rest of the document as positive."""
    if len(document.sections) <= 1:
        return []
    eligible = [i for i, s in enumerate(document.sections) if _words(s.text) >= min_query_words]
    chosen: list[int] = generator.permutation(eligible)[:count].tolist() if eligible else []
    made = []
    for position in sorted(chosen):
        section = document.sections[position]
        rest = document.body(without=position)
        if _words(rest) < min_positive_words:
            continue
        query = " ".join(section.text.split()[:max_query_words])
        made.append(Query(index, Queries.sections, query, section.heading, document.title, rest))
    return made


def _kept_queries(made: list[Query], allow_verbatim: bool, counts: TripletCounts) -> list[Query]:
    """``made`` without the title and section queries found verbatim in their positive (unless allowed)."""
    kept = []
    for query in made:
        verbatim_allowed = allow_verbatim or query.kind == Queries.passages  # a passage is verbatim by design
        if not verbatim_allowed and normalize(query.text) in normalize(
            f"{query.positive_title or ''} {query.positive_text}"
        ):
            counts.dropped_verbatim += 1
            continue
        kept.append(query)
        counts.title_queries += query.kind == Queries.titles
        counts.section_queries += query.kind == Queries.sections
        counts.passage_queries += query.kind == Queries.passages
        counts.summary_queries += query.kind == Queries.summaries
    return kept


def _summary_queries(
    index: int,
    document: StructuredDocument,
    count: int,
    max_depth_words: int | None,
    min_positive_words: int,
    generator: np.random.Generator,
) -> list[Query]:
    """Up to ``count`` section summary lines chosen at random (starting within ``max_depth_words``), each with
    the document without that line as the positive."""
    eligible, depth = [], 0
    for position, section in enumerate(document.sections):
        found = summary_line(section.text)
        if found and (max_depth_words is None or depth < max_depth_words):
            eligible.append((position, *found))
        depth += _words(f"{section.heading or ''} {section.text}")
    made = []
    for choice in sorted(generator.permutation(len(eligible))[:count].tolist()):
        position, summary, rest = eligible[choice]
        sections = [*document.sections[:position], Section(document.sections[position].heading, rest)]
        cut = StructuredDocument(document.doc_id, document.title, sections + document.sections[position + 1 :])
        positive = cut.body()
        if _words(positive) >= min_positive_words:
            made.append(
                Query(index, Queries.summaries, summary, document.sections[position].heading, document.title, positive)
            )
    return made


def _passage_queries(
    index: int,
    document: StructuredDocument,
    count: int,
    passage_words: int,
    max_depth_words: int | None,
    min_positive_words: int,
    generator: np.random.Generator,
) -> list[Query]:
    """``count`` passages at distinct random depths (word offsets) of the document's body."""
    body = document.body()
    spans = [m.span() for m in NON_SPACE.finditer(body)]
    words = [body[first:last] for first, last in spans]
    if len(words) < max(min_positive_words, passage_words):
        return []
    last_start = len(words) - passage_words
    if max_depth_words is not None:
        last_start = min(last_start, max(0, max_depth_words - passage_words))
    starts = sorted(int(s) for s in generator.permutation(last_start + 1)[:count])
    return [
        Query(
            index,
            Queries.passages,
            " ".join(words[start : start + passage_words]),
            None,
            document.title,
            body,
            (spans[start][0], spans[start + passage_words - 1][1]),
        )
        for start in starts
    ]


def swapped_negatives(
    documents: list[StructuredDocument], queries: list[Query], *, negatives: int = 1, seed: int = 0
) -> Iterator[list[StructuredDocument]]:
    """For each passage query (made as they are asked for), ``negatives`` copies of its positive with the passage
    replaced by as many words from another document (id ``POSITIVE~DONOR``): the same text but for the one spot the
    query asks about, so only an encoder that carries that spot into its embedding tells them apart."""
    generator = np.random.default_rng([seed, 1])
    text_key = _text_keys(documents)
    word_counts = [_words(d.body()) for d in documents]  # a donor's words are split only when it is picked
    for query in queries:
        if query.span is None:
            raise InvalidArgument("--negatives-from swap needs --queries passage")
        length = len(query.text.split())
        candidates = [
            i for i, count in enumerate(word_counts) if text_key[i] != text_key[query.document] and count >= length
        ]
        picked = []
        for donor in generator.permutation(candidates)[:negatives].tolist():
            words = documents[donor].body().split()
            start = int(generator.integers(len(words) - length + 1))
            replacement = " ".join(words[start : start + length])
            first, last = query.span
            text = query.positive_text[:first] + replacement + query.positive_text[last:]
            picked.append(
                StructuredDocument(
                    f"{documents[query.document].doc_id}~{documents[donor].doc_id}",
                    query.positive_title,
                    [Section(None, text)],
                )
            )
        yield picked


def _text_keys(documents: list[StructuredDocument]) -> list[int]:
    """One key per document; documents with the same normalized body share it."""
    return [hash(normalize(d.body())) for d in documents]


def _words(text: str) -> int:
    return len(text.split())


Search = Callable[[list[Query], int], tuple[np.ndarray, np.ndarray]]
"""For a block of queries and ``k``: each query's top-``k`` documents (indices, scores; in any order)."""


# Why not FAISS for embedding negatives (benchmarks/topk.py; figures in benchmarks/results/topk-*.json): float32 unit
# vectors, 384 dims, k = 32, on 2 cores shared with another job (the methods interleaved chunk by chunk, so its load
# falls on both alike):
# - 100k documents x 100k queries: this blockwise top-k 290 s at a peak RSS of 0.90 GiB; FAISS IndexFlatIP asked
#   4096 queries at a time 174 s, 0.51 GiB (1.7x faster); the same top-k (all but 1 in 3.2 million entries, float
#   rounding). Alone on the machine this top-k took 93 s.
# - FAISS asked in our blocks of 256 queries is 3.5x slower than this (100k x 20k: 159 s against 45 s).
# - Encoding 128 documents of 300 words with all-MiniLM-L6-v2 took 11.7 s: 100k documents about 2.5 h on these
#   cores, before any search. FAISS would save about 2 of those 150 minutes (about 1%), for a new dependency, a second
#   search path with its own block size and arithmetic; both stay far under the 4 GB goal. Kept: one BLAS product and
#   a partial sort per block.
def top_k(scores_of: Callable[[list[Query]], np.ndarray]) -> Search:
    """A :data:`Search` over a function giving a block of queries' scores against every document (memory: one
    block's rows; time: linear in the documents, a partial sort instead of a full one)."""

    def search(block: list[Query], k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = scores_of(block)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        return top, np.take_along_axis(scores, top, axis=1)

    return search


def bm25_scores(documents: list[StructuredDocument]) -> Callable[[list[Query]], np.ndarray]:
    """BM25 of a block of queries against every document's title and body (``ctxext.data.bm25``)."""
    index = BM25Index([f"{d.title or ''} {d.body()}" for d in documents])
    return lambda block: index.scores([query.text for query in block])


def embedding_scores(
    documents: list[StructuredDocument], queries: list[Query], encoder: Any, progress: ProgressFn
) -> Callable[[list[Query]], np.ndarray]:
    """Cosine of the queries' and the documents' embeddings, a block of queries at a time."""
    encoder = as_encoder(encoder)
    texts = [f"{d.title}\n\n{d.body()}" if d.title else d.body() for d in documents]
    document_vectors = unit_rows(
        encoder.encode(
            texts, batch_size=32, progress=lambda _t, done, total: progress("embedding documents", done, total)
        )
    )
    query_vectors = unit_rows(
        encoder.encode(
            [q.text for q in queries],
            batch_size=64,
            progress=lambda _t, done, total: progress("embedding queries", done, total),
        )
    )
    position = {id(q): i for i, q in enumerate(queries)}
    return lambda block: query_vectors[[position[id(q)] for q in block]] @ document_vectors.T


def hard_negatives(
    documents: list[StructuredDocument],
    queries: list[Query],
    search: Search,
    *,
    negatives: int = 1,
    skip_top: int = 0,
    block: int = 256,
    progress: ProgressFn = no_progress,
) -> list[list[tuple[int, float, int]]]:
    """For each query, ``negatives`` (document index, score, rank) after excluding the positive and any
    document sharing its normalized title or text: the ranking of an exact search over every document (ties by
    document order), read from the top-k of ``search``. A query whose pick the top-k cannot settle (too many
    exclusions, or a tie at its edge) asks again for four times as many, up to every document."""
    text_key = _text_keys(documents)
    title_key = [normalize(d.title) if d.title else None for d in documents]

    def excluded(positive: int, candidate: int) -> bool:
        same_title = title_key[positive] is not None and title_key[candidate] == title_key[positive]
        return candidate == positive or text_key[candidate] == text_key[positive] or same_title

    found: list[list[tuple[int, float, int]]] = [[] for _ in queries]
    pending, k, settled = list(range(len(queries))), min(len(documents), negatives + skip_top + 16), 0
    while pending:
        unsettled = []
        for start in range(0, len(pending), block):
            chunk = pending[start : start + block]
            candidates, scores = search([queries[i] for i in chunk], k)
            for i, row, row_scores in zip(chunk, candidates, scores, strict=True):
                picked = _picked(queries[i].document, row, row_scores, excluded, negatives, skip_top)
                edge_clear = bool(picked) and picked[-1][1] > float(row_scores.min())
                if k == len(documents) or (len(picked) == negatives and edge_clear):
                    found[i], settled = picked, settled + 1
                else:
                    unsettled.append(i)
            progress("mining negatives", settled, len(queries))
        pending, k = unsettled, min(len(documents), k * 4)
    return found


def _picked(
    positive: int, candidates: np.ndarray, scores: np.ndarray, excluded: Any, negatives: int, skip_top: int
) -> list[tuple[int, float, int]]:
    """The first ``negatives`` candidates past ``skip_top``, in the exact ranking (score, then document order),
    leaving out the excluded ones (which take no rank)."""
    order = sorted(range(len(candidates)), key=lambda j: (-float(scores[j]), int(candidates[j])))
    picked: list[tuple[int, float, int]] = []
    rank = 0
    for j in order:
        candidate = int(candidates[j])
        if excluded(positive, candidate):
            continue
        rank += 1
        if rank > skip_top:
            picked.append((candidate, float(scores[j]), rank))
            if len(picked) == negatives:
                break
    return picked


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


def build_triplets(  # noqa: PLR0913 (one keyword per option of its command; to take an options object, issue 32)
    corpus: str,
    out: str | Path,
    *,
    queries: Queries | str = Queries.both,
    negatives_from: NegativesFrom | str = NegativesFrom.embedding,
    encoder: str = DEFAULT_MODEL,
    revision: str | None = None,
    negatives: int = 1,
    skip_top: int = 0,
    sections_per_document: int = 1,
    min_query_words: int = 8,
    max_query_words: int = 128,
    min_positive_words: int = 20,
    allow_verbatim: bool = False,
    passage_words: int = 32,
    max_depth_words: int | None = None,
    seed: int = 0,
    input_format: InputFormat | str | None = None,
    on_error: OnError | str = OnError.stop,
    pdf_password: str | None = None,
    shard: str | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> TripletsResult:
    """Read ``corpus`` (file or folder, any ``corpus`` format), write triplets to ``out`` (JSON lines, or Parquet
    when it is named *.parquet: the same records, one column per key); with ``shard``
    (``I/N``) only the queries of the I-th share of the documents (negatives still from all of them)."""
    out, queries, negatives_from = _checked_options(out, queries, negatives_from, negatives, skip_top)
    share = Shard.parse(shard)
    problems = Problems(on_error)
    files = expand_sources([corpus], input_format=input_format)
    output = FileOutput(out, files, force=force)
    inputs: list[InputRecord] = []
    documents = _read_corpus(files, problems, inputs, pdf_password, progress)
    counts = TripletCounts(documents=len(documents))
    if len(documents) < 2:
        raise EmptySource(f"{corpus}: a hard negative needs at least two documents; found {len(documents)}")
    made = make_queries(
        documents,
        kinds=queries,
        sections_per_document=sections_per_document,
        min_query_words=min_query_words,
        max_query_words=max_query_words,
        min_positive_words=min_positive_words,
        allow_verbatim=allow_verbatim,
        passage_words=passage_words,
        max_depth_words=max_depth_words,
        seed=seed,
        counts=counts,
    )
    if share is not None:
        made = [query for query in made if share.holds(documents[query.document].doc_id)]
    if not made:
        raise EmptySource(
            f"{corpus}: no document gave a query (titles, or two or more sections with "
            f"{min_query_words}+ words, and {min_positive_words}+ words left for the positive)"
        )
    embedder = LazyEncoder(encoder, revision)  # loaded only for embedding negatives
    found = _negatives(documents, made, negatives_from, embedder, negatives, skip_top, seed, progress)
    options = _recorded_options(dict(locals()), problems.on_error, embedder.folder)
    triplets = (  # made one query at a time as they are written: never all the texts at once
        [triplet_record(query, documents[query.document], *negative, negatives_from) for negative in picked]
        for query, picked in zip(made, found, strict=False)
    )
    _write_triplets(output, output_format(out), triplets, counts, problems, options, inputs, argv)
    return TripletsResult(out, output.manifest_path, counts, problems.messages, output.manifest)


RECORDED_OPTIONS = (
    "corpus",
    "revision",
    "negatives",
    "skip_top",
    "sections_per_document",
    "min_query_words",
    "max_query_words",
    "min_positive_words",
    "allow_verbatim",
    "seed",
    "shard",
)


def _recorded_options(arguments: dict[str, Any], on_error: OnError, encoder_folder: str | None) -> dict[str, Any]:
    """What the manifest records of ``build_triplets``'s arguments; an option that did not apply is None."""
    queries, negatives_from = arguments["queries"], arguments["negatives_from"]
    passage = queries == Queries.passages
    return {
        **{name: arguments[name] for name in RECORDED_OPTIONS},
        "queries": queries.value,
        "negatives_from": negatives_from.value,
        "encoder": arguments["encoder"] if negatives_from == NegativesFrom.embedding else None,
        "encoder_folder": encoder_folder,
        "passage_words": arguments["passage_words"] if passage else None,
        "max_depth_words": arguments["max_depth_words"] if passage or queries == Queries.summaries else None,
        "format": plain(arguments["input_format"]),
        "on_error": on_error.value,
    }


def _checked_options(
    out: str | Path, queries: Queries | str, negatives_from: NegativesFrom | str, negatives: int, skip_top: int
) -> tuple[Path, Queries, NegativesFrom]:
    """The output path and the parsed choices, refused before any reading when they cannot work."""
    out = Path(out).expanduser().absolute()
    output_format(out)
    negatives_from = parse_choice(NegativesFrom, negatives_from, "--negatives-from must be one of {choices}")
    if negatives < 1 or skip_top < 0:
        raise InvalidArgument("--negatives must be at least 1 and --skip-top at least 0")
    queries = parse_queries(queries)
    if negatives_from == NegativesFrom.swap and queries != Queries.passages:
        raise InvalidArgument("--negatives-from swap needs --queries passage (it swaps the passage out)")
    return out, queries, negatives_from


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


def read_documents(corpus: str, inputs: list[InputRecord] | None = None) -> list[StructuredDocument]:
    """Every document of ``corpus`` (file or folder, any ``corpus`` format) as title plus sections; an
    unreadable record stops the reading. Each file read is appended to ``inputs`` (path, size, sha256)."""
    return _read_corpus(
        expand_sources([corpus]), Problems(OnError.stop), [] if inputs is None else inputs, None, no_progress
    )


def _read_corpus(
    files: list[SourceFile],
    problems: Problems,
    inputs: list[InputRecord],
    pdf_password: str | None,
    progress: ProgressFn,
) -> list[StructuredDocument]:
    """Every readable record of ``files`` as a structured document; the others are problems."""
    documents: list[StructuredDocument] = []
    for number, source_file in enumerate(files, start=1):
        inputs.append(InputRecord.of(source_file))
        before = len(documents)
        for where, record in iter_records(source_file, problems, pdf_password=pdf_password):
            try:
                documents.append(structured_document(record, where))
            except UnreadableSource as error:
                problems.report(error)
        inputs[-1].counts = {"documents": len(documents) - before}
        progress("reading corpus", number, len(files))
    return documents


def _negatives(
    documents: list[StructuredDocument],
    made: list[Query],
    negatives_from: NegativesFrom,
    encoder: Any,
    negatives: int,
    skip_top: int,
    seed: int,
    progress: ProgressFn,
) -> Iterable[list[tuple[StructuredDocument, float | None, int]]]:
    """(negative document, score, rank) of each query: swapped (made as they are asked for), or mined by BM25 or
    embedding."""
    if negatives_from == NegativesFrom.swap:
        return (
            [(swapped, None, 0) for swapped in picked]
            for picked in swapped_negatives(documents, made, negatives=negatives, seed=seed)
        )
    search = top_k(
        bm25_scores(documents)
        if negatives_from == NegativesFrom.bm25
        else embedding_scores(documents, made, encoder, progress)
    )
    mined = hard_negatives(documents, made, search, negatives=negatives, skip_top=skip_top, progress=progress)
    return [[(documents[index], score, rank) for index, score, rank in picked] for picked in mined]
