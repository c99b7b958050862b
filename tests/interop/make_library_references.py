"""Adapters made and run by the adapters library itself: the references ctxext's native adapters are checked
against (``tests/test_bottleneck.py``). Run by the CI interop job, in its own environment (adapters 1.3.0 pins
transformers 4.57, which ctxext does not install):

    python tests/interop/make_library_references.py tests/data/adapter_references

writes ``base/`` (a tiny BERT with a different LayerNorm in every layer, and its tokenizer), one adapter folder per
config under ``library/`` as ``save_adapter`` writes it (``adapter_config.json`` + ``pytorch_adapter.bin``), and
``outputs.safetensors``: the inputs and the last hidden state of the base with each adapter active.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tiny  # noqa: E402
from specter2_tiny import SPECTER2_ADAPTERS, randomize_layer_norms  # noqa: E402

TEXTS = ["the model reads a long document", "sparse attention and position embedding of a paper title"]
HIDDEN = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}


def adapter_configs():
    """Every adapter config ctxext runs: SPECTER2's four roles (seq_bn, "pfeiffer"), double_seq_bn ("houlsby"),
    and seq_bn with the fields SPECTER2 leaves at their defaults set otherwise."""
    from adapters import DoubleSeqBnConfig, SeqBnConfig

    configs = {
        role: (stored, SeqBnConfig(reduction_factor=16, non_linearity="relu"))
        for role, stored in SPECTER2_ADAPTERS.items()
    }
    configs["double_seq_bn"] = ("houlsby", DoubleSeqBnConfig())
    configs["seq_bn_variant"] = (
        "variant",
        SeqBnConfig(
            reduction_factor={"default": 16, "1": 8},
            non_linearity="gelu",
            leave_out=[0],
            scaling=0.5,
            residual_before_ln=False,
            ln_before=True,
            ln_after=True,
            adapter_residual_before_ln=True,
        ),
    )
    return configs


def main(out: Path) -> None:
    import json

    import torch
    from adapters import BertAdapterModel
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    base = tiny.make_model("bert", out / "base", seed=3, **HIDDEN)
    (out / "texts.json").write_text(json.dumps(TEXTS))
    randomize_layer_norms(base, 3)
    tokenizer = AutoTokenizer.from_pretrained(base)
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    model = BertAdapterModel.from_pretrained(base).eval()
    outputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        outputs["none"] = model.bert(**batch).last_hidden_state
    (out / "library").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(5)
    for case, (stored, config) in adapter_configs().items():
        model.add_adapter(stored, config=config)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if f".{stored}." in name:
                    parameter.copy_(
                        torch.randn(parameter.shape, generator=generator) * 0.3
                        + (1.0 if "norm" in name and name.endswith("weight") else 0.0)
                    )
        model.save_adapter(str(out / "library" / case), stored, with_head=False)
        model.set_active_adapters(stored)
        with torch.no_grad():
            outputs[case] = model.bert(**batch).last_hidden_state
        model.set_active_adapters(None)
    save_file({k: v.contiguous() for k, v in outputs.items()}, str(out / "outputs.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
