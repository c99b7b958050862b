"""The numeric checks of a flip: the source is causal, the flipped model is bidirectional, padding side does
not matter, the reloaded folder equals the in-memory model, the sliding window survives reload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctxext.flip.build import BuiltModel
from ctxext.flip.options import RELATIVE_TOLERANCE_OF, Head, Pooling, family_of, register
from ctxext.flip.source import beyond_probe
from ctxext.manifest import Check
from ctxext.sentence_folder import pool


def probe_ids(vocab_size: int, length: int, rows: int, seed: int) -> Any:
    """Random token ids away from the low (special) ids."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    low = min(vocab_size // 4, 1000)
    return torch.randint(low, vocab_size, (rows, length), generator=generator)


def hidden_states(backbone: Any, input_ids: Any, attention_mask: Any) -> Any:
    import torch

    forward = getattr(backbone, "encode", backbone)  # QA models: the backbone's own forward
    with torch.no_grad():
        return forward(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.double()


def last_token_effect(
    backbone: Any, vocab_size: int, length: int = 12, seed: int = 0, window: int | None = None
) -> float:
    """How much the output at position 0 moves when only the last token changes (0 in a causal model).
    With a sliding ``window`` the input is kept short enough for position 0 to reach the last token."""
    import torch

    if window is not None:
        length = max(2, min(length, window))

    ids = probe_ids(vocab_size, length, 1, seed).repeat(2, 1)
    ids[1, -1] = vocab_size // 4 + (int(ids[0, -1]) - vocab_size // 4 + 1) % (vocab_size - vocab_size // 4)
    hidden = hidden_states(backbone, ids, torch.ones_like(ids))
    return float((hidden[0, 0] - hidden[1, 0]).abs().max())


def padding_difference(backbone: Any, vocab_size: int, lengths: tuple[int, int] = (12, 7), seed: int = 1) -> float:
    """Largest difference at real positions between right- and left-padded copies of the same batch,
    relative to the largest output value."""
    import torch

    longest = max(lengths)
    ids = probe_ids(vocab_size, longest, len(lengths), seed)
    right_ids, right_mask = torch.zeros_like(ids), torch.zeros_like(ids)
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        right_ids[row, :length], right_mask[row, :length] = ids[row, :length], 1
        left_ids[row, longest - length :], left_mask[row, longest - length :] = ids[row, :length], 1
    right = hidden_states(backbone, right_ids, right_mask)
    left = hidden_states(backbone, left_ids, left_mask)
    worst = 0.0
    for row, length in enumerate(lengths):
        worst = max(worst, float((right[row, :length] - left[row, longest - length :]).abs().max()))
    return worst / max(1.0, float(right.abs().max()))


def bidirectionality_checks(
    source_backbone: Any, flipped_backbone: Any, vocab_size: int, window: int | None = None
) -> list[Check]:
    source_effect = last_token_effect(source_backbone, vocab_size, window=window)
    flipped_effect = last_token_effect(flipped_backbone, vocab_size, window=window)
    padding = padding_difference(flipped_backbone, vocab_size)
    dtype = next(flipped_backbone.parameters()).dtype
    tolerance = relative_tolerance(dtype)
    return [
        Check(
            "source is causal: position 0 ignores the last token",
            source_effect,
            0.0,
            passed=source_effect == 0.0,
            detail="max abs change of the output at position 0",
        ),
        Check(
            "flipped: position 0 sees the last token",
            flipped_effect,
            1e-6,
            passed=flipped_effect > 1e-6,
            detail="max abs change of the output at position 0 (must exceed the bound)",
        ),
        Check(
            "flipped: left and right padding give the same outputs",
            padding,
            tolerance,
            passed=padding <= tolerance,
            detail=f"max abs diff at real positions / max abs output, in {dtype_name(dtype)}",
        ),
    ]


def reload_checks(
    model_dir: Path, built: BuiltModel, head: Head, vocab_size: int, pooling: Pooling | None
) -> list[Check]:
    """Load the written folder the documented way and compare it with the in-memory model."""
    import torch
    from transformers import AutoModel, AutoModelForQuestionAnswering

    from ctxext.checks import load_model_strictly

    register()
    reloaded = load_model_strictly(
        model_dir,
        AutoModelForQuestionAnswering if head == Head.qa else AutoModel,
        ignore_unexpected=lambda name: beyond_probe(name, built.probe),
        dtype=built.dtype,
        **built.probe,
    )
    reloaded_backbone = reloaded
    ids = probe_ids(vocab_size, 16, 2, seed=2)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    expected, actual = hidden_states(built.backbone, ids, mask), hidden_states(reloaded_backbone, ids, mask)
    real = mask.bool()
    difference = float((expected[real] - actual[real]).abs().max())
    checks = [
        Check("reloaded folder loads with no missing or unexpected weights", 0.0, 0.0, detail=probed(built)),
        Check(
            "reloaded equals in-memory: last hidden states",
            difference,
            0.0,
            passed=difference == 0.0,
            detail=f"max abs diff at real positions, both in {dtype_name(built.dtype)}; {probed(built)}",
        ),
    ]
    if head == Head.qa:
        with torch.no_grad():
            before, after = (
                built.model(input_ids=ids, attention_mask=mask),
                reloaded(input_ids=ids, attention_mask=mask),
            )
        logits = max(
            float((before.start_logits - after.start_logits)[real].abs().max()),
            float((before.end_logits - after.end_logits)[real].abs().max()),
        )
        checks.append(Check("reloaded equals in-memory: QA start/end logits", logits, 0.0, passed=logits == 0.0))
    effect = last_token_effect(reloaded_backbone, vocab_size, window=built.window)
    checks.append(Check("reloaded: position 0 sees the last token", effect, 1e-6, passed=effect > 1e-6))
    if built.window is not None:
        checks.append(reloaded_window_check(reloaded, built.window))
    if pooling is not None:
        checks.append(sentence_transformers_check(model_dir, built, ids, mask, pooling))
    return checks


def probed(built: BuiltModel) -> str:
    """What the checks ran on: the whole model, or its first layers."""
    if not built.probe:
        return "every layer"
    return f"the first {built.probe['num_hidden_layers']} of {built.config.num_hidden_layers} layers"


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def relative_tolerance(dtype: Any) -> float:
    return RELATIVE_TOLERANCE_OF[dtype_name(dtype)]


def reloaded_window_check(reloaded: Any, window: int) -> Check:
    """The reloaded model's sliding window, where its family keeps it. A family flipped by a config flag has
    layers that take their window from the config (each is compared too); ctxext encoders build the mask from
    ``bidirectional_window`` (their layers' own sliding_window attribute is not used by eager/SDPA)."""
    family = family_of(reloaded.config.model_type)
    config_window = getattr(reloaded.config, family.window_key)
    windows: set[Any] = set()
    if family.flip_by == "config_flag":
        windows = {getattr(layer.self_attn, "sliding_window", None) for layer in reloaded.layers} - {None}
    return Check(
        "reloaded sliding window equals the intended one",
        float(config_window),
        float(window),
        passed=config_window == window and windows <= {window},
        detail=f"layer windows {sorted(windows)}",
    )


def sentence_transformers_check(model_dir: Path, built: BuiltModel, ids: Any, mask: Any, pooling: Pooling) -> Check:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(model_dir), device="cpu", model_kwargs={"dtype": built.dtype}, config_kwargs=dict(built.probe)
    )
    with torch.no_grad():
        embedded = model({"input_ids": ids, "attention_mask": mask})["sentence_embedding"].double()
    expected = pool(hidden_states(built.backbone, ids, mask), mask, pooling)
    difference = float((embedded - expected).abs().max())
    bound = relative_tolerance(built.dtype) * max(1.0, float(expected.abs().max()))
    return Check(
        f"sentence-transformers ({pooling.value} pooling) equals pooled in-memory outputs",
        difference,
        bound,
        passed=difference <= bound,
        detail=f"in {dtype_name(built.dtype)}; {probed(built)}",
    )
