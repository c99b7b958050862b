"""Numeric checks that run a written model against its source (torch and transformers, imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctxext.compat import loading_info
from ctxext.errors import CheckFailed
from ctxext.manifest import Check


def load_model_strictly(model_dir: Path, model_class: Any = None, *, ignore_unexpected: Any = None, **kwargs: Any):
    """Load with transformers and fail on any missing, unexpected or mismatched weight.

    ``ignore_unexpected(name)``: unexpected tensors that are expected (those of layers a model loaded shallower
    leaves out). With no ``model_class``, the class the config names in ``architectures`` is used, so a pre-training or
    MLM head is loaded and checked too. AutoModel takes over only for what that class lacks: a folder of a
    base model's tensors (all-mpnet-base-v2 names MPNetForMaskedLM and has no head), or tensors of the base
    model the head class leaves out (``guide`` writes a pooler beside the MLM head).
    """
    from transformers import AutoModel

    named = model_class or _architecture_class(model_dir) or AutoModel
    model, problems = _load(model_dir, named, **kwargs)
    if ignore_unexpected is not None:  # tensors of layers a shallower model (config overrides) leaves out
        unexpected = [name for name in problems.pop("unexpected_keys", []) if not ignore_unexpected(name)]
        problems.update({"unexpected_keys": unexpected} if unexpected else {})
    if not problems:
        return model
    if model_class is None and named is not AutoModel:
        base, base_problems = _load(model_dir, AutoModel, **kwargs)
        if not base_problems:
            return base
        unused_by_head, unused_by_base = problems.get("unexpected_keys", []), base_problems.get("unexpected_keys", [])
        if set(problems) == set(base_problems) == {"unexpected_keys"} and not set(unused_by_head) & set(unused_by_base):
            return model
    shown = {key: sorted(value)[:5] for key, value in problems.items()}
    raise CheckFailed(f"{model_dir} does not load cleanly with {named.__name__}: {shown}")


def _architecture_class(model_dir: Path) -> Any:
    """The transformers model class named first in the config's ``architectures``, if it is one."""
    import transformers

    from ctxext.io import read_json

    config = read_json(Path(model_dir) / "config.json")
    names = config.get("architectures") if isinstance(config, dict) else None
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        return None
    found = getattr(transformers, names[0], None)
    return found if isinstance(found, type) and issubclass(found, transformers.PreTrainedModel) else None


def _load(model_dir: Path, model_class: Any, **kwargs: Any) -> tuple[Any, dict[str, list[str]]]:
    """The model in eval mode, and what did not load cleanly (missing, unexpected, mismatched weights)."""
    model, info = model_class.from_pretrained(
        model_dir, output_loading_info=True, **{"trust_remote_code": False, **kwargs}
    )
    return model.eval(), {key: value for key, value in loading_info(info).items() if value}


def random_batch(vocab_size: int, lengths: list[int], *, seed: int = 0, low: int = 1000) -> tuple[Any, Any]:
    """Token ids drawn at random (away from special ids), right-padded, with an attention mask."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    longest = max(lengths)
    input_ids = torch.zeros((len(lengths), longest), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(min(low, vocab_size - 1), vocab_size, (length,), generator=generator)
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


def last_hidden_state(model: Any, input_ids: Any, attention_mask: Any) -> np.ndarray:
    """Outputs at real (unpadded) positions, float64, padding rows zeroed."""
    import torch

    with torch.no_grad():  # a model with a head: the encoder's own outputs
        encoder = getattr(model, "base_model", model)
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return (hidden * attention_mask[..., None]).double().numpy()


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def matches_source(name: str, source: np.ndarray, output: np.ndarray, tolerance: float) -> Check:
    difference = max_abs_diff(source, output)
    return Check(
        name=name,
        value=difference,
        threshold=tolerance,
        passed=difference <= tolerance,
        detail="max abs diff of last hidden states",
    )


def agreement(name: str, source: np.ndarray, output: np.ndarray) -> Check:
    """How far outputs moved, for methods that are not meant to reproduce the source (no bound)."""
    return Check(
        name=name,
        value=max_abs_diff(source, output),
        detail="max abs diff of last hidden states; information only, this method changes short inputs too",
    )


def finite_outputs(name: str, outputs: np.ndarray) -> Check:
    finite = bool(np.isfinite(outputs).all())
    return Check(
        name=name,
        value=float(outputs.shape[1]),
        passed=finite,
        detail="all outputs finite" if finite else "non-finite outputs",
    )
