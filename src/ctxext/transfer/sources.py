"""What a transfer reads: a preset (a base model and named adapters) or a BERT-family model, and its adapters,
all found before any work starts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ctxext.bottleneck import ADAPTER_CONFIG, ADAPTER_WEIGHTS_BIN, ADAPTER_WEIGHTS_SAFETENSORS, AdapterFolder
from ctxext.errors import InvalidArgument, SourceNotFound
from ctxext.io import ModelFolder, Source, resolve_source


@dataclass(frozen=True)
class Preset:
    """A source made of a base model and named adapters, each a hub ID a user may point elsewhere."""

    name: str
    base: str
    adapters: dict[str, str]


PRESETS = {
    "specter2": Preset(
        "specter2",
        "allenai/specter2_base",
        {
            "proximity": "allenai/specter2",
            "adhoc_query": "allenai/specter2_adhoc_query",
            "classification": "allenai/specter2_classification",
            "regression": "allenai/specter2_regression",
        },
    )
}
ADAPTER_FILES = [ADAPTER_CONFIG, ADAPTER_WEIGHTS_BIN, ADAPTER_WEIGHTS_SAFETENSORS, "head_config.json"]


@dataclass
class SourceAdapter:
    """An adapter to transfer: the name it gets in the output and where it was found."""

    name: str
    source: Source
    folder: AdapterFolder


@dataclass
class TransferSources:
    model: Source
    folder: ModelFolder
    adapters: list[SourceAdapter] = field(default_factory=list)


def parse_named(values: list[str] | tuple[str, ...], what: str) -> list[tuple[str | None, str]]:
    """``NAME=REF`` or ``REF`` items as (name or None, ref)."""
    parsed: list[tuple[str | None, str]] = []
    for value in values:
        name, sep, ref = value.partition("=")
        if sep and name and "/" not in name and ref:
            parsed.append((name, ref))
        elif sep:
            raise InvalidArgument(f"{what} {value!r}: expected NAME=PATH_OR_HUB_ID")
        else:
            parsed.append((None, value))
    return parsed


def resolve_sources(
    ref: str,
    *,
    base: str | None = None,
    adapter_paths: dict[str, str] | None = None,
    extra_adapters: list[tuple[str | None, str]] | None = None,
    revision: str | None = None,
) -> TransferSources:
    """Find every part before any work starts; report every part that is missing in one line."""
    preset = PRESETS.get(ref)
    wanted = _wanted_parts(ref, preset, base, dict(adapter_paths or {}), extra_adapters or [])
    resolved = _resolve_parts(wanted, revision, preset)
    model_source = resolved[0]
    sources = TransferSources(model=model_source, folder=ModelFolder.open(model_source.path))
    names: set[str] = set()
    for (_, name, _), source in zip(wanted[1:], resolved[1:], strict=True):
        folder = AdapterFolder.open(source.path)
        out_name = safe_adapter_name(name or folder.stored_name)
        if out_name in names:
            raise InvalidArgument(f"two adapters would be called {out_name!r}; name them with --adapter NAME=PATH")
        names.add(out_name)
        sources.adapters.append(SourceAdapter(out_name, source, folder))
    return sources


def _wanted_parts(
    ref: str,
    preset: Preset | None,
    base: str | None,
    adapter_paths: dict[str, str],
    extra_adapters: list[tuple[str | None, str]],
) -> list[tuple[str, str | None, str]]:
    """(what, output name, ref) of every part: the model (a preset's base) first, then each adapter."""
    if preset is None and (base or adapter_paths):
        raise InvalidArgument(
            f"--base and --adapter-path point the parts of a preset ({', '.join(PRESETS)}); "
            f"{ref!r} is not one: give its adapters with --adapter"
        )
    unknown = sorted(set(adapter_paths) - set(preset.adapters if preset else ()))
    if unknown and preset is not None:
        raise InvalidArgument(
            f"{preset.name} has no adapter {unknown[0]!r}; its adapters: {', '.join(preset.adapters)}"
        )
    wanted: list[tuple[str, str | None, str]] = []
    model_ref = (base or preset.base) if preset else ref
    wanted.append((f"{preset.name} base model" if preset else "model", None, model_ref))
    if preset:
        for role, hub_id in preset.adapters.items():
            wanted.append((f"{preset.name} adapter {role}", role, adapter_paths.get(role, hub_id)))
    for name, adapter_ref in extra_adapters:
        wanted.append(("adapter", name, adapter_ref))
    return wanted


def _resolve_parts(
    wanted: list[tuple[str, str | None, str]], revision: str | None, preset: Preset | None
) -> list[Source]:
    """Every part as a local source; the parts that are missing are reported together, in one line."""
    resolved: list[Source] = []
    missing: list[tuple[str, SourceNotFound]] = []
    for what, _, part_ref in wanted:
        patterns = None if what.endswith("model") else ADAPTER_FILES
        try:
            part_revision = revision if what.endswith("model") else None  # --revision is the model's
            resolved.append(resolve_source(part_ref, revision=part_revision, allow_patterns=patterns, what=what))
        except SourceNotFound as error:
            missing.append((f"{what} {part_ref!r}", error))
    if len(wanted) == 1 and missing:
        raise missing[0][1]
    if missing:
        hint = (
            "point the parts at local folders with --base / --adapter-path ROLE=PATH"
            if preset
            else "pass local folders"
        )
        if _offline():
            parts = "; ".join(label for label, _ in missing)
            reason = "HF_HUB_OFFLINE is set and they are neither local folders nor in the Hugging Face cache"
        else:
            parts = "; ".join(str(error) for _, error in missing)
            reason = "they could not be found or fetched"
        raise SourceNotFound(
            f"missing {len(missing)} of {len(wanted)} parts ({reason}): {parts}; download them once online or {hint}"
        )
    return resolved


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def safe_adapter_name(name: str) -> str:
    """An adapter name that is also a folder name and a module name (no dots): SPECTER2's ``[PRX]`` becomes
    ``PRX``."""
    cleaned = re.sub(r"[^\w-]+", "_", name).strip("_")
    if not cleaned:
        raise InvalidArgument(f"adapter name {name!r} has no usable characters; name it with --adapter NAME=PATH")
    return cleaned
