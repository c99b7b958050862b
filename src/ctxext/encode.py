"""Embed texts with any checkpoint ctxext reads: length-bucketed batches, the checkpoint's own pooling.

Sentence-transformers folders use their Pooling (and Normalize) modules; other encoders use CLS pooling,
decoders the last token. BigBird runs ctxext's fixed-pattern block-sparse attention (``block_sparse``): the
pattern it was trained with, and no switch to full attention for good after one short batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.architectures import CAUSAL_DECODER_TYPES, learned_offset
from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.errors import InvalidArgument
from ctxext.io import ModelFolder, open_model
from ctxext.sentence_folder import POOLINGS, pool, read_settings
from ctxext.sentence_folder import Pooling as Pooling  # re-exported: cli/embed.py types --pooling with it


@dataclass
class Encoder:
    """A loaded model with its tokenizer and pooling; ``encode`` returns one float32 row per text."""

    model: Any
    tokenizer: Any
    pooling: str
    normalize: bool
    max_length: int
    position_limit: int = 512
    folder: ModelFolder | None = None
    attention_type: str | None = None

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 16,
        max_length: int | None = None,
        progress: ProgressFn = no_progress,
    ) -> np.ndarray:
        import torch

        max_length = max_length or self.max_length
        vectors = np.zeros((len(texts), self.model.config.hidden_size), np.float32)
        device, done = next(self.model.parameters()).device, 0
        for first in range(0, len(texts), ENCODED_TOGETHER):
            input_ids = truncated_input_ids(self.tokenizer, texts[first : first + ENCODED_TOGETHER], max_length)
            order = np.argsort([-len(ids) for ids in input_ids], kind="stable")
            for indices in token_bounded_batches(order, [len(ids) for ids in input_ids], batch_size):
                batch = self.tokenizer.pad(
                    {"input_ids": [input_ids[i] for i in indices]}, padding=True, return_tensors="pt"
                )
                with torch.inference_mode():
                    output = self.model(
                        input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
                    )
                pooled = pool(output.last_hidden_state, batch["attention_mask"].to(device), self.pooling)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                vectors[first + np.asarray(indices)] = pooled.float().cpu().numpy()
                done += len(indices)
                progress("encoding", done, len(texts))
        return vectors

    def late_chunks(
        self,
        texts: Sequence[str],
        *,
        chunk: int,
        overlap: int = 0,
        batch_size: int = 16,
        max_length: int | None = None,
        progress: ProgressFn = no_progress,
    ) -> LateChunks:
        """Late chunking (Jina, 2024): one pass over each whole text (up to ``max_length`` tokens), then the mean
        of the token states of each span of ``chunk`` content tokens (``overlap`` of them shared with the span
        before), so every chunk vector is computed with its whole document in view. Memory: one batch's token
        states. The pass's own pooled vector of each text comes with it (``LateChunks.whole``)."""
        import torch

        if chunk < 1 or not 0 <= overlap < chunk:
            raise InvalidArgument(f"chunks of {chunk} tokens overlapping by {overlap}: need 0 <= overlap < chunk")
        max_length = max_length or self.max_length
        prefixes = bounded_prefixes(self.tokenizer, texts, max_length)
        order, done = np.argsort([-len(ids) for _, ids in prefixes], kind="stable"), 0
        chunked = LateChunks.empty(self.model.config.hidden_size, len(texts))
        device = next(self.model.parameters()).device
        for indices in token_bounded_batches(order, [len(ids) for _, ids in prefixes], batch_size):
            batch = self.tokenizer.pad(
                {"input_ids": [prefixes[i][1] for i in indices]}, padding=True, return_tensors="pt"
            )
            mask = batch["attention_mask"].to(device)
            with torch.inference_mode():
                states = self.model(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
                whole = self._normalized(pool(states, mask, self.pooling)).float().cpu().numpy()
                offsets = self._character_offsets([prefixes[i][0] for i in indices], max_length)
                for row, index in enumerate(indices):
                    ids = prefixes[index][1]
                    shift = states.shape[1] - len(ids) if self.tokenizer.padding_side == "left" else 0
                    spans, content = content_spans(self.tokenizer, ids, chunk, overlap)
                    kept = torch.from_numpy(content).to(device)
                    vectors = torch.stack(
                        [states[row, shift + begin : shift + end][kept[begin:end]].mean(0) for begin, end in spans]
                    )
                    chunked.add(index, self._normalized(vectors).float().cpu().numpy(), spans, offsets[row], whole[row])
            done += len(indices)
            progress("late chunking", done, len(order))
        return chunked.joined()

    def _normalized(self, vectors: Any) -> Any:
        import torch

        return torch.nn.functional.normalize(vectors, dim=-1) if self.normalize else vectors

    def _character_offsets(self, pieces: list[str], max_length: int) -> list[list[tuple[int, int]] | None]:
        """Each token's (start, end) in its text, where the tokenizer gives offsets (fast tokenizers do)."""
        if not getattr(self.tokenizer, "is_fast", False):
            return [None] * len(pieces)
        encoded = self.tokenizer(pieces, truncation=True, max_length=max_length, return_offsets_mapping=True)
        return [[(int(a), int(b)) for a, b in row] for row in encoded["offset_mapping"]]


BATCH_TOKENS = 16_384
"""Most tokens one batch holds (batch size x its longest input): at 4096 tokens a batch of 16 ran each text 1.2x
slower than a batch of 4 under full attention and 1.5x under block-sparse (2 CPU cores), the batch's
activations falling out of cache; short texts still go --batch-size at a time."""


def token_bounded_batches(order: np.ndarray, lengths: list[int], batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive slices of ``order`` (texts longest first) of at most ``batch_size`` texts and, past one text,
    at most :data:`BATCH_TOKENS` tokens (their first, longest text's length times their number)."""
    start = 0
    while start < len(order):
        size = max(1, min(batch_size, BATCH_TOKENS // max(lengths[order[start]], 1)))
        yield order[start : start + size]
        start += size


@dataclass
class LateChunks:
    """Chunk vectors of several texts: row ``r`` belongs to text ``documents[r]`` and covers its model-input
    tokens ``token_spans[r]`` = [start, end) and characters ``char_spans[r]`` (-1 where the tokenizer gives no
    offsets); rows of one text are consecutive, in order. ``whole``: each text's own pooled vector."""

    vectors: np.ndarray
    documents: np.ndarray
    token_spans: np.ndarray
    char_spans: np.ndarray
    whole: np.ndarray
    _parts: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = field(default_factory=list, repr=False)

    @classmethod
    def empty(cls, dimension: int, texts: int) -> LateChunks:
        spans = np.zeros((0, 2), np.int64)
        return cls(
            np.zeros((0, dimension), np.float32),
            np.zeros(0, np.int64),
            spans,
            spans,
            np.zeros((texts, dimension), np.float32),
            [None] * texts,
        )

    def add(
        self,
        text: int,
        vectors: np.ndarray,
        spans: list[tuple[int, int]],
        offsets: list[tuple[int, int]] | None,
        whole: np.ndarray,
    ) -> None:
        characters = [(offsets[begin][0], offsets[end - 1][1]) if offsets else (-1, -1) for begin, end in spans]
        self._parts[text] = (vectors, np.array(spans, np.int64), np.array(characters, np.int64))
        self.whole[text] = whole

    def joined(self) -> LateChunks:
        parts = [part for part in self._parts if part is not None]
        if not parts:
            return self
        vectors, token_spans, char_spans = (np.concatenate([part[k] for part in parts]) for k in range(3))
        documents = np.concatenate([np.full(len(part[0]), i) for i, part in enumerate(self._parts) if part])
        return LateChunks(vectors.astype(np.float32), documents, token_spans, char_spans, self.whole)


def chunk_spans(count: int, chunk: int, overlap: int = 0) -> list[tuple[int, int]]:
    """[start, end) spans of at most ``chunk`` items over ``count`` items, each sharing ``overlap`` items with the
    one before; the last may be shorter; none for no items."""
    return [(start, min(start + chunk, count)) for start in range(0, max(count - overlap, 0), chunk - overlap)]


def content_spans(tokenizer: Any, ids: list[int], chunk: int, overlap: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """:func:`chunk_spans` over a model input's content tokens, as [start, end) positions in the input, and which
    positions are content: special tokens such as [CLS] and [SEP] belong to no chunk's mean. A text with no
    content is one span of its special tokens."""
    special = np.array(tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True), dtype=bool)
    content = np.flatnonzero(~special)
    if not len(content):
        return [(0, len(ids))], np.ones(len(ids), dtype=bool)
    spans = [
        (int(content[begin]), int(content[end - 1]) + 1) for begin, end in chunk_spans(len(content), chunk, overlap)
    ]
    return spans, ~special


PREFIX_CHARACTERS_PER_TOKEN = 16
"""A long text is first tokenized from a prefix of ``max_length`` x this many characters (grown when short)."""
_WORD_ENDS = (re.compile(r".*\S(?= )", re.DOTALL), re.compile(r".*\S(?=\s)", re.DOTALL))
"""Where a prefix may end: before a space (a boundary for every tokenizer), else before other whitespace (one
for most: SentencePiece's Metaspace splits at spaces alone)."""


def truncated_input_ids(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """``tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]``, with memory in proportion to
    ``max_length`` rather than to the texts' size (a tokenizer holds offsets and more for every token).

    Each text is tokenized from a prefix that ends between words, grown fourfold until it yields more than
    ``max_length`` tokens or is the whole text; tokens never cross whitespace, so the ids are the whole
    text's. A tokenizer that truncates on the left reads whole texts."""
    return [ids for _, ids in bounded_prefixes(tokenizer, texts, max_length)]


def bounded_prefixes(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[tuple[str, list[int]]]:
    """For each text, a prefix whose tokenization truncated at ``max_length`` is the whole text's, and those ids
    (see :func:`truncated_input_ids`)."""
    if getattr(tokenizer, "truncation_side", "right") != "right":
        return list(zip(texts, token_ids(tokenizer, list(texts), max_length), strict=True))
    size = max_length * PREFIX_CHARACTERS_PER_TOKEN
    pieces = [word_prefix(text, size) for text in texts]
    ids = token_ids(tokenizer, pieces, max_length + 1)  # one token more than kept: more means truncated
    for index, text in enumerate(texts):
        grown = size
        while len(ids[index]) <= max_length and len(pieces[index]) < len(text):
            grown *= 4
            pieces[index] = word_prefix(text, grown)
            ids[index] = token_ids(tokenizer, [pieces[index]], max_length + 1)[0]
    cut = [index for index, row in enumerate(ids) if len(row) > max_length]
    for index, row in zip(cut, token_ids(tokenizer, [pieces[i] for i in cut], max_length), strict=True):
        ids[index] = row
    return list(zip(pieces, ids, strict=True))


TOKENIZED_TOGETHER = 256
"""Texts given to the tokenizer in one call: its output keeps offsets, tokens and more for every token (about
200 bytes each), so 10k texts of 256 tokens in one call peaked 2 GB above the ids kept."""

ENCODED_TOGETHER = 4096
"""``Encoder.encode`` tokenizes, sorts by length and encodes this many texts at a time, so its memory besides the
vectors it returns does not grow with the texts (10k texts of 256 tokens held at once: +0.6 GB of ids)."""


def token_ids(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """``tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]``, :data:`TOKENIZED_TOGETHER`
    texts at a time."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), TOKENIZED_TOGETHER):
        encoded = tokenizer(texts[start : start + TOKENIZED_TOGETHER], truncation=True, max_length=max_length)
        ids += [list(row) for row in encoded["input_ids"]]
    return ids


def word_prefix(text: str, size: int) -> str:
    """The whole ``text`` when it holds at most ``size`` characters, else its longest prefix of at most
    ``size`` characters that ends before a space (else before other whitespace; a word longer than ``size``
    is cut)."""
    if len(text) <= size:
        return text
    for word_end in _WORD_ENDS:
        found = word_end.match(text, 0, size + 1)
        if found:
            return found.group(0)
    return text[:size]


def load_encoder(
    ref: str | Path,
    *,
    pooling: str | None = None,
    max_length: int | None = None,
    device: str | None = None,
    model_loader: Callable[[Path], Any] | None = None,
    revision: str | None = None,
) -> Encoder:
    """Load a checkpoint for embedding. ``model_loader`` replaces ``AutoModel.from_pretrained`` (adapters
    and other registered architectures use it)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ctxext.block_sparse import use_block_sparse

    _, folder = open_model(ref, revision=revision)
    config = folder.config
    st_pooling, normalize, st_length = sentence_transformers_settings(folder)
    chosen = pooling or st_pooling or ("last" if config.get("model_type") in CAUSAL_DECODER_TYPES else "cls")
    if chosen not in POOLINGS:
        raise InvalidArgument(f"unknown pooling {chosen!r}; choose one of {', '.join(POOLINGS)}")
    model = (
        model_loader(folder.model_dir)
        if model_loader
        else AutoModel.from_pretrained(folder.model_dir, trust_remote_code=False)
    )
    model = use_block_sparse(model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval())
    tokenizer = AutoTokenizer.from_pretrained(folder.tokenizer_dir, trust_remote_code=False)
    tokenizer.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True  # we pad pre-tokenized ids on purpose
    if chosen == "last":
        tokenizer.padding_side = "right"
    limit = _model_max_length(config, tokenizer)
    encoder = Encoder(
        model=model,
        tokenizer=tokenizer,
        pooling=chosen,
        normalize=normalize,
        max_length=max_length or st_length or limit,
        position_limit=limit,
        folder=folder,
        attention_type=config.get("attention_type"),
    )
    return encoder


def _model_max_length(config: dict[str, Any], tokenizer: Any) -> int:
    """The longest input the model takes: its usable positions, or the tokenizer's limit."""
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 10**9 else None
    positions = config.get("max_position_embeddings")
    if positions:
        positions -= learned_offset(config)
    return min(v for v in (limit, positions, 512 if not (limit or positions) else None) if v)


def sentence_transformers_settings(folder: ModelFolder) -> tuple[str | None, bool, int | None]:
    """(pooling, normalize, max_seq_length) declared by a sentence-transformers folder, else (None, False, None)
    (:func:`ctxext.sentence_folder.read_settings`, the pooling as its name)."""
    settings = read_settings(folder)
    return settings.pooling.value if settings.pooling else None, settings.normalize, settings.max_seq_length
