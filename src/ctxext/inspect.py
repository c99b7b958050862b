"""What a checkpoint is: architecture, positions, size, dtypes, adapters and its manifest, without torch."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.architectures import LEARNED, ROPE, is_buffer, position_scheme
from ctxext.errors import CtxextError
from ctxext.io import CheckpointReader, open_model, read_json
from ctxext.manifest import read_manifest
from ctxext.positions import learned_layout
from ctxext.sentence_folder import read_modules


@dataclass
class Description:
    """What ``describe`` found, shown as a table titled with the checkpoint."""

    ref: str
    facts: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return self.facts

    @property
    def title(self) -> str:
        return f"inspect {self.ref}"


def describe(ref: str, *, revision: str | None = None) -> Description:
    source, folder = open_model(ref, revision=revision)
    config = folder.config
    reader = CheckpointReader(folder)
    shapes = {name: info.shape for name, info in reader.infos.items()}
    parameters = sum(math.prod(info.shape) for name, info in reader.infos.items() if not is_buffer(name))
    return Description(
        ref,
        {
            "path": str(source.path),
            **({"revision": source.revision, "commit": source.commit} if source.revision else {}),
            "architecture": (config.get("architectures") or [config.get("model_type")])[0],
            "model_type": config.get("model_type"),
            "positions": _positions(config, shapes),
            "parameters": parameters,
            "dtypes": dict(Counter(info.dtype for info in reader.infos.values())),
            "weight_files": [str(path.relative_to(folder.root)) for path in reader.files],
            "sentence_transformers": _sentence_transformers_modules(folder.root)
            if folder.sentence_transformers
            else None,
            "adapters": _adapters(folder.root),
            "manifest": _manifest_summary(folder.root),
        },
    )


def _positions(config: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    try:
        kind = position_scheme(config)
    except CtxextError as error:
        return {"kind": "unknown", "detail": str(error)}
    if kind == LEARNED:
        layout = learned_layout(config, shapes, None)
        return {"kind": "learned absolute", "length": layout.length, "offset": layout.offset, "rows": layout.rows}
    if kind == ROPE:
        return {
            "kind": "rope",
            "length": config.get("max_position_embeddings"),
            "rope_scaling": config.get("rope_scaling"),
        }
    return {"kind": kind, "length": config.get("max_position_embeddings")}


def _sentence_transformers_modules(root: Path) -> list[str]:
    return [module.kind or "?" for module in read_modules(root)]


def _adapters(root: Path) -> list[dict[str, Any]]:
    found = []
    for config_path in sorted(root.rglob("adapter_config.json")):
        adapter = read_json(config_path)
        inner = adapter.get("config", {}) if isinstance(adapter.get("config"), dict) else {}
        found.append(
            {
                "name": adapter.get("name", config_path.parent.name),
                "folder": str(config_path.parent.relative_to(root)),
                "type": inner.get("architecture") or inner.get("arch") or adapter.get("type", "?"),
            }
        )
    return found


def _manifest_summary(root: Path) -> dict[str, Any] | None:
    try:
        manifest = read_manifest(root)
    except CtxextError:
        return None
    checks = [check for op in manifest.get("operations", []) for check in op.get("checks", [])]
    return {
        "ctxext_version": manifest.get("ctxext_version"),
        "command": manifest.get("command"),
        "created": manifest.get("created"),
        "sources": {role: s.get("ref") for role, s in manifest.get("sources", {}).items()},
        "operations": [
            {"name": op["name"], **{k: len(op.get(k, [])) for k in ("copied", "modified", "created", "dropped")}}
            for op in manifest.get("operations", [])
        ],
        "checks_passed": sum(bool(c.get("passed")) for c in checks),
        "checks_failed": sum(not c.get("passed") for c in checks),
        "tensors": len(manifest.get("tensors", {})),
    }
