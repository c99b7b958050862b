"""Provenance of every output: what went in, what each operation did, and a hash of every tensor.

Each operation returns an :class:`OperationRecord`; the manifest is those records written down beside
the weights, together with per-tensor sha256 (hashes of the tensor bytes, not of the file, because
safetensors metadata order is not stable).
"""

from __future__ import annotations

import math
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from ctxext import __version__
from ctxext.errors import CheckFailed, CorruptCheckpoint, SourceNotFound
from ctxext.io import (
    MANIFEST_NAME,
    SafetensorsFile,
    Source,
    WrittenTensor,
    WrittenWeights,
    read_json,
    tensor_sha256,
    write_json,
)

TRACKED_LIBRARIES = (
    "numpy",
    "scipy",
    "safetensors",
    "torch",
    "transformers",
    "adapters",
    "sentence-transformers",
    "huggingface-hub",
    "tokenizers",
    "accelerate",
    "pyarrow",
)


@dataclass
class Check:
    """A numeric check: what was measured, the bound it had to meet, and whether it did."""

    name: str
    value: float
    threshold: float | None = None
    passed: bool = True
    detail: str = ""

    def __post_init__(self) -> None:
        if self.threshold is not None and not math.isfinite(self.value):  # NaN compares as "within" any bound
            self.passed = False


@dataclass
class OperationRecord:
    """What one operation did, tensor by tensor."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    config_changes: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def require(self, check: Check) -> Check:
        """Record a check and fail the operation if it did not pass."""
        self.checks.append(check)
        require_passed([check])
        return check

    def summary(self) -> dict[str, int]:
        return {key: len(getattr(self, key)) for key in ("copied", "modified", "created", "dropped", "renamed")}


def require_passed(checks: Iterable[Check], *, bound: bool = True, detail: bool = True) -> None:
    """Raise :class:`~ctxext.errors.CheckFailed` naming the first check that did not pass: its name, value, bound
    (where it has one) and detail; ``bound`` / ``detail`` False leave those out."""
    failed = next((check for check in checks if not check.passed), None)
    if failed is None:
        return
    shown_bound = f" (bound {failed.threshold:g})" if bound and failed.threshold is not None else ""
    shown_detail = failed.detail if detail else ""
    raise CheckFailed(f"check {failed.name} failed: {failed.value:g}{shown_bound} {shown_detail}".strip())


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def build_manifest(
    *,
    command: str,
    options: dict[str, Any],
    sources: Mapping[str, tuple[Source, Mapping[str, str]]],
    operations: list[OperationRecord],
    weights: WrittenWeights,
    weights_dir: str = ".",
    argv: list[str] | None = None,
    extra_weights: dict[str, dict[str, WrittenTensor]] | None = None,
) -> dict[str, Any]:
    """The manifest as a JSON-ready dict. ``sources`` maps a role (``model``, ``teacher``...) to its
    source and the sha256 of its weight files."""
    return {
        **manifest_header(command, argv),
        "options": _jsonable(options),
        "sources": {
            role: {**source.describe(), "weight_files_sha256": dict(hashes)}
            for role, (source, hashes) in sources.items()
        },
        "operations": [_jsonable(asdict(op)) for op in operations],
        "weights": {"dir": weights_dir, "files": weights.files},
        "tensors": {name: asdict(record) for name, record in sorted(weights.tensors.items())},
        "extra_weights": {
            path: {name: asdict(record) for name, record in sorted(tensors.items())}
            for path, tensors in sorted((extra_weights or {}).items())
        },
    }


def manifest_header(command: str, argv: list[str] | None = None) -> dict[str, Any]:
    """What every ctxext manifest starts with, model folder or file: the version, when, the command and its
    command line, and the libraries (``--force`` recognises a previous ctxext output by these)."""
    return {
        "ctxext_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "argv": list(sys.argv if argv is None else argv),
        "libraries": library_versions(),
    }


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    path = Path(folder) / MANIFEST_NAME
    write_json(path, manifest, sort_keys=True)
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise SourceNotFound(f"{folder} has no {MANIFEST_NAME}: it was not written by ctxext")
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise CorruptCheckpoint(f"{path} is malformed: not a JSON object")
    return manifest


def recorded_operations(folder: Path) -> list[dict[str, Any]]:
    """The operations a folder's ctxext manifest records; none for a folder without a readable one."""
    try:
        return list(read_manifest(folder).get("operations") or [])
    except (SourceNotFound, CorruptCheckpoint):
        return []


@dataclass
class VerifyResult:
    tensors_checked: int
    files: list[str]

    title = "verify"
    view = "verified"

    def summary(self) -> dict[str, Any]:
        return {"ok": True, "tensors": self.tensors_checked, "files": self.files}


def check_verdicts(checks: list[dict[str, Any]]) -> dict[str, str]:
    """Recorded checks as ``name -> "passed (value)"`` (or ``FAILED``), for summaries."""
    return {c["name"]: ("passed" if c["passed"] else "FAILED") + f" ({c['value']:.3g})" for c in checks}


def written_summary(output: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """What a written folder's manifest says: each operation's tensor counts, the config changes, the checks."""
    operations = manifest["operations"]
    return {
        "output": str(output),
        "operations": [
            {"name": op["name"], **{key: len(op[key]) for key in ("copied", "modified", "created", "dropped")}}
            for op in operations
        ],
        "config_changes": {k: v for op in operations for k, v in op["config_changes"].items()},
        "checks": [
            {"name": c["name"], "value": c["value"], "threshold": c["threshold"], "passed": c["passed"]}
            for op in operations
            for c in op["checks"]
        ],
    }


def verify(folder: Path) -> VerifyResult:
    """Re-hash every tensor against the manifest; raise naming the first tensor that differs."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    try:
        weights_dir = folder / manifest["weights"]["dir"]
        files = [weights_dir / name for name in manifest["weights"]["files"]]
        tensors, extra = dict(manifest["tensors"]), dict(manifest.get("extra_weights", {}))
        if not all(isinstance(r, dict) and {"dtype", "shape", "sha256"} <= set(r) for r in tensors.values()):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise CorruptCheckpoint(
            f"{folder / MANIFEST_NAME} is malformed: it lacks the weights and tensors sections ctxext writes"
        ) from None
    checked = _verify_files(files, tensors, folder)
    for relative, expected in extra.items():
        checked += _verify_files([folder / relative], expected, folder)
        files.append(folder / relative)
    return VerifyResult(tensors_checked=checked, files=[str(p.relative_to(folder)) for p in files])


def _verify_files(paths: list[Path], expected: dict[str, Any], folder: Path) -> int:
    seen: set[str] = set()
    for path in paths:
        file_name = path.relative_to(folder).as_posix()
        if not path.is_file():
            raise CheckFailed(f"weight file {file_name} listed in the manifest is missing")
        try:
            shard = SafetensorsFile(path)
        except CorruptCheckpoint as error:
            raise CheckFailed(f"verify failed: {error}") from None
        for info in shard.infos():
            record = expected.get(info.name)
            if record is None:
                raise CheckFailed(f"tensor {info.name} in {file_name} is not in the manifest")
            if [info.dtype, list(info.shape)] != [record["dtype"], record["shape"]]:
                raise CheckFailed(
                    f"tensor {info.name}: dtype/shape {info.dtype}{list(info.shape)} differ from "
                    f"the manifest's {record['dtype']}{record['shape']}"
                )
            if tensor_sha256(shard.chunks(info.name)) != record["sha256"]:
                raise CheckFailed(f"tensor {info.name} in {file_name} does not match its sha256 in the manifest")
            seen.add(info.name)
    missing = sorted(set(expected) - seen)
    if missing:
        raise CheckFailed(f"tensor {missing[0]} is in the manifest but in no weight file")
    return len(seen)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
