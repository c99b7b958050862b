"""The embedding model of ``data fit --strategy extractive`` and ``data triplets``: loaded once, when first
needed, and its vectors scaled to unit length for cosine similarity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctxext.data.options import DEFAULT_MODEL


def as_encoder(encoder: Any, revision: str | None = None) -> Any:
    """``encoder`` itself, or the ``ctxext.encode.Encoder`` it names (a path or a name, a hub ID at
    ``revision``; None: the default)."""
    if encoder is None or isinstance(encoder, (str, Path)):
        from ctxext.encode import load_encoder

        return load_encoder(encoder or DEFAULT_MODEL, revision=revision)
    return encoder


class LazyEncoder:
    """Loads the encoder on first use, so a run that never needs it never loads a model."""

    def __init__(self, ref: str | Path, revision: str | None = None):
        self.ref = ref
        self.revision = revision
        self._loaded: Any = None

    def _encoder(self) -> Any:
        if self._loaded is None:
            self._loaded = as_encoder(self.ref, self.revision)
        return self._loaded

    @property
    def max_length(self) -> int:
        return self._encoder().max_length

    @property
    def folder(self) -> str | None:
        """The folder the encoder was read from (a hub snapshot names its commit); None until it is loaded."""
        folder = getattr(self._loaded, "folder", None)
        return str(folder.root) if folder is not None else None

    def encode(self, texts: list[str], **kwargs: Any) -> np.ndarray:
        return self._encoder().encode(texts, **kwargs)


def unit_rows(vectors: Any) -> np.ndarray:
    """float32 rows scaled to length 1 (an all-zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
