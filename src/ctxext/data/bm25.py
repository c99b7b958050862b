"""BM25, the lexical baseline of retrieval and the miner of hard negatives: Lucene's variant (``bm25s``'s
defaults, k1 = 1.5, b = 0.75) over lower-cased words (``\\w+``).

Why not ``bm25s`` itself (it was the engine until the 100k-document benchmark, ``benchmarks/triplets_scale.py``):
- its index takes every document's words as Python lists at once: 4.4 GiB peak for 100k documents of 420 words,
  where this index, built a document at a time, holds the sparse score matrix and one document's words;
- its retrieval scatter-adds each query's postings in Python-driven numpy calls (8.5 of 10 s for 10k queries on
  10k documents), and a scipy sparse product in its place still spends 27 of 46 s at 30k documents building a
  sparse result that is nearly dense: a query of 100 words shares a word with almost every document. Here the
  terms found in at least one document in :data:`DENSE_SHARE` are kept as dense rows and a block of queries adds
  them with one sparse-times-dense product (3.6x faster than the sparse product alone at 30k documents); the
  rarer terms keep the sparse product.
The scores equal ``bm25s``'s to float32 rounding (``tests/test_data_triplets.py``), and a query's scores do not
depend on the other queries of its block (sharded runs pick what a whole run picks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.text import WORD_CHARACTERS

K1, B = 1.5, 0.75
DENSE_SHARE = 16
"""A term in at least one document in this many is scored from a dense row."""
DENSE_BYTES = 512 * 2**20
"""At most this much memory for the dense rows (the most frequent terms first)."""


def words(text: str) -> list[str]:
    """The terms BM25 indexes and looks up: lower-cased (case-folded) runs of word characters."""
    return WORD_CHARACTERS.findall(text.casefold())


class BM25Index:
    """The documents' BM25 index, built one document at a time; :meth:`scores` rates queries against every
    document."""

    def __init__(self, documents: Iterable[str], progress: ProgressFn = no_progress, total: int | None = None):
        from scipy import sparse

        self.vocabulary: dict[str, int] = {}
        total = len(documents) if total is None and isinstance(documents, Sequence) else total or 0
        by_document = self._score_matrix(documents, progress, total)
        self.documents, self.terms = by_document.shape
        term_documents = by_document.T.tocsr()
        del by_document
        document_frequency = np.diff(term_documents.indptr)
        frequent = np.argsort(-document_frequency, kind="stable")
        frequent = frequent[document_frequency[frequent] * DENSE_SHARE >= max(self.documents, 1)]
        frequent = np.sort(frequent[: DENSE_BYTES // (4 * max(self.documents, 1))])
        self.dense = np.zeros(self.terms, dtype=bool)
        self.dense[frequent] = True
        self.dense_rows = term_documents[frequent].toarray()
        self.sparse_rows: sparse.csr_matrix = term_documents[~self.dense]

    def _score_matrix(self, documents: Iterable[str], progress: ProgressFn, total: int) -> Any:
        """The documents x terms matrix of Lucene's BM25 term scores, idf x tf / (tf + k1 (1 - b + b dl / avgdl)),
        counted a document at a time (the vocabulary grows as terms are met)."""
        from scipy import sparse

        terms, frequencies, lengths = [], [], []
        vocabulary = self.vocabulary
        for number, text in enumerate(documents, 1):
            counted = Counter(words(text))
            terms.append(np.fromiter((vocabulary.setdefault(w, len(vocabulary)) for w in counted), np.int32))
            frequencies.append(np.fromiter(counted.values(), np.float32))
            lengths.append(counted.total())
            if number % 1000 == 0:
                progress("indexing documents (BM25)", number, total)
        indptr = np.concatenate([[0], np.cumsum([len(t) for t in terms], dtype=np.int64)]).astype(np.int64)
        term_ids = np.concatenate(terms) if terms else np.zeros(0, np.int32)
        tf = np.concatenate(frequencies) if frequencies else np.zeros(0, np.float32)
        del terms, frequencies
        document_frequency = np.bincount(term_ids, minlength=len(vocabulary))
        idf = np.log(1 + (len(lengths) - document_frequency + 0.5) / (document_frequency + 0.5))
        document_length = np.repeat(np.asarray(lengths, np.float64), np.diff(indptr))
        average_length = max(float(np.mean(lengths or [1])), 1e-9)
        tf_part = tf / (K1 * ((1 - B) + B * document_length / average_length) + tf)  # bm25s's order of operations
        scores = (idf[term_ids] * tf_part).astype(np.float32)
        return sparse.csr_matrix((scores, term_ids, indptr), shape=(len(lengths), len(vocabulary)))

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """BM25 of each query (a row) against each document (a column), float32; a query word repeated counts
        as often as it occurs, as in bm25s."""
        from scipy import sparse

        rows: list[int] = []
        columns: list[int] = []
        for row, query in enumerate(queries):
            kept = [term for term in map(self.vocabulary.get, words(query)) if term is not None]
            rows += [row] * len(kept)
            columns += kept
        counts = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, columns)), shape=(len(queries), self.terms))
        scores = np.asarray(counts[:, self.dense] @ self.dense_rows, dtype=np.float32)
        rare = counts[:, ~self.dense] @ self.sparse_rows
        scores += rare.toarray()
        return scores
