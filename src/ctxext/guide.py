"""GUIDE: a deep and narrow student initialised from a wide teacher.

The teacher's token-embedding table is centred and decomposed (float64 PCA); its top ``dim`` principal
directions form ``M`` (teacher width x student width, orthonormal columns). Every tensor that lives on the
residual stream goes through ``M``:

- tables (token, position, token type):            ``T_s = T @ M``
- linear layers reading the stream (q, k, v, FFN in): ``W_s = W[rows] @ M``, bias ``b[rows]``
- linear layers writing the stream (attn out, FFN out): ``W_s = M^T @ W[:, cols]``, bias ``M^T b``
- residual-to-residual layers (pooler, MLM transform): ``W_s = M^T W M``, bias ``M^T b``
- LayerNorm scale ``gamma``: ``diag(M^T diag(gamma) M) = (M*M)^T gamma`` (a weighted mean of the teacher's
  scales, weights summing to 1); LayerNorm bias: ``M^T beta``.

``rows`` / ``cols`` are the selected attention heads (whole heads, and dimensions within a head when the
student's heads are narrower) and feed-forward units. ``select="norm"`` keeps those with the largest norm
*after projection* (how much of them survives in the student's subspace); ``select="even"`` keeps evenly
spaced indices (weight selection, Xu et al. 2024). ``projection="even"`` replaces the PCA by evenly spaced
coordinates of the residual stream, which with ``select="even"`` is plain weight selection.

``init="first"`` (GUIDE's recipe) fills only student block 0 from teacher block 0; ``init="uniform"`` maps
teacher blocks evenly onto all student blocks; ``init="none"`` is the random baseline. Everything not taken
from the teacher keeps the family's own random init, and the manifest says, tensor by tensor, where each
came from. LayerNorm does not commute with the projection, so the student does not reproduce the teacher
at step 0; the benefit shows after training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.architectures import ENCODER_FAMILIES, EncoderFamily, is_buffer, position_scheme
from ctxext.checkpoint import OutputPlan, ProgressFn, model_tensors, no_progress, tied_duplicates, write_model_folder
from ctxext.compat import loading_info, transformers_warnings_off
from ctxext.errors import CheckFailed, InvalidArgument, UnsupportedArchitecture
from ctxext.io import CheckpointReader, ModelFolder, Source, check_output_target, open_model, read_json
from ctxext.manifest import Check, OperationRecord, check_verdicts


class Init(str, Enum):
    first = "first"
    uniform = "uniform"
    none = "none"


class Select(str, Enum):
    norm = "norm"
    even = "even"


class Projection(str, Enum):
    pca = "pca"
    even = "even"


# ----------------------------------------------------------------------------- rules by tensor role


class RuleKind(str, Enum):
    """How a teacher tensor goes through M (formulas in the module docstring)."""

    table = "table"  # rows x stream
    stream = "stream"  # a vector on the stream
    norm = "norm"  # LayerNorm scale
    square = "square"  # stream -> stream
    read = "read"  # structured rows x stream
    write = "write"  # stream x structured columns
    pick = "pick"  # a vector over structured rows
    head_columns = "head_columns"  # one column per head
    copy = "copy"


@dataclass(frozen=True)
class Rule:
    """How one teacher tensor becomes a student tensor.

    axis: ``heads`` or ``units`` for the structured kinds (read, write, pick); chunks: fused tensors (ModernBERT's
    Wqkv, GLU Wi).
    """

    kind: RuleKind
    axis: str | None = None
    chunks: int = 1


TABLE, STREAM, NORM = Rule(RuleKind.table), Rule(RuleKind.stream), Rule(RuleKind.norm)
SQUARE, COPY, HEAD_COLUMNS = Rule(RuleKind.square), Rule(RuleKind.copy), Rule(RuleKind.head_columns)


def _reads(role: str, axis: str, chunks: int = 1) -> dict[str, Rule]:
    return {f"{role}.weight": Rule(RuleKind.read, axis, chunks), f"{role}.bias": Rule(RuleKind.pick, axis, chunks)}


def _writes(role: str, axis: str) -> dict[str, Rule]:
    return {f"{role}.weight": Rule(RuleKind.write, axis), f"{role}.bias": STREAM}


def _norm(role: str) -> dict[str, Rule]:
    return {f"{role}.weight": NORM, f"{role}.bias": STREAM}


def _square(role: str) -> dict[str, Rule]:
    return {f"{role}.weight": SQUARE, f"{role}.bias": STREAM}


# The rule of each tensor role of ``ctxext.architectures``.
ROLE_RULES: dict[str, Rule] = {
    "token_embd.weight": TABLE,
    "position_embd.weight": TABLE,
    "token_types.weight": TABLE,
    **_norm("token_embd_norm"),
    "rel_attn_bias.weight": HEAD_COLUMNS,
    **_square("pooler"),
    **_norm("output_norm"),
    **_reads("attn_q", "heads"),
    **_reads("attn_k", "heads"),
    **_reads("attn_v", "heads"),
    **_reads("attn_qkv", "heads", 3),
    **_writes("attn_output", "heads"),
    **_norm("attn_norm"),
    **_norm("attn_output_norm"),
    **_reads("ffn_up", "units"),
    **_reads("ffn_gate_up", "units", 2),
    **_writes("ffn_down", "units"),
    **_norm("ffn_norm"),
    **_norm("layer_output_norm"),
    **_square("mlm_dense"),
    **_norm("mlm_norm"),
    "output.bias": COPY,
}
# Roles that carry nothing to transfer: the decoder, tied to the token table.
TIED_ROLES = ("output.weight",)


@dataclass(frozen=True)
class Family:
    """An encoder family of ``ctxext.architectures`` with the rule of each of its tensors, by name. Base and layer
    names are relative to ``prefix`` (the base model inside the masked-LM model); head names are top-level."""

    encoder: EncoderFamily
    layer_rules: dict[str, Rule]
    base_rules: dict[str, Rule]
    head_rules: dict[str, Rule]

    @classmethod
    def of(cls, encoder: EncoderFamily) -> Family:
        def rules(roles: dict[str, str]) -> dict[str, Rule]:
            missing = [role for role in roles if role not in ROLE_RULES and role not in TIED_ROLES]
            if missing:
                raise UnsupportedArchitecture(f"guide has no rule for the {encoder.model_type} roles {missing}")
            return {name: ROLE_RULES[role] for role, name in roles.items() if role not in TIED_ROLES}

        return cls(encoder, rules(encoder.blocks), rules(encoder.base), rules(encoder.head))

    @property
    def mlm_class(self) -> str:
        return self.encoder.mlm_class

    @property
    def prefix(self) -> str:
        return self.encoder.prefix

    @property
    def layer(self) -> str:
        return self.encoder.layer

    @property
    def token_table(self) -> str:
        return self.encoder.base["token_embd.weight"]

    @property
    def pooler(self) -> tuple[str, ...]:
        return tuple(self.encoder.base[role] for role in ("pooler.weight", "pooler.bias") if role in self.encoder.base)

    @property
    def input_names(self) -> tuple[str, ...] | None:
        return self.encoder.input_names

    def carries_nothing(self, name: str) -> bool:
        """A teacher tensor with nothing to transfer: a buffer, or a decoder tied to the token table."""
        tied = {self.encoder.head[role] for role in TIED_ROLES if role in self.encoder.head}
        return is_buffer(name) or name in tied or name in self.encoder.aliases


FAMILIES: dict[str, Family] = {
    model_type: Family.of(ENCODER_FAMILIES[model_type]) for model_type in ("bert", "roberta", "mpnet", "modernbert")
}


# ----------------------------------------------------------------------------- PCA and selection


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


# ----------------------------------------------------------------------------- the student


@dataclass
class StudentShape:
    dim: int
    layers: int
    heads: int
    intermediate: int

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


@dataclass
class Student:
    """A GUIDE student in memory: the masked-LM model, what it was built from, and the record of it."""

    model: Any
    family: Family
    shape: StudentShape
    projection: StreamProjection
    record: OperationRecord
    source: Source
    folder: ModelFolder
    source_hashes: dict[str, str]
    extra_tensors: dict[str, Any] = field(default_factory=dict)


def student_shape(
    config: dict[str, Any], dim: int, layers: int | None, heads: int | None, intermediate: int | None
) -> StudentShape:
    width, teacher_heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    teacher_head_dim = width // teacher_heads
    teacher_units = int(config["intermediate_size"])
    if not 0 < dim <= width:
        raise InvalidArgument(f"--dim {dim} must be between 1 and the teacher's hidden size {width}")
    if heads is None:
        heads = dim // teacher_head_dim if dim % teacher_head_dim == 0 and dim >= teacher_head_dim else teacher_heads
    if heads < 1 or dim % heads:
        raise InvalidArgument(f"--dim {dim} is not divisible by --heads {heads}")
    if heads > teacher_heads:
        raise InvalidArgument(f"--heads {heads} exceeds the teacher's {teacher_heads} attention heads")
    if dim // heads > teacher_head_dim:
        raise InvalidArgument(
            f"head size {dim // heads} (--dim {dim} / --heads {heads}) exceeds the teacher's "
            f"{teacher_head_dim}; use at least {-(-dim // teacher_head_dim)} heads"
        )
    if intermediate is None:
        intermediate = max(1, round(teacher_units * dim / width))
    if not 0 < intermediate <= teacher_units:
        raise InvalidArgument(f"--intermediate {intermediate} must be between 1 and the teacher's {teacher_units}")
    layers = int(config["num_hidden_layers"]) if layers is None else layers
    if layers < 1:
        raise InvalidArgument(f"--layers {layers} must be at least 1")
    return StudentShape(dim, layers, heads, intermediate)


def family_of(config: dict[str, Any]) -> Family:
    model_type = config.get("model_type", "")
    if model_type not in FAMILIES:
        raise UnsupportedArchitecture(f"guide supports {', '.join(sorted(FAMILIES))} teachers, not {model_type!r}")
    family = FAMILIES[model_type]
    if position_scheme(config) != family.encoder.positions.scheme:
        raise UnsupportedArchitecture(
            f"guide supports absolute positions only, not {config.get('position_embedding_type')!r}"
        )
    return family


def _teacher_names(reader: CheckpointReader, family: Family) -> tuple[dict[str, str], list[str]]:
    """Canonical name (relative to the base prefix for base and layer tensors, top-level for the MLM head)
    -> the teacher's tensor name; and the teacher tensors no rule uses. Teachers saved as a base model carry
    no prefix, those saved with a task head do."""
    canonical: dict[str, str] = {}
    unused = []
    for name in reader.names:
        if family.carries_nothing(name):
            continue
        if name.startswith(family.prefix + "."):
            canonical[name.removeprefix(family.prefix + ".")] = name
        elif name in family.head_rules or name.startswith(family.encoder.base_roots):
            canonical[name] = name
        else:
            unused.append(name)
    return canonical, unused


def build_student(
    teacher: str | Path,
    dim: int,
    *,
    layers: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    init: Init = Init.first,
    select: Select = Select.norm,
    projection: Projection = Projection.pca,
    seed: int = 0,
    revision: str | None = None,
    progress: ProgressFn = no_progress,
) -> Student:
    """Build the student in memory (a masked-LM model) and the record of every tensor's origin."""
    source, folder = open_model(teacher, revision=revision)
    config = folder.config
    family = family_of(config)
    shape = student_shape(config, dim, layers, heads, intermediate)
    reader = CheckpointReader(folder)
    names, unused = _teacher_names(reader, family)
    if family.token_table not in names:
        raise UnsupportedArchitecture(f"teacher has no token-embedding table ({family.prefix}.{family.token_table})")

    progress("projection", 0, 1)
    token_table = reader.array(names[family.token_table])
    stream = pca_projection(token_table, dim) if projection == Projection.pca else even_projection(token_table, dim)
    progress("projection", 1, 1)

    model, student_config = _student_model(folder, family, shape, seed)
    assembly = _Assembly(family, shape, config, reader, names, stream.matrix, select, model.state_dict())
    sources = block_sources(shape.layers, int(config["num_hidden_layers"]), init)
    block_zero = assembly.fill_blocks(sources, progress)
    pooler_values = assembly.fill_base_and_head(block_zero) if init != Init.none else {}
    extra = _pooler_tensors(family, shape, student_config, pooler_values, seed)
    tied = tied_duplicates(model)
    for name in [*extra, *(name for name in assembly.state if name not in tied)]:
        assembly.origins.setdefault(name, f"random init (family default, seed {seed})")
    record = _student_record(assembly, stream, init, seed, sources, tied)
    record.dropped = sorted(unused)
    return Student(
        model=model,
        family=family,
        shape=shape,
        projection=stream,
        record=record,
        extra_tensors=extra,
        source=source,
        folder=folder,
        source_hashes=reader.sha256_of_files(),
    )


def _student_model(folder: ModelFolder, family: Family, shape: StudentShape, seed: int) -> tuple[Any, Any]:
    """The family's masked-LM model at the student's shape, with the family's own random init (``seed``)."""
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM

    values = AutoConfig.from_pretrained(folder.model_dir, trust_remote_code=False).to_dict()
    values.update(
        hidden_size=shape.dim,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=shape.intermediate,
        architectures=[family.mlm_class],
    )
    values.pop("layer_types", None)  # one entry per teacher layer (transformers 5): the constructor rebuilds it
    student_config = AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(student_config).float().eval()
    if type(model).__name__ != family.mlm_class:
        raise UnsupportedArchitecture(f"expected {family.mlm_class}, transformers built {type(model).__name__}")
    return model, student_config


@dataclass
class _Assembly:
    """A student being filled from its teacher: the student's state dict, the teacher's tensors by canonical
    name (``names``: canonical -> the teacher's name), and where each student tensor came from."""

    family: Family
    shape: StudentShape
    config: dict[str, Any]
    reader: CheckpointReader
    names: dict[str, str]
    matrix: np.ndarray
    select: Select
    state: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)
    selections: dict[str, Any] = field(default_factory=dict)

    @property
    def teacher_head_dim(self) -> int:
        return int(self.config["hidden_size"]) // int(self.config["num_attention_heads"])

    def origin(self, teacher_name: str, rule: Rule) -> str:
        return f"teacher {teacher_name} ({_describe(rule, self.select)})"

    def assign(self, student_name: str, value: np.ndarray, origin: str) -> None:
        import torch

        target = self.state[student_name]
        if tuple(target.shape) != value.shape:
            raise CheckFailed(f"{student_name}: projected shape {value.shape} != student shape {tuple(target.shape)}")
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))
        self.origins[student_name] = origin

    def fill_blocks(self, sources: list[int | None], progress: ProgressFn) -> BlockSelection | None:
        """Every student block with a teacher block; returns the selection of the first one filled."""
        block_zero: BlockSelection | None = None
        for index, teacher_block in enumerate(sources):
            progress("blocks", index, self.shape.layers)
            if teacher_block is not None:
                selection = self.fill_block(index, teacher_block)
                block_zero = block_zero or selection
        progress("blocks", self.shape.layers, self.shape.layers)
        return block_zero

    def fill_block(self, index: int, teacher_block: int) -> BlockSelection:
        """Student block ``index`` from teacher block ``teacher_block``: heads and units selected, then projected."""
        family, shape = self.family, self.shape
        prefix = family.layer.format(teacher_block)
        layer = {
            rel: self.reader.array(self.names[prefix + rel]) for rel in family.layer_rules if prefix + rel in self.names
        }
        selection = block_selection(
            layer,
            family.layer_rules,
            self.matrix,
            teacher_heads=int(self.config["num_attention_heads"]),
            teacher_head_dim=self.teacher_head_dim,
            teacher_units=int(self.config["intermediate_size"]),
            heads=shape.heads,
            head_dim=shape.head_dim,
            units=shape.intermediate,
            rule=self.select,
        )
        self.selections[str(index)] = {
            "teacher_block": teacher_block,
            "heads": selection.heads,
            "head_dims": selection.head_dims if shape.head_dim < self.teacher_head_dim else "all",
            "units": selection.units,
        }
        for rel, rule in family.layer_rules.items():
            student_name = f"{family.prefix}.{family.layer.format(index)}{rel}"
            if rel in layer and student_name in self.state:
                self.assign(
                    student_name,
                    project(rule, layer[rel], self.matrix, selection),
                    self.origin(self.names[prefix + rel], rule),
                )
        return selection

    def fill_base_and_head(self, block_zero: BlockSelection | None) -> dict[str, np.ndarray]:
        """Embeddings, final norms and the MLM head through M; returns the pooler, which the masked-LM model
        lacks (written beside it)."""
        family = self.family
        pooler_values: dict[str, np.ndarray] = {}
        for rel, rule in {**family.base_rules, **family.head_rules}.items():
            if rel not in self.names or (rule.kind == RuleKind.head_columns and block_zero is None):
                continue
            heads = block_zero.heads if block_zero is not None else None
            value = project(rule, self.reader.array(self.names[rel]), self.matrix, heads=heads)
            origin = self.origin(self.names[rel], rule)
            if rule.kind == RuleKind.head_columns:
                origin += f" heads of student block 0: {heads}"
            student_name = rel if rel in family.head_rules else f"{family.prefix}.{rel}"
            if rel in family.pooler:
                pooler_values[student_name] = value
                self.origins[student_name] = origin
            elif student_name in self.state:
                self.assign(student_name, value, origin)
        return pooler_values

    def has_head(self) -> bool:
        """Whether the teacher carries a trained MLM head (more than the output bias)."""
        return any(name in self.names for name, rule in self.family.head_rules.items() if rule.kind != RuleKind.copy)


def _student_record(
    assembly: _Assembly,
    stream: StreamProjection,
    init: Init,
    seed: int,
    sources: list[int | None],
    tied: dict[str, str],
) -> OperationRecord:
    """The record of the student: its shape, the projection, and each tensor's origin."""
    shape, config, has_head = assembly.shape, assembly.config, assembly.has_head()
    if init == Init.none:
        mlm_head = "random init (baseline)"
    elif has_head:
        mlm_head = "teacher head through M"
    else:
        mlm_head = "family init; teacher has no MLM head, decoder tied to the projected embeddings"
    record = OperationRecord(
        "guide",
        parameters={
            "dim": shape.dim,
            "layers": shape.layers,
            "heads": shape.heads,
            "head_dim": shape.head_dim,
            "intermediate": shape.intermediate,
            "init": init.value,
            "select": assembly.select.value,
            "projection": stream.method,
            "seed": seed,
            "explained_variance_ratio": stream.explained_variance_ratio,
            "component_variance_ratios_first_16": stream.component_variance_ratios[:16].tolist(),
            "teacher": {
                "hidden_size": int(config["hidden_size"]),
                "layers": int(config["num_hidden_layers"]),
                "heads": int(config["num_attention_heads"]),
                "intermediate": int(config["intermediate_size"]),
            },
            "block_sources": {
                str(i): (f"teacher block {b}" if b is not None else "random init") for i, b in enumerate(sources)
            },
            "selections": assembly.selections,
            "mlm_head": mlm_head,
            "origins": dict(sorted(assembly.origins.items())),
            "tied": dict(tied),
        },
    )
    record.created = sorted(assembly.origins)
    record.notes.extend(_student_notes(stream, shape, assembly.teacher_head_dim, has_head or init == Init.none))
    return record


def _student_notes(stream: StreamProjection, shape: StudentShape, teacher_head_dim: int, head_noted: bool) -> list[str]:
    notes = [
        f"projection M: {stream.method}, explained variance {stream.explained_variance_ratio:.4f} "
        f"of the centred token-embedding table"
    ]
    if not head_noted:
        notes.append(
            "teacher carries no trained MLM head: the decoder is tied to the projected token "
            "embeddings; dense/LayerNorm/bias keep the family's init"
        )
    if shape.head_dim < teacher_head_dim:
        notes.append(
            f"student heads keep {shape.head_dim} of {teacher_head_dim} dimensions; attention "
            "scores are scaled by the student's head size"
        )
    notes.append("LayerNorm does not commute with the projection: the student does not reproduce the teacher at step 0")
    return notes


def _describe(rule: Rule, select: Select) -> str:
    return {
        RuleKind.table: "rows @ M",
        RuleKind.stream: "M^T v",
        RuleKind.norm: "(M*M)^T gamma",
        RuleKind.square: "M^T W M",
        RuleKind.copy: "copied",
        RuleKind.head_columns: "selected heads",
        RuleKind.read: f"selected {rule.axis} ({select.value}) @ M",
        RuleKind.pick: f"selected {rule.axis} ({select.value})",
        RuleKind.write: f"M^T @ selected {rule.axis} ({select.value})",
    }[rule.kind]


def _pooler_tensors(
    family: Family, shape: StudentShape, config: Any, projected: dict[str, np.ndarray], seed: int
) -> dict[str, Any]:
    """The base model's pooler: the masked-LM class has none, AutoModel expects it: written too."""
    import torch

    tensors: dict[str, Any] = {}
    generator = torch.Generator().manual_seed(seed)
    for rel in family.pooler:
        name = f"{family.prefix}.{rel}"
        if name in projected:
            tensors[name] = torch.from_numpy(projected[name]).float()
        elif rel.endswith("weight"):
            tensors[name] = torch.randn(shape.dim, shape.dim, generator=generator) * config.initializer_range
        else:
            tensors[name] = torch.zeros(shape.dim)
    return tensors


# ----------------------------------------------------------------------------- writing


ST_MODULES = ("Transformer", "Pooling", "Normalize")


def sentence_transformers_files(folder: ModelFolder, dim: int, family: Family) -> dict[str, Any]:
    """The sentence-transformers files to write or rewrite: the teacher's pooling at the student's width.

    A teacher that is not a sentence-transformers folder gets mean pooling. A tokenizer that returns inputs
    the family's model does not take (token_type_ids for ModernBERT) is told which inputs to return."""
    tokenizer_files: dict[str, Any] = {}
    tokenizer_config = folder.model_dir / "tokenizer_config.json"
    if family.input_names and tokenizer_config.is_file():
        settings = read_json(tokenizer_config)
        if tuple(settings.get("model_input_names") or ()) != family.input_names:
            relative = tokenizer_config.relative_to(folder.root).as_posix()
            tokenizer_files[relative] = {**settings, "model_input_names": list(family.input_names)}
    if not folder.sentence_transformers:
        return {
            **tokenizer_files,
            "modules.json": [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            ],
            "sentence_bert_config.json": {"max_seq_length": 512, "do_lower_case": False},
            "1_Pooling/config.json": {
                "word_embedding_dimension": dim,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
        }
    files: dict[str, Any] = dict(tokenizer_files)
    for module in read_json(folder.root / "modules.json"):
        kind = module.get("type", "").rsplit(".", 1)[-1]
        if kind not in ST_MODULES:
            raise UnsupportedArchitecture(
                f"teacher's sentence-transformers pipeline has a {kind} module "
                f"({module.get('path')}); guide handles {', '.join(ST_MODULES)} only"
            )
        if kind == "Pooling":
            pooling_config = read_json(folder.root / module["path"] / "config.json")
            files[f"{module['path']}/config.json"] = {**pooling_config, "word_embedding_dimension": dim}
    return files


@dataclass
class GuideResult:
    path: Path
    manifest: dict[str, Any]
    student: Student

    title = "guide"

    def summary(self) -> dict[str, Any]:
        """The student's shape, how much of it came from the teacher, the checks."""
        operation = self.manifest["operations"][0]
        parameters = operation["parameters"]
        from_teacher = sum(1 for source in parameters["block_sources"].values() if source != "random init")
        return {
            "output": str(self.path),
            "student": f"{parameters['dim']} wide x {parameters['layers']} deep, {parameters['heads']} heads, "
            f"{parameters['intermediate']} units",
            "explained_variance": round(parameters["explained_variance_ratio"], 4),
            "blocks_from_teacher": f"{from_teacher} of {parameters['layers']}",
            "mlm_head": parameters["mlm_head"],
            "checks": check_verdicts(operation["checks"]),
        }


def guide(
    teacher: str | Path,
    out: str | Path,
    dim: int,
    *,
    layers: int | None = None,
    heads: int | None = None,
    intermediate: int | None = None,
    init: Init = Init.first,
    select: Select = Select.norm,
    projection: Projection = Projection.pca,
    seed: int = 0,
    revision: str | None = None,
    force: bool = False,
    check: bool = True,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> GuideResult:
    """Build a GUIDE student of ``teacher`` and write it to ``out`` (loads with AutoModel,
    AutoModelForMaskedLM and sentence-transformers); the manifest records every tensor's origin."""
    check_output_target(out, force=force)  # refuse before any work; atomic_output checks again, sources too
    student = build_student(
        teacher,
        dim,
        layers=layers,
        heads=heads,
        intermediate=intermediate,
        init=init,
        select=select,
        projection=projection,
        seed=seed,
        revision=revision,
        progress=progress,
    )
    config = student.model.config.to_dict()
    options = {
        "teacher": str(teacher),
        "dim": dim,
        "layers": student.shape.layers,
        "heads": student.shape.heads,
        "intermediate": student.shape.intermediate,
        "init": init.value,
        "select": select.value,
        "projection": projection.value,
        "seed": seed,
        "check": check,
    }
    plan = OutputPlan(
        "guide",
        options,
        {"teacher": (student.source, student.source_hashes)},
        model_tensors(student.model, student.extra_tensors),
        [student.record],
        config,
        support_from=student.folder,
        extra_files=sentence_transformers_files(student.folder, student.shape.dim, student.family),
    )
    checks = (lambda staging: student_checks(student, ModelFolder.open(staging))) if check else None
    result = write_model_folder(plan, out, force=force, checks=checks, progress=progress, argv=argv)
    return GuideResult(result.path, result.manifest, student)


def load_student(model_dir: Path, model_class: Any, allowed_unexpected: tuple[str, ...] = ()) -> Any:
    """Load with transformers: nothing missing, and nothing unexpected except names starting with
    ``allowed_unexpected`` (the MLM head for AutoModel, the pooler for the masked-LM class)."""
    with transformers_warnings_off():  # the unused pooler/head is expected; the check below decides
        model, info = model_class.from_pretrained(model_dir, output_loading_info=True, trust_remote_code=False)
    info = loading_info(info)
    unexpected = [name for name in info["unexpected_keys"] if not name.startswith(allowed_unexpected)]
    if info["missing_keys"] or unexpected or info.get("mismatched_keys") or info.get("error_msgs"):
        raise CheckFailed(
            f"{model_dir} does not load cleanly with {model_class.__name__}: missing "
            f"{info['missing_keys']}, unexpected {unexpected}, mismatched {info.get('mismatched_keys')}"
        )
    return model.eval()


def head_prefixes(family: Family) -> tuple[str, ...]:
    return tuple(sorted({name.split(".")[0] + "." for name in family.head_rules}))


def student_checks(student: Student, written: ModelFolder) -> list[Check]:
    """Load the written folder with AutoModel, AutoModelForMaskedLM and sentence-transformers; the loaded
    masked-LM model must reproduce the in-memory student exactly."""
    import torch
    from transformers import AutoModel, AutoModelForMaskedLM

    from ctxext.checks import random_batch

    family = student.family
    mlm = load_student(written.model_dir, AutoModelForMaskedLM, (f"{family.prefix}.pooler.",))
    base = load_student(written.model_dir, AutoModel, head_prefixes(family))
    vocab = student.model.config.vocab_size
    input_ids, attention_mask = random_batch(vocab, [12, 7], low=min(5, vocab - 1))
    with torch.no_grad():
        expected = student.model(input_ids=input_ids, attention_mask=attention_mask).logits
        loaded = mlm(input_ids=input_ids, attention_mask=attention_mask).logits
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    difference = float((expected - loaded).abs().max())
    checks = [
        Check(
            "written_student_matches_built",
            difference,
            1e-5,
            difference <= 1e-5,
            "max abs diff of MLM logits, AutoModelForMaskedLM on the written folder vs the built model",
        ),
        Check(
            "explained_variance_ratio",
            student.projection.explained_variance_ratio,
            detail=f"share of the centred token-embedding variance kept by M ({student.projection.method})",
        ),
    ]
    finite = bool(torch.isfinite(hidden).all())
    checks.append(
        Check(
            "automodel_outputs_finite",
            float(hidden.shape[-1]),
            passed=finite,
            detail="AutoModel last_hidden_state finite, width = --dim",
        )
    )
    from sentence_transformers import SentenceTransformer

    embeddings = SentenceTransformer(str(written.root), device="cpu").encode(["a sentence", "another one"])
    ok = embeddings.shape == (2, student.shape.dim) and bool(np.isfinite(embeddings).all())
    checks.append(
        Check(
            "sentence_transformers_loads",
            float(embeddings.shape[1]),
            passed=ok,
            detail="SentenceTransformer(out).encode gives finite vectors of width --dim",
        )
    )
    failed = [c for c in checks if not c.passed]
    if failed:
        raise CheckFailed(f"check {failed[0].name} failed: {failed[0].value:g} {failed[0].detail}")
    return checks
