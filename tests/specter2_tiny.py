"""A tiny SPECTER2-shaped source: a BERT base plus four seq_bn ("pfeiffer") adapters configured and named
like SPECTER2's (reduction factor 16, ReLU, after the feed-forward block, keys prefixed ``bert.`` because
they were saved from a BertAdapterModel), each saved in the adapters library's format."""

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
    from adapters import BertAdapterModel, SeqBnConfig

    base = tiny.make_model("bert", root / "specter2_base", seed=seed, **bert_overrides)
    randomize_layer_norms(base, seed)
    model = BertAdapterModel.from_pretrained(base).eval()
    parts = {"base": base}
    generator = torch.Generator().manual_seed(seed + 1)
    for role, stored_name in SPECTER2_ADAPTERS.items():
        model.add_adapter(stored_name, config=SeqBnConfig(reduction_factor=16, non_linearity="relu"))
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if f".{stored_name}." in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        folder = root / f"specter2_{role}"
        model.save_adapter(str(folder), stored_name, with_head=False)
        config = json.loads((folder / "adapter_config.json").read_text())
        config["model_name"] = "allenai/specter2_base"
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
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
