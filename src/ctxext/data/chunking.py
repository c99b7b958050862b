"""Split a tokenized document into chunks of at most ``limit`` content tokens, overlapping by at least
``overlap`` tokens, cut at paragraph, sentence or word boundaries where possible.

Each chunk ends at the best-ranked boundary in the second half of its window (a paragraph break before a
sentence end before a space); the next chunk starts ``overlap`` tokens before that end, moved back to the
start of a word, so consecutive chunks share at least ``overlap`` tokens and no word is cut in two.
"""

from __future__ import annotations

import numpy as np

from ctxext.data.text import best_cut, word_cut_at_or_before


def chunk_spans(ranks: np.ndarray, limit: int, overlap: int = 0) -> list[tuple[int, int]]:
    """Token spans ``[begin, end)`` covering all ``len(ranks) - 1`` tokens."""
    if limit < 1:
        raise ValueError("chunk limit must be at least one token")
    if overlap < 0 or (overlap and overlap >= limit // 2):
        raise ValueError(f"overlap ({overlap}) must be below half the chunk's content tokens ({limit})")
    count = len(ranks) - 1
    spans: list[tuple[int, int]] = []
    begin = previous_end = 0
    while True:
        if count - begin <= limit:
            spans.append((begin, count))
            return spans
        # every chunk ends later than the one before, so none is contained in its predecessor
        end = best_cut(ranks, max(begin + max(1, limit // 2), previous_end + 1), begin + limit)
        previous_end = end
        spans.append((begin, end))
        if overlap:
            following = word_cut_at_or_before(ranks, end - overlap, begin)
            begin = following if begin < following <= end - overlap else end - overlap
        else:
            begin = end
