"""ctxext's native bottleneck adapters against the adapters library: the references in tests/data/adapter_references
were made and run by the library itself (tests/interop/make_library_references.py, in the CI interop job)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from ctxext.errors import CorruptCheckpoint, UnsupportedArchitecture

REFERENCES = Path(__file__).parent / "data" / "adapter_references"
CASES = sorted(p.name for p in (REFERENCES / "library").iterdir())


@pytest.fixture(scope="module")
def library_outputs() -> dict[str, np.ndarray]:
    return load_file(REFERENCES / "outputs.safetensors")


def native_hidden_states(model_dir: Path, adapter: Path | None, outputs: dict[str, np.ndarray], **run) -> np.ndarray:
    import torch

    from ctxext.bottleneck import load_model_with_adapters

    model = load_model_with_adapters(model_dir, [adapter] if adapter else [])
    batch = {key: torch.as_tensor(outputs[key]) for key in ("input_ids", "attention_mask")}
    with torch.no_grad():
        return model(**batch, **run).last_hidden_state.numpy()


def masked_max_diff(got: np.ndarray, expected: np.ndarray, mask: np.ndarray) -> float:
    return float(np.abs(got - expected)[mask.astype(bool)].max())


def test_the_references_hold_every_adapter_config_ctxext_runs():
    assert CASES == ["adhoc_query", "classification", "double_seq_bn", "proximity", "regression", "seq_bn_variant"]


@pytest.mark.parametrize("case", CASES)
def test_native_adapter_equals_the_library_on_bert(case, library_outputs):
    got = native_hidden_states(REFERENCES / "base", REFERENCES / "library" / case, library_outputs)
    assert masked_max_diff(got, library_outputs[case], library_outputs["attention_mask"]) < 1e-5
    assert masked_max_diff(library_outputs[case], library_outputs["none"], library_outputs["attention_mask"]) > 0.1


@pytest.mark.parametrize("case", CASES)
def test_native_adapter_after_the_transfer_to_bigbird_equals_the_library_on_the_source(case, library_outputs, tmp_path):
    from ctxext.transfer import transfer

    out = tmp_path / "bigbird"
    library_adapter = str(REFERENCES / "library" / case)
    transfer(
        str(REFERENCES / "base"),
        "bigbird",
        128,
        out,
        block_size=8,
        num_random_blocks=1,
        adapters=[(case, library_adapter)],
    )
    assert (out / "adapters" / case / "adapter.safetensors").is_file()
    assert not (out / "adapters" / case / "pytorch_adapter.bin").exists()  # ctxext writes no pickle
    got = native_hidden_states(out, out / "adapters" / case, library_outputs)  # inputs within the source's window
    assert masked_max_diff(got, library_outputs[case], library_outputs["attention_mask"]) < 1e-5


def test_a_transferred_bigbird_embedded_with_the_adapter_gives_the_library_s_cls_vector(library_outputs, tmp_path):
    """What a fresh install shows: a library-made adapter, transferred to BigBird, `ctxext embed --adapter`."""
    from typer.testing import CliRunner

    from ctxext.cli import app

    out = tmp_path / "bigbird"
    runner = CliRunner()
    transferred = runner.invoke(
        app,
        ["transfer", str(REFERENCES / "base"), "bigbird", "--len", "128", "--block-size", "8", "--random-blocks", "1"]
        + ["-o", str(out)]
        + ["--adapter", f"proximity={REFERENCES / 'library' / 'proximity'}"],
    )
    assert transferred.exit_code == 0, transferred.output
    texts = json.loads((REFERENCES / "texts.json").read_text())
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    embedded = runner.invoke(
        app,
        ["embed", str(out), str(tmp_path / "docs.jsonl"), "--adapter", "proximity", "--pooling", "cls"]
        + ["-o", str(tmp_path / "e.npy")],
    )
    assert embedded.exit_code == 0, embedded.output
    vectors = np.load(tmp_path / "e.npy")
    assert np.abs(vectors - library_outputs["proximity"][:, 0]).max() < 1e-4
    from ctxext.evaluate import adapted_encoder  # what `ctxext evaluate --adapter proximity` embeds with

    evaluated = adapted_encoder(str(out), "proximity", "cls", None).encode(texts)
    assert np.abs(evaluated - vectors).max() < 1e-6


def test_an_adapter_config_ctxext_does_not_run_is_one_clear_error(tmp_path):
    from ctxext.bottleneck import AdapterFolder

    for field, value, error in [
        ("use_gating", True, UnsupportedArchitecture),
        ("phm_layer", True, UnsupportedArchitecture),
        ("is_parallel", True, UnsupportedArchitecture),
        ("scaling", "learned", UnsupportedArchitecture),
        ("surprise", 1, UnsupportedArchitecture),
        ("residual_before_ln", "sometimes", CorruptCheckpoint),
    ]:
        folder = tmp_path / field
        shutil.copytree(REFERENCES / "library" / "proximity", folder)
        config = json.loads((folder / "adapter_config.json").read_text())
        config["config"][field] = value
        (folder / "adapter_config.json").write_text(json.dumps(config))
        with pytest.raises(error, match=field):
            AdapterFolder.open(folder).bottleneck()


def test_an_adapter_whose_weights_do_not_fit_names_the_weight(tmp_path):
    import torch

    from ctxext.bottleneck import load_model_with_adapters
    from ctxext.errors import CheckFailed

    folder = tmp_path / "proximity"
    shutil.copytree(REFERENCES / "library" / "proximity", folder)
    weights = torch.load(folder / "pytorch_adapter.bin", weights_only=True)
    weights.pop(next(key for key in weights if key.endswith("adapter_up.bias")))
    torch.save(weights, folder / "pytorch_adapter.bin")
    with pytest.raises(CheckFailed, match="missing: encoder.layer.0.output.adapters.proximity.adapter_up.bias"):
        load_model_with_adapters(REFERENCES / "base", [folder])


def test_a_transferred_sentence_transformer_loads_plainly_with_its_adapter_and_embeds_as_ctxext_does(tmp_path):
    """The documented call: a plain SentenceTransformer (no remote code) with the adapter running and ctxext's
    block-sparse attention, giving the vectors `ctxext embed --adapter` gives, on texts long enough to run sparse."""
    from typer.testing import CliRunner

    import tiny
    from ctxext.bottleneck import load_sentence_transformer
    from ctxext.cli import app
    from ctxext.transfer import transfer
    from specter2_tiny import random_adapter

    source = tiny.make_sentence_transformer("bert", tmp_path / "st")
    random_adapter(source, tmp_path / "adapter")
    out = tmp_path / "bigbird"
    transfer(
        str(source),
        "bigbird",
        128,
        out,
        block_size=8,
        num_random_blocks=1,
        adapters=[("mine", str(tmp_path / "adapter"))],
    )
    texts = [" ".join(tiny.WORDS[i:] + tiny.WORDS[:i]) * 2 for i in range(3)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    result = CliRunner().invoke(
        app, ["embed", str(out), str(tmp_path / "docs.jsonl"), "--adapter", "mine", "-o", str(tmp_path / "e.npy")]
    )
    assert result.exit_code == 0, result.output
    plain = load_sentence_transformer(out, "mine")
    assert np.abs(plain.encode(texts) - np.load(tmp_path / "e.npy")).max() < 1e-5
    without = load_sentence_transformer(out).encode(texts)
    assert np.abs(without - np.load(tmp_path / "e.npy")).max() > 1e-3  # the adapter was running


def test_the_card_of_a_transferred_sentence_transformer_loads_the_vectors_ctxext_embeds(tmp_path):
    """The card's own loading code, run as written (folder path filled in), gives `ctxext embed`'s vectors."""
    import re

    from typer.testing import CliRunner

    import tiny
    from ctxext.cli import app
    from specter2_tiny import random_adapter

    source = tiny.make_sentence_transformer("bert", tmp_path / "st")
    random_adapter(source, tmp_path / "adapter")
    out = tmp_path / "bigbird"
    runner = CliRunner()
    transfer = ["transfer", str(source), "bigbird", "--len", "128", "--block-size", "8", "--random-blocks", "1"]
    assert runner.invoke(app, [*transfer, "--adapter", f"mine={tmp_path / 'adapter'}", "-o", str(out)]).exit_code == 0
    texts = [" ".join(tiny.WORDS[i:] + tiny.WORDS[:i]) for i in range(3)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    embedded = runner.invoke(
        app, ["embed", str(out), str(tmp_path / "docs.jsonl"), "--adapter", "mine", "-o", str(tmp_path / "e.npy")]
    )
    assert embedded.exit_code == 0, embedded.output
    card = (out / "README.md").read_text()
    snippet = re.search(r"## Load it\n\n```python\n(.*?)```", card, re.S).group(1)
    assert "trust_remote_code" not in snippet
    scope: dict = {}
    exec(
        snippet.replace("path/to/this/folder", str(out)).replace('"a long document ..."', "*texts"),
        {"texts": texts},
        scope,
    )
    assert np.abs(scope["embeddings"] - np.load(tmp_path / "e.npy")).max() < 1e-5
