"""The interoperability job (CI runs it in an environment of its own, with the adapters library and the
transformers 4.57 it pins; the default suite skips it): the committed references are what the library computes,
ctxext's native adapters equal the library on every config, and an adapter ctxext trained loads in the library
with equal outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

adapters = pytest.importorskip("adapters")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_library_references import main as make_library_references  # noqa: E402

REFERENCES = Path(__file__).resolve().parent.parent / "data" / "adapter_references"
CASES = sorted(p.name for p in (REFERENCES / "library").iterdir())


def load(name: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(REFERENCES / name)


def library_hidden_states(adapter: Path, inputs: dict[str, np.ndarray], *, safetensors: bool = False) -> np.ndarray:
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(REFERENCES / "base").eval()
    adapters.init(model)
    info: dict = {}
    name = model.load_adapter(str(adapter), loading_info=info, use_safetensors=safetensors)
    assert not any(info.values()), info
    model.set_active_adapters(name)
    with torch.no_grad():
        batch = {key: torch.as_tensor(inputs[key]) for key in ("input_ids", "attention_mask")}
        return model(**batch).last_hidden_state.numpy()


def native_hidden_states(adapter: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import torch

    from ctxext.bottleneck import load_model_with_adapters

    model = load_model_with_adapters(REFERENCES / "base", [adapter])
    with torch.no_grad():
        batch = {key: torch.as_tensor(inputs[key]) for key in ("input_ids", "attention_mask")}
        return model(**batch).last_hidden_state.numpy()


def max_diff(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(a - b)[mask.astype(bool)].max())


def test_the_committed_references_are_what_the_library_computes(tmp_path):
    make_library_references(tmp_path)
    fresh, committed = load_file_at(tmp_path / "outputs.safetensors"), load("outputs.safetensors")
    assert sorted(fresh) == sorted(committed)
    for key in committed:
        assert np.allclose(fresh[key], committed[key], atol=1e-6), key


def load_file_at(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(path)


@pytest.mark.parametrize("case", CASES)
def test_ctxext_native_adapter_equals_the_library(case):
    inputs = load("outputs.safetensors")
    library = library_hidden_states(REFERENCES / "library" / case, inputs)
    native = native_hidden_states(REFERENCES / "library" / case, inputs)
    difference = max_diff(library, native, inputs["attention_mask"])
    print(f"| {case} | {difference:.2e} |")
    assert difference < 1e-5


def test_an_adapter_trained_by_ctxext_loads_in_the_library_with_equal_outputs():
    inputs = load("outputs.safetensors")
    trained = REFERENCES / "ctxext_trained" / "trained"
    library = library_hidden_states(trained, inputs, safetensors=True)
    ctxext = load("ctxext_trained/outputs.safetensors")["trained"]
    difference = max_diff(library, ctxext, inputs["attention_mask"])
    print(f"| ctxext-trained | {difference:.2e} |")
    assert difference < 1e-5
    assert max_diff(library, inputs["none"], inputs["attention_mask"]) > 1e-3  # the adapter changes the output
