"""Read any checkpoint ctxext accepts and write outputs atomically as safetensors.

Reading and writing go one tensor at a time: a copied tensor is streamed from file to file in
chunks, so peak memory stays near the largest tensor that an operation changes.
Nothing here imports torch unless a PyTorch ``.bin`` checkpoint or a torch tensor is involved.

- :mod:`.sources`: a folder, a hub ID (and its revision) or an embedded name -> a local folder; ``open_model``
- :mod:`.folder`: the layout of a model folder (``ModelFolder``) and copying its support files
- :mod:`.safetensors`: the safetensors format: dtypes, validated headers, tensor bytes
- :mod:`.reader`: ``CheckpointReader``, every tensor of a model folder by name
- :mod:`.files`: plain input files (JSON, JSONL) and file hashes
- :mod:`.locks`: one run's inputs and the locks of its outputs
- :mod:`.outputs`: the output guard ``check_output_target``, ``atomic_output`` / ``atomic_files``

Writing safetensors and JSON lives here, in the package itself: its functions look up
``DEFAULT_MAX_SHARD_BYTES`` and ``write_json`` on ``ctxext.io``, where callers and tests set them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.io.files import (
    CHUNK_BYTES,
    MAX_LINE_BYTES,
    bounded_lines,
    file_sha256,
    input_file,
    line_too_long,
    read_json,
    read_jsonl,
)
from ctxext.io.folder import (
    MANIFEST_NAME,
    PYTORCH_INDEX,
    PYTORCH_SINGLE,
    SAFETENSORS_INDEX,
    SAFETENSORS_SINGLE,
    STALE_EXPORT_DIRS,
    STALE_WEIGHT_INDEXES,
    STALE_WEIGHT_SUFFIXES,
    ModelFolder,
    copy_support_files,
    is_stale_weight,
    source_boundary,
)
from ctxext.io.locks import claim_output, is_main_process, lock_path, register_input, release_output, run_scope
from ctxext.io.outputs import (
    INTERRUPTING_SIGNALS,
    atomic_file,
    atomic_files,
    atomic_output,
    check_output_target,
    file_manifest_path,
    is_ctxext_manifest,
    sigterm_as_interrupt,
)
from ctxext.io.reader import BackgroundHashes, CheckpointReader, load_pickled_state_dict
from ctxext.io.safetensors import (
    ITEM_SIZE,
    NUMPY_DTYPE,
    SAFETENSORS_DTYPE,
    TORCH_TO_SAFETENSORS,
    SafetensorsFile,
    TensorInfo,
    array_to_bytes,
    bytes_to_array,
    tensor_buffer,
    tensor_bytes,
    tensor_info,
    torch_dtype,
)
from ctxext.io.sources import (
    HUB_ID,
    REF_FORBIDDEN,
    Source,
    check_revision,
    names_hub_model,
    open_model,
    resolve_source,
    revision_problem,
)

__all__ = [
    "BackgroundHashes",
    "CHUNK_BYTES",
    "CheckpointReader",
    "DEFAULT_MAX_SHARD_BYTES",
    "HUB_ID",
    "INTERRUPTING_SIGNALS",
    "ITEM_SIZE",
    "MANIFEST_NAME",
    "ModelFolder",
    "NUMPY_DTYPE",
    "OutTensor",
    "PYTORCH_INDEX",
    "PYTORCH_SINGLE",
    "REF_FORBIDDEN",
    "SAFETENSORS_DTYPE",
    "SAFETENSORS_INDEX",
    "SAFETENSORS_SINGLE",
    "STALE_EXPORT_DIRS",
    "STALE_WEIGHT_INDEXES",
    "STALE_WEIGHT_SUFFIXES",
    "SafetensorsFile",
    "Source",
    "TORCH_TO_SAFETENSORS",
    "TensorInfo",
    "WrittenTensor",
    "WrittenWeights",
    "array_to_bytes",
    "atomic_file",
    "atomic_files",
    "atomic_output",
    "bytes_to_array",
    "check_output_target",
    "check_revision",
    "claim_output",
    "copy_support_files",
    "file_manifest_path",
    "file_sha256",
    "input_file",
    "MAX_LINE_BYTES",
    "bounded_lines",
    "line_too_long",
    "is_ctxext_manifest",
    "is_main_process",
    "is_stale_weight",
    "load_pickled_state_dict",
    "lock_path",
    "names_hub_model",
    "open_model",
    "read_json",
    "read_jsonl",
    "register_input",
    "release_output",
    "resolve_source",
    "revision_problem",
    "run_scope",
    "sigterm_as_interrupt",
    "source_boundary",
    "tensor_buffer",
    "tensor_bytes",
    "tensor_info",
    "tensor_sha256",
    "torch_dtype",
    "update_json",
    "write_json",
    "write_safetensors",
]

DEFAULT_MAX_SHARD_BYTES = 5 * 2**30


# ----------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class OutTensor:
    """A tensor to write: its name, dtype, shape, and a function producing its bytes in chunks."""

    info: TensorInfo
    produce: Callable[[], Iterable[bytes | memoryview]]

    @classmethod
    def copied(cls, reader: CheckpointReader, name: str, new_name: str | None = None) -> OutTensor:
        info = reader.infos[name]
        return cls(TensorInfo(new_name or name, info.dtype, info.shape), lambda: reader.chunks(name))

    @classmethod
    def from_array(cls, name: str, array: np.ndarray, dtype: str | None = None) -> OutTensor:
        dtype = dtype or SAFETENSORS_DTYPE[array.dtype.name]
        return cls(TensorInfo(name, dtype, tuple(array.shape)), lambda: [array_to_bytes(array, dtype)])

    @classmethod
    def from_tensor(cls, name: str, tensor: Any) -> OutTensor:
        return cls(tensor_info(name, tensor), lambda: [tensor_buffer(tensor)])

    @classmethod
    def computed(cls, info: TensorInfo, compute: Callable[[], np.ndarray]) -> OutTensor:
        """A tensor computed only when it is written, so it never waits in memory."""
        return cls(info, lambda: [array_to_bytes(compute(), info.dtype)])


@dataclass
class WrittenTensor:
    file: str
    dtype: str
    shape: list[int]
    sha256: str


@dataclass
class WrittenWeights:
    files: list[str] = field(default_factory=list)
    tensors: dict[str, WrittenTensor] = field(default_factory=dict)


def write_safetensors(
    folder: Path,
    tensors: list[OutTensor],
    *,
    metadata: dict[str, str] | None = None,
    max_shard_bytes: int | None = None,
    on_tensor: Callable[[TensorInfo], None] | None = None,
    file_name: str = SAFETENSORS_SINGLE,
) -> WrittenWeights:
    """Write tensors as one safetensors file, or shards plus the standard index past max_shard_bytes.

    Each tensor's bytes are hashed as they are written, so the manifest needs no second read.
    """
    names = [t.info.name for t in tensors]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"tensor names written twice: {sorted(duplicates)}")
    shards = _plan_shards(tensors, max_shard_bytes or DEFAULT_MAX_SHARD_BYTES)
    result = WrittenWeights()
    header_metadata = {**(metadata or {}), "format": "pt"}
    for index, shard in enumerate(shards, start=1):
        name = file_name if len(shards) == 1 else f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        result.files.append(name)
        for info_name, record in _write_shard(folder / name, shard, header_metadata, on_tensor).items():
            result.tensors[info_name] = record
    if len(shards) > 1:
        total = sum(t.info.nbytes for t in tensors)
        weight_map = {n: r.file for n, r in result.tensors.items()}
        write_json(folder / SAFETENSORS_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return result


def _plan_shards(tensors: list[OutTensor], max_shard_bytes: int) -> list[list[OutTensor]]:
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.info.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.info.nbytes
    return shards


def _write_shard(
    path: Path, tensors: list[OutTensor], metadata: dict[str, str], on_tensor: Callable[[TensorInfo], None] | None
) -> dict[str, WrittenTensor]:
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for tensor in tensors:
        info = tensor.info
        header[info.name] = {
            "dtype": info.dtype,
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    records = {}
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)))
        handle.write(encoded)
        for tensor in tensors:
            digest = hashlib.sha256()
            written = 0
            for block in tensor.produce():
                handle.write(block)
                digest.update(block)
                written += len(block)
            if written != tensor.info.nbytes:
                raise ValueError(
                    f"tensor {tensor.info.name!r}: produced {written} bytes, "
                    f"its shape and dtype need {tensor.info.nbytes}"
                )
            records[tensor.info.name] = WrittenTensor(
                path.name, tensor.info.dtype, list(tensor.info.shape), digest.hexdigest()
            )
            if on_tensor:
                on_tensor(tensor.info)
    return records


def tensor_sha256(chunks: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for block in chunks:
        digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n", encoding="utf-8")


def update_json(path: Path, **changes: Any) -> dict[str, Any]:
    """Set keys in a JSON file that exists; return the old values of the keys that changed."""
    data = read_json(path)
    old = {key: data.get(key) for key, value in changes.items() if data.get(key) != value}
    data.update(changes)
    write_json(path, data)
    return old
