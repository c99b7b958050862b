"""What ctxext adapts to in the libraries it runs on (transformers >= 5.5, sentence-transformers >= 6), in one
place.

Everything here is imported lazily by its callers, so importing ctxext does not import transformers.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterable, Iterator
from importlib import metadata
from typing import Any


@functools.cache
def transformers_version() -> tuple[int, int]:
    major, minor = metadata.version("transformers").split(".")[:2]
    return int(major), int(minor)


def transformers_major() -> int:
    return transformers_version()[0]


def native_bidirectional_config() -> bool:
    """transformers >= 5.2 honours ``is_causal: false`` in a decoder's config (Llama, Mistral, Qwen2, ...)."""
    return transformers_version() >= (5, 2)


def add_extra_special_tokens(tokenizer: Any, tokens: Iterable[str]) -> None:
    """Add ``tokens`` as special tokens beside the ones the tokenizer already has (never replacing them)."""
    keyword = "extra_special_tokens" if transformers_major() >= 5 else "additional_special_tokens"
    tokenizer.add_special_tokens({keyword: list(tokens)}, **{f"replace_{keyword}": False})


@contextlib.contextmanager
def transformers_warnings_off() -> Iterator[None]:
    """transformers' own log quiet for a load whose outcome ctxext checks and reports itself (missing or
    unexpected tensors, a tokenizer warning known to be a false alarm)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


@contextlib.contextmanager
def no_init_weights() -> Iterator[None]:
    """Build a model without spending time on random init (every weight is loaded or set next)."""
    try:
        from transformers.initialization import no_init_weights as skip_init  # transformers 5
    except ImportError:
        from transformers.modeling_utils import no_init_weights as skip_init  # transformers 4.57
    with skip_init():
        yield


def warmup_arguments(ratio: float, steps: int) -> dict[str, Any]:
    """TrainingArguments' warmup: a share of the steps (transformers 5 takes only a number of steps)."""
    if transformers_major() >= 5:
        return {"warmup_steps": math.ceil(ratio * steps)}  # as transformers 4.57 rounds a ratio
    return {"warmup_ratio": ratio}


def loading_info(info: dict[str, Any]) -> dict[str, list[Any]]:
    """``from_pretrained(output_loading_info=True)``'s report with sorted lists (transformers 5 returns sets)."""
    return {key: sorted(value, key=str) for key, value in info.items()}


def checkpointing_enable(model: Any) -> None:
    """Recompute activations in the backward pass (transformers 5.25 renamed gradient checkpointing to activation
    checkpointing and warns on the old names)."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def checkpointing_disable(model: Any) -> None:
    """Back to a plain forward, if activations were being recomputed."""
    if getattr(model, "is_activation_checkpointing", None) is not None:
        if model.is_activation_checkpointing:
            model.activation_checkpointing_disable()
    elif getattr(model, "is_gradient_checkpointing", False):
        model.gradient_checkpointing_disable()
