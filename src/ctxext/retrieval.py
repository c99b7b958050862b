"""Every way users retrieve long documents, scored side by side on one BEIR set (``ctxext evaluate --forms``):

- ``whole``: the model, one vector per document (up to the set's length, capped by the model's window);
- ``chunk-mean`` / ``chunk-max``: the model, or ``chunk_source``, over consecutive ``chunk``-token chunks embedded
  one by one: the mean of the chunk vectors, or the best chunk's similarity;
- ``late-chunk``: one pass over the whole document, its token states mean-pooled per ``chunk`` tokens (Jina's
  late chunking), the best chunk's similarity;
- ``bm25``: BM25 over words (``ctxext.data.bm25``), no model;
- ``hybrid`` / ``hybrid:FORM``: reciprocal-rank fusion (k = 60, Cormack et al. 2009) of ``bm25`` with a dense
  form: FORM, else ``late-chunk`` for a model whose window is longer than a chunk, else ``chunk-max``. The form
  fused is fixed before any score is seen, so no choice is made on the evaluation set.

One pass of the model serves ``whole`` and ``late-chunk``, one pass over the chunks serves ``chunk-mean`` and
``chunk-max``, and one BM25 index every form that fuses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.errors import InvalidArgument
from ctxext.evaluate import Evaluation, RetrievalSet, chunk_means, chunk_vectors, score_matrix, similarity

RRF_K = 60
"""Reciprocal-rank fusion's constant (Cormack, Clarke and Buettcher, 2009; Elasticsearch's and Vespa's default)."""
BM25_LABEL = "bm25 (Lucene, k1=1.5, b=0.75)"


class Form(str, Enum):
    whole = "whole"
    chunk_mean = "chunk-mean"
    chunk_max = "chunk-max"
    late_chunk = "late-chunk"
    bm25 = "bm25"
    hybrid = "hybrid"


DENSE_FORMS = (Form.whole, Form.chunk_mean, Form.chunk_max, Form.late_chunk)
CHUNK_FORMS = (Form.chunk_mean, Form.chunk_max)
"""The forms ``chunk_source`` runs, when one is given."""


@dataclass(frozen=True)
class FormChoice:
    """One row to score: a form, and for ``hybrid`` the dense form it fuses (None: chosen by the model's window)."""

    form: Form
    fused: Form | None = None

    @property
    def name(self) -> str:
        return f"{self.form.value}:{self.fused.value}" if self.fused else self.form.value


def parse_forms(text: str) -> tuple[FormChoice, ...]:
    """``whole,late-chunk,bm25,hybrid:chunk-max`` -> choices, in order, each once."""
    known = ", ".join([*(form.value for form in Form), "hybrid:FORM"])
    choices: list[FormChoice] = []
    for item in (part.strip() for part in text.split(",")):
        name, _, fused = item.partition(":")
        try:
            choice = FormChoice(Form(name), Form(fused) if fused else None)
        except ValueError:
            raise InvalidArgument(f"--forms: unknown form {item!r}; choose from {known}") from None
        if choice.fused and (choice.form != Form.hybrid or choice.fused not in DENSE_FORMS):
            raise InvalidArgument(f"--forms: {item!r}: only hybrid fuses, and only with a dense form")
        if choice not in choices:
            choices.append(choice)
    if not choices:
        raise InvalidArgument(f"--forms is empty; choose from {known}")
    return tuple(choices)


@dataclass(frozen=True)
class FormOptions:
    forms: tuple[FormChoice, ...]
    chunk: int = 512
    """Tokens per chunk: per model input for chunk-mean / chunk-max, of content for late-chunk."""
    overlap: int = 0
    """Tokens each chunk shares with the one before (late-chunk)."""
    chunk_source: str | None = None
    """The model chunk-mean and chunk-max run (default: the model evaluated)."""
    batch_size: int = 8
    symmetric: bool = False
    """Queries are documents (document-to-document search): each is represented as the documents are, and a
    max form takes the best pair of chunks."""

    def __post_init__(self) -> None:
        if self.chunk < 8:
            raise InvalidArgument(f"--chunk {self.chunk} is too small; give at least 8 tokens")
        if not 0 <= self.overlap < self.chunk:
            raise InvalidArgument(f"--overlap {self.overlap} must be at least 0 and below --chunk {self.chunk}")
        if self.batch_size < 1:
            raise InvalidArgument(f"--batch-size {self.batch_size} must be at least 1")


def reciprocal_rank_fusion(*rankings: np.ndarray, k: int = RRF_K) -> np.ndarray:
    """Sum over score matrices (queries x documents) of 1 / (k + rank), rank 1 the best; ties are ranked in
    document order, as a stable sort leaves them."""
    fused = np.zeros(rankings[0].shape, dtype=np.float64)
    for scores in rankings:
        order = np.argsort(-scores, axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None, :].repeat(len(scores), 0), axis=1)
        fused += 1.0 / (k + ranks)
    return fused


def best_chunk(queries: np.ndarray, chunks: np.ndarray, owners: np.ndarray, documents: int) -> np.ndarray:
    """Each query's cosine with each document's best chunk; ``owners`` (one per chunk, consecutive and in
    order) says whose chunk each row is, and every document has at least one."""
    starts = group_starts(owners)
    if len(starts) != documents:
        raise AssertionError(f"{len(starts)} documents have chunks, of {documents}")
    return np.maximum.reduceat(similarity(queries, chunks), starts, axis=1)


def best_pair(
    queries: np.ndarray, query_owners: np.ndarray, chunks: np.ndarray, owners: np.ndarray, documents: int
) -> np.ndarray:
    """Each query document's best chunk against each document's best chunk (both owners as in :func:`best_chunk`)."""
    return np.maximum.reduceat(best_chunk(queries, chunks, owners, documents), group_starts(query_owners), axis=0)


def group_starts(owners: np.ndarray) -> np.ndarray:
    """Where each run of equal owners starts."""
    return np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])


@dataclass
class ModelForms:
    """The forms of one set for one model (and its chunk source). Each model pass is made once, when first
    needed, and kept in ``cache`` (shared by the sets of one evaluation: chunks, queries and BM25 do not depend
    on the length, so several lengths reuse them)."""

    retrieval_set: RetrievalSet
    encoder: Any
    chunk_encoder: Any
    options: FormOptions
    progress: ProgressFn = no_progress
    cache: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        limit = self.encoder.position_limit
        return min(self.retrieval_set.length or limit, limit)

    def _cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def query_vectors(self, encoder: Any) -> np.ndarray:
        queries = self.retrieval_set.queries
        batch = self.options.batch_size
        return self._cached(("queries", id(encoder), id(queries)), lambda: encoder.encode(queries, batch_size=batch))

    @property
    def bm25(self) -> Any:
        from ctxext.data.bm25 import BM25Index

        documents = self.retrieval_set.documents
        return self._cached(("bm25", id(documents)), lambda: BM25Index(documents))

    @property
    def late(self) -> Any:
        return self._late_chunks(self.retrieval_set.documents)

    @property
    def query_late(self) -> Any:
        return self._late_chunks(self.retrieval_set.queries)

    def _late_chunks(self, texts: list[str]) -> Any:
        options, length = self.options, self.length
        return self._cached(
            ("late", id(self.encoder), id(texts), length),
            lambda: self.encoder.late_chunks(
                texts,
                chunk=options.chunk,
                overlap=options.overlap,
                batch_size=options.batch_size,
                max_length=length,
                progress=self.progress,
            ),
        )

    @property
    def chunks(self) -> tuple[np.ndarray, np.ndarray]:
        return self._chunk_vectors(self.retrieval_set.documents)

    @property
    def query_chunks(self) -> tuple[np.ndarray, np.ndarray]:
        return self._chunk_vectors(self.retrieval_set.queries)

    def _chunk_vectors(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        encoder, batch = self.chunk_encoder, self.options.batch_size
        size = min(self.options.chunk, encoder.position_limit)
        return self._cached(("chunks", id(encoder), id(texts)), lambda: chunk_vectors(encoder, texts, size, batch))

    def fused_form(self, choice: FormChoice) -> Form:
        if choice.fused:
            return choice.fused
        return Form.late_chunk if self.encoder.position_limit > self.options.chunk else Form.chunk_max

    def scores(self, choice: FormChoice) -> np.ndarray:
        """Queries x documents, higher is better."""
        documents = len(self.retrieval_set.documents)
        if choice.form == Form.bm25:
            return self.bm25.scores(self.retrieval_set.queries)
        if choice.form == Form.hybrid:
            return reciprocal_rank_fusion(
                self.scores(FormChoice(Form.bm25)), self.scores(FormChoice(self.fused_form(choice)))
            )
        if self.options.symmetric:
            return self._symmetric_scores(choice.form, documents)
        if choice.form == Form.whole:
            return similarity(self.query_vectors(self.encoder), self.late.whole)
        if choice.form == Form.late_chunk:
            return best_chunk(self.query_vectors(self.encoder), self.late.vectors, self.late.documents, documents)
        vectors, owners = self.chunks
        queries = self.query_vectors(self.chunk_encoder)
        if choice.form == Form.chunk_max:
            return best_chunk(queries, vectors, owners, documents)
        return similarity(queries, chunk_means(vectors, owners, documents))

    def _symmetric_scores(self, form: Form, documents: int) -> np.ndarray:
        """A dense form with each query document represented as the documents are."""
        queries = len(self.retrieval_set.queries)
        if form == Form.whole:
            return similarity(self.query_late.whole, self.late.whole)
        if form == Form.late_chunk:
            late, asked = self.late, self.query_late
            return best_pair(asked.vectors, asked.documents, late.vectors, late.documents, documents)
        (vectors, owners), (asked_vectors, asked_owners) = self.chunks, self.query_chunks
        if form == Form.chunk_max:
            return best_pair(asked_vectors, asked_owners, vectors, owners, documents)
        return similarity(chunk_means(asked_vectors, asked_owners, queries), chunk_means(vectors, owners, documents))

    def model_of(self, choice: FormChoice, model: str, chunk_source: str | None) -> str:
        """Who made the row: the model, the chunk source, BM25, or BM25 fused with one of those."""
        if choice.form == Form.bm25:
            return BM25_LABEL
        if choice.form == Form.hybrid:
            return f"bm25 + {self.model_of(FormChoice(self.fused_form(choice)), model, chunk_source)}"
        return chunk_source or model if choice.form in CHUNK_FORMS else model


def evaluate_forms(
    models: Sequence[str],
    sets: Sequence[RetrievalSet],
    options: FormOptions,
    load: Any,
    *,
    progress: ProgressFn = no_progress,
) -> list[Evaluation]:
    """One :class:`Evaluation` per model and form (``form``: its name; ``model``: who made it), over ``sets``
    (one per length). ``load(ref)`` gives an encoder. A row the same for every model (BM25, or a chunk form of
    ``chunk_source``) is scored once."""
    cache: dict[tuple[Any, ...], Any] = {}
    chunk_encoder = load(options.chunk_source) if options.chunk_source else None
    rows: dict[tuple[str, str], Evaluation] = {}
    for model in models:
        encoder = load(model)
        for number, retrieval_set in enumerate(sets):
            forms = ModelForms(retrieval_set, encoder, chunk_encoder or encoder, options, progress, cache)
            for choice in options.forms:
                key = (choice.name, forms.model_of(choice, model, options.chunk_source))
                if key in rows and len(rows[key].scores) > number:
                    continue
                row = rows.setdefault(key, Evaluation(model=key[1], task="retrieval", form=choice.name))
                row.scores.append(score_matrix(forms.scores(choice), retrieval_set))
    return list(rows.values())
