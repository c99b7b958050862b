"""`ctxext average`: the uniform mean of checkpoints fine-tuned from one starting point (a model soup,
Wortsman et al. 2022), streamed one tensor at a time. Configs must agree and tensors must match by name,
dtype and shape; integer tensors (buffers) must be equal and are copied."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.checkpoint import OutputPlan, OutputResult, ProgressFn, no_progress, source_config, write_model_folder
from ctxext.errors import CheckFailed, InvalidArgument
from ctxext.io import (
    CheckpointReader,
    ModelFolder,
    OutTensor,
    array_to_bytes,
    bytes_to_array,
    open_model,
    tensor_sha256,
)
from ctxext.manifest import Check, OperationRecord

FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
# Config keys that say how a checkpoint was saved, not what it is.
BOOKKEEPING_CONFIG_KEYS = frozenset({"_name_or_path", "transformers_version", "torch_dtype", "dtype"})


def average(
    refs: Sequence[str | Path],
    out: str | Path,
    *,
    revision: str | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> OutputResult:
    """Write the element-wise mean of ``refs`` to ``out``; support files come from the first. ``revision``
    applies to every hub source (local folders have none)."""
    if len(refs) < 2:
        raise InvalidArgument("average needs two checkpoints or more")
    opened = [open_model(ref, revision=revision) for ref in refs]
    readers = [CheckpointReader(folder) for _, folder in opened]
    config = source_config(opened[0][1])
    for ref, (_, folder), reader in zip(refs[1:], opened[1:], readers[1:], strict=True):
        _require_same_model(str(refs[0]), config, readers[0], str(ref), source_config(folder), reader)
    infos = readers[0].infos
    record = OperationRecord(
        "average",
        parameters={"checkpoints": [str(r) for r in refs], "weights": "uniform"},
        modified=[n for n, info in infos.items() if info.dtype in FLOAT_DTYPES],
        copied=[n for n, info in infos.items() if info.dtype not in FLOAT_DTYPES],
    )
    means = WrittenMeans(readers)
    tensors = [OutTensor(info, functools.partial(means.encoded_chunks, name)) for name, info in infos.items()]
    sources = {
        f"checkpoint_{i}": (source, reader.sha256_of_files_in_background())
        for i, ((source, _), reader) in enumerate(zip(opened, readers, strict=True))
    }
    options = {"refs": [str(r) for r in refs]}
    plan = OutputPlan("average", options, sources, tensors, [record], config, None, opened[0][1])
    return write_model_folder(plan, out, force=force, progress=progress, argv=argv, checks=means.check)


def _require_same_model(
    first_ref: str,
    first_config: dict[str, Any],
    first: CheckpointReader,
    ref: str,
    config: dict[str, Any],
    reader: CheckpointReader,
) -> None:
    differing = sorted(
        key
        for key in (set(first_config) | set(config)) - BOOKKEEPING_CONFIG_KEYS
        if first_config.get(key) != config.get(key)
    )
    if differing:
        raise InvalidArgument(f"{ref}: config differs from {first_ref}'s in {', '.join(differing[:4])}")
    missing = [n for n in first.names if n not in reader.infos] + [n for n in reader.names if n not in first.infos]
    if missing:
        raise InvalidArgument(f"{ref} and {first_ref} hold different tensors (first: {missing[0]})")
    for name, info in first.infos.items():
        other = reader.infos[name]
        if (other.dtype, other.shape) != (info.dtype, info.shape):
            raise InvalidArgument(
                f"{name}: {info.dtype} {list(info.shape)} in {first_ref} but {other.dtype} {list(other.shape)} in {ref}"
            )


ROWS_PER_BLOCK = 4096  # rows of a tensor compared at a time, so the check's float64 copies stay small


def _mean(readers: list[CheckpointReader], name: str) -> np.ndarray:
    """The float64 mean, accumulated one input at a time (never every input in memory at once); integer
    tensors must be equal and are returned as they are."""
    if readers[0].infos[name].dtype not in FLOAT_DTYPES:
        first = readers[0].array(name)
        if any(not np.array_equal(first, reader.array(name)) for reader in readers[1:]):
            raise InvalidArgument(f"{name}: integer tensor differs between checkpoints; it cannot be averaged")
        return first
    total = readers[0].array(name).astype(np.float64)
    for reader in readers[1:]:
        total += reader.array(name)
    total /= len(readers)
    return total


class WrittenMeans:
    """Produces each tensor's mean in its dtype, measuring on the way how far the stored values are from the
    float64 mean; the check then reads the written file back against the bytes produced, so the inputs are
    read once, not twice."""

    def __init__(self, readers: list[CheckpointReader]):
        self.readers = readers
        self.error = 0.0
        self.produced: dict[str, str] = {}

    def encoded_chunks(self, name: str) -> list[bytes | memoryview]:
        return [self.encoded(name)]

    def encoded(self, name: str) -> bytes:
        info = self.readers[0].infos[name]
        mean = _mean(self.readers, name)
        data = array_to_bytes(mean, info.dtype)
        stored = bytes_to_array(data, info.dtype, info.shape)
        for start in range(0, max(len(mean), 1), ROWS_PER_BLOCK):
            difference = (
                stored[start : start + ROWS_PER_BLOCK].astype(np.float64) - mean[start : start + ROWS_PER_BLOCK]
            )
            if not np.isfinite(difference).all():
                raise CheckFailed(f"{name}: the average holds NaN or infinite values (so does an input checkpoint)")
            self.error = max(self.error, float(np.abs(difference).max(initial=0.0)))
        self.produced[name] = hashlib.sha256(data).hexdigest()
        return data

    def check(self, staging: Path) -> list[Check]:
        written = CheckpointReader(ModelFolder.open(staging))
        differing = [name for name in written.names if tensor_sha256(written.chunks(name)) != self.produced[name]]
        if differing:
            raise CheckFailed(f"written tensor {differing[0]} differs from the mean that was computed")
        bound = 1e-2 if any(i.dtype in {"F16", "BF16"} for i in written.infos.values()) else 1e-6
        if self.error > bound:
            raise CheckFailed(f"written tensors differ from the mean of the inputs by {self.error:g} (bound {bound:g})")
        return [
            Check(
                "max_abs_error_vs_mean",
                self.error,
                bound,
                detail="written tensors against the float64 mean (read back from the written file)",
            )
        ]
