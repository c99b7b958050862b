from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """Build each tiny family once per session; tests get a fresh copy they may change."""
    built: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("tiny-models")

    def get(family: str, copy_to: Path | None = None) -> Path:
        if family not in built:
            built[family] = tiny.make_model(family, root / family)
        if copy_to is None:
            return built[family]
        shutil.copytree(built[family], copy_to)
        return copy_to

    return get


@pytest.fixture(scope="session")
def minilm() -> Path:
    from ctxext.presets import minilm_path

    return minilm_path()


@pytest.fixture(scope="session")
def mpnet() -> Path:
    from ctxext.presets import mpnet_path

    return mpnet_path()
