"""ctxext's block-sparse attention for BigBird checkpoints: one fixed, seeded pattern in training and inference.

transformers' BigBird draws its random key blocks with numpy in training but points every one of them at
block 0 in eval mode, so a model is evaluated with a different attention than it was trained with; and one
batch too short for block-sparse attention switches the whole model to full attention for good (shared
notes, traps.md). ``use_block_sparse(model)`` replaces each BigBird layer's attention with
``FixedBlockSparseAttention``: the same query / key / value weights (the folder still loads in plain
transformers), a random-block pattern drawn once from (seed, layer, number of blocks), short inputs run full
attention without switching anything, and every part is batched through ``scaled_dot_product_attention``
instead of transformers' five hand-written passes.

The pattern is BigBird's ITC layout: the first and last blocks are global (they attend to every key and every
query attends to them), every other block attends to itself, its two neighbours and ``num_random_blocks``
random blocks, drawn per head from the blocks that are none of those. Importing this module loads torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.nn.functional import pad, scaled_dot_product_attention

from ctxext.architectures import ENCODER_FAMILIES

PATTERN_VERSION = 1  # bump when the random-block draw changes: models trained with one pattern expect it


def random_blocks(num_blocks: int, num_random: int, num_heads: int, seed: int) -> np.ndarray:
    """(heads, num_blocks - 2, num_random) key blocks for query blocks 1 .. num_blocks - 2, drawn from the
    non-global blocks outside each query block's window; the same arguments give the same pattern."""
    rng = np.random.default_rng([PATTERN_VERSION, seed, num_blocks])
    rows = np.arange(1, num_blocks - 1)
    scores = rng.random((num_heads, len(rows), num_blocks))
    candidates = np.arange(num_blocks)
    excluded = (np.abs(candidates[None, :] - rows[:, None]) <= 1) | (candidates == 0) | (candidates == num_blocks - 1)
    scores[:, excluded] = np.inf
    return np.argsort(scores, axis=-1, kind="stable")[..., :num_random].astype(np.int64)


def sparse_threshold(block_size: int, num_random: int) -> int:
    """Inputs of at most this many tokens run full attention (transformers' own limit for block-sparse)."""
    return (5 + 2 * num_random) * block_size


QUERY_BLOCKS_PER_STEP = 4  # measured on 2 CPU cores at 4096 tokens: gathered keys stay in cache, 2.2x faster
# than gathering every block's keys at once (benchmarks/transfer.py)


def block_sparse_attention(query: Any, key: Any, value: Any, key_keep: Any, pattern: Any, block_size: int) -> Any:
    """Attention of (batch, heads, length, head_dim) tensors, length a multiple of ``block_size``;
    ``key_keep`` (batch, length) is True for real tokens; ``pattern`` comes from ``random_blocks``.
    Padded query rows come back as zeros, as in transformers."""
    batch, heads, length, dim = query.shape
    blocks = length // block_size
    index = _key_block_index(blocks, pattern.to(query.device))  # (heads, middle, slots)
    slots = index.shape[-1]
    rows = (torch.arange(heads, device=query.device)[:, None, None] * blocks + index).transpose(0, 1)
    key_rows = key.reshape(batch, heads * blocks, block_size * dim)
    value_rows = value.reshape(batch, heads * blocks, block_size * dim)
    keep_rows = key_keep.view(batch, blocks, block_size).repeat(1, heads, 1)
    unique = _unique_slots(blocks, slots, query.device)
    padded = not bool(key_keep.all())
    middle_query = query.view(batch, heads, blocks, block_size, dim)[:, :, 1:-1].transpose(1, 2)
    middle_out = []
    for start in range(0, blocks - 2, QUERY_BLOCKS_PER_STEP):
        step_rows = rows[start : start + QUERY_BLOCKS_PER_STEP].reshape(-1)
        count = step_rows.numel() // slots
        keys = key_rows.index_select(1, step_rows).view(batch, count, slots * block_size, dim)
        values = value_rows.index_select(1, step_rows).view(batch, count, slots * block_size, dim)
        keep = None
        step_unique = unique[start : start + QUERY_BLOCKS_PER_STEP, None, :, None]
        if padded or not bool(step_unique.all()):  # a mask slows the kernel: pass one only where it masks
            keep = keep_rows.index_select(1, step_rows).view(batch, -1, heads, slots, block_size)
            keep = (keep & step_unique).view(batch, count, 1, -1)
        step_query = middle_query[:, start : start + QUERY_BLOCKS_PER_STEP].reshape(batch, count, block_size, dim)
        middle_out.append(scaled_dot_product_attention(step_query, keys, values, attn_mask=keep))
    middle = torch.cat(middle_out, dim=1).view(batch, blocks - 2, heads, block_size, dim).transpose(1, 2)
    global_query = torch.cat([query[:, :, :block_size], query[:, :, -block_size:]], dim=2)
    global_mask = key_keep[:, None, None, :] if padded else None
    global_out = scaled_dot_product_attention(global_query, key, value, attn_mask=global_mask)
    out = torch.cat(
        [global_out[:, :, :block_size], middle.reshape(batch, heads, -1, dim), global_out[:, :, block_size:]], dim=2
    )
    return out * key_keep[:, None, :, None].to(out.dtype) if padded else out


def _key_block_index(blocks: int, pattern: Any) -> Any:
    """Key blocks of each middle query block i: i-1, i, i+1, the first, the last, then the random ones."""
    rows = torch.arange(1, blocks - 1, device=pattern.device)
    fixed = torch.stack([rows - 1, rows, rows + 1, torch.zeros_like(rows), torch.full_like(rows, blocks - 1)], -1)
    return torch.cat([fixed.expand(pattern.shape[0], -1, -1), pattern], dim=-1)


def _unique_slots(blocks: int, slots: int, device: Any) -> Any:
    """(middle, slots) mask that drops the global slot a window already holds: block 0 for query block 1, the
    last block for query block blocks - 2 (attending one key twice would double its weight)."""
    unique = torch.ones(blocks - 2, slots, dtype=torch.bool, device=device)
    unique[0, 3] = False
    unique[-1, 4] = False
    return unique


class FixedBlockSparseAttention(torch.nn.Module):
    """A BigBird layer's self-attention with ctxext's fixed pattern; takes the calls transformers makes to its
    full-attention module (the model itself stays in ``original_full`` mode, so nothing ever switches).
    ``ran`` says what the last call ran: ``block_sparse``, or ``original_full`` for a short input."""

    def __init__(self, full_attention: Any, config: Any, layer: int, seed: int):
        super().__init__()
        self.query, self.key, self.value = full_attention.query, full_attention.key, full_attention.value
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.block_size = config.block_size
        self.num_random = config.num_random_blocks
        self.dropout = float(config.attention_probs_dropout_prob)
        self.seed = seed + layer
        self.ran = ""
        self._patterns: dict[int, Any] = {}

    def forward(self, hidden_states: Any, attention_mask: Any = None, *args: Any, **kwargs: Any) -> tuple[Any, None]:
        """Each row attends as it would alone, by its own length (up to its last real token): full attention
        up to ``sparse_threshold`` tokens, block-sparse over its own blocks beyond. So a document's embedding
        does not depend on what it is batched with; rows of one length run as one batch."""
        batch, length, _ = hidden_states.shape
        key_keep = _key_keep(attention_mask, batch, length, hidden_states.device)
        positions = torch.arange(1, length + 1, device=key_keep.device)
        own_lengths = (key_keep * positions).amax(-1).tolist()
        threshold = sparse_threshold(self.block_size, self.num_random)
        groups: dict[int, list[int]] = {}
        for row, own in enumerate(own_lengths):
            span = own if own <= threshold else -(-own // self.block_size) * self.block_size
            groups.setdefault(span, []).append(row)
        spans = sorted(groups)
        self.ran = "block_sparse" if spans[-1] > threshold else "original_full"
        width = self.num_heads * self.head_size
        if len(groups) == 1 and spans[0] >= length:  # one group covering the batch: no copies
            return self._attend(hidden_states, key_keep, spans[0])[:, :length].reshape(batch, length, width), None
        context = hidden_states.new_zeros(batch, length, width)
        for span, rows in groups.items():
            index = torch.tensor(rows, device=hidden_states.device)
            kept = min(span, length)
            out = self._attend(hidden_states[index, :kept], key_keep[index, :kept], span)
            context[index, :kept] = out[:, :kept].reshape(len(rows), kept, width)
        return context, None

    def _attend(self, states: Any, key_keep: Any, span: int) -> Any:
        """(rows, span, heads * head_size)-shaped attention output of rows that attend over ``span`` tokens."""
        padding = span - states.shape[1]
        if padding > 0:
            states, key_keep = pad(states, (0, 0, 0, padding)), pad(key_keep, (0, padding), value=False)
        q, k, v = (self._heads(layer(states)) for layer in (self.query, self.key, self.value))
        if span <= sparse_threshold(self.block_size, self.num_random):
            dropout = self.dropout if self.training else 0.0
            out = scaled_dot_product_attention(q, k, v, attn_mask=key_keep[:, None, None, :], dropout_p=dropout)
        else:
            out = block_sparse_attention(q, k, v, key_keep, self._pattern(span // self.block_size), self.block_size)
        return out.transpose(1, 2).reshape(states.shape[0], span, -1)

    def _heads(self, states: Any) -> Any:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, self.head_size).transpose(1, 2)

    def _pattern(self, blocks: int) -> Any:
        if blocks not in self._patterns:
            drawn = random_blocks(blocks, self.num_random, self.num_heads, self.seed)
            self._patterns[blocks] = torch.from_numpy(drawn)
        return self._patterns[blocks]


def _key_keep(attention_mask: Any, batch: int, length: int, device: Any) -> Any:
    """(batch, length) bool, True for keys a query may attend, from the mask transformers passes a
    full-attention module: None, a boolean mask, or an additive one (0 where allowed), each (batch, 1, q, k)."""
    if attention_mask is None:
        return torch.ones(batch, length, dtype=torch.bool, device=device)
    row = attention_mask[:, 0, 0, :] if attention_mask.dim() == 4 else attention_mask
    keep = row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min / 2
    return keep.expand(batch, length)


def use_block_sparse(model: Any, seed: int = 0) -> Any:
    """Give every BigBird configured for block-sparse attention inside ``model`` (a transformers model, or a
    ``SentenceTransformer`` holding one) ctxext's fixed-pattern attention, and return ``model``.

    The seed comes from the folder's ``ctxext_block_sparse_seed`` when it has one (ctxext writes it, so a model
    trained with a pattern is evaluated with the same one)."""
    for module in model.modules():
        if type(module).__name__ != "BigBirdModel" or getattr(module, "ctxext_block_sparse", False):
            continue
        config = module.config
        if config.attention_type != "block_sparse":
            continue
        chosen = int(getattr(config, "ctxext_block_sparse_seed", seed))
        module.set_attention_type("original_full")  # the model-level switch never fires again
        for index, layer in enumerate(module.encoder.layer):
            attention = FixedBlockSparseAttention(layer.attention.self, config, index, chosen)
            layer.attention.self = attention.train(layer.training)
        config.ctxext_block_sparse_seed = chosen
        module.ctxext_block_sparse = True
    return model


def attention_ran(model: Any) -> str | None:
    """What the first ctxext block-sparse layer in ``model`` ran on its last call (None if it has none)."""
    for module in model.modules():
        if isinstance(module, FixedBlockSparseAttention):
            return module.ran or None
    return None


__all__ = [
    "FixedBlockSparseAttention",
    "attention_ran",
    "block_sparse_attention",
    "random_blocks",
    "sparse_threshold",
    "use_block_sparse",
]


@contextlib.contextmanager
def attention_probe(model: Any) -> Iterator[list[str]]:
    """Record, per BigBird layer call, which attention ran: ``block_sparse`` or ``original_full``.

    The hook sits on each layer's ``attention`` module, which survives attention-type switches; ctxext's
    fixed-pattern attention (``block_sparse.use_block_sparse``) says itself what it ran.
    """
    seen: list[str] = []
    backbone = getattr(model, ENCODER_FAMILIES["big_bird"].prefix, model)
    handles = []
    for layer in backbone.encoder.layer:

        def hook(module: Any, inputs: Any, output: Any) -> None:
            ran = getattr(module.self, "ran", None)  # ctxext's attention says what it ran
            seen.append(ran or ("block_sparse" if "BlockSparse" in type(module.self).__name__ else "original_full"))

        handles.append(layer.attention.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()
