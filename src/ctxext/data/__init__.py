"""Corpora and long-document training sets from local files (``ctxext data``), and every file format ctxext reads.

- :func:`build_corpus`: txt / md / jsonl / parquet / PDF sources flattened into one Parquet corpus,
  chunked by tokens on paragraph and sentence boundaries, optionally deduplicated (exact + MinHash), as its
  :class:`CorpusOptions` say.
- :func:`fit_file` / :func:`fit_texts`: every document into a token budget (head, head-tail, extractive).
- :func:`build_triplets`: SciRepEval-style (query, positive, hard negative) triplets for ``finetune``.
- :func:`python_docs_documents` / :func:`write_python_docs_corpus`: a long-document corpus from the
  standard library's docstrings, available on any machine without downloads.
- :mod:`ctxext.data.formats`: the readers of the formats training and evaluation consume (triplets,
  SQuAD-style QA, BEIR folders, text corpora), each format's accepted keys defined once.

Every file output is written atomically with ``<output>.manifest.json`` beside it. The names below are
imported on first use, so ``import ctxext.data.options`` (the CLI's Enums) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

MODULE_OF = {
    "CorpusOptions": "corpus",
    "CorpusResult": "corpus",
    "SourceCounts": "corpus",
    "build_corpus": "corpus",
    "Deduplicator": "dedupe",
    "MinHasher": "dedupe",
    "jaccard": "dedupe",
    "FitOptions": "fit",
    "FitResult": "fit",
    "Fitted": "fit",
    "fit_file": "fit",
    "fit_texts": "fit",
    "InputFormat": "options",
    "NegativesFrom": "options",
    "OnError": "options",
    "Queries": "options",
    "Strategy": "options",
    "python_docs_documents": "pydocs",
    "write_python_docs_corpus": "pydocs",
    "EmptySource": "sources",
    "UnreadableSource": "sources",
    "Tokenizer": "text",
    "load_tokenizer": "text",
    "split_sentences": "text",
    "TripletsResult": "triplets",
    "build_triplets": "triplets",
    "split_sections": "triplets",
    "structured_document": "triplets",
}

__all__ = [
    "CorpusOptions",
    "CorpusResult",
    "Deduplicator",
    "EmptySource",
    "FitOptions",
    "FitResult",
    "Fitted",
    "InputFormat",
    "MinHasher",
    "NegativesFrom",
    "OnError",
    "Queries",
    "SourceCounts",
    "Strategy",
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
    "split_sentences",
    "structured_document",
    "write_python_docs_corpus",
]

if TYPE_CHECKING:
    from ctxext.data.corpus import CorpusOptions, CorpusResult, SourceCounts, build_corpus
    from ctxext.data.dedupe import Deduplicator, MinHasher, jaccard
    from ctxext.data.fit import FitOptions, FitResult, Fitted, fit_file, fit_texts
    from ctxext.data.options import InputFormat, NegativesFrom, OnError, Queries, Strategy
    from ctxext.data.pydocs import python_docs_documents, write_python_docs_corpus
    from ctxext.data.sources import EmptySource, UnreadableSource
    from ctxext.data.text import Tokenizer, load_tokenizer, split_sentences
    from ctxext.data.triplets import TripletsResult, build_triplets, split_sections, structured_document


def __getattr__(name: str) -> Any:
    module = MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *MODULE_OF})
