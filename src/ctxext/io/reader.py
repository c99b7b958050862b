"""Every tensor of a model folder by name, whatever files (safetensors or PyTorch pickles) hold them."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.errors import CorruptCheckpoint
from ctxext.io.files import file_sha256
from ctxext.io.folder import ModelFolder
from ctxext.io.safetensors import (
    ITEM_SIZE,
    TORCH_TO_SAFETENSORS,
    SafetensorsFile,
    TensorInfo,
    bytes_to_array,
    tensor_bytes,
    torch_dtype,
)


class CheckpointReader:
    """All tensors of a model folder by name, whatever files they are spread over."""

    def __init__(self, folder: ModelFolder):
        self.folder = folder
        self.files = folder.weight_files()
        self._safetensors: dict[str, SafetensorsFile] = {}
        self._pickled: dict[str, Any] = {}
        for path in self.files:
            if path.suffix == ".safetensors":
                self._open_safetensors(path)
            else:
                self._pickled.update(load_pickled_state_dict(path))
        self.infos: dict[str, TensorInfo] = {}
        for shard in dict.fromkeys(self._safetensors.values()):
            self.infos.update({info.name: info for info in shard.infos()})
        for name, tensor in self._pickled.items():
            self.infos[name] = TensorInfo(
                name, TORCH_TO_SAFETENSORS[str(tensor.dtype).removeprefix("torch.")], tuple(tensor.shape)
            )

    def _open_safetensors(self, path: Path) -> None:
        shard = SafetensorsFile(path)
        for name in shard.header:
            self._safetensors[name] = shard

    @property
    def names(self) -> list[str]:
        return list(self.infos)

    def chunks(self, name: str) -> Iterator[bytes]:
        if name in self._safetensors:
            return self._safetensors[name].chunks(name)
        return iter([tensor_bytes(self._pickled[name])])

    def array(self, name: str) -> np.ndarray:
        """The tensor as a numpy array; BF16 widens to float32, exactly."""
        info = self.infos[name]
        return bytes_to_array(b"".join(self.chunks(name)), info.dtype, info.shape)

    def torch(self, name: str):
        """The tensor as a torch tensor in its own dtype."""
        import torch

        if name in self._pickled:
            return self._pickled[name]
        info = self.infos[name]
        raw = bytearray(b"".join(self.chunks(name)))
        return (
            torch.frombuffer(raw, dtype=torch_dtype(info.dtype)).reshape(info.shape)
            if raw
            else torch.empty(info.shape, dtype=torch_dtype(info.dtype))
        )

    def total_bytes(self) -> int:
        """Bytes of every tensor's data."""
        return sum(ITEM_SIZE[info.dtype] * math.prod(info.shape) for info in self.infos.values())

    def sha256_of_files(self) -> dict[str, str]:
        return {os.path.relpath(p, self.folder.root): file_sha256(p) for p in self.files}

    def sha256_of_files_in_background(self) -> Mapping[str, str]:
        """The same hashes, computed on a thread while the caller streams tensors (hashlib releases the
        GIL), so hashing the source does not add to the wall time of a surgery."""
        return BackgroundHashes({os.path.relpath(p, self.folder.root): p for p in self.files})


class BackgroundHashes(Mapping):
    """sha256 of files, computed on a thread started at construction; reading it waits for the result."""

    def __init__(self, files: dict[str, Path]):
        from concurrent.futures import ThreadPoolExecutor

        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ctxext-sha256")
        self._future = executor.submit(lambda: {name: file_sha256(path) for name, path in files.items()})
        executor.shutdown(wait=False)

    def _hashes(self) -> dict[str, str]:
        return self._future.result()

    def __getitem__(self, key: str) -> str:
        return self._hashes()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._hashes())

    def __len__(self) -> int:
        return len(self._hashes())


def load_pickled_state_dict(path: Path) -> dict[str, Any]:
    """A PyTorch state dict, loaded with weights_only=True so no pickled code ever runs."""
    import pickle

    import torch

    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # the legacy (pre-1.6, non-zip) format cannot be memory-mapped: read it whole, still weights only
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CorruptCheckpoint(
            f"{path}: cannot be read as a PyTorch state dict with weights_only=True ({first_line})"
        ) from None
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state
