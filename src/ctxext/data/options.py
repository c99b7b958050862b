"""The choices and defaults of the ``ctxext data`` commands, as Enums the CLI types its options with.

This module imports nothing but the standard library, so the CLI can import it when it starts.
"""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from ctxext.errors import InvalidArgument

DEFAULT_MODEL = "all-MiniLM-L6-v2"
"""The embedded checkpoint whose tokenizer counts tokens and whose encoder embeds, unless told otherwise."""


class InputFormat(str, Enum):
    """How a source file is read (``--format``), whatever its suffix."""

    txt = "txt"
    md = "md"
    jsonl = "jsonl"
    parquet = "parquet"
    pdf = "pdf"


class OutputFormat(str, Enum):
    parquet = "parquet"
    jsonl = "jsonl"


class OnError(str, Enum):
    """``stop``: a bad file or record stops the run; ``skip``: it is reported and the rest is read."""

    stop = "stop"
    skip = "skip"


class Strategy(str, Enum):
    """How ``data fit`` makes a document fit its budget."""

    head = "head"
    head_tail = "head-tail"
    extractive = "extractive"


class Queries(str, Enum):
    """Which queries ``data triplets`` makes: one kind, or titles and sections (``both``); each query's kind."""

    titles = "title"
    sections = "section"
    both = "both"
    passages = "passage"
    summaries = "summary"


class NegativesFrom(str, Enum):
    """Where ``data triplets`` takes each hard negative from."""

    embedding = "embedding"
    bm25 = "bm25"
    swap = "swap"


Choice = TypeVar("Choice", bound=Enum)


def choices(kind: type[Enum]) -> str:
    """``a, b, c``: the values of an Enum, for messages."""
    return ", ".join(member.value for member in kind)


def parse_choice(kind: type[Choice], value: str | Choice, message: str) -> Choice:
    """``value`` as a member of ``kind``; otherwise an InvalidArgument from ``message``, a template that
    may name ``{value!r}`` (what was given) and ``{choices}`` (what may be)."""
    try:
        return kind(value)
    except ValueError:
        raise InvalidArgument(message.format(value=value, choices=choices(kind))) from None


def plain(value: Enum | object) -> object:
    """What a manifest records of an option: an Enum member's value, anything else as it is."""
    return value.value if isinstance(value, Enum) else value
