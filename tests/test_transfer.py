"""`ctxext transfer`: BERT (+ adapters) -> BigBird, checked numerically against the source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import specter2_tiny
import tiny
from ctxext.cli import app
from ctxext.errors import CheckFailed, SourceNotFound, UnsupportedArchitecture

runner = CliRunner()
ROLES = list(specter2_tiny.SPECTER2_ADAPTERS)
TARGET_LENGTH = 256  # tiny BERT has 64 positions
TINY_VOCAB = len(tiny.vocabulary())


@pytest.fixture(scope="session")
def specter2_parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return specter2_tiny.make_specter2(tmp_path_factory.mktemp("specter2-tiny"))


def preset_args(parts: dict[str, Path]) -> list[str]:
    args = ["--base", str(parts["base"])]
    for role in ROLES:
        args += ["--adapter-path", f"{role}={parts[role]}"]
    return args


@pytest.fixture(scope="session")
def small_blocks_out(specter2_parts, tmp_path_factory) -> Path:
    """specter2 preset -> BigBird, blocks of 8 and 1 random block: block-sparse really runs on 64 tokens."""
    out = tmp_path_factory.mktemp("out") / "specter2-bigbird"
    result = runner.invoke(
        app,
        [
            "transfer",
            "specter2",
            "bigbird",
            "--len",
            str(TARGET_LENGTH),
            "-o",
            str(out),
            "--block-size",
            "8",
            "--random-blocks",
            "1",
            *preset_args(specter2_parts),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def default_blocks_out(specter2_parts, tmp_path_factory) -> Path:
    """Default blocks (64, 3 random; --len must then exceed (5 + 2*3) * 64 = 704): every input of up to
    704 tokens falls back to full attention."""
    out = tmp_path_factory.mktemp("out") / "specter2-bigbird-default"
    result = runner.invoke(
        app,
        ["transfer", "specter2", "bigbird", "--len", "768", "-o", str(out), "--no-check", *preset_args(specter2_parts)],
    )
    assert result.exit_code == 0, result.output
    return out


# ----------------------------------------------------------------------------- helpers: the documented loading call


def source_with_adapter(parts: dict[str, Path], role: str):
    from ctxext.bottleneck import load_model_with_adapters

    return load_model_with_adapters(parts["base"], [parts[role]])


def bigbird_with_adapter(out: Path, role: str):
    """What docs/transfer.md tells users: one call, a plain transformers model with the adapter running."""
    from ctxext.bottleneck import load_model_with_adapters

    return load_model_with_adapters(out, [role])


def hidden(model, ids, mask, attention_type=None):
    """Last hidden states (padding zeroed) and, for BigBird, which attention its layers ran."""
    import torch

    from ctxext.block_sparse import attention_probe

    if attention_type:
        model.set_attention_type(attention_type)
    with torch.no_grad(), attention_probe(model) as seen:
        states = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return states.double().numpy() * mask[..., None].numpy(), set(seen)


def pooled(states, mask):
    weights = mask[..., None].numpy().astype(np.float64)
    return states[:, 0], (states * weights).sum(1) / weights.sum(1)


def assert_pooled_close(a, b, mask, tolerance=1e-4):
    for x, y in zip(pooled(a, mask), pooled(b, mask), strict=True):
        assert np.max(np.abs(x - y)) <= tolerance


def batch(lengths, vocab_size=TINY_VOCAB, seed=0):
    from ctxext.checks import random_batch

    return random_batch(vocab_size, lengths, seed=seed, low=5)


# ----------------------------------------------------------------------------- the fixture itself


def test_fixture_adapters_are_shaped_like_specter2s(specter2_parts):
    for role, stored in specter2_tiny.SPECTER2_ADAPTERS.items():
        config = json.loads((specter2_parts[role] / "adapter_config.json").read_text())
        assert config["name"] == stored and config["model_class"] == "BertAdapterModel"
        settings = config["config"]
        assert settings["reduction_factor"] == 16 and settings["non_linearity"] == "relu"
        assert settings["output_adapter"] and not settings["mh_adapter"] and settings["original_ln_before"]
        import torch

        keys = torch.load(specter2_parts[role] / "pytorch_adapter.bin", weights_only=True)
        assert all(k.startswith("bert.encoder.layer.") and f".output.adapters.{stored}." in k for k in keys)


# ----------------------------------------------------------------------------- equivalence


@pytest.mark.parametrize("role", ["proximity", "regression"])
def test_load_model_with_adapters_loads_and_activates_in_one_call(specter2_parts, small_blocks_out, role):
    from ctxext.bottleneck import load_model_with_adapters

    source = source_with_adapter(specter2_parts, role)
    model = load_model_with_adapters(small_blocks_out, [*ROLES], active=role)
    ids, mask = batch([64, 21, 5])
    expected, _ = hidden(source, ids, mask)
    got, ran = hidden(model, ids, mask, "original_full")
    assert ran == {"original_full"}
    assert_pooled_close(expected, got, mask, tolerance=1e-4)


@pytest.mark.parametrize("role", ROLES)
def test_each_adapter_matches_source_in_original_full(specter2_parts, small_blocks_out, role):
    source, target = source_with_adapter(specter2_parts, role), bigbird_with_adapter(small_blocks_out, role)
    ids, mask = batch([64, 21, 5])
    expected, _ = hidden(source, ids, mask)
    got, ran = hidden(target, ids, mask, "original_full")
    assert ran == {"original_full"}
    assert_pooled_close(expected, got, mask)
    from ctxext.bottleneck import activate_adapter

    activate_adapter(target, None)
    without, _ = hidden(target, ids, mask, "original_full")
    assert np.max(np.abs(without - got)) > 1e-2  # the adapter is really active


@pytest.mark.parametrize("role", ROLES)
def test_default_block_sparse_config_matches_source_up_to_512_tokens_by_falling_back(
    specter2_parts, default_blocks_out, role
):
    source, target = source_with_adapter(specter2_parts, role), bigbird_with_adapter(default_blocks_out, role)
    assert target.config.attention_type == "block_sparse"
    ids, mask = batch([64, 30])
    expected, _ = hidden(source, ids, mask)
    got, ran = hidden(target, ids, mask, "block_sparse")
    assert ran == {"original_full"}  # BigBird's own fallback for <= 704 tokens
    assert_pooled_close(expected, got, mask)


def test_block_sparse_matches_source_on_rows_within_one_block(specter2_parts, small_blocks_out):
    source = source_with_adapter(specter2_parts, "proximity")
    target = bigbird_with_adapter(small_blocks_out, "proximity")
    ids, mask = batch([64, 8, 3])  # padded to 64 tokens > (5 + 2*1) * 8: sparse attention runs
    expected, _ = hidden(source, ids, mask)
    got, ran = hidden(target, ids, mask, "block_sparse")
    assert ran == {"block_sparse"}
    assert_pooled_close(expected[1:], got[1:], mask[1:])


def test_block_sparse_in_eval_counts_block_zero_twice_so_longer_rows_only_approximate(specter2_parts, small_blocks_out):
    """transformers' BigBird points every random block at block 0 in eval mode: a row of two blocks is
    inside the sparse window, yet differs from full attention. Pinned so a library change is noticed."""
    source = source_with_adapter(specter2_parts, "proximity")
    target = bigbird_with_adapter(small_blocks_out, "proximity")
    ids, mask = batch([64, 16])
    expected, _ = hidden(source, ids, mask)
    got, ran = hidden(target, ids, mask, "block_sparse")
    assert ran == {"block_sparse"}
    assert np.max(np.abs(expected[1, :16] - got[1, :16])) > 1e-4


def test_manifest_records_checks_that_passed_on_the_staged_folder(small_blocks_out):
    manifest = json.loads((small_blocks_out / "manifest.json").read_text())
    checks = manifest["operations"][-1]["checks"]
    bounded = [c for c in checks if c["threshold"] is not None]
    assert bounded and all(c["passed"] for c in checks)
    for role in ROLES:
        assert any(f"adapter {role}" in c["name"] and "original_full ran: cls" in c["name"] for c in bounded)
        assert any(f"adapter {role}" in c["name"] and "one block" in c["name"] for c in bounded)
    assert any(
        f"{TARGET_LENGTH}-token input after short ones runs block-sparse" in c["name"] and c["passed"] for c in checks
    )


# ----------------------------------------------------------------------------- long inputs


def test_long_input_runs_block_sparse_with_finite_outputs_even_after_a_short_one(small_blocks_out):
    from ctxext.transfer import run_model

    target = bigbird_with_adapter(small_blocks_out, "proximity")
    hidden(target, *batch([20]), "block_sparse")
    assert target.attention_type == "original_full"  # the trap: a short batch switches BigBird for good
    ids, mask = batch([TARGET_LENGTH], seed=3)
    _, ran = hidden(target, ids, mask)
    assert ran == {"original_full"}  # without a reset the long batch runs full attention
    states, ran = run_model(target, ids, mask, attention_type="block_sparse", probe=True)
    assert ran == "block_sparse" and np.isfinite(states).all()


# ----------------------------------------------------------------------------- what is written


def test_config_carries_bert_values_not_bigbird_defaults(small_blocks_out, specter2_parts):
    config = json.loads((small_blocks_out / "config.json").read_text())
    source = json.loads((specter2_parts["base"] / "config.json").read_text())
    assert config["model_type"] == "big_bird" and config["architectures"] == ["BigBirdModel"]
    assert config["hidden_act"] == source["hidden_act"] == "gelu"  # BigBird's default is gelu_new
    assert config["vocab_size"] == source["vocab_size"] and config["pad_token_id"] == source["pad_token_id"]
    assert config["sep_token_id"] == tiny.vocabulary().index("[SEP]")  # BigBird's default is 66
    assert config["layer_norm_eps"] == source["layer_norm_eps"]
    assert config["max_position_embeddings"] == TARGET_LENGTH and config["attention_type"] == "block_sparse"
    assert (config["block_size"], config["num_random_blocks"]) == (8, 1)
    assert config["use_bias"] is True and config["rescale_embeddings"] is False
    tokenizer = json.loads((small_blocks_out / "tokenizer_config.json").read_text())
    assert tokenizer["model_max_length"] == TARGET_LENGTH


def test_manifest_maps_every_source_tensor_and_adapter_weight(small_blocks_out, specter2_parts):
    from ctxext.io import CheckpointReader, ModelFolder

    manifest = json.loads((small_blocks_out / "manifest.json").read_text())
    weights = manifest["operations"][0]
    accounted = set(weights["copied"]) | set(weights["renamed"]) | set(weights["modified"]) | set(weights["dropped"])
    source_names = set(CheckpointReader(ModelFolder.open(specter2_parts["base"])).names)
    assert source_names <= accounted
    assert weights["renamed"]["pooler.dense.weight"] == "pooler.weight"
    assert weights["modified"] == ["embeddings.position_embeddings.weight"]
    for role, stored in specter2_tiny.SPECTER2_ADAPTERS.items():
        operation = next(op for op in manifest["operations"] if op["name"] == f"adapter:{role}")
        assert operation["parameters"]["source_name"] == stored
        key = f"bert.encoder.layer.0.output.adapters.{stored}.adapter_up.weight"
        assert operation["renamed"][key] == f"encoder.layer.0.output_adapters.adapters.{role}.adapter_up.weight"
        hashed = manifest["extra_weights"][f"adapters/{role}/adapter.safetensors"]
        assert set(hashed) == set(operation["renamed"].values())
        config = json.loads((small_blocks_out / "adapters" / role / "adapter_config.json").read_text())
        assert config["name"] == role and config["model_type"] == "big_bird"
    assert set(manifest["sources"]) == {"model", *(f"adapter:{r}" for r in ROLES)}


def test_verify_checks_adapter_weights_too(small_blocks_out, tmp_path):
    import shutil

    from ctxext.errors import CheckFailed
    from ctxext.manifest import verify

    copy = tmp_path / "copy"
    shutil.copytree(small_blocks_out, copy)
    total = verify(copy).tensors_checked
    manifest = json.loads((copy / "manifest.json").read_text())
    assert total == len(manifest["tensors"]) + sum(len(t) for t in manifest["extra_weights"].values())
    adapter_file = copy / "adapters" / ROLES[0] / "adapter.safetensors"
    raw = bytearray(adapter_file.read_bytes())
    raw[-3] ^= 0x10
    adapter_file.write_bytes(bytes(raw))
    with pytest.raises(CheckFailed, match="adapter.safetensors does not match"):
        verify(copy)


def test_tile_keeps_the_source_position_rows(small_blocks_out, specter2_parts):
    from ctxext.io import CheckpointReader, ModelFolder

    source = CheckpointReader(ModelFolder.open(specter2_parts["base"])).array("embeddings.position_embeddings.weight")
    table = CheckpointReader(ModelFolder.open(small_blocks_out)).array("embeddings.position_embeddings.weight")
    assert table.shape == (TARGET_LENGTH, source.shape[1])
    assert np.array_equal(table[: len(source)], source)
    assert np.array_equal(table[len(source) : 2 * len(source)], source)


# ----------------------------------------------------------------------------- failures


def test_offline_with_nothing_cached_fails_at_once_naming_every_missing_part(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_CACHE", "TRANSFORMERS_CACHE", "HF_HOME"}}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "ctxext", "transfer", "specter2", "bigbird", "--len", "4096", "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == SourceNotFound.exit_code
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in completed.stderr
    for part in (
        "allenai/specter2_base",
        "allenai/specter2'",
        "allenai/specter2_adhoc_query",
        "allenai/specter2_classification",
        "allenai/specter2_regression",
        "HF_HUB_OFFLINE",
    ):
        assert part in lines[0]
    assert not out.exists()


def test_unmapped_source_tensor_stops_the_transfer_and_writes_nothing(tiny_models, tmp_path):
    from safetensors.numpy import load_file, save_file

    from ctxext.transfer import transfer

    folder = tiny_models("bert", copy_to=tmp_path / "bert")
    tensors = load_file(folder / "model.safetensors")
    tensors["encoder.layer.0.attention.self.rotary.weight"] = np.zeros(4, np.float32)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UnsupportedArchitecture, match="rotary.weight.*no BigBird mapping"):
        transfer(str(folder), "bigbird", 128, tmp_path / "out", block_size=8)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("key", "error"),
    [
        ("bert.encoder.layer.0.attention.self.adapters.[PRX].adapter_up.weight", UnsupportedArchitecture),  # no rule
        ("bert.encoder.layer.0.output.adapters.[PRX].extra", CheckFailed),  # renamed, then left over when loading
    ],
)
def test_adapter_weight_that_does_not_fit_stops_the_transfer(specter2_parts, tmp_path, key, error):
    import shutil

    import torch

    from ctxext.transfer import transfer

    adapter = tmp_path / "odd"
    shutil.copytree(specter2_parts["proximity"], adapter)
    weights = torch.load(adapter / "pytorch_adapter.bin", weights_only=True)
    weights[key] = torch.zeros(2)
    torch.save(weights, adapter / "pytorch_adapter.bin")
    with pytest.raises(error, match="attention.self.adapters|extra"):
        transfer(
            str(specter2_parts["base"]),
            "bigbird",
            128,
            tmp_path / "out",
            block_size=8,
            adapters=[("odd", str(adapter))],
        )
    assert not (tmp_path / "out").exists()


def test_native_layout_keys_do_not_fit_a_model_that_has_the_adapter_under_another_name(
    specter2_parts, small_blocks_out
):
    """Loading is strict: a weight missing or left over is an error naming it (the adapters library only logs
    them, at info level)."""
    from ctxext.bottleneck import load_adapter_strictly, load_model_with_adapters

    model = load_model_with_adapters(small_blocks_out)
    adapter = small_blocks_out / "adapters" / "adhoc_query"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["name"] == "adhoc_query"
    broken = small_blocks_out.parent / "renamed-adapter"
    shutil.copytree(adapter, broken)
    (broken / "adapter_config.json").write_text(json.dumps({**config, "name": "someone_else"}))
    with pytest.raises(UnsupportedArchitecture, match="is not one of a bottleneck adapter"):
        load_adapter_strictly(model, broken, "adhoc_query")


@pytest.mark.parametrize(
    ("length", "message"), [("100", "multiple of --block-size"), ("640", "always fall back to full attention")]
)
def test_lengths_bigbird_cannot_use_are_refused(specter2_parts, tmp_path, length, message):
    result = runner.invoke(
        app, ["transfer", str(specter2_parts["base"]), "bigbird", "--len", length, "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 4 and message in result.output


def test_existing_output_is_refused_without_force(specter2_parts, small_blocks_out):
    result = runner.invoke(
        app,
        [
            "transfer",
            "specter2",
            "bigbird",
            "--len",
            "256",
            "-o",
            str(small_blocks_out),
            "--block-size",
            "8",
            "--random-blocks",
            "1",
            *preset_args(specter2_parts),
        ],
    )
    assert result.exit_code == 5 and "--force" in result.output


def test_roberta_source_drops_its_offset_rows_and_matches(tiny_models, tmp_path):
    """RoBERTa keeps two rows before position 0; BigBird has none, so they are dropped and the checks
    (run inside the transfer) still match the source."""
    from ctxext.transfer import transfer

    result = transfer(str(tiny_models("roberta")), "bigbird", 128, tmp_path / "out", block_size=8, num_random_blocks=1)
    weights, checks = result.manifest["operations"][0], result.manifest["operations"][-1]["checks"]
    assert weights["parameters"]["offset_rows_dropped"] == 2
    assert any("original_full ran: cls" in c["name"] and c["passed"] for c in checks)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["max_position_embeddings"] == 128 and config["pad_token_id"] == 1


# ----------------------------------------------------------------------------- a real model


@pytest.mark.slow
def test_minilm_with_a_seq_bn_adapter_matches_in_full_and_block_sparse(minilm, tmp_path):
    specter2_tiny.random_adapter(minilm, tmp_path / "adapter", scale=0.05)
    from ctxext.transfer import transfer

    result = transfer(
        "all-MiniLM-L6-v2", "bigbird", 4096, tmp_path / "out", adapters=[(None, str(tmp_path / "adapter"))]
    )
    checks = result.manifest["operations"][-1]["checks"]
    by_name = {c["name"]: c for c in checks}
    assert all(c["passed"] for c in checks)
    for pooling in ("cls", "mean"):
        full = by_name[
            f"adapter mine, inputs of up to 512 tokens, original_full configured, original_full ran: "
            f"{pooling} pooling matches the source"
        ]
        sparse = by_name[
            f"adapter mine, inputs of up to 512 tokens, block_sparse configured, original_full ran: "
            f"{pooling} pooling matches the source"
        ]
        assert full["value"] <= 1e-4 and sparse["value"] <= 1e-4
    assert by_name["adapter mine, a 4096-token input after short ones runs block-sparse"]["passed"]
    assert (tmp_path / "out" / "modules.json").is_file()  # still a sentence-transformers folder


# ----------------------------------------------------------------------------- global registers


def registered_tokenizer(folder: Path, block_size: int):
    """A BERT tokenizer with reserved [unusedN] tokens, rewritten by reserve_global_blocks and loaded back."""
    from transformers import AutoTokenizer

    from ctxext.transfer import registered_tokenizer_config, reserve_global_blocks

    folder.mkdir(parents=True, exist_ok=True)
    vocab = [
        "[PAD]",
        *(f"[unused{i}]" for i in range(2 * block_size)),
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "alpha",
        "beta",
        "gamma",
    ]
    tiny.save_tokenizer(folder, 64, words=vocab)
    registers = reserve_global_blocks(json.loads((folder / "tokenizer.json").read_text()), block_size)
    (folder / "tokenizer.json").write_text(json.dumps(registers.tokenizer))
    config = registered_tokenizer_config(folder / "tokenizer_config.json")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(folder), registers


def test_global_registers_fill_the_first_and_last_block_around_any_text(tmp_path):
    tokenizer, registers = registered_tokenizer(tmp_path / "tok", block_size=8)
    assert registers.head == [f"[unused{i}]" for i in range(7)]
    assert registers.tail == [f"[unused{i}]" for i in range(7, 14)]
    ids = tokenizer("alpha beta gamma")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", *registers.head, "alpha", "beta", "gamma", *registers.tail, "[SEP]"]
    pair = tokenizer.convert_ids_to_tokens(tokenizer("alpha", "beta")["input_ids"])
    assert pair == ["[CLS]", *registers.head, "alpha", "[SEP]", "beta", *registers.tail, "[SEP]"]
    truncated = tokenizer("alpha " * 100, truncation=True, max_length=40)["input_ids"]
    assert len(truncated) == 40 and tokenizer.convert_ids_to_tokens(truncated)[-8:] == [*registers.tail, "[SEP]"]


def test_global_registers_need_enough_reserved_tokens_and_write_nothing_otherwise(tiny_models, tmp_path):
    from ctxext.errors import UnsupportedArchitecture
    from ctxext.transfer import transfer

    with pytest.raises(UnsupportedArchitecture, match=r"needs 14 \[unusedN\] tokens"):
        transfer(
            str(tiny_models("bert")),
            "bigbird",
            128,
            tmp_path / "out",
            block_size=8,
            num_random_blocks=1,
            global_registers=True,
        )
    assert not (tmp_path / "out").exists()


def test_the_config_built_without_transformers_loads_as_transformers_would_build_it(tiny_models, tmp_path):
    """bigbird_config fills a source's missing fields from data tables; the loaded config must equal the one
    transformers' own classes give (BertConfig defaults for the source, every BigBird field explicit)."""
    from transformers import AutoConfig, BigBirdConfig

    from ctxext.transfer import CONFIG_CARRIED, bigbird_config

    for model_type in ("bert", "roberta", "xlm-roberta", "camembert"):
        minimal = {"model_type": model_type, "hidden_size": 32}
        built, _ = bigbird_config(minimal, 1024, 16, 2, sep_token_id=3)
        expected = AutoConfig.for_model(**minimal).to_dict()
        loaded = BigBirdConfig(**{k: v for k, v in built.items() if k != "model_type"}).to_dict()
        for key in set(CONFIG_CARRIED) - {"sep_token_id", "id2label", "label2id", "dtype"}:
            if key in expected:
                assert loaded[key] == expected[key], (model_type, key)
        assert loaded["sep_token_id"] == 3


def test_sep_id_is_read_from_the_tokenizer_files(tiny_models):
    from ctxext.io import ModelFolder
    from ctxext.transfer import tokenizer_sep_id

    assert tokenizer_sep_id(ModelFolder.open(tiny_models("bert"))) == tiny.vocabulary().index("[SEP]")


def test_a_model_already_long_keeps_its_position_table_when_its_attention_is_swapped(tmp_path):
    """The swapped-attention order: a full-attention long model (here stretched by `interpolate`) goes into
    BigBird at its own length, its positions copied as they are."""
    from safetensors.numpy import load_file

    import tiny
    from ctxext.positions import Method, interpolate
    from ctxext.transfer import transfer

    source = tiny.make_sentence_transformer("bert", tmp_path / "bert")
    long = interpolate(str(source), 1024, tmp_path / "long", method=Method.spline, check=False).path
    out = transfer(str(long), "bigbird", 1024, tmp_path / "bigbird", block_size=8, num_random_blocks=1)
    before = next(v for k, v in load_file(next(long.glob("**/model.safetensors"))).items() if "position_emb" in k)
    after = next(v for k, v in load_file(next(out.path.glob("**/model.safetensors"))).items() if "position_emb" in k)
    np.testing.assert_array_equal(after, before)
    assert out.manifest["operations"][0]["parameters"]["position_table"]["stretch"] == "none: copied"
