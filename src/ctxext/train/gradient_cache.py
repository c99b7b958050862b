"""Gradient caching (Gao et al. 2021, "GradCache"; sentence-transformers' ``CachedMultipleNegativesRankingLoss``):
a contrastive batch far larger than memory allows, with exactly the gradients of the full batch.

Embeddings are computed ``chunk`` texts at a time without a graph; the loss over the whole batch gives each
embedding its gradient; in the backward pass each chunk is embedded again, with the random state it had the
first time (dropout draws the same masks), and back-propagated with its slice of that gradient. Memory is
that of one chunk plus the embeddings; compute is about one extra forward pass. Under DDP, ``finetune``
gathers the result across processes (``every_process_rows``), so the candidates span the global batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def cached_embeddings(embed: Callable[..., Any], chunk: int, *inputs: Any) -> Any:
    """``embed(*inputs)`` row-chunked as described above; ``None`` inputs are passed through as ``None``."""
    import torch

    anchor = torch.zeros(1, requires_grad=True)  # makes autograd call the backward below
    return _CachedEmbeddings.apply(embed, chunk, anchor, *inputs)


def _chunks(inputs: tuple[Any, ...], chunk: int) -> list[tuple[Any, ...]]:
    rows = next(t for t in inputs if t is not None).shape[0]
    return [tuple(None if t is None else t[start : start + chunk] for t in inputs) for start in range(0, rows, chunk)]


def _random_state() -> tuple[Any, Any]:
    import torch

    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_random_state(state: tuple[Any, Any]) -> None:
    import torch

    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state_all(state[1])


def _function_base() -> Any:
    import torch

    return torch.autograd.Function


class _CachedEmbeddings(_function_base()):  # type: ignore[misc]  # torch loads on first use, not at import
    @staticmethod
    def forward(ctx: Any, embed: Callable[..., Any], chunk: int, anchor: Any, *inputs: Any) -> Any:
        import torch

        ctx.embed, ctx.chunks, ctx.states = embed, _chunks(inputs, chunk), []
        pieces = []
        with torch.no_grad():
            for piece in ctx.chunks:
                ctx.states.append(_random_state())
                pieces.append(embed(*piece))
        return torch.cat(pieces)

    @staticmethod
    def backward(ctx: Any, gradient: Any) -> Any:
        import torch

        start = 0
        with torch.enable_grad(), torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            for piece, state in zip(ctx.chunks, ctx.states, strict=True):
                _set_random_state(state)
                embedded = ctx.embed(*piece)
                torch.autograd.backward(embedded, gradient[start : start + embedded.shape[0]])
                start += embedded.shape[0]
        return (None, None, None, *(None for _ in ctx.chunks[0]))
