"""`ctxext average`: the uniform mean of checkpoints fine-tuned from one starting point (a model soup,
Wortsman et al. 2022), streamed one tensor at a time. Configs must agree and tensors must match by name,
dtype and shape; integer tensors (buffers) must be equal and are copied."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.checkpoint import OutputPlan, OutputResult, ProgressFn, no_progress, source_config, write_model_folder
from ctxext.errors import CheckFailed, InvalidArgument
from ctxext.io import CheckpointReader, ModelFolder, OutTensor, open_model
from ctxext.manifest import Check, OperationRecord

FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
# Config keys that say how a checkpoint was saved, not what it is.
BOOKKEEPING_CONFIG_KEYS = frozenset({"_name_or_path", "transformers_version", "torch_dtype", "dtype"})


def average(
    refs: Sequence[str | Path],
    out: str | Path,
    *,
    force: bool = False,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> OutputResult:
    """Write the element-wise mean of ``refs`` to ``out``; support files come from the first."""
    if len(refs) < 2:
        raise InvalidArgument("average needs two checkpoints or more")
    opened = [open_model(ref) for ref in refs]
    readers = [CheckpointReader(folder) for _, folder in opened]
    config = source_config(opened[0][1])
    for ref, (_, folder), reader in zip(refs[1:], opened[1:], readers[1:], strict=True):
        _require_same_model(str(refs[0]), config, readers[0], str(ref), source_config(folder), reader)
    infos = readers[0].infos
    record = OperationRecord("average", parameters={"checkpoints": [str(r) for r in refs], "weights": "uniform"},
                             modified=[n for n, info in infos.items() if info.dtype in FLOAT_DTYPES],
                             copied=[n for n, info in infos.items() if info.dtype not in FLOAT_DTYPES])
    tensors = [OutTensor.computed(info, lambda name=name: _mean(readers, name)) for name, info in infos.items()]
    sources = {f"checkpoint_{i}": (source, reader.sha256_of_files_in_background())
               for i, ((source, _), reader) in enumerate(zip(opened, readers, strict=True))}
    options = {"refs": [str(r) for r in refs]}
    plan = OutputPlan("average", options, sources, tensors, [record], config, None, opened[0][1])
    return write_model_folder(plan, out, force=force, progress=progress, argv=argv,
                              checks=lambda staging: [_written_mean_check(readers, staging)])


def _require_same_model(first_ref: str, first_config: dict[str, Any], first: CheckpointReader, ref: str,
                        config: dict[str, Any], reader: CheckpointReader) -> None:
    differing = sorted(key for key in (set(first_config) | set(config)) - BOOKKEEPING_CONFIG_KEYS
                       if first_config.get(key) != config.get(key))
    if differing:
        raise InvalidArgument(f"{ref}: config differs from {first_ref}'s in {', '.join(differing[:4])}")
    missing = [n for n in first.names if n not in reader.infos] + [n for n in reader.names if n not in first.infos]
    if missing:
        raise InvalidArgument(f"{ref} and {first_ref} hold different tensors (first: {missing[0]})")
    for name, info in first.infos.items():
        other = reader.infos[name]
        if (other.dtype, other.shape) != (info.dtype, info.shape):
            raise InvalidArgument(f"{name}: {info.dtype} {list(info.shape)} in {first_ref} but {other.dtype} "
                                  f"{list(other.shape)} in {ref}")


def _mean(readers: list[CheckpointReader], name: str) -> np.ndarray:
    arrays = [reader.array(name) for reader in readers]
    if readers[0].infos[name].dtype in FLOAT_DTYPES:
        return np.mean([a.astype(np.float64) for a in arrays], axis=0)
    if any(not np.array_equal(arrays[0], a) for a in arrays[1:]):
        raise InvalidArgument(f"{name}: integer tensor differs between checkpoints; it cannot be averaged")
    return arrays[0]


def _written_mean_check(readers: list[CheckpointReader], staging: Path) -> Check:
    """Read the written tensors back, one at a time, against the mean in float64."""
    written = CheckpointReader(ModelFolder.open(staging))
    error = 0.0
    for name in written.names:
        difference = written.array(name).astype(np.float64) - _mean(readers, name)
        if not np.isfinite(difference).all():
            raise CheckFailed(f"{name}: the average holds NaN or infinite values (so does an input checkpoint)")
        error = max(error, float(np.abs(difference).max(initial=0.0)))
    bound = 1e-2 if any(i.dtype in {"F16", "BF16"} for i in written.infos.values()) else 1e-6
    if error > bound:
        raise CheckFailed(f"written tensors differ from the mean of the inputs by {error:g} (bound {bound:g})")
    return Check("max_abs_error_vs_mean", error, bound, detail="written tensors against the float64 mean")
