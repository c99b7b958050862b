"""The sentence-transformers folder format, read and written here only, and the pooling it declares.

A sentence-transformers folder is a transformers model plus a pipeline of modules: ``modules.json`` lists them
(``Transformer``, ``Pooling``, ``Normalize``, ...), ``sentence_bert_config.json`` holds ``max_seq_length``, the
Pooling module's ``config.json`` one ``pooling_mode_*`` flag per pooling, and ``config_sentence_transformers.json``
the library versions it was saved with. :func:`pool` computes the poolings ctxext offers the way
sentence-transformers does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ctxext.errors import InvalidArgument
from ctxext.io import ModelFolder, read_json, update_json

MODULES_FILE = "modules.json"
SENTENCE_CONFIG = "sentence_bert_config.json"
LIBRARY_CONFIG = "config_sentence_transformers.json"
POOLING_DIR = "1_Pooling"


class Pooling(str, Enum):
    """How token states become one embedding."""

    cls = "cls"
    mean = "mean"
    max = "max"
    last = "last"


POOLINGS = tuple(pooling.value for pooling in Pooling)

MODE_KEY = {
    Pooling.cls: "pooling_mode_cls_token",
    Pooling.mean: "pooling_mode_mean_tokens",
    Pooling.max: "pooling_mode_max_tokens",
    Pooling.last: "pooling_mode_lasttoken",
}
"""The Pooling module's flag of each pooling."""

POOLING_MODE_KEYS = (
    "pooling_mode_cls_token",
    "pooling_mode_mean_tokens",
    "pooling_mode_max_tokens",
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
"""Every flag of the Pooling module's config, in the order sentence-transformers saves them."""
CLASSIC_MODE_KEYS = POOLING_MODE_KEYS[:4]
"""The four flags of the first sentence-transformers releases (cls, mean, max, mean_sqrt_len), which guide and
the training stages write."""


def pooling_of(value: Pooling | str) -> Pooling:
    """The :class:`Pooling` named ``value`` (an enum member or its value; flip's choices are such values)."""
    try:
        return Pooling(value)
    except ValueError:
        raise InvalidArgument(f"unknown pooling {value!r}; choose one of {', '.join(POOLINGS)}") from None


# ----------------------------------------------------------------------------- pooling


def pool(hidden: Any, attention_mask: Any, pooling: Pooling | str) -> Any:
    """Pool token states (batch, length, width) into one vector per sequence; padded positions never count.
    ``last`` takes each row's last 1 in the mask, as sentence-transformers' lasttoken pooling does: the last real
    token whichever side the row is padded on (training pads as its tokenizer does, often on the left for
    decoders)."""
    import torch

    pooling = pooling_of(pooling)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    if pooling == Pooling.cls:
        return hidden[:, 0]
    if pooling == Pooling.mean:
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    if pooling == Pooling.max:
        return hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    last = attention_mask.shape[1] - 1 - attention_mask.flip(1).float().argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Module:
    """One entry of ``modules.json``: its kind (the class name: ``Pooling``) and its folder, relative to the
    root (``""`` for the root itself)."""

    kind: str
    path: str
    entry: dict[str, Any]


def read_modules(root: Path) -> list[Module]:
    """The modules ``root/modules.json`` lists, in order."""
    return [
        Module(entry.get("type", "").rsplit(".", 1)[-1], entry.get("path", ""), entry)
        for entry in read_json(root / MODULES_FILE)
    ]


@dataclass(frozen=True)
class SentenceSettings:
    """What a sentence-transformers folder declares: its pooling, whether it normalises, its max_seq_length
    (None, False, None for a plain transformers folder)."""

    pooling: Pooling | None = None
    normalize: bool = False
    max_seq_length: int | None = None


def read_settings(folder: ModelFolder) -> SentenceSettings:
    """The pooling (the first of cls, mean, max, last whose flag is set; mean when none of those is),
    normalisation and max_seq_length of ``folder``."""
    if not folder.sentence_transformers:
        return SentenceSettings()
    pooling, normalize = None, False
    for module in read_modules(folder.root):
        if module.kind == "Pooling":
            flags = read_json(folder.root / module.path / "config.json")
            pooling = next((name for name in Pooling if flags.get(MODE_KEY[name])), Pooling.mean)
        elif module.kind == "Normalize":
            normalize = True
    sentence_config = folder.model_dir / SENTENCE_CONFIG
    max_seq_length = read_json(sentence_config).get("max_seq_length") if sentence_config.is_file() else None
    return SentenceSettings(pooling, normalize, max_seq_length)


# ----------------------------------------------------------------------------- writing


def sentence_transformers_files(
    pooling: Pooling | str,
    dimension: int,
    max_seq_length: int,
    *,
    mode_keys: Sequence[str] = POOLING_MODE_KEYS,
    library_config: bool = True,
) -> dict[str, Any]:
    """The files (relative path -> JSON content) that make a transformers folder at the root a
    sentence-transformers model: ``modules.json`` (Transformer, then Pooling), ``sentence_bert_config.json`` and
    the Pooling module's config with ``pooling`` on.

    ``mode_keys`` are the pooling flags written (all false but ``pooling``'s; sentence-transformers reads a
    missing one as false). ``library_config`` adds ``include_prompt`` to the Pooling config and writes
    ``config_sentence_transformers.json`` (versions, prompts, similarity), as sentence-transformers 3 and later
    save a model. ``flip`` writes everything; guide and the training stages write the shorter form they always
    have, which loads the same."""
    pooling = pooling_of(pooling)
    if MODE_KEY[pooling] not in mode_keys:
        raise InvalidArgument(f"{pooling.value} pooling needs {MODE_KEY[pooling]} among the flags written")
    pooling_config: dict[str, Any] = {"word_embedding_dimension": dimension}
    pooling_config.update((key, key == MODE_KEY[pooling]) for key in mode_keys)
    if library_config:
        pooling_config["include_prompt"] = True
    files: dict[str, Any] = {
        MODULES_FILE: [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": POOLING_DIR, "type": "sentence_transformers.models.Pooling"},
        ],
        SENTENCE_CONFIG: {"max_seq_length": max_seq_length, "do_lower_case": False},
        f"{POOLING_DIR}/config.json": pooling_config,
    }
    if library_config:
        files[LIBRARY_CONFIG] = {
            "__version__": library_versions(),
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        }
    return files


def library_versions() -> dict[str, str]:
    """The ``__version__`` of ``config_sentence_transformers.json``: the libraries this process writes with
    (read from package metadata: importing them would cost seconds); one not installed is left out."""
    from importlib import metadata

    versions = {}
    for key, package in (
        ("sentence_transformers", "sentence-transformers"),
        ("transformers", "transformers"),
        ("pytorch", "torch"),
    ):
        try:
            versions[key] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def refresh_library_versions(root: Path) -> None:
    """A copied ``config_sentence_transformers.json`` names the library versions the source was saved with;
    the output was written with these."""
    path = root / LIBRARY_CONFIG
    if path.is_file():
        update_json(path, __version__=library_versions())
