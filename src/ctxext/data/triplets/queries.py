"""The queries each document gives (title, section, passage, summary) and the swapped negatives of passage
queries."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxext.data.options import Queries, parse_choice
from ctxext.data.text import normalize, summary_line
from ctxext.data.triplets.documents import NON_SPACE, Section, StructuredDocument
from ctxext.errors import InvalidArgument
from ctxext.options import with_fields


@dataclass(frozen=True)
class QueryOptions:
    """Which queries each document gives, and how they are cut (the CLI builds it from its options; the kinds are
    described in :mod:`ctxext.data.triplets`). ``queries`` may be given as its name; it is parsed here."""

    queries: Queries = Queries.both
    sections_per_document: int = 1
    """Section (or passage, or summary) queries per document."""
    min_query_words: int = 8
    """Shortest section usable as a query."""
    max_query_words: int = 128
    """Section queries are cut to this many words."""
    min_positive_words: int = 20
    allow_verbatim: bool = False
    """Keep title and section queries that occur verbatim in their positive."""
    passage_words: int = 32
    max_depth_words: int | None = None
    """Passage and summary queries lie within this many words of the body's start."""
    seed: int = 0
    """Seed of the section and passage choice (and of swapped negatives)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "queries", parse_queries(self.queries))


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


def make_queries(
    documents: list[StructuredDocument],
    options: QueryOptions | None = None,
    *,
    counts: TripletCounts | None = None,
    **fields: Any,
) -> list[Query]:
    """Title, section or passage queries with their positives; verbatim title and section queries dropped
    unless allowed (a passage is verbatim by design). ``sections_per_document`` also counts passages.
    ``fields``: :class:`QueryOptions` fields given as keywords (over ``options``)."""
    options = with_fields(QueryOptions, options, fields, "make_queries")
    kinds = options.queries
    counts = counts if counts is not None else TripletCounts()
    generator = np.random.default_rng(options.seed)
    queries: list[Query] = []
    for index, document in enumerate(documents):
        made = []
        if kinds in (Queries.titles, Queries.both):
            made.extend(_title_queries(index, document, options.min_positive_words))
        if kinds in (Queries.sections, Queries.both):
            made.extend(_section_queries(index, document, options, generator))
        if kinds == Queries.passages:
            made.extend(_passage_queries(index, document, options, generator))
        if kinds == Queries.summaries:
            made.extend(_summary_queries(index, document, options, generator))
        if not made:
            counts.documents_without_structure += 1
        queries.extend(_kept_queries(made, options.allow_verbatim, counts))
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
    index: int, document: StructuredDocument, options: QueryOptions, generator: np.random.Generator
) -> list[Query]:
    """Up to ``sections_per_document`` sections chosen at random as queries, each with the rest of the document as
    positive."""
    if len(document.sections) <= 1:
        return []
    eligible = [i for i, s in enumerate(document.sections) if _words(s.text) >= options.min_query_words]
    chosen: list[int] = generator.permutation(eligible)[: options.sections_per_document].tolist() if eligible else []
    made = []
    for position in sorted(chosen):
        section = document.sections[position]
        rest = document.body(without=position)
        if _words(rest) < options.min_positive_words:
            continue
        query = " ".join(section.text.split()[: options.max_query_words])
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
    index: int, document: StructuredDocument, options: QueryOptions, generator: np.random.Generator
) -> list[Query]:
    """Up to ``sections_per_document`` section summary lines chosen at random (starting within
    ``max_depth_words``), each with the document without that line as the positive."""
    count, max_depth_words, min_positive_words = (
        options.sections_per_document,
        options.max_depth_words,
        options.min_positive_words,
    )
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
    index: int, document: StructuredDocument, options: QueryOptions, generator: np.random.Generator
) -> list[Query]:
    """``sections_per_document`` passages at distinct random depths (word offsets) of the document's body."""
    count, passage_words, max_depth_words = (
        options.sections_per_document,
        options.passage_words,
        options.max_depth_words,
    )
    min_positive_words = options.min_positive_words
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
