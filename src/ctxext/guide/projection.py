"""The projection M of the residual stream (PCA of the token-embedding table, or evenly spaced coordinates),
the selection of heads and units, and tensors projected through M."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ctxext.errors import InvalidArgument
from ctxext.guide.rules import Init, Rule, RuleKind, Select


@dataclass
class StreamProjection:
    """``matrix`` maps the teacher's residual stream onto the student's (teacher dim x student dim)."""

    matrix: np.ndarray
    method: str
    explained_variance_ratio: float
    component_variance_ratios: np.ndarray

    @property
    def student_dim(self) -> int:
        return self.matrix.shape[1]


def pca_projection(table: np.ndarray, dim: int) -> StreamProjection:
    """The top ``dim`` principal directions of a centred table (float64), each column's sign fixed so that
    its largest entry is positive. Explained variance is the share of the centred table's variance that
    those directions keep."""
    rows, width = table.shape
    if not 0 < dim <= width:
        raise InvalidArgument(f"student width {dim} must be between 1 and the teacher's width {width}")
    centred = table.astype(np.float64)  # one float64 copy, centred in place
    centred -= centred.mean(axis=0)
    covariance = centred.T @ centred / max(rows - 1, 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = np.clip(eigenvalues[order], 0.0, None), eigenvectors[:, order]
    matrix = eigenvectors[:, :dim].copy()
    signs = np.sign(matrix[np.abs(matrix).argmax(axis=0), np.arange(dim)])
    matrix *= np.where(signs == 0, 1.0, signs)
    total = float(eigenvalues.sum())
    ratios = eigenvalues[:dim] / total if total > 0 else np.zeros(dim)
    return StreamProjection(matrix, "pca", float(ratios.sum()), ratios)


def even_projection(table: np.ndarray, dim: int) -> StreamProjection:
    """Evenly spaced coordinates of the stream (weight selection); explained variance as for PCA."""
    width = table.shape[1]
    if not 0 < dim <= width:
        raise InvalidArgument(f"student width {dim} must be between 1 and the teacher's width {width}")
    matrix = np.zeros((width, dim))
    matrix[evenly_spaced(width, dim), np.arange(dim)] = 1.0
    centred = table.astype(np.float64)  # one float64 copy, centred in place
    centred -= centred.mean(axis=0)
    total = float((centred**2).sum())
    kept = ((centred @ matrix) ** 2).sum(axis=0)
    ratios = kept / total if total > 0 else np.zeros(dim)
    return StreamProjection(matrix, "even", float(ratios.sum()), ratios)


def evenly_spaced(total: int, keep: int) -> np.ndarray:
    return np.round(np.linspace(0, total - 1, keep)).astype(np.int64) if keep > 1 else np.zeros(keep, np.int64)


def top_by_score(scores: np.ndarray, keep: int) -> np.ndarray:
    """Indices of the ``keep`` largest scores, in ascending index order (ties: lower index first)."""
    order = np.argsort(-scores, kind="stable")[:keep]
    return np.sort(order)


def choose(scores: np.ndarray, keep: int, rule: Select) -> np.ndarray:
    return top_by_score(scores, keep) if rule == Select.norm else evenly_spaced(len(scores), keep)


@dataclass
class BlockSelection:
    """Which teacher heads, head dimensions and feed-forward units a student block keeps."""

    heads: list[int]
    head_dims: list[list[int]]
    units: list[int]
    teacher_head_dim: int

    def rows(self, axis: str) -> np.ndarray:
        if axis == "units":
            return np.asarray(self.units, dtype=np.int64)
        pairs = zip(self.heads, self.head_dims, strict=True)
        return np.asarray([h * self.teacher_head_dim + d for h, dims in pairs for d in dims], dtype=np.int64)


# ----------------------------------------------------------------------------- projecting tensors


def project(
    rule: Rule,
    tensor: np.ndarray,
    matrix: np.ndarray,
    selection: BlockSelection | None = None,
    heads: list[int] | None = None,
) -> np.ndarray:
    """The student's tensor for one teacher tensor (float64)."""
    value = tensor.astype(np.float64)
    if rule.kind == RuleKind.table:
        return value @ matrix
    if rule.kind == RuleKind.stream:
        return matrix.T @ value
    if rule.kind == RuleKind.norm:
        return (matrix * matrix).T @ value
    if rule.kind == RuleKind.square:
        return matrix.T @ value @ matrix
    if rule.kind == RuleKind.copy:
        return value
    if rule.kind == RuleKind.head_columns:
        return value[:, heads]
    assert selection is not None and rule.axis is not None, f"a {rule.kind.value} rule reads a block selection axis"
    rows = selection.rows(rule.axis)
    if rule.kind in (RuleKind.read, RuleKind.pick):
        chunks = np.split(value, rule.chunks, axis=0)
        picked = np.concatenate([chunk[rows] for chunk in chunks], axis=0)
        return picked @ matrix if rule.kind == RuleKind.read else picked
    if rule.kind == RuleKind.write:
        return matrix.T @ value[:, rows]
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def block_selection(
    layer: dict[str, np.ndarray],
    rules: dict[str, Rule],
    matrix: np.ndarray,
    *,
    teacher_heads: int,
    teacher_head_dim: int,
    teacher_units: int,
    heads: int,
    head_dim: int,
    units: int,
    rule: Select,
) -> BlockSelection:
    """Score each head dimension and unit by the squared norm of its weights after projection, summed over
    every tensor that reads or writes it; keep the best (``norm``) or evenly spaced ones (``even``)."""
    scores = {"heads": np.zeros(teacher_heads * teacher_head_dim), "units": np.zeros(teacher_units)}
    for name, tensor_rule in rules.items():
        axis = tensor_rule.axis
        if name not in layer or tensor_rule.kind not in (RuleKind.read, RuleKind.write) or axis is None:
            continue
        value = layer[name].astype(np.float64)
        if tensor_rule.kind == RuleKind.read:
            for chunk in np.split(value, tensor_rule.chunks, axis=0):
                scores[axis] += ((chunk @ matrix) ** 2).sum(axis=1)
        else:
            scores[axis] += ((matrix.T @ value) ** 2).sum(axis=0)
    per_dim = scores["heads"].reshape(teacher_heads, teacher_head_dim)
    kept_heads = choose(per_dim.sum(axis=1), heads, rule)
    head_dims = [choose(per_dim[h], head_dim, rule).tolist() for h in kept_heads]
    return BlockSelection(
        kept_heads.tolist(), head_dims, choose(scores["units"], units, rule).tolist(), teacher_head_dim
    )


def block_sources(student_layers: int, teacher_layers: int, init: Init) -> list[int | None]:
    """Which teacher block each student block starts from (None: random init)."""
    if init == Init.none:
        return [None] * student_layers
    if init == Init.first:
        return [0] + [None] * (student_layers - 1)
    return evenly_spaced(teacher_layers, student_layers).tolist() if student_layers > 1 else [0]
