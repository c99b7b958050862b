"""Corpora and long-document training sets from local files (``ctxext data``).

- :func:`build_corpus`: txt / md / jsonl / parquet / PDF sources flattened into one Parquet corpus,
  chunked by tokens on paragraph and sentence boundaries, optionally deduplicated (exact + MinHash).
- :func:`fit_file` / :func:`fit_texts`: every document into a token budget (head, head-tail, extractive).
- :func:`build_triplets`: SciRepEval-style (query, positive, hard negative) triplets for ``finetune``.
- :func:`python_docs_documents` / :func:`write_python_docs_corpus`: a long-document corpus from the
  standard library's docstrings, available on any machine without downloads.

Every file output is written atomically with ``<output>.manifest.json`` beside it.
"""

from __future__ import annotations

from ctxext.data.corpus import CorpusResult, SourceCounts, build_corpus
from ctxext.data.dedupe import Deduplicator, MinHasher, jaccard
from ctxext.data.fit import STRATEGIES, FitResult, Fitted, fit_file, fit_texts
from ctxext.data.pydocs import python_docs_documents, write_python_docs_corpus
from ctxext.data.sources import EmptySource, UnreadableSource
from ctxext.data.text import Tokenizer, load_tokenizer
from ctxext.data.triplets import TripletsResult, build_triplets, split_sections, structured_document

__all__ = [
    "STRATEGIES",
    "CorpusResult",
    "Deduplicator",
    "EmptySource",
    "FitResult",
    "Fitted",
    "MinHasher",
    "SourceCounts",
    "Tokenizer",
    "TripletsResult",
    "UnreadableSource",
    "build_corpus",
    "build_triplets",
    "fit_file",
    "fit_texts",
    "jaccard",
    "load_tokenizer",
    "python_docs_documents",
    "split_sections",
    "structured_document",
    "write_python_docs_corpus",
]
