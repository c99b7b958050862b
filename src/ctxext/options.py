"""Options objects given with keywords: an operation that takes a frozen options dataclass also takes its fields
as keywords (``guide(teacher, out, dim=384, layers=6)``), laid over the object (or over the defaults)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

OptionsT = TypeVar("OptionsT")


def with_fields(
    options_class: type[OptionsT], options: OptionsT | None, fields: dict[str, Any], caller: str
) -> OptionsT:
    """``options`` (default: ``options_class()``) with ``fields`` over it; a keyword that is not a field of
    ``options_class`` is a ``TypeError``, as for any unknown keyword."""
    names = {field.name for field in dataclasses.fields(options_class)}  # type: ignore[arg-type]
    unknown = set(fields) - names
    if unknown:
        raise TypeError(f"{caller}() got unexpected keyword arguments {sorted(unknown)}")
    if options is None:
        return options_class(**fields)
    return dataclasses.replace(options, **fields)  # type: ignore[type-var]
