"""A tiny SPECTER2-shaped source: a BERT base plus four seq_bn ("pfeiffer") adapters configured and named
like SPECTER2's (reduction factor 16, ReLU, after the feed-forward block, keys prefixed ``bert.`` as a
BertAdapterModel saves them), each in the adapters library's format (adapter_config.json + pytorch_adapter.bin).
ctxext writes them itself; tests/test_bottleneck.py checks that format and its outputs against adapters the
library made."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import tiny

# role in the specter2 preset -> the name stored in the adapter's config (its weight keys carry it)
SPECTER2_ADAPTERS = {"proximity": "[PRX]", "adhoc_query": "[QRY]", "classification": "[CLF]", "regression": "[RGN]"}


def make_specter2(root: Path, seed: int = 0, **bert_overrides) -> dict[str, Path]:
    """Build the base folder and one folder per adapter under ``root``; returns role -> folder."""
    import torch

    from ctxext.bottleneck import (
        SEQ_BN,
        adapter_config_file,
        adapter_state,
        add_adapter,
        load_model_with_adapters,
        parse_config,
    )

    base = tiny.make_model("bert", root / "specter2_base", seed=seed, **bert_overrides)
    randomize_layer_norms(base, seed)
    model = load_model_with_adapters(base)
    config = parse_config({**SEQ_BN, "reduction_factor": 16, "non_linearity": "relu"}, "seq_bn")
    parts = {"base": base}
    generator = torch.Generator().manual_seed(seed + 1)
    for role, stored_name in SPECTER2_ADAPTERS.items():
        add_adapter(model, stored_name, config)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if f".{stored_name}." in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        folder = root / f"specter2_{role}"
        folder.mkdir(parents=True)
        state = {f"bert.{key}": value for key, value in adapter_state(model, stored_name, plugin_layout=False).items()}
        torch.save(state, folder / "pytorch_adapter.bin")
        saved = {**adapter_config_file(model, stored_name, config), "model_class": "BertAdapterModel"}
        (folder / "adapter_config.json").write_text(
            json.dumps({**saved, "model_name": "allenai/specter2_base"}, indent=2)
        )
        parts[role] = folder
    return parts


def randomize_layer_norms(folder: Path, seed: int) -> None:
    """Trained models have a different LayerNorm in every layer; a fresh one has all ones and zeros, which
    hides bugs that take one layer's LayerNorm for another's."""
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(folder)
    generator = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                parameter.copy_(base + 0.5 * torch.randn(parameter.shape, generator=generator))
    model.save_pretrained(folder, safe_serialization=True)


def copy_parts(parts: dict[str, Path], root: Path) -> dict[str, Path]:
    copied = {}
    for role, folder in parts.items():
        copied[role] = root / folder.name
        shutil.copytree(folder, copied[role])
    return copied


def random_adapter(model_dir: Path, folder: Path, name: str = "mine", scale: float = 0.3, seed: int = 0) -> Path:
    """A seq_bn adapter with random N(0, ``scale``) weights for the model in ``model_dir``, saved by ctxext in the
    adapters library's format."""
    import torch

    from ctxext.bottleneck import SEQ_BN, add_adapter, load_model_with_adapters, parse_config, save_adapter

    model = load_model_with_adapters(model_dir)
    add_adapter(model, name, parse_config(SEQ_BN, "seq_bn"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, parameter in model.named_parameters():
            if f".{name}." in key:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    save_adapter(model, name, folder)
    return folder
