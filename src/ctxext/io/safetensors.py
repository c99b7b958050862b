"""The safetensors format: dtypes, validated headers, tensors read in chunks, and tensors as bytes."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.errors import CorruptCheckpoint
from ctxext.io.files import CHUNK_BYTES

ITEM_SIZE = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
NUMPY_DTYPE = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
    "U16": np.uint16,
    "U32": np.uint32,
    "U64": np.uint64,
}
SAFETENSORS_DTYPE = {np.dtype(v).name: k for k, v in NUMPY_DTYPE.items()}
TORCH_TO_SAFETENSORS = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEM_SIZE[self.dtype]


class SafetensorsFile:
    """One .safetensors file, its header validated on open; tensor bytes read on demand."""

    def __init__(self, path: Path):
        self.path = path
        self.header, self.data_start = _read_header(path)
        self.metadata: dict[str, str] = self.header.pop("__metadata__", None) or {}

    def infos(self) -> list[TensorInfo]:
        return [TensorInfo(name, e["dtype"], tuple(e["shape"])) for name, e in self.header.items()]

    def chunks(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        begin, end = self.header[name]["data_offsets"]
        with open(self.path, "rb") as handle:
            handle.seek(self.data_start + begin)
            remaining = end - begin
            while remaining > 0:
                block = handle.read(min(chunk_bytes, remaining))
                if not block:
                    raise CorruptCheckpoint(f"{self.path}: tensor {name!r} is cut short")
                remaining -= len(block)
                yield block

    def read_bytes(self, name: str) -> bytes:
        return b"".join(self.chunks(name, chunk_bytes=2**62))


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CorruptCheckpoint(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > min(size - 8, 100 * 2**20):
            raise CorruptCheckpoint(f"{path}: corrupt safetensors header (declared length {header_len})")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CorruptCheckpoint(f"{path}: corrupt safetensors header (not valid JSON)") from None
    if not isinstance(header, dict):
        raise CorruptCheckpoint(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - header_len
    for name, entry in header.items():
        if name != "__metadata__":
            _check_entry(path, name, entry, data_size)
    return header, 8 + header_len


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_entry(path: Path, name: str, entry: Any, data_size: int) -> None:
    try:
        dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        valid = (
            isinstance(dtype, str)
            and dtype in ITEM_SIZE
            and isinstance(shape, list)
            and all(map(_is_count, shape))
            and _is_count(begin)
            and _is_count(end)
        )
    except (KeyError, TypeError, ValueError):
        valid = False
    if not valid:
        raise CorruptCheckpoint(
            f"{path}: corrupt safetensors header entry for {name!r} (dtype, shape and "
            "offsets must be a known dtype and non-negative whole numbers)"
        )
    expected = math.prod(shape) * ITEM_SIZE[dtype]
    if not (0 <= begin <= end <= data_size) or end - begin != expected:
        raise CorruptCheckpoint(
            f"{path}: tensor {name!r} does not fit the file (offsets {begin}..{end}, {data_size} data bytes)"
        )


# ----------------------------------------------------------------------------- tensors and their bytes


def torch_dtype(safetensors_dtype: str):
    import torch

    by_name = {v: k for k, v in TORCH_TO_SAFETENSORS.items()}
    return getattr(torch, by_name[safetensors_dtype])


def bytes_to_array(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "BF16":
        widened = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return widened.view(np.float32).reshape(shape)
    if dtype not in NUMPY_DTYPE:
        raise CorruptCheckpoint(f"dtype {dtype} cannot be read without torch")
    return np.frombuffer(raw, dtype=NUMPY_DTYPE[dtype]).reshape(shape)


def array_to_bytes(array: np.ndarray, dtype: str) -> bytes:
    """Encode a numpy array as ``dtype``; BF16 rounds to nearest even, as torch does."""
    if dtype == "BF16":
        bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype(np.uint16).tobytes()
    return np.ascontiguousarray(array, dtype=NUMPY_DTYPE[dtype]).tobytes()


def tensor_bytes(tensor: Any) -> bytes:
    """Raw little-endian bytes of a numpy array or a torch tensor."""
    if isinstance(tensor, np.ndarray):
        return np.ascontiguousarray(tensor).tobytes()
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def tensor_buffer(tensor: Any) -> memoryview:
    """The raw bytes of a CPU torch tensor without copying them (a copy of a 670 MB embedding table would sit
    on top of the model at the writer's peak); a tensor on another device is copied to the CPU first."""
    if isinstance(tensor, np.ndarray):
        return memoryview(np.ascontiguousarray(tensor).reshape(-1)).cast("B")
    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def tensor_info(name: str, tensor: Any) -> TensorInfo:
    if isinstance(tensor, np.ndarray):
        return TensorInfo(name, SAFETENSORS_DTYPE[tensor.dtype.name], tuple(tensor.shape))
    return TensorInfo(name, TORCH_TO_SAFETENSORS[str(tensor.dtype).removeprefix("torch.")], tuple(tensor.shape))
