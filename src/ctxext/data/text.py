"""Tokens and boundaries: the fast tokenizer of a checkpoint, token offsets, and where a text may be cut.

A cut is ranked by what it keeps whole: a paragraph break (3), a sentence end (2), a space between words
(1), or nothing (0, inside a word). Cutting at a space keeps re-tokenization stable: the text on either
side tokenizes to the same tokens it had in the whole document.

Sentences are split here and only here (:func:`sentence_starts`, :func:`split_sentences`): after ``.``,
``!`` or ``?`` (and any closing quotes or brackets), at the whitespace that follows. A sentence never
ends inside a run of non-space characters, so a path (``/path/to/repo.git/``), a dotted name
(``os.path.join``) or a number (``3.14``) stays whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.errors import InvalidArgument

PARAGRAPH = 3
SENTENCE = 2
WORD = 1
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=\S)")
WHITESPACE = re.compile(r"\s+")
WORD_CHARACTERS = re.compile(r"\w+")


@dataclass
class Tokenizer:
    """A fast tokenizer with truncation and padding switched off, counting content tokens."""

    backend: Any
    special_tokens: int
    ref: str
    path: Path
    stable_cuts: bool = False
    revision: str | None = None

    def encode(self, texts: list[str]) -> list[Any]:
        """``tokenizers.Encoding`` per text, without special tokens (``len``, ``.offsets``)."""
        return self.backend.encode_batch(texts, add_special_tokens=False)

    def count(self, texts: list[str]) -> list[int]:
        """Tokens the model sees for each text, special tokens included."""
        return [len(encoding) + self.special_tokens for encoding in self.encode(texts)]

    def describe(self) -> dict[str, Any]:
        """What a manifest records of the tokenizer."""
        revision = {"revision": self.revision} if self.revision else {}
        return {"ref": self.ref, **revision, "special_tokens": self.special_tokens, "folder": str(self.path)}


def load_tokenizer(ref: str | Path, revision: str | None = None) -> Tokenizer:
    """The fast tokenizer of a checkpoint (folder, hub ID at ``revision``, embedded name) or of a tokenizer-only
    folder.

    ``tokenizer.json`` is read with the ``tokenizers`` library directly (no transformers import, which
    costs seconds); a folder without one goes through ``transformers.AutoTokenizer``.
    """
    from tokenizers import Tokenizer as BackendTokenizer

    local = Path(ref).expanduser()
    tokenizer_only = (local / "tokenizer.json").is_file() or (local / "tokenizer_config.json").is_file()
    if revision is None and local.is_dir() and tokenizer_only:  # with a revision, open_model refuses a folder
        folder = local
    else:
        from ctxext.io import open_model

        _, model = open_model(ref, revision=revision)
        folder = model.tokenizer_dir
    if (folder / "tokenizer.json").is_file():
        try:
            backend = BackendTokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception as error:  # tokenizers raises a bare Exception on a bad file
            raise InvalidArgument(f"{folder / 'tokenizer.json'}: cannot be read ({error})") from None
    else:
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        except (OSError, ValueError) as error:
            raise InvalidArgument(f"{ref}: no tokenizer could be loaded ({str(error).splitlines()[0]})") from None
        if not getattr(hf, "is_fast", False):
            raise InvalidArgument(f"{ref}: needs a fast (Rust) tokenizer for token offsets; this one is slow")
        backend = BackendTokenizer.from_str(hf.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    return Tokenizer(
        backend=backend,
        special_tokens=backend.num_special_tokens_to_add(False),
        ref=str(ref),
        path=folder,
        stable_cuts=splits_on_whitespace(json.loads(backend.to_str()).get("pre_tokenizer")),
        revision=revision,
    )


WHITESPACE_SPLITTERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
WORD_LOCAL = WHITESPACE_SPLITTERS | {"Punctuation", "Digits", "UnicodeScripts"}


def splits_on_whitespace(pre_tokenizer: dict[str, Any] | None) -> bool:
    """True when every token lies inside one whitespace-separated word (WordPiece/BERT-style
    pre-tokenizers): a text cut between two words then tokenizes exactly as that span of the whole
    text, so chunk token counts need no second tokenization. Byte-level BPE and Metaspace attach
    the space to the next word and are re-checked instead."""
    if not pre_tokenizer:
        return False
    sequence = pre_tokenizer.get("type") == "Sequence"
    members = pre_tokenizer.get("pretokenizers", []) if sequence else [pre_tokenizer]
    types = {member.get("type") for member in members}
    return bool(types & WHITESPACE_SPLITTERS) and types <= WORD_LOCAL


def token_spans(encoding: Any) -> tuple[np.ndarray, np.ndarray]:
    """Start and end character offsets of every token, as int64 arrays."""
    offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
    return offsets[:, 0], offsets[:, 1]


def sentence_starts(text: str) -> list[int]:
    """Character offset of every sentence's start but the first's."""
    return [match.end() for match in SENTENCE_END.finditer(text)]


def paragraph_starts(text: str) -> list[int]:
    """Character offset of every paragraph's start (after a blank line) but the first's."""
    return [match.end() for match in PARAGRAPH_BREAK.finditer(text)]


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, stripped of surrounding whitespace; a paragraph break ends a
    sentence too (as in :func:`sentence_units`)."""
    bounds = sorted({0, *sentence_starts(text), *paragraph_starts(text), len(text)})
    pieces = (text[start:end].strip() for start, end in zip(bounds[:-1], bounds[1:], strict=True))
    return [piece for piece in pieces if piece]


def cut_ranks(text: str, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Rank of cutting before token ``i`` for i in 0..n (n = after the last token, ranked a paragraph)."""
    count = len(starts)
    ranks = np.zeros(count + 1, dtype=np.int8)
    if count == 0:
        ranks[0] = PARAGRAPH
        return ranks
    ranks[1:count][starts[1:] > ends[:-1]] = WORD
    for found, rank in ((sentence_starts(text), SENTENCE), (paragraph_starts(text), PARAGRAPH)):
        positions = np.asarray(found, dtype=np.int64)
        if len(positions):
            tokens = np.searchsorted(starts, positions)
            tokens = tokens[(tokens > 0) & (tokens < count)]
            ranks[tokens] = np.maximum(ranks[tokens], rank)
    ranks[0] = ranks[count] = PARAGRAPH
    return ranks


@dataclass(frozen=True)
class Unit:
    """A sentence (or a piece of a long one): character span, token span and paragraph number."""

    start: int
    end: int
    first_token: int
    last_token: int
    paragraph: int

    @property
    def tokens(self) -> int:
        return self.last_token - self.first_token


def sentence_units(ranks: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_tokens: int) -> list[Unit]:
    """Split a tokenized text into sentences; a sentence over ``max_tokens`` is split at word boundaries
    (see :func:`long_sentence_cut`), never inside a word."""
    count = len(starts)
    cuts = np.flatnonzero(ranks >= SENTENCE)
    units: list[Unit] = []
    paragraph = 0
    for first, last in zip(cuts[:-1], cuts[1:], strict=False):
        if first > 0 and ranks[first] == PARAGRAPH:
            paragraph += 1
        begin = int(first)
        while begin < last:
            stop = int(last)
            if stop - begin > max_tokens:
                stop = long_sentence_cut(ranks, begin, stop, max_tokens)
            units.append(Unit(int(starts[begin]), int(ends[stop - 1]), begin, stop, paragraph))
            begin = stop
    assert not units or units[-1].last_token == count
    return units


def long_sentence_cut(ranks: np.ndarray, begin: int, end: int, max_tokens: int) -> int:
    """Where to end the first piece of the over-long sentence ``[begin, end)``: the best boundary in the
    second half of a ``max_tokens`` window; when that half holds no space, the last space before it, else
    the first after it (the piece is then longer than ``max_tokens``), else ``end``."""
    low, high = begin + max(1, max_tokens // 2), begin + max_tokens
    cut = best_cut(ranks, low, high)
    if ranks[cut] >= WORD:
        return cut
    before = np.flatnonzero(ranks[begin + 1 : low] >= WORD)
    if len(before):
        return begin + 1 + int(before[-1])
    after = np.flatnonzero(ranks[high + 1 : end] >= WORD)
    return high + 1 + int(after[0]) if len(after) else end


def best_cut(ranks: np.ndarray, low: int, high: int) -> int:
    """The cut in [low, high] of the highest rank, latest among equals; ``high`` when none ranks above 0."""
    window = ranks[low : high + 1].astype(np.int64)
    choice = int(np.argmax(window * (high - low + 2) + np.arange(len(window))))
    return low + choice if window[choice] > 0 else high


def word_cut_at_or_before(ranks: np.ndarray, position: int, floor: int) -> int:
    """The last word boundary at or before ``position`` and above ``floor``; ``position`` when none."""
    window = ranks[floor + 1 : position + 1]
    hits = np.flatnonzero(window >= WORD)
    return floor + 1 + int(hits[-1]) if len(hits) else position


def word_cut_at_or_after(ranks: np.ndarray, position: int, ceiling: int) -> int:
    window = ranks[position:ceiling]
    hits = np.flatnonzero(window >= WORD)
    return position + int(hits[0]) if len(hits) else position


def normalize(text: str) -> str:
    """Whitespace collapsed, case folded: the form in which texts are compared for exact duplicates."""
    return WHITESPACE.sub(" ", text).strip().casefold()


SUMMARY_WORDS = (6, 64)
MIN_REST_WORDS = 10


def summary_line(text: str) -> tuple[str, str] | None:
    """(summary, rest) of a docstring-like text: its first paragraph, whitespace-normalised, when it has 6-64
    words, reads as prose, and at least 10 words follow it; else None. A natural query about a definition
    whose rest stays in the document (``data longdoc``, ``data triplets --queries summary``)."""
    first, _, rest = text.strip().partition("\n\n")
    summary = " ".join(first.split())
    if not SUMMARY_WORDS[0] <= len(summary.split()) <= SUMMARY_WORDS[1] or len(rest.split()) < MIN_REST_WORDS:
        return None
    if summary.startswith((">>>", "..", ":")) or not re.search(r"[A-Za-z]{3}", summary):
        return None
    return summary, rest.strip()
