"""Read any checkpoint ctxext accepts and write outputs atomically as safetensors.

Reading and writing go one tensor at a time: a copied tensor is streamed from file to file in
chunks, so peak memory stays near the largest tensor that an operation changes.
Nothing here imports torch unless a PyTorch ``.bin`` checkpoint or a torch tensor is involved.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import signal
import stat
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ctxext.errors import CorruptCheckpoint, InvalidArgument, OutputExists, SourceNotFound, WriteFailed

CHUNK_BYTES = 16 * 2**20
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30
SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_SINGLE = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
MANIFEST_NAME = "manifest.json"

# Weight files of other frameworks or formats that go stale once the weights change.
STALE_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".onnx", ".tflite", ".gguf")
STALE_WEIGHT_INDEXES = (SAFETENSORS_INDEX, PYTORCH_INDEX, "tf_model.h5.index.json", "flax_model.msgpack.index.json")
STALE_EXPORT_DIRS = ("onnx", "openvino", "coreml", "tflite")

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
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# What a git ref name may not hold anywhere (git check-ref-format): control characters and space, ~ ^ : ? * [ \,
# "..", "@{".
REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{")


# ----------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """Where a checkpoint came from: the reference the user gave and the local folder it resolved to."""

    ref: str
    path: Path
    hub_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    """The hub commit the files came from (a download's snapshot), whatever ``revision`` named."""

    def describe(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "path": str(self.path),
            "hub_id": self.hub_id,
            "revision": self.revision,
            "commit": self.commit,
        }


def resolve_source(
    ref: str | os.PathLike[str],
    *,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    what: str = "model",
) -> Source:
    """Turn a local folder or a hub ID into a local folder. Hub downloads honour HF_HUB_OFFLINE."""
    text = os.fspath(ref)
    if revision is not None:
        check_revision(revision)
    if not text.strip():
        raise SourceNotFound(f"the {what} is an empty string; name a folder, a hub ID or an embedded model")
    local = Path(text).expanduser()
    if local.is_symlink() and not local.exists():
        raise SourceNotFound(f"{what} {text!r} is a broken symbolic link or a link loop")
    if local.exists():
        if not local.is_dir():
            raise SourceNotFound(f"{what} {text!r} is a file; give the folder that holds it")
        if revision is not None:
            raise InvalidArgument(f"a revision applies to hub sources only; {what} {text!r} is a local folder")
        register_input(local)
        return Source(ref=text, path=local.resolve())
    if not HUB_ID.match(text) or text.startswith((".", "/", "~")):
        raise SourceNotFound(f"{what} folder {text!r} does not exist")
    from ctxext.presets import EMBEDDED, EMBEDDED_HUB_IDS, embedded_model

    if revision is not None and text in EMBEDDED:
        raise InvalidArgument(
            f"a revision applies to hub sources only; {what} {text!r} is an embedded model "
            f"(name its hub ID {EMBEDDED_HUB_IDS[text]!r} to read a revision)"
        )
    embedded = embedded_model(text)
    if embedded is not None:
        return Source(ref=text, path=embedded, hub_id=EMBEDDED_HUB_IDS[text])
    return _download_from_hub(text, revision, allow_patterns, ignore_patterns, what)


def _download_from_hub(
    hub_id: str, revision: str | None, allow_patterns: list[str] | None, ignore_patterns: list[str] | None, what: str
) -> Source:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    ignore = list(ignore_patterns or []) + [f"{d}/*" for d in STALE_EXPORT_DIRS] + ["*.h5", "*.msgpack", "*.ot"]
    try:
        path = snapshot_download(hub_id, revision=revision, allow_patterns=allow_patterns, ignore_patterns=ignore)
    except RepositoryNotFoundError:
        raise SourceNotFound(f"{what} {hub_id!r} is neither a local folder nor a model on the hub") from None
    except RevisionNotFoundError:
        raise SourceNotFound(f"{what} {hub_id!r} has no revision {revision!r} on the hub") from None
    except GatedRepoError:
        raise SourceNotFound(f"{what} {hub_id!r} is gated: log in with `hf auth login` and accept its terms") from None
    except LocalEntryNotFoundError:
        hint = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        if _in_hub_cache(hub_id):
            raise SourceNotFound(
                f"{what} {hub_id!r} has no revision {revision or 'main'!r} in the Hugging Face cache, and {hint}; "
                "download that revision once online or name one the cache holds"
            ) from None
        raise SourceNotFound(
            f"{what} {hub_id!r} is not a local folder and not in the Hugging Face cache, and {hint}; "
            "download it once online or pass a local folder"
        ) from None
    except OSError as error:  # network failures surface as OSError subclasses (requests/httpx)
        raise SourceNotFound(f"{what} {hub_id!r} could not be fetched from the hub: {error}") from None
    commit = Path(path).name if Path(path).parent.name == "snapshots" else None
    return Source(ref=hub_id, path=Path(path), hub_id=hub_id, revision=revision, commit=commit)


def _in_hub_cache(hub_id: str) -> bool:
    """Whether the Hugging Face cache holds some snapshot of the model ``hub_id`` (whatever its revisions)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return (Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=hub_id, repo_type="model") / "snapshots").is_dir()


def names_hub_model(ref: str | os.PathLike[str]) -> bool:
    """Whether ``ref`` names a model on the hub (which has revisions), not a local folder or an embedded name."""
    from ctxext.presets import EMBEDDED_HUB_IDS

    text = os.fspath(ref)
    return not Path(text).expanduser().exists() and text not in EMBEDDED_HUB_IDS and bool(HUB_ID.match(text))


def revision_problem(revision: str) -> str | None:
    """Why ``revision`` is not a git ref name (a branch, a tag such as ``v1``, ``refs/pr/1``, a commit hash), by
    the rules of ``git check-ref-format --allow-onelevel``; None when it is one. Such a name is never a path."""
    if revision in ("", "@"):
        return "it is empty" if not revision else "'@' alone is not a ref name"
    forbidden = REF_FORBIDDEN.search(revision)
    if forbidden:
        return f"it holds {forbidden.group()!r}"
    if revision.endswith("."):
        return "it ends with '.'"
    for part in revision.split("/"):
        if not part:
            return "it starts or ends with '/', or holds '//'"
        if part.startswith("."):
            return f"its part {part!r} starts with '.'"
        if part.endswith(".lock"):
            return f"its part {part!r} ends with '.lock'"
    return None


def check_revision(revision: str) -> str:
    """``revision`` when it is a git ref name (see :func:`revision_problem`); otherwise InvalidArgument."""
    problem = revision_problem(revision)
    if problem:
        raise InvalidArgument(f"revision {revision!r} is not a branch, tag or commit name: {problem}")
    return revision


# ----------------------------------------------------------------------------- folder layout


@dataclass(frozen=True)
class ModelFolder:
    """A Hugging Face model folder, possibly wrapped as a sentence-transformers folder.

    ``root`` is the folder the user named; ``model_dir`` is where config.json and the weights are
    (the same folder, or the Transformer module's subfolder of a sentence-transformers model).
    """

    root: Path
    model_dir: Path
    sentence_transformers: bool

    @classmethod
    def open(cls, root: Path) -> ModelFolder:
        modules_file = root / "modules.json"
        model_dir = root
        is_st = modules_file.is_file()
        if is_st:
            modules = read_json(modules_file)
            if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
                raise CorruptCheckpoint(f"{modules_file} is not a list of module objects")
            transformer = [m for m in modules if str(m.get("type", "")).endswith("Transformer")]
            if transformer:
                model_dir = root / transformer[0].get("path", "")
        if not (model_dir / "config.json").is_file():
            raise SourceNotFound(f"{root} has no config.json: not a Hugging Face model folder")
        if not isinstance(read_json(model_dir / "config.json"), dict):
            raise CorruptCheckpoint(f"{model_dir / 'config.json'} is not a JSON object")
        return cls(root=root, model_dir=model_dir, sentence_transformers=is_st)

    @property
    def config(self) -> dict[str, Any]:
        return read_json(self.model_dir / "config.json")

    @property
    def tokenizer_dir(self) -> Path:
        """Where the tokenizer is: beside the weights, or at the root of a sentence-transformers folder."""
        return self.model_dir if (self.model_dir / "tokenizer_config.json").is_file() else self.root

    @property
    def relative_model_dir(self) -> str:
        return os.path.relpath(self.model_dir, self.root)

    def weight_files(self) -> list[Path]:
        """The files holding the model's weights: safetensors when present, else PyTorch pickles."""
        for single, index in ((SAFETENSORS_SINGLE, SAFETENSORS_INDEX), (PYTORCH_SINGLE, PYTORCH_INDEX)):
            if (self.model_dir / index).is_file():
                weight_map = read_json(self.model_dir / index).get("weight_map", {})
                return [self.model_dir / name for name in sorted(set(weight_map.values()))]
            if (self.model_dir / single).is_file():
                return [self.model_dir / single]
        raise SourceNotFound(
            f"{self.model_dir} has no weights (model.safetensors, a sharded index, or pytorch_model.bin)"
        )


def open_model(ref: str | os.PathLike[str], *, revision: str | None = None) -> tuple[Source, ModelFolder]:
    source = resolve_source(ref, revision=revision)
    return source, ModelFolder.open(source.path)


# ----------------------------------------------------------------------------- safetensors reading


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


# ----------------------------------------------------------------------------- checkpoint reading


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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceNotFound(f"{path} does not exist") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path} is a folder, not a JSON file") from None
    except UnicodeDecodeError:
        raise CorruptCheckpoint(f"{path} is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise CorruptCheckpoint(f"{path} is not valid JSON ({getattr(error, 'msg', 'nested too deeply')})") from None


def input_file(path: str | os.PathLike[str], what: str = "input file") -> Path:
    """``path`` if it is a regular file; a folder, device, FIFO or missing file is refused in one line."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceNotFound(f"{what} {path} does not exist") from None
    except OSError as error:  # a symlink loop, a permission problem
        raise SourceNotFound(f"{what} {path} cannot be opened: {error.strerror or error}") from None
    if stat.S_ISDIR(mode):
        raise InvalidArgument(f"{what} {path} is a folder; name a file")
    if not stat.S_ISREG(mode):
        raise InvalidArgument(f"{what} {path} is not a regular file (a device, FIFO or socket); name a file")
    register_input(path)
    return path


MAX_LINE_BYTES = 32 * 2**20
"""The longest line a JSON lines reader takes (one record); a longer one is a file that is not one record per line
(a JSON array, a binary file) more often than a record, and is refused without being held in memory."""


def bounded_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line of a file opened in binary mode; a line longer than
    :data:`MAX_LINE_BYTES` comes as None, read past a piece at a time (never held whole)."""
    limit = MAX_LINE_BYTES
    number = 0
    while raw := handle.readline(limit + 1):
        number += 1
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield number, raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = handle.readline(2**20)
        yield number, None


def line_too_long(where: str) -> str:
    """The message for a line over :data:`MAX_LINE_BYTES`, ``where`` naming the file and line."""
    return f"{where}: a line longer than {MAX_LINE_BYTES / 2**20:g} MiB (not one JSON record per line?)"


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line; a line that is not a JSON object (or not UTF-8, or longer
    than :data:`MAX_LINE_BYTES`) is an error naming the file and line."""
    path = input_file(path)
    with open(path, "rb") as handle:
        for number, raw in bounded_lines(handle):
            if raw is None:
                raise InvalidArgument(line_too_long(f"{path}:{number}"))
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgument(f"{path}:{number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidArgument(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise InvalidArgument(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


def write_json(path: Path, data: Any, *, sort_keys: bool = False) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n", encoding="utf-8")


def update_json(path: Path, **changes: Any) -> dict[str, Any]:
    """Set keys in a JSON file that exists; return the old values of the keys that changed."""
    data = read_json(path)
    old = {key: data.get(key) for key, value in changes.items() if data.get(key) != value}
    data.update(changes)
    write_json(path, data)
    return old


# ----------------------------------------------------------------------------- copying folders


def is_stale_weight(relative: Path, model_dir: Path) -> bool:
    """Weights of the model being rewritten (and exports of them) must not be copied to the output, nor the
    source's model card: every output gets its own (``ctxext.card``)."""
    if relative == Path("README.md"):
        return True
    parts = relative.parts
    if any(part in STALE_EXPORT_DIRS for part in parts):
        return True
    if relative.parent != model_dir:
        return False
    return (
        relative.name.endswith(STALE_WEIGHT_SUFFIXES)
        or relative.name in STALE_WEIGHT_INDEXES
        or relative.name == MANIFEST_NAME
    )


def source_boundary(root: Path) -> Path:
    """The folder a source's files may link into: the folder itself, or for a snapshot in the Hugging Face
    cache (``models--org--name/snapshots/REV``, whose files link to ``../../blobs``) the model's cache folder."""
    root = root.resolve()
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
        return root.parent.parent
    return root


def copy_support_files(folder: ModelFolder, destination: Path) -> tuple[list[str], list[str]]:
    """Copy configs, tokenizer and sentence-transformers modules; leave out the stale weights, and any
    link to content outside the source folder (it could be a private file, and the output may be published).

    Returns the relative paths copied and those left out.
    """
    copied, left_out = [], []
    model_dir = Path(folder.relative_model_dir)
    boundary = source_boundary(folder.root)
    for path in sorted(folder.root.rglob("*")):
        relative = path.relative_to(folder.root)
        if path.is_dir() or any(part.startswith(".") for part in relative.parts):
            continue
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):  # a dangling link or a link loop
            real = None
        inside = real is not None and boundary in real.parents and real.is_file()
        if is_stale_weight(relative, model_dir) or not inside:
            left_out.append(relative.as_posix())
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(relative.as_posix())
    return copied, left_out


# ----------------------------------------------------------------------------- one run: its inputs and output locks

_run_inputs: ContextVar[dict[Path, bool] | None] = ContextVar("ctxext_run_inputs", default=None)


def is_main_process() -> bool:
    """The process that writes outputs: the only one, or rank 0 of a distributed launch (torchrun, accelerate)."""
    return int(os.environ.get("RANK", "0")) == 0


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def register_input(path: str | os.PathLike[str], *, whole: bool = True) -> None:
    """Remember ``path`` as an input of the current run (:func:`run_scope`): no output of the run may replace it
    or hold it, nor (``whole``: a model folder, every file of which is read) replace anything inside it. A data
    folder is not ``whole``: its readers register each file they read, and may leave out ctxext's own outputs
    in it. The readers of files, folders and models call this, so every input a command (or any stage of a
    pipeline) reads is protected, not only those a command names in ``protect``."""
    inputs = _run_inputs.get()
    if inputs is not None:
        key = _absolute(path)
        inputs[key] = inputs.get(key, False) or whole


@contextlib.contextmanager
def run_scope() -> Iterator[None]:
    """One command's run. The inputs it reads are protected from its outputs, and the output locks it takes are
    released when it ends, however it ends. A scope inside another (a pipeline's stage) shares the outer one's
    inputs, so a stage's output can never replace what an earlier stage read."""
    outer = _run_inputs.get()
    token = _run_inputs.set(outer if outer is not None else {})
    locks_before = set(_held_locks)
    try:
        yield
    finally:
        _run_inputs.reset(token)
        for target in set(_held_locks) - locks_before:
            release_output(target)


# ----------------------------------------------------------------------------- output locks


@dataclass
class _OutputLock:
    descriptor: int
    path: Path
    created_folders: list[Path]


_held_locks: dict[Path, _OutputLock] = {}


def lock_path(target: Path) -> Path:
    """The lock file of an output: ``.NAME.ctxext-lock`` beside it."""
    return target.with_name(f".{target.name}.ctxext-lock")


def claim_output(target: Path) -> None:
    """Hold the lock of ``target`` until the output is written (or the run ends): a second writer of the same
    output, in this process or another, is refused at once instead of racing the first.

    The lock is ``flock`` on the lock file, so the kernel releases it when its holder dies: a lock file left by
    a killed run is detected (it is unlocked) and taken over, with a warning naming the process that left it.
    Under a distributed launch only the main process writes, so only it takes the lock.
    """
    if target in _held_locks or not is_main_process():
        return
    created = _make_parents(target.parent)
    path = lock_path(target)
    try:
        descriptor, stale_owner = _lock_file(path, target)
    except BaseException:
        _remove_empty(created)
        raise
    _held_locks[target] = _OutputLock(descriptor, path, created)
    if stale_owner:
        import logging

        logging.getLogger("ctxext").warning(
            "took over the lock of %s left by process %s, which is no longer running", target, stale_owner
        )


def _lock_file(path: Path, target: Path) -> tuple[int, str]:
    """An open, locked descriptor of ``path`` with this process's id in it, and the id a dead holder left."""
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WriteFailed(f"cannot lock the output {target}: {error.strerror or error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(descriptor, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise OutputExists(
                f"output {target} is being written by another ctxext run (process {owner}); wait for it to "
                "finish or name another output"
            ) from None
        except OSError:  # a file system without locks (some network mounts): the write goes on unlocked
            import logging

            logging.getLogger("ctxext").warning("%s cannot be locked here; two runs writing it would race", target)
            return descriptor, ""
        try:  # the previous holder may have removed the file between our open and our lock: lock the new one
            same = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(descriptor)
            continue
        stale_owner = os.read(descriptor, 64).decode("ascii", "replace").strip()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        return descriptor, stale_owner


def release_output(target: Path) -> None:
    """Give up the lock of ``target`` (a no-op when not held); the lock file is removed while still locked, so
    a waiting writer that opened it notices and locks a fresh one."""
    lock = _held_locks.pop(target, None)
    if lock is None:
        return
    with contextlib.suppress(OSError):
        lock.path.unlink()
    os.close(lock.descriptor)
    _remove_empty(lock.created_folders)


@atexit.register
def _release_all_outputs() -> None:
    for target in list(_held_locks):
        release_output(target)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first (removed again if unused)."""
    missing = [folder, *folder.parents]
    missing = [path for path in missing if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteFailed(f"cannot create the folder {folder}: {error.strerror or error}") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


# ----------------------------------------------------------------------------- output safety


def file_manifest_path(out: str | os.PathLike[str]) -> Path:
    """Where a file output's manifest lies: ``<output>.manifest.json`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def is_ctxext_manifest(path: Path) -> bool:
    """A JSON object with the fields every ctxext manifest has."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "command" in data and "libraries" in data


def _never_replaced() -> dict[Path, str]:
    """Folders no output may ever replace, whatever --force says."""
    cwd = Path.cwd().resolve()
    places = {Path(cwd.anchor): "the root folder", Path.home().resolve(): "your home folder"}
    places.update({parent: "a parent of the current directory" for parent in cwd.parents})
    places[cwd] = "the current directory"
    return places


def check_output_target(
    target: str | os.PathLike[str],
    *,
    force: bool,
    protect: Iterable[str | os.PathLike[str]] = (),
    is_file: bool = False,
) -> Path:
    """The absolute output path, once it is safe to write there and this run holds its lock
    (:func:`claim_output`); refuse anything else in one line.

    ``--force`` replaces only a previous ctxext output (a folder holding a ctxext ``manifest.json``, or a
    file with ``<file>.manifest.json`` beside it); never the current directory, ``/``, the home folder,
    an input of the run (``protect``, and every input read so far: :func:`register_input`), a folder that holds
    one, or a place inside one; never through a symbolic link.
    """
    text = os.fspath(target)
    if not text.strip():
        raise InvalidArgument("the output path is empty: name the file or folder to write with -o")
    absolute = _absolute(text)
    if absolute.is_symlink():
        raise OutputExists(
            f"output {absolute} is a symbolic link (to {os.readlink(absolute)}); name the real path or a new one"
        )
    special = _never_replaced().get(absolute.resolve())
    if special:
        raise OutputExists(f"output {absolute} is {special}; name a new folder to write into")
    claim_output(absolute)
    try:
        registered = _run_inputs.get() or {}
        _check_inputs_kept(absolute, [*((path, True) for path in protect), *registered.items()])
        _check_replaceable(absolute, force=force, is_file=is_file)
    except BaseException:
        release_output(absolute)
        raise
    return absolute


def _check_inputs_kept(absolute: Path, inputs: Iterable[tuple[str | os.PathLike[str], bool]]) -> None:
    """Refuse an output that is an input of the run, holds one, or would replace something inside a whole one."""
    real = absolute.resolve()
    for source, whole in inputs:
        source_path = _absolute(source).resolve()
        if real == source_path:
            raise OutputExists(f"output {absolute} is an input of this command; name another output")
        if real in source_path.parents:
            raise OutputExists(f"output {absolute} holds the input {source_path}; name another output")
        if whole and absolute.exists() and source_path in real.parents:
            raise OutputExists(f"output {absolute} lies inside the input {source_path}; name another output")


def _check_replaceable(absolute: Path, *, force: bool, is_file: bool) -> None:
    """A new path, or with ``force`` a previous ctxext output of the expected kind."""
    if not absolute.exists():
        return
    if not force:
        raise OutputExists(f"output {absolute} already exists; pass --force to replace it")
    if is_file:
        if not absolute.is_file():
            raise OutputExists(f"output {absolute} exists and is not a file; name another output")
        if not is_ctxext_manifest(file_manifest_path(absolute)):
            raise OutputExists(
                f"output {absolute} was not written by ctxext (no ctxext "
                f"{file_manifest_path(absolute).name} beside it), so --force will not replace "
                "it; remove it yourself or name another output"
            )
    elif not absolute.is_dir():
        raise OutputExists(f"output {absolute} exists and is not a folder; name another output")
    elif not is_ctxext_manifest(absolute / MANIFEST_NAME):
        raise OutputExists(
            f"output {absolute} is not a ctxext output (no ctxext {MANIFEST_NAME} in it), so "
            "--force will not replace it; remove it yourself or name a new folder"
        )


# ----------------------------------------------------------------------------- atomic output


def _write_failed(target: Path, error: OSError) -> WriteFailed:
    if error.errno == errno.ENOSPC:
        return WriteFailed(f"disk full while writing {target}; nothing was written")
    return WriteFailed(f"writing {target} failed: {error.strerror or error}; nothing was written")


@contextlib.contextmanager
def atomic_output(
    target: str | os.PathLike[str], *, force: bool = False, protect: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; rename it into place only if the block succeeds.

    The target is checked and locked first (:func:`check_output_target`, with the command's sources in
    ``protect``), and unlocked at the end. Any failure, interrupt or SIGTERM removes the temporary folder.
    With ``force`` a previous output is replaced only after the new one is complete.
    """
    target = check_output_target(target, force=force, protect=protect)
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".ctxext-tmp", dir=target.parent))
            temporary.chmod(0o777 & ~_umask())
        except OSError as error:
            raise WriteFailed(f"cannot create the output beside {target}: {error.strerror or error}") from None
        with _removed_unless_placed([temporary], target):
            yield temporary
            _replace_together([(temporary, target)])
    finally:
        release_output(target)


@contextlib.contextmanager
def atomic_files(
    targets: list[str | os.PathLike[str]], *, force: bool = False, protect: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[list[Path]]:
    """Yield temporary file paths beside ``targets``; all are renamed into place together, or none.

    The file counterpart of :func:`atomic_output`, for an output and its manifest: any failure,
    interrupt or SIGTERM removes the temporary files and leaves the previous files as they were.
    Only the first target is checked (and locked) as the user's output; the others travel with it.
    """
    first = check_output_target(targets[0], force=force, protect=protect, is_file=True)
    temporaries: list[Path] = []
    try:
        paths = [first] + [_companion_path(target) for target in targets[1:]]
        with _removed_unless_placed(temporaries, first):
            try:
                first.parent.mkdir(parents=True, exist_ok=True)
                for path in paths:
                    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".ctxext-tmp", dir=path.parent)
                    os.close(handle)
                    temporaries.append(Path(name))
                    Path(name).chmod(0o666 & ~_umask())
            except OSError as error:
                raise WriteFailed(f"cannot create the output beside {first}: {error.strerror or error}") from None
            yield temporaries
            _replace_together(list(zip(temporaries, paths, strict=True)))
    finally:
        release_output(first)


@contextlib.contextmanager
def _removed_unless_placed(temporaries: list[Path], target: Path) -> Iterator[None]:
    """Around a write: on any failure, interrupt or SIGTERM, the temporaries are removed; an OS error is said
    as a failed write."""
    try:
        with sigterm_as_interrupt():
            yield
    except OSError as error:
        for temporary in temporaries:
            _remove(temporary)
        raise _write_failed(target, error) from None
    except BaseException:
        for temporary in temporaries:
            _remove(temporary)
        raise


def _companion_path(target: str | os.PathLike[str]) -> Path:
    """A file that travels with an output (its manifest): replaced only if it is a ctxext manifest."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(target))))
    if path.is_symlink() or (path.exists() and not (path.is_file() and is_ctxext_manifest(path))):
        raise OutputExists(
            f"{path} is in the way of the output's manifest and was not written by ctxext; "
            "remove it or name another output"
        )
    return path


@contextlib.contextmanager
def atomic_file(
    target: str | os.PathLike[str], *, force: bool = False, protect: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """One file written atomically (see :func:`atomic_files`)."""
    with atomic_files([target], force=force, protect=protect) as (temporary,):
        yield temporary


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _replace_together(moves: list[tuple[Path, Path]]) -> None:
    """Rename each finished temporary onto its target; if any rename fails, put every target back.

    SIGINT and SIGTERM are held while the renames run, so a signal can never leave half of a pair in place: one
    that arrives meanwhile stops the command right after, and says that the output was written.
    """
    with _signals_held(", ".join(str(target) for _, target in moves)):
        retired: list[tuple[Path, Path]] = []
        placed: list[Path] = []
        try:
            for _, target in moves:
                if target.exists():
                    old = target.with_name(f".{target.name}.{os.getpid()}.ctxext-old")
                    target.rename(old)
                    retired.append((old, target))
            for temporary, target in moves:
                temporary.rename(target)
                placed.append(target)
        except BaseException:
            for target in placed:
                _remove(target)
            for old, target in retired:
                old.rename(target)
            raise
        for old, _ in retired:
            _remove(old)


INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_held(written: str) -> Iterator[None]:
    """Hold SIGINT and SIGTERM across the block; one that arrived meanwhile is taken after it, as
    :class:`~ctxext.errors.Interrupted` saying that ``written`` was written (when the block succeeded).

    Python runs signal handlers in the main thread whichever thread the signal reached, so a handler that only
    records the signal holds it (blocking with ``pthread_sigmask`` would not: another thread can take it)."""
    from ctxext.errors import Interrupted

    taken: list[int] = []
    with _signal_handlers(INTERRUPTING_SIGNALS, lambda number, frame: taken.append(number)):
        yield
    if taken:
        raise Interrupted(taken[0], kept=f"{written} was written completely before the signal was taken")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`~ctxext.errors.Interrupted`, so cleanup code runs."""
    from ctxext.errors import Interrupted

    def interrupt(signum, frame):
        raise Interrupted(signum)

    with _signal_handlers((signal.SIGTERM,), interrupt):
        yield


@contextlib.contextmanager
def _signal_handlers(numbers: Iterable[int], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for the signals ``numbers`` within the block, the previous handlers after it; outside the
    main thread (where Python cannot set handlers) signals are left alone."""
    try:
        previous = {number: signal.signal(number, handler) for number in numbers}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for number, earlier in previous.items():
            signal.signal(number, earlier)
