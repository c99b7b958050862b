"""The layout of a model folder: where its config, tokenizer and weights are, and which of its files an output
may copy."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.errors import CorruptCheckpoint, SourceNotFound
from ctxext.io.files import read_json

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_SINGLE = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
MANIFEST_NAME = "manifest.json"

# Weight files of other frameworks or formats that go stale once the weights change.
STALE_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ot", ".onnx", ".tflite", ".gguf")
STALE_WEIGHT_INDEXES = (SAFETENSORS_INDEX, PYTORCH_INDEX, "tf_model.h5.index.json", "flax_model.msgpack.index.json")
STALE_EXPORT_DIRS = ("onnx", "openvino", "coreml", "tflite")


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
