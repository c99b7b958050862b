"""The numeric checks of a transfer, on the finished temporary folder: the source (plus each adapter) against
BigBird (plus the adapter) on short inputs, and one input of the full new length in block-sparse attention."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctxext.checks import max_abs_diff
from ctxext.manifest import Check, require_passed
from ctxext.transfer.sources import TransferSources
from ctxext.transfer.tables import BIGBIRD, TOLERANCE


def equivalence_checks(
    sources: TransferSources,
    staging: Path,
    relative_model_dir: Path,
    adapter_names: list[str],
    source_length: int,
    target_length: int,
    block_size: int,
    num_random_blocks: int,
) -> list[Check]:
    """Source + adapter against BigBird + adapter, as loaded back from the written folder (with no adapter,
    plain transformers loads both: the adapters library is then not needed)."""
    from ctxext.checks import random_batch

    source_model, output_model = _loaded_pair(sources, staging, relative_model_dir)
    checks = [Check("output and adapters load with no missing or unexpected weights", 0.0, 0.0)]
    vocab_size = output_model.config.vocab_size
    short_length = min(source_length, 512)
    low = test_token_floor(vocab_size)
    short = random_batch(vocab_size, [short_length, max(1, short_length // 3)], seed=0, low=low)
    settings: list[str | None] = [*adapter_names] or [None]
    sparse_threshold = (5 + 2 * num_random_blocks) * block_size
    for adapter in settings:
        label = f"adapter {adapter}" if adapter else "no adapter"
        _activate(source_model, adapter)
        _activate(output_model, adapter)
        expected = run_model(source_model, *short)
        for attention in ("original_full", "block_sparse"):
            got, ran = run_model(output_model, *short, attention_type=attention, probe=True)
            name = f"{label}, inputs of up to {short_length} tokens, {attention} configured, {ran} ran"
            if ran == "original_full":
                checks.extend(pooled_checks(name, expected, got, short[1]))
            else:  # small blocks: sparse attention ran on a short input; it approximates full attention
                checks.append(
                    Check(
                        f"{name}: sparse attention approximates full attention",
                        max_abs_diff(_cls(expected), _cls(got)),
                        detail="max abs diff of CLS vectors; information only",
                    )
                )
        if source_length - source_length % block_size > sparse_threshold:
            checks.extend(
                _sparse_short_checks(source_model, output_model, label, vocab_size, source_length, block_size)
            )
    _activate(output_model, settings[0])
    long_batch = random_batch(vocab_size, [target_length], seed=1, low=low)
    hidden, ran = run_model(output_model, *long_batch, attention_type="block_sparse", probe=True)
    finite = bool(np.isfinite(hidden).all())
    label = f"adapter {settings[0]}" if settings[0] else "no adapter"
    checks.append(
        Check(
            f"{label}, a {target_length}-token input after short ones runs block-sparse",
            float(ran == "block_sparse"),
            1.0,
            passed=ran == "block_sparse",
            detail=f"{ran} ran",
        )
    )
    checks.append(
        Check(f"{label}, a {target_length}-token input gives finite outputs", float(finite), 1.0, passed=finite)
    )
    require_passed(checks)
    return checks


def _sparse_short_checks(
    source_model: Any, output_model: Any, label: str, vocab_size: int, source_length: int, block_size: int
) -> list[Check]:
    """Blocks small enough that block-sparse really runs on a source-length input.

    Rows that fit in the first block (a global block) must match the source. Longer rows are an
    approximation, measured and not bounded: besides the window, transformers' BigBird in eval mode points
    every random block at block 0, so block 0 counts twice in the softmax of every non-global query block
    (even when the window already covers every real token).
    """
    from ctxext.checks import random_batch

    long_row = source_length - source_length % block_size
    batch = random_batch(
        vocab_size, [long_row, block_size, max(1, block_size // 2)], seed=2, low=test_token_floor(vocab_size)
    )
    expected = run_model(source_model, *batch)
    got, ran = run_model(output_model, *batch, attention_type="block_sparse", probe=True)
    name = f"{label}, block-sparse configured, {ran} ran"
    checks = pooled_checks(
        f"{name}, rows of up to {block_size} tokens (one block) padded to {long_row}",
        expected[1:],
        got[1:],
        batch[1][1:],
    )
    checks.append(
        Check(
            f"{name}, a {long_row}-token row: sparse attention approximates full attention",
            max_abs_diff(_cls(expected[:1]), _cls(got[:1])),
            detail="max abs diff of CLS vectors; information only",
        )
    )
    return checks


def test_token_floor(vocab_size: int) -> int:
    """Lowest token id drawn for check inputs: past the special ids of real vocabularies, or of tiny ones."""
    return 1000 if vocab_size > 2000 else 5


def _loaded_pair(sources: TransferSources, staging: Path, relative_model_dir: Path) -> tuple[Any, Any]:
    """The source and the written model, each with the adapters it has (strictly: nothing missing or left over)."""
    if not sources.adapters:
        from ctxext.checks import load_model_strictly

        source = load_model_strictly(sources.folder.model_dir)
        output = load_model_strictly(staging / relative_model_dir)
        return getattr(source, "base_model", source), getattr(output, "base_model", output)
    from ctxext.bottleneck import load_adapter_strictly, load_model_with_adapters

    source_model = load_model_with_adapters(sources.folder.model_dir)
    output_model = load_model_with_adapters(staging / relative_model_dir)
    for item in sources.adapters:
        load_adapter_strictly(source_model, item.folder.path, item.name)
        load_adapter_strictly(output_model, staging / "adapters" / item.name, item.name)
    return source_model, output_model


def _activate(model: Any, adapter: str | None) -> None:
    from ctxext.bottleneck import activate_adapter

    activate_adapter(model, adapter)


def run_model(
    model: Any, input_ids: Any, attention_mask: Any, *, attention_type: str | None = None, probe: bool = False
) -> Any:
    """Last hidden states (float64, padding zeroed); with ``probe`` also which attention ran."""
    from ctxext.block_sparse import attention_probe
    from ctxext.checks import last_hidden_state

    if attention_type is not None:
        getattr(model, BIGBIRD.prefix, model).set_attention_type(attention_type)
    if not probe:
        return last_hidden_state(model, input_ids, attention_mask)
    with attention_probe(model) as seen:
        hidden = last_hidden_state(model, input_ids, attention_mask)
    kinds = set(seen)
    ran = next((kind for kind in ("block_sparse", "original_full") if kinds == {kind}), f"mixed {sorted(kinds)}")
    return hidden, ran


def _cls(hidden: np.ndarray) -> np.ndarray:
    return hidden[:, 0]


def _mean(hidden: np.ndarray, mask: Any) -> np.ndarray:
    weights = np.asarray(mask, dtype=np.float64)[..., None]
    return (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


def pooled_checks(name: str, expected: np.ndarray, got: np.ndarray, mask: Any) -> list[Check]:
    checks = []
    for pooling, a, b in (("cls", _cls(expected), _cls(got)), ("mean", _mean(expected, mask), _mean(got, mask))):
        difference = max_abs_diff(a, b)
        checks.append(
            Check(
                f"{name}: {pooling} pooling matches the source",
                difference,
                TOLERANCE,
                passed=difference <= TOLERANCE,
                detail="max abs diff of pooled vectors",
            )
        )
    return checks
