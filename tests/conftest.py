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

# Tests that build adapters (the tiny SPECTER2 parts, adapters on real weights) need the adapters extra, which
# pins transformers 4.57; on the default stack (transformers 5) they are skipped, and CI runs them on the other.
ADAPTER_FIXTURES = {"specter2_parts", "small_blocks_out", "default_blocks_out", "parts", "bigbird"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "adapters: needs the adapters extra (pip install 'ctxext[adapters]')")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from ctxext.compat import has_adapters

    if has_adapters():
        return
    skip = pytest.mark.skip(reason="needs the adapters extra (transformers 4.57 stack)")
    for item in items:
        if "adapters" in item.keywords or ADAPTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(skip)


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
