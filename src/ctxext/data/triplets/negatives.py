"""Hard negatives: each query's top-k by BM25 or embedding cosine, read past the positive, documents of the same
title or text and ``skip_top``, widened where exclusions or ties need it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.bm25 import BM25Index
from ctxext.data.encoders import as_encoder, unit_rows
from ctxext.data.options import NegativesFrom
from ctxext.data.text import normalize
from ctxext.data.triplets.documents import StructuredDocument
from ctxext.data.triplets.queries import Query, _text_keys, swapped_negatives

SCORED_CELLS = 2**25
"""A block of queries is scored against every document at once: at most this many scores (128 MiB of float32)."""

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


def bm25_scores(
    documents: list[StructuredDocument], progress: ProgressFn = no_progress
) -> Callable[[list[Query]], np.ndarray]:
    """BM25 of a block of queries against every document's title and body (``ctxext.data.bm25``)."""
    index = BM25Index((f"{d.title or ''} {d.body()}" for d in documents), progress, len(documents))
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
    block = max(1, min(block, SCORED_CELLS // max(len(documents), 1)))
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
        bm25_scores(documents, progress)
        if negatives_from == NegativesFrom.bm25
        else embedding_scores(documents, made, encoder, progress)
    )
    mined = hard_negatives(documents, made, search, negatives=negatives, skip_top=skip_top, progress=progress)
    return [[(documents[index], score, rank) for index, score, rank in picked] for picked in mined]
