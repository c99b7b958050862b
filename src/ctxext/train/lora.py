"""LoRA adapters on a decoder's attention and MLP projections (peft), for the stages that adapt a flipped
decoder (``mntp``, ``finetune-qa``): the weights stay as they ship (bf16 for most), only the adapters (and a
head named in ``also_train``) train, and they are merged into the weights on writing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def with_lora(
    model: Any, rank: int, alpha: int | None = None, dropout: float = 0.05, *, also_train: Sequence[str] = ()
) -> tuple[Any, dict]:
    """``model`` with LoRA adapters of ``rank`` on ``LORA_TARGETS`` (every other weight frozen but the modules
    ``also_train`` names), and the settings the manifest records."""
    from peft import LoraConfig, get_peft_model

    scale = int(alpha or 2 * rank)
    config = LoraConfig(
        r=rank,
        lora_alpha=scale,
        lora_dropout=dropout,
        target_modules=list(LORA_TARGETS),
        bias="none",
        modules_to_save=list(also_train) or None,
    )
    settings = {"rank": rank, "alpha": scale, "dropout": dropout, "targets": list(LORA_TARGETS)}
    return get_peft_model(model, config), {**settings, **({"also_trained": list(also_train)} if also_train else {})}


def train_with_lora(
    model: Any, rank: int, train: Callable[[Any], None], *, also_train: Sequence[str] = ()
) -> tuple[Any, dict | None]:
    """``train(model)``; with ``rank`` > 0, ``train`` of ``model`` with LoRA adapters (activations recomputed in
    the backward pass), merged into its weights after. The model to write, and the LoRA settings (None without)."""
    from ctxext.compat import checkpointing_disable, checkpointing_enable
    from ctxext.errors import InvalidArgument

    if rank < 0:
        raise InvalidArgument(f"--lora-rank {rank} must be 0 (off) or more")
    if not rank:
        train(model)
        return model, None
    adapted, settings = with_lora(model, rank, also_train=also_train)
    checkpointing_enable(model)
    train(adapted)
    checkpointing_disable(model)
    return adapted.merge_and_unload(), settings
