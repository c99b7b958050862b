"""ctxext: transformer checkpoint surgery and context extension."""

from __future__ import annotations

__version__ = "0.1.0"
