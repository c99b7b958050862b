"""Position schemes and how to stretch them: learned tables (linear, cubic spline, tile) and RoPE scaling.

The maths works on numpy arrays in float64 and is vectorised over every hidden dimension at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.architectures import (
    BERT_EMBEDDINGS,
    LEARNED,
    POSITION_TABLE,
    ROPE,
    buffer_kind,
    learned_offset,
    position_scheme,
)
from ctxext.checkpoint import OutputPlan, OutputResult, ProgressFn, config_diff, no_progress, write_model_folder
from ctxext.checks import max_abs_diff
from ctxext.errors import InvalidArgument, UnsupportedArchitecture
from ctxext.io import CheckpointReader, ModelFolder, OutTensor, array_to_bytes, bytes_to_array, open_model
from ctxext.manifest import Check, OperationRecord, require_passed


class Method(str, Enum):
    linear = "linear"
    spline = "spline"
    tile = "tile"


class Grid(str, Enum):
    """Where new position j samples the original table (x in original-row units).

    ``pinned`` (the context-extension package's grid): x = j * (n - 1) / (N - 1); both ends pinned.
    ``scaled`` (position interpolation as in LongEmbed's PI): x = j * n / N; original row i lands on
    new position i * N / n, and the last N/n - 1 positions extrapolate past the last row.
    """

    pinned = "pinned"
    scaled = "scaled"


class CheckLevel(str, Enum):
    """What ``interpolate`` checks on the written folder before it is moved into place.

    ``fast`` (the default) needs neither torch nor transformers: every tensor but the table is the source's byte
    for byte, the layout matches the config, and the embedding layer (where learned positions act) is computed
    from the written files: against the source on short inputs, finite at every new position. ``full`` adds
    loading both models with transformers and running the whole encoder.
    """

    none = "none"
    fast = "fast"
    full = "full"


class RopeScaling(str, Enum):
    linear = "linear"
    dynamic = "dynamic"
    yarn = "yarn"


@dataclass(frozen=True)
class LearnedLayout:
    """Where a checkpoint's learned position table is and how it is laid out."""

    tensor_names: tuple[str, ...]
    rows: int
    offset: int

    @property
    def length(self) -> int:
        """Usable positions: the rows after the offset."""
        return self.rows - self.offset


def learned_layout(config: dict[str, Any], shapes: dict[str, tuple[int, ...]], offset: int | None) -> LearnedLayout:
    """Find the position table(s) and their offset; ``offset=None`` detects it from the config."""
    names = tuple(sorted(name for name in shapes if name.endswith(POSITION_TABLE)))
    if not names:
        raise UnsupportedArchitecture(
            f"no tensor named *{POSITION_TABLE} in this {config.get('model_type')} checkpoint"
        )
    row_counts = {shapes[name][0] for name in names}
    if len(row_counts) != 1:
        raise UnsupportedArchitecture(f"position tables of different lengths: {names}")
    rows = row_counts.pop()
    if offset is None:
        offset = learned_offset(config)
    if not 0 <= offset < rows:
        raise InvalidArgument(f"offset {offset} does not fit a position table of {rows} rows")
    return LearnedLayout(tensor_names=names, rows=rows, offset=offset)


# ----------------------------------------------------------------------------- learned tables


def grid_positions(original_length: int, target_length: int, grid: Grid) -> np.ndarray:
    """Where each new position samples the original table, in original-row units."""
    new_positions = np.arange(target_length, dtype=np.float64)
    if grid == Grid.pinned:
        return new_positions * (original_length - 1) / (target_length - 1)
    return new_positions * original_length / target_length


def anchor_rows(original_length: int, target_length: int, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """New rows that land exactly on an original row, and the original rows they land on."""
    x = grid_positions(original_length, target_length, grid)
    exact = np.isclose(x, np.round(x), rtol=0, atol=1e-9) & (np.round(x) <= original_length - 1)
    return np.flatnonzero(exact), np.round(x[exact]).astype(np.int64)


def stretch_linear(table: np.ndarray, target_length: int, grid: Grid = Grid.pinned) -> np.ndarray:
    """Linear interpolation between neighbouring rows; past the last row the last segment extends."""
    original = table.astype(np.float64)
    x = grid_positions(len(original), target_length, grid)
    left = np.clip(np.floor(x).astype(np.int64), 0, len(original) - 2)
    weight = (x - left)[:, None]
    return original[left] * (1.0 - weight) + original[left + 1] * weight


def stretch_spline(table: np.ndarray, target_length: int, grid: Grid = Grid.pinned) -> np.ndarray:
    """A not-a-knot cubic spline through every original row, all dimensions at once, in float64.

    The same curve as scipy's ``CubicSpline(bc_type="not-a-knot")`` (and ``interp1d(kind="cubic")``),
    written with numpy alone because importing scipy.interpolate costs more than the whole surgery.
    """
    values = table.astype(np.float64)
    if len(values) < 4:
        raise InvalidArgument(f"a cubic spline needs at least 4 position rows, this table has {len(values)}")
    slopes = _not_a_knot_slopes(values)
    x = grid_positions(len(values), target_length, grid)
    left = np.clip(np.floor(x).astype(np.int64), 0, len(values) - 2)
    t = (x - left)[:, None]
    secant = values[left + 1] - values[left]
    quadratic = 3 * secant - 2 * slopes[left] - slopes[left + 1]
    cubic = slopes[left] + slopes[left + 1] - 2 * secant
    return values[left] + t * (slopes[left] + t * (quadratic + t * cubic))


def _not_a_knot_slopes(values: np.ndarray) -> np.ndarray:
    """First derivatives at unit-spaced knots: a tridiagonal solve (Thomas), vectorised over dimensions."""
    rows = len(values)
    secant = np.diff(values, axis=0)
    lower, diagonal, upper = np.ones(rows), np.full(rows, 4.0), np.ones(rows)
    rhs = np.empty_like(values)
    rhs[1:-1] = 3 * (secant[1:] + secant[:-1])
    diagonal[0], upper[0], rhs[0] = 1.0, 2.0, (5 * secant[0] + secant[1]) / 2
    lower[-1], diagonal[-1], rhs[-1] = 2.0, 1.0, (secant[-2] + 5 * secant[-1]) / 2
    for row in range(1, rows):
        factor = lower[row] / diagonal[row - 1]
        diagonal[row] -= factor * upper[row - 1]
        rhs[row] -= factor * rhs[row - 1]
    slopes = np.empty_like(values)
    slopes[-1] = rhs[-1] / diagonal[-1]
    for row in range(rows - 2, -1, -1):
        slopes[row] = (rhs[row] - upper[row] * slopes[row + 1]) / diagonal[row]
    return slopes


def tile(table: np.ndarray, target_length: int) -> np.ndarray:
    """Repeat the original rows (the Longformer recipe): position p gets row p mod n."""
    return table[np.arange(target_length) % len(table)]


def extend_table(
    position_table: np.ndarray, offset: int, target_length: int, method: Method, grid: Grid = Grid.pinned
) -> np.ndarray:
    """The full new table: offset rows unchanged, then ``target_length`` stretched rows, in float64."""
    reserved, positions = position_table[:offset], position_table[offset:]
    if method == Method.tile:
        stretched = tile(positions.astype(np.float64), target_length)
    elif method == Method.linear:
        stretched = stretch_linear(positions, target_length, grid)
    else:
        stretched = stretch_spline(positions, target_length, grid)
    return np.concatenate([reserved.astype(np.float64), stretched], axis=0)


def length_buffer(kind: str, rows: int) -> np.ndarray:
    if kind == "arange":
        return np.arange(rows, dtype=np.int64)[None, :]
    return np.zeros((1, rows), dtype=np.int64)


FLOAT64_COPIES_PER_ROW = 4  # the spline's work arrays and the result, in float64, while a table is built
MAX_POSITIONS = 2**20
"""The longest window ctxext writes (1,048,576): far past any learned table in use, and it keeps a typo
such as --len 1000000000 from allocating gigabytes."""


def check_target_length(current: int, target_length: int, row_bytes: int = 0) -> None:
    """``target_length`` must grow the window, stay under ``MAX_POSITIONS``, and (``row_bytes`` per new row
    while it is computed) fit in the memory this machine has free."""
    if target_length <= current:
        raise InvalidArgument(f"--len {target_length} is not above the current length {current}")
    if target_length > MAX_POSITIONS:
        raise InvalidArgument(f"--len {target_length} is above the {MAX_POSITIONS} positions ctxext writes")
    needed, free = target_length * row_bytes, available_memory()
    if free is not None and needed > free:
        raise InvalidArgument(
            f"--len {target_length} needs about {needed / 2**30:.1f} GiB to build the table and "
            f"{free / 2**30:.1f} GiB is free; choose a shorter length"
        )


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (Linux's MemAvailable), or None where it cannot be read."""
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


# ----------------------------------------------------------------------------- RoPE


def rope_scaling_config(config: dict[str, Any], target_length: int, scaling: RopeScaling) -> dict[str, Any]:
    """The config keys that make a RoPE model accept ``target_length`` positions."""
    current = int(config.get("max_position_embeddings") or 0)
    existing = config.get("rope_scaling") or {}
    original = int(existing.get("original_max_position_embeddings") or current)
    if not original:
        raise UnsupportedArchitecture("the config has no max_position_embeddings to scale from")
    check_target_length(current, target_length)
    factor = target_length / original
    rope: dict[str, Any] = {"rope_type": scaling.value, "factor": factor}
    if scaling != RopeScaling.linear:
        rope["original_max_position_embeddings"] = original
    return {"rope_scaling": rope, "max_position_embeddings": target_length}


# ----------------------------------------------------------------------------- the interpolate operation


def interpolate(
    ref: str,
    target_length: int,
    out: str,
    *,
    method: Method = Method.spline,
    grid: Grid = Grid.pinned,
    offset: int | None = None,
    rope_scaling: RopeScaling = RopeScaling.linear,
    revision: str | None = None,
    force: bool = False,
    check: bool | CheckLevel = CheckLevel.fast,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> OutputResult:
    """Stretch a checkpoint's positions to ``target_length`` and write it to ``out``; ``check`` is a
    :class:`CheckLevel` (True: fast, False: none).

    Learned tables are rewritten (offset rows unchanged); RoPE models get a rope_scaling config and
    keep their weights byte for byte.
    """
    level = CheckLevel(check) if isinstance(check, str) else (CheckLevel.fast if check else CheckLevel.none)
    source, folder = open_model(ref, revision=revision)
    config = folder.config
    kind = position_scheme(config)
    reader = CheckpointReader(folder)
    options = {
        "ref": ref,
        "len": target_length,
        "method": method.value,
        "grid": grid.value,
        "offset": "auto" if offset is None else offset,
        "rope_scaling": rope_scaling.value,
        "check": level.value,
    }
    sources = {"model": (source, reader.sha256_of_files_in_background())}
    if kind == ROPE:
        plan = _rope_plan(folder, reader, target_length, rope_scaling, options, sources)
        return write_model_folder(plan, out, force=force, progress=progress, argv=argv)
    if kind != LEARNED:
        raise UnsupportedArchitecture(
            f"{config.get('model_type')} uses {kind}: it has no learned absolute position table to stretch"
        )
    layout = learned_layout(config, {n: i.shape for n, i in reader.infos.items()}, offset)
    widths = [reader.infos[name].shape[-1] for name in layout.tensor_names]
    check_target_length(layout.length, target_length, row_bytes=FLOAT64_COPIES_PER_ROW * 8 * sum(widths))
    record = OperationRecord(
        "interpolate_positions",
        parameters={
            "method": method.value,
            "grid": grid.value,
            "offset": layout.offset,
            "original_length": layout.length,
            "target_length": target_length,
        },
    )
    tensors = _stretched_tensors(reader, layout, target_length, method, grid, record)
    new_config = {**config, "max_position_embeddings": layout.offset + target_length}
    record.config_changes.update(config_diff(config, new_config))
    plan = OutputPlan("interpolate", options, sources, tensors, [record], new_config, target_length, folder)

    def checks(staging: Path) -> list[Check]:
        written = ModelFolder.open(staging)
        found = written_table_checks(reader, written, layout, target_length, method, record.copied)
        if level == CheckLevel.full or found is None:  # no embedding recipe for this layout: load the models
            found = (found or []) + model_checks(folder, written, layout, target_length, method)
        return found

    return write_model_folder(
        plan, out, force=force, checks=None if level == CheckLevel.none else checks, progress=progress, argv=argv
    )


def _rope_plan(
    folder: ModelFolder,
    reader: CheckpointReader,
    target_length: int,
    rope_scaling: RopeScaling,
    options: dict[str, Any],
    sources: dict[str, Any],
) -> OutputPlan:
    """A RoPE model: every weight copied byte for byte, the scaling written into the config."""
    config = folder.config
    changes = rope_scaling_config(config, target_length, rope_scaling)
    record = OperationRecord(
        "scale_rope",
        parameters={"len": target_length, "rope_scaling": rope_scaling.value},
        copied=list(reader.names),
        config_changes=changes,
        notes=["RoPE model: no weights changed, scaling written into the config"],
    )
    tensors = [OutTensor.copied(reader, n) for n in reader.names]
    return OutputPlan("interpolate", options, sources, tensors, [record], {**config, **changes}, target_length, folder)


def _stretched_tensors(
    reader: CheckpointReader,
    layout: LearnedLayout,
    target_length: int,
    method: Method,
    grid: Grid,
    record: OperationRecord,
) -> list[OutTensor]:
    """Every tensor of the checkpoint: position tables stretched, length buffers rebuilt, the rest copied."""
    tensors = []
    for name in reader.names:
        info = reader.infos[name]
        if name in layout.tensor_names:
            table = _stretched_table(reader, name, layout, target_length, method, grid, record)
            tensors.append(OutTensor.from_array(name, table, info.dtype))
            record.modified.append(name)
        elif (buffer := buffer_kind(name)) is not None:
            tensors.append(OutTensor.from_array(name, length_buffer(buffer, layout.offset + target_length)))
            record.modified.append(name)
        else:
            tensors.append(OutTensor.copied(reader, name))
            record.copied.append(name)
    return tensors


def _stretched_table(
    reader: CheckpointReader,
    name: str,
    layout: LearnedLayout,
    target_length: int,
    method: Method,
    grid: Grid,
    record: OperationRecord,
) -> np.ndarray:
    """The new table in the source's precision, after the table-level checks that need no model."""
    original = reader.array(name)
    dtype = reader.infos[name].dtype
    table = bytes_to_array(
        array_to_bytes(extend_table(original, layout.offset, target_length, method, grid), dtype),
        dtype,
        (layout.offset + target_length, original.shape[1]),
    )
    record.require(
        Check(f"{name}: offset rows unchanged", max_abs_diff(table[: layout.offset], original[: layout.offset]), 0.0)
    )
    record.require(
        Check(f"{name}: all rows finite", float(np.isfinite(table).all()), 1.0, passed=bool(np.isfinite(table).all()))
    )
    positions, kept = table[layout.offset :], original[layout.offset :]
    if method == Method.tile:
        new_rows, old_rows = np.arange(target_length), np.arange(target_length) % layout.length
    else:
        new_rows, old_rows = anchor_rows(layout.length, target_length, grid)
    difference = max_abs_diff(positions[new_rows], kept[old_rows])
    record.require(
        Check(
            f"{name}: original rows kept at {len(new_rows)} anchor positions", difference, 0.0, passed=difference == 0.0
        )
    )
    return table


EMBEDDING_CHECK_BLOCK = 8192  # positions per block when the embedding layer is computed at the full length


def written_table_checks(
    source: CheckpointReader,
    output: ModelFolder,
    layout: LearnedLayout,
    target_length: int,
    method: Method,
    copied: list[str],
) -> list[Check] | None:
    """Check the written folder without loading a model (see :class:`CheckLevel`); None when the embedding
    layer's tensors are not where BERT-family models keep them, so the caller loads the models instead.

    Learned positions act only in the embedding layer: with every other tensor the source's byte for byte,
    the embedding outputs decide whether short inputs give the source's outputs and whether a full-length
    input can run.
    """
    written = CheckpointReader(output)
    prefixes = [name[: -len(POSITION_TABLE)] for name in layout.tensor_names]
    needed = [BERT_EMBEDDINGS[role] for role in ("token_embd.weight", "token_embd_norm.weight")]
    if not all(prefix + name in written.infos for prefix in prefixes for name in needed):
        return None
    checks = [
        _layout_check(source, written, output.config, layout, target_length),
        _copied_check(source, written, copied),
    ]
    rng = np.random.default_rng(0)  # each position's embedding output depends on that position alone
    for prefix in prefixes:
        before = EmbeddingLayer.read(source, prefix, output.config)
        after = EmbeddingLayer.read(written, prefix, output.config)
        vocab = len(after.words)
        ids = rng.integers(min(1000, vocab - 1), vocab, size=(2, layout.length))
        difference = max_abs_diff(before.outputs(ids, layout.offset), after.outputs(ids, layout.offset))
        name = f"inputs of up to {layout.length} tokens" + (f" ({prefix.rstrip('.')})" if prefix else "")
        detail = "max abs diff of the embedding layer's outputs; every later tensor is the source's byte for byte"
        if method == Method.tile:
            checks.append(Check(f"{name} match the source", difference, 1e-6, detail=detail))
        else:
            checks.append(
                Check(
                    f"{name} against the source",
                    difference,
                    detail=detail + "; information only, this method changes short inputs too",
                )
            )
        checks.append(_full_length_check(after, layout.offset, target_length, rng))
    require_passed(checks, bound=False)
    return checks


def _layout_check(
    source: CheckpointReader,
    written: CheckpointReader,
    config: dict[str, Any],
    layout: LearnedLayout,
    target_length: int,
) -> Check:
    """The written tensors are the source's, with only the tables and length buffers resized to the config."""
    rows = layout.offset + target_length
    problems = sorted(set(source.names) ^ set(written.names))
    for name, info in source.infos.items():
        new = written.infos.get(name)
        if new is None:
            continue
        if name in layout.tensor_names:
            expected = (rows, *info.shape[1:])
        elif buffer_kind(name) is not None:
            expected = (1, rows)
        else:
            expected = info.shape
        if (new.dtype, new.shape) != (info.dtype, tuple(expected)):
            problems.append(name)
    if config.get("max_position_embeddings") != rows:
        problems.append(f"config max_position_embeddings {config.get('max_position_embeddings')} != {rows}")
    return Check(
        "output holds the source's tensors, tables resized to the config",
        float(len(problems)),
        0.0,
        passed=not problems,
        detail="; ".join(problems[:3]) or "names, dtypes and shapes as expected",
    )


def _copied_check(source: CheckpointReader, written: CheckpointReader, copied: list[str]) -> Check:
    differing = [
        name for name in copied if any(a != b for a, b in zip(source.chunks(name), written.chunks(name), strict=True))
    ]
    return Check(
        "every other tensor is the source's byte for byte",
        float(len(differing)),
        0.0,
        passed=not differing,
        detail=", ".join(differing[:3]) or f"{len(copied)} tensors compared",
    )


@dataclass(frozen=True)
class EmbeddingLayer:
    """The embedding layer of a BERT-family model, read from a checkpoint, computed in float64: word (rescaled
    where the config says so) + position + token type 0, then LayerNorm."""

    words: np.ndarray
    positions: np.ndarray
    token_type: np.ndarray | float
    norm_weight: np.ndarray
    norm_bias: np.ndarray | float
    epsilon: float
    word_scale: float

    @classmethod
    def read(cls, reader: CheckpointReader, prefix: str, config: dict[str, Any]) -> EmbeddingLayer:
        def optional(name: str) -> np.ndarray | float:
            return reader.array(name).astype(np.float64) if name in reader.infos else 0.0

        def name(role: str) -> str:
            return prefix + BERT_EMBEDDINGS[role]

        words = reader.array(name("token_embd.weight"))
        token_type = optional(name("token_types.weight"))
        return cls(
            words,
            reader.array(name("position_embd.weight")),
            token_type[0] if isinstance(token_type, np.ndarray) else 0.0,
            reader.array(name("token_embd_norm.weight")).astype(np.float64),
            optional(name("token_embd_norm.bias")),
            config.get("layer_norm_eps", 1e-12),
            float(np.sqrt(config.get("hidden_size", words.shape[1]))) if config.get("rescale_embeddings") else 1.0,
        )

    def outputs(self, ids: np.ndarray, first_row: int) -> np.ndarray:
        """Outputs for token ``ids`` (batch, length) at position rows ``first_row ..``."""
        hidden = self.words[ids].astype(np.float64) * self.word_scale
        hidden += self.positions[first_row : first_row + ids.shape[1]]
        hidden += self.token_type
        centred = hidden - hidden.mean(axis=-1, keepdims=True)
        return (
            centred / np.sqrt((centred**2).mean(axis=-1, keepdims=True) + self.epsilon) * self.norm_weight
            + self.norm_bias
        )


def _full_length_check(layer: EmbeddingLayer, offset: int, target_length: int, rng: np.random.Generator) -> Check:
    """One input of ``target_length`` random tokens through the embedding layer, in blocks of positions."""
    vocab = len(layer.words)
    finite = True
    for first in range(0, target_length, EMBEDDING_CHECK_BLOCK):
        ids = rng.integers(min(1000, vocab - 1), vocab, size=(1, min(EMBEDDING_CHECK_BLOCK, target_length - first)))
        finite &= bool(np.isfinite(layer.outputs(ids, offset + first)).all())
    return Check(
        f"a {target_length}-token input runs",
        float(target_length),
        passed=finite,
        detail="embedding layer finite at every position" if finite else "non-finite embedding outputs",
    )


def model_checks(
    source: ModelFolder, output: ModelFolder, layout: LearnedLayout, target_length: int, method: Method
) -> list[Check]:
    """Load both models: short inputs against the source, and one input of the full new length."""
    from ctxext.checks import (
        agreement,
        finite_outputs,
        last_hidden_state,
        load_model_strictly,
        matches_source,
        random_batch,
    )

    source_model = load_model_strictly(source.model_dir)
    output_model = load_model_strictly(output.model_dir)
    vocab_size = source.config["vocab_size"]
    short = random_batch(vocab_size, [layout.length, layout.length // 3], seed=0)
    before, after = last_hidden_state(source_model, *short), last_hidden_state(output_model, *short)
    checks = [Check("output loads with transformers, no missing or unexpected weights", 0.0, 0.0)]
    if method == Method.tile:
        checks.append(
            matches_source(
                f"whole encoder: inputs of up to {layout.length} tokens match the source", before, after, 1e-5
            )
        )
    else:
        checks.append(
            agreement(f"whole encoder: inputs of up to {layout.length} tokens against the source", before, after)
        )
    del source_model
    checks.append(
        finite_outputs(
            f"a {target_length}-token input runs through the whole encoder",
            last_hidden_state(output_model, *random_batch(vocab_size, [target_length], seed=1)),
        )
    )
    require_passed(checks, detail=False)
    return checks
