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

from ctxext.checkpoint import OutputPlan, ProgressFn, no_progress, write_model_folder
from ctxext.errors import CheckFailed, InvalidArgument, UnsupportedArchitecture
from ctxext.io import (
    CheckpointReader,
    ModelFolder,
    OutTensor,
    Source,
    check_output_target,
    open_model,
    read_json,
)
from ctxext.manifest import Check, OperationRecord


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


# ----------------------------------------------------------------------------- architecture tables


@dataclass(frozen=True)
class Rule:
    """How one teacher tensor becomes a student tensor.

    kind: ``table`` (rows x stream), ``stream`` (a vector on the stream), ``norm`` (LayerNorm scale),
    ``square`` (stream -> stream), ``read`` (structured rows x stream), ``write`` (stream x structured
    columns), ``pick`` (a vector over structured rows), ``head_columns`` (one column per head), ``copy``.
    axis: ``heads`` or ``units`` for the structured kinds; chunks: fused tensors (ModernBERT's Wqkv, GLU Wi).
    """

    kind: str
    axis: str | None = None
    chunks: int = 1


TABLE, STREAM, NORM, SQUARE, COPY = Rule("table"), Rule("stream"), Rule("norm"), Rule("square"), Rule("copy")
HEAD_COLUMNS = Rule("head_columns")


def _read(axis: str, chunks: int = 1) -> Rule:
    return Rule("read", axis, chunks)


def _write(axis: str) -> Rule:
    return Rule("write", axis)


def _pick(axis: str, chunks: int = 1) -> Rule:
    return Rule("pick", axis, chunks)


BERT_LAYER: dict[str, Rule] = {
    **{f"attention.self.{p}.weight": _read("heads") for p in ("query", "key", "value")},
    **{f"attention.self.{p}.bias": _pick("heads") for p in ("query", "key", "value")},
    "attention.output.dense.weight": _write("heads"),
    "attention.output.dense.bias": STREAM,
    "attention.output.LayerNorm.weight": NORM,
    "attention.output.LayerNorm.bias": STREAM,
    "intermediate.dense.weight": _read("units"),
    "intermediate.dense.bias": _pick("units"),
    "output.dense.weight": _write("units"),
    "output.dense.bias": STREAM,
    "output.LayerNorm.weight": NORM,
    "output.LayerNorm.bias": STREAM,
}
BERT_BASE: dict[str, Rule] = {
    "embeddings.word_embeddings.weight": TABLE,
    "embeddings.position_embeddings.weight": TABLE,
    "embeddings.token_type_embeddings.weight": TABLE,
    "embeddings.LayerNorm.weight": NORM,
    "embeddings.LayerNorm.bias": STREAM,
    "pooler.dense.weight": SQUARE,
    "pooler.dense.bias": STREAM,
}
ROBERTA_HEAD: dict[str, Rule] = {
    "lm_head.dense.weight": SQUARE,
    "lm_head.dense.bias": STREAM,
    "lm_head.layer_norm.weight": NORM,
    "lm_head.layer_norm.bias": STREAM,
    "lm_head.bias": COPY,
}
MPNET_LAYER: dict[str, Rule] = {
    **{f"attention.attn.{p}.weight": _read("heads") for p in "qkv"},
    **{f"attention.attn.{p}.bias": _pick("heads") for p in "qkv"},
    "attention.attn.o.weight": _write("heads"),
    "attention.attn.o.bias": STREAM,
    "attention.LayerNorm.weight": NORM,
    "attention.LayerNorm.bias": STREAM,
    "intermediate.dense.weight": _read("units"),
    "intermediate.dense.bias": _pick("units"),
    "output.dense.weight": _write("units"),
    "output.dense.bias": STREAM,
    "output.LayerNorm.weight": NORM,
    "output.LayerNorm.bias": STREAM,
}
MODERNBERT_LAYER: dict[str, Rule] = {
    "attn_norm.weight": NORM,
    "attn_norm.bias": STREAM,
    "attn.Wqkv.weight": _read("heads", 3),
    "attn.Wqkv.bias": _pick("heads", 3),
    "attn.Wo.weight": _write("heads"),
    "attn.Wo.bias": STREAM,
    "mlp_norm.weight": NORM,
    "mlp_norm.bias": STREAM,
    "mlp.Wi.weight": _read("units", 2),
    "mlp.Wi.bias": _pick("units", 2),
    "mlp.Wo.weight": _write("units"),
    "mlp.Wo.bias": STREAM,
}


@dataclass(frozen=True)
class Family:
    """Where each tensor role lives in one architecture family. Base and layer names are relative to
    ``prefix`` (the base model inside the masked-LM model); head names are top-level."""

    mlm_class: str
    prefix: str
    layer: str
    layer_rules: dict[str, Rule]
    base_rules: dict[str, Rule]
    head_rules: dict[str, Rule]
    token_table: str
    pooler: tuple[str, ...] = ()
    input_names: tuple[str, ...] | None = None  # what the tokenizer must return, where the model takes less


FAMILIES: dict[str, Family] = {
    "bert": Family(
        "BertForMaskedLM",
        "bert",
        "encoder.layer.{}.",
        BERT_LAYER,
        BERT_BASE,
        {
            "cls.predictions.transform.dense.weight": SQUARE,
            "cls.predictions.transform.dense.bias": STREAM,
            "cls.predictions.transform.LayerNorm.weight": NORM,
            "cls.predictions.transform.LayerNorm.bias": STREAM,
            "cls.predictions.bias": COPY,
        },
        "embeddings.word_embeddings.weight",
        ("pooler.dense.weight", "pooler.dense.bias"),
    ),
    "roberta": Family(
        "RobertaForMaskedLM",
        "roberta",
        "encoder.layer.{}.",
        BERT_LAYER,
        BERT_BASE,
        ROBERTA_HEAD,
        "embeddings.word_embeddings.weight",
        ("pooler.dense.weight", "pooler.dense.bias"),
    ),
    "mpnet": Family(
        "MPNetForMaskedLM",
        "mpnet",
        "encoder.layer.{}.",
        MPNET_LAYER,
        {
            "embeddings.word_embeddings.weight": TABLE,
            "embeddings.position_embeddings.weight": TABLE,
            "embeddings.LayerNorm.weight": NORM,
            "embeddings.LayerNorm.bias": STREAM,
            "encoder.relative_attention_bias.weight": HEAD_COLUMNS,
            "pooler.dense.weight": SQUARE,
            "pooler.dense.bias": STREAM,
        },
        ROBERTA_HEAD,
        "embeddings.word_embeddings.weight",
        ("pooler.dense.weight", "pooler.dense.bias"),
    ),
    "modernbert": Family(
        "ModernBertForMaskedLM",
        "model",
        "layers.{}.",
        MODERNBERT_LAYER,
        {
            "embeddings.tok_embeddings.weight": TABLE,
            "embeddings.norm.weight": NORM,
            "embeddings.norm.bias": STREAM,
            "final_norm.weight": NORM,
            "final_norm.bias": STREAM,
        },
        {
            "head.dense.weight": SQUARE,
            "head.dense.bias": STREAM,
            "head.norm.weight": NORM,
            "head.norm.bias": STREAM,
            "decoder.bias": COPY,
        },
        "embeddings.tok_embeddings.weight",
        input_names=("input_ids", "attention_mask"),
    ),
}
# Teacher tensors that carry nothing to transfer: buffers, and decoders tied to the token table.
IGNORED_TEACHER_SUFFIXES = (
    "position_ids",
    "token_type_ids",
    "decoder.weight",
    "lm_head.decoder.bias",
    "cls.predictions.decoder.bias",
)


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
    return (
        np.round(np.linspace(0, total - 1, keep)).astype(np.int64) if keep > 1 else np.zeros(keep, np.int64)
    )


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
    if rule.kind == "table":
        return value @ matrix
    if rule.kind == "stream":
        return matrix.T @ value
    if rule.kind == "norm":
        return (matrix * matrix).T @ value
    if rule.kind == "square":
        return matrix.T @ value @ matrix
    if rule.kind == "copy":
        return value
    if rule.kind == "head_columns":
        return value[:, heads]
    rows = selection.rows(rule.axis)
    if rule.kind in ("read", "pick"):
        chunks = np.split(value, rule.chunks, axis=0)
        picked = np.concatenate([chunk[rows] for chunk in chunks], axis=0)
        return picked @ matrix if rule.kind == "read" else picked
    if rule.kind == "write":
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
        if name not in layer or tensor_rule.kind not in ("read", "write"):
            continue
        value = layer[name].astype(np.float64)
        if tensor_rule.kind == "read":
            for chunk in np.split(value, tensor_rule.chunks, axis=0):
                scores[tensor_rule.axis] += ((chunk @ matrix) ** 2).sum(axis=1)
        else:
            scores[tensor_rule.axis] += ((matrix.T @ value) ** 2).sum(axis=0)
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
    extra_tensors: dict[str, Any] = field(default_factory=dict)
    source: Source | None = None
    folder: ModelFolder | None = None
    source_hashes: dict[str, str] = field(default_factory=dict)


def student_shape(
    config: dict[str, Any], dim: int, layers: int | None, heads: int | None, intermediate: int | None
) -> StudentShape:
    width, teacher_heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    teacher_head_dim = width // teacher_heads
    teacher_units = int(config["intermediate_size"])
    if not 0 < dim <= width:
        raise InvalidArgument(f"--dim {dim} must be between 1 and the teacher's hidden size {width}")
    if heads is None:
        heads = (
            dim // teacher_head_dim
            if dim % teacher_head_dim == 0 and dim >= teacher_head_dim
            else teacher_heads
        )
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
        raise InvalidArgument(
            f"--intermediate {intermediate} must be between 1 and the teacher's {teacher_units}"
        )
    layers = int(config["num_hidden_layers"]) if layers is None else layers
    if layers < 1:
        raise InvalidArgument(f"--layers {layers} must be at least 1")
    return StudentShape(dim, layers, heads, intermediate)


def family_of(config: dict[str, Any]) -> Family:
    model_type = config.get("model_type", "")
    if model_type not in FAMILIES:
        raise UnsupportedArchitecture(
            f"guide supports {', '.join(sorted(FAMILIES))} teachers, not {model_type!r}"
        )
    if model_type in ("bert", "roberta") and config.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedArchitecture(
            f"guide supports absolute positions only, not {config['position_embedding_type']!r}"
        )
    return FAMILIES[model_type]


BASE_ROOTS = ("embeddings.", "encoder.", "pooler.", "layers.", "final_norm.")


def _teacher_names(reader: CheckpointReader, family: Family) -> tuple[dict[str, str], list[str]]:
    """Canonical name (relative to the base prefix for base and layer tensors, top-level for the MLM head)
    -> the teacher's tensor name; and the teacher tensors no rule uses. Teachers saved as a base model carry
    no prefix, those saved with a task head do."""
    canonical: dict[str, str] = {}
    unused = []
    for name in reader.names:
        if name.endswith(IGNORED_TEACHER_SUFFIXES):
            continue
        if name.startswith(family.prefix + "."):
            canonical[name.removeprefix(family.prefix + ".")] = name
        elif name in family.head_rules or name.startswith(BASE_ROOTS):
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
    progress: ProgressFn = no_progress,
) -> Student:
    """Build the student in memory (a masked-LM model) and the record of every tensor's origin."""
    import torch
    from transformers import AutoConfig, AutoModelForMaskedLM

    source, folder = open_model(teacher)
    config = folder.config
    family = family_of(config)
    shape = student_shape(config, dim, layers, heads, intermediate)
    reader = CheckpointReader(folder)
    names, unused = _teacher_names(reader, family)
    if family.token_table not in names:
        raise UnsupportedArchitecture(
            f"teacher has no token-embedding table ({family.prefix}.{family.token_table})"
        )

    progress("projection", 0, 1)
    token_table = reader.array(names[family.token_table])
    stream = (
        pca_projection(token_table, dim)
        if projection == Projection.pca
        else even_projection(token_table, dim)
    )
    matrix = stream.matrix
    progress("projection", 1, 1)

    student_config = AutoConfig.from_pretrained(folder.model_dir, trust_remote_code=False)
    student_config.update(
        {
            "hidden_size": shape.dim,
            "num_hidden_layers": shape.layers,
            "num_attention_heads": shape.heads,
            "intermediate_size": shape.intermediate,
            "architectures": [family.mlm_class],
        }
    )
    torch.manual_seed(seed)
    model = AutoModelForMaskedLM.from_config(student_config).float().eval()
    if type(model).__name__ != family.mlm_class:
        raise UnsupportedArchitecture(
            f"expected {family.mlm_class}, transformers built {type(model).__name__}"
        )
    state = model.state_dict()
    tied = tied_duplicates(model)

    teacher_layers = int(config["num_hidden_layers"])
    teacher_heads = int(config["num_attention_heads"])
    teacher_head_dim = int(config["hidden_size"]) // teacher_heads
    sources = block_sources(shape.layers, teacher_layers, init)
    origins: dict[str, str] = {}
    selections: dict[str, Any] = {}

    def assign(student_name: str, value: np.ndarray, origin: str) -> None:
        target = state[student_name]
        if tuple(target.shape) != value.shape:
            raise CheckFailed(
                f"{student_name}: projected shape {value.shape} != student shape {tuple(target.shape)}"
            )
        with torch.no_grad():
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))
        origins[student_name] = origin

    block_zero: BlockSelection | None = None
    for index, teacher_block in enumerate(sources):
        progress("blocks", index, shape.layers)
        if teacher_block is None:
            continue
        prefix = family.layer.format(teacher_block)
        layer = {
            rel: reader.array(names[prefix + rel]) for rel in family.layer_rules if prefix + rel in names
        }
        selection = block_selection(
            layer,
            family.layer_rules,
            matrix,
            teacher_heads=teacher_heads,
            teacher_head_dim=teacher_head_dim,
            teacher_units=int(config["intermediate_size"]),
            heads=shape.heads,
            head_dim=shape.head_dim,
            units=shape.intermediate,
            rule=select,
        )
        block_zero = block_zero or selection
        selections[str(index)] = {
            "teacher_block": teacher_block,
            "heads": selection.heads,
            "head_dims": selection.head_dims if shape.head_dim < teacher_head_dim else "all",
            "units": selection.units,
        }
        for rel, rule in family.layer_rules.items():
            student_name = f"{family.prefix}.{family.layer.format(index)}{rel}"
            if rel in layer and student_name in state:
                assign(
                    student_name,
                    project(rule, layer[rel], matrix, selection),
                    f"teacher {names[prefix + rel]} ({_describe(rule, select)})",
                )
    progress("blocks", shape.layers, shape.layers)

    has_head = any(name in names for name, rule in family.head_rules.items() if rule.kind != "copy")
    pooler_values: dict[str, np.ndarray] = {}
    for rel, rule in {**family.base_rules, **family.head_rules}.items():
        if rel not in names or init == Init.none:
            continue
        if rule.kind == "head_columns" and block_zero is None:
            continue
        value = project(
            rule, reader.array(names[rel]), matrix, heads=block_zero.heads if block_zero is not None else None
        )
        origin = f"teacher {names[rel]} ({_describe(rule, select)})"
        if rule.kind == "head_columns":
            origin += f" heads of student block 0: {block_zero.heads}"
        student_name = rel if rel in family.head_rules else f"{family.prefix}.{rel}"
        if rel in family.pooler:
            pooler_values[student_name] = value
            origins[student_name] = origin
        elif student_name in state:
            assign(student_name, value, origin)

    extra = _pooler_tensors(family, shape, student_config, pooler_values, seed)
    for name in extra:
        origins.setdefault(name, f"random init (family default, seed {seed})")
    tied_to = {name: target for name, target in tied.items()}
    for name in state:
        if name in tied_to:
            continue
        origins.setdefault(name, f"random init (family default, seed {seed})")

    record = OperationRecord(
        "guide",
        parameters={
            "dim": shape.dim,
            "layers": shape.layers,
            "heads": shape.heads,
            "head_dim": shape.head_dim,
            "intermediate": shape.intermediate,
            "init": init.value,
            "select": select.value,
            "projection": stream.method,
            "seed": seed,
            "explained_variance_ratio": stream.explained_variance_ratio,
            "component_variance_ratios_first_16": stream.component_variance_ratios[:16].tolist(),
            "teacher": {
                "hidden_size": int(config["hidden_size"]),
                "layers": teacher_layers,
                "heads": teacher_heads,
                "intermediate": int(config["intermediate_size"]),
            },
            "block_sources": {
                str(i): (f"teacher block {b}" if b is not None else "random init")
                for i, b in enumerate(sources)
            },
            "selections": selections,
            "mlm_head": "teacher head through M"
            if has_head and init != Init.none
            else (
                "random init (baseline)"
                if init == Init.none
                else "family init; teacher has no MLM head, decoder tied to the projected embeddings"
            ),
            "origins": dict(sorted(origins.items())),
            "tied": tied_to,
        },
    )
    record.created = sorted(origins)
    record.dropped = sorted(unused)
    record.notes.append(
        f"projection M: {stream.method}, explained variance {stream.explained_variance_ratio:.4f} "
        f"of the centred token-embedding table"
    )
    if not has_head and init != Init.none:
        record.notes.append(
            "teacher carries no trained MLM head: the decoder is tied to the projected token "
            "embeddings; dense/LayerNorm/bias keep the family's init"
        )
    if shape.head_dim < teacher_head_dim:
        record.notes.append(
            f"student heads keep {shape.head_dim} of {teacher_head_dim} dimensions; attention "
            "scores are scaled by the student's head size"
        )
    record.notes.append(
        "LayerNorm does not commute with the projection: the student does not reproduce the teacher at step 0"
    )
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


def _describe(rule: Rule, select: Select) -> str:
    return {
        "table": "rows @ M",
        "stream": "M^T v",
        "norm": "(M*M)^T gamma",
        "square": "M^T W M",
        "copy": "copied",
        "head_columns": "selected heads",
        "read": f"selected {rule.axis} ({select.value}) @ M",
        "pick": f"selected {rule.axis} ({select.value})",
        "write": f"M^T @ selected {rule.axis} ({select.value})",
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


def tied_duplicates(model: Any) -> dict[str, str]:
    """State-dict entries that share storage with an earlier entry (tied decoders): name -> the name kept."""
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    tied: dict[str, str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            tied[name] = seen[key]
        else:
            seen[key] = name
    return tied


def model_tensors(model: Any, extra: dict[str, Any] | None = None) -> list[OutTensor]:
    """The tensors to write for a model: its state dict without tied duplicates, plus extra tensors."""
    tied = tied_duplicates(model)
    state = model.state_dict()
    tensors = [
        OutTensor.from_tensor(name, tensor.detach().contiguous())
        for name, tensor in state.items()
        if name not in tied
    ]
    tensors += [OutTensor.from_tensor(name, tensor.contiguous()) for name, tensor in (extra or {}).items()]
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
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused pooler/head is expected; the check below decides
    try:
        model, info = model_class.from_pretrained(model_dir, output_loading_info=True, trust_remote_code=False)
    finally:
        hf_logging.set_verbosity(verbosity)
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


# ----------------------------------------------------------------------------- measuring agreement


def similarity_rank_correlation(student_embeddings: np.ndarray, teacher_embeddings: np.ndarray) -> float:
    """Spearman correlation between the two models' pairwise cosine similarities over the same texts."""
    from scipy.stats import spearmanr

    def pairwise(embeddings: np.ndarray) -> np.ndarray:
        unit = embeddings / np.clip(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12, None)
        similarity = unit @ unit.T
        return similarity[np.triu_indices(len(unit), k=1)]

    return float(spearmanr(pairwise(student_embeddings), pairwise(teacher_embeddings)).statistic)


# ----------------------------------------------------------------------------- GUIDE against baselines


@dataclass
class Variant:
    """One way to initialise the student, for comparisons."""

    name: str
    init: Init = Init.first
    select: Select = Select.norm
    projection: Projection = Projection.pca


STANDARD_VARIANTS = (
    Variant("random", Init.none),
    Variant("weight selection (even, uniform)", Init.uniform, Select.even, Projection.even),
    Variant("GUIDE first block", Init.first),
    Variant("GUIDE uniform", Init.uniform),
)


def compare_initialisations(
    teacher: str | Path,
    dim: int,
    layers: int,
    train_texts: list[str],
    held_out_texts: list[str],
    *,
    variants: tuple[Variant, ...] = STANDARD_VARIANTS,
    embed_texts: list[str] | None = None,
    max_len: int = 64,
    mask: float = 0.3,
    settings: Any = None,
    work_dir: Path,
    seed: int = 0,
    progress: ProgressFn = no_progress,
) -> dict[str, dict[str, Any]]:
    """Train each variant with masked-LM on the same packed data, same steps, same seed; report the held-out
    loss (same masks for all) at step 0 and every ``settings.eval_every`` steps, and the Spearman correlation
    between the student's and the teacher's pairwise similarities of ``embed_texts`` (teacher pooling) at
    step 0 and after training."""
    import time

    from ctxext.encode import Encoder, load_encoder, sentence_transformers_settings
    from ctxext.train import (
        ListDataset,
        TrainSettings,
        loss_history,
        masked_held_out,
        mlm_trainer,
        pack_documents,
    )

    settings = settings or TrainSettings(steps=50, batch_size=16, eval_every=10, progress_bars=False)
    teacher_encoder = load_encoder(teacher, max_length=max_len)
    tokenizer = teacher_encoder.tokenizer
    embed_texts = embed_texts or held_out_texts[:64]
    teacher_embeddings = teacher_encoder.encode(embed_texts)
    del teacher_encoder
    train_sequences = pack_documents(tokenizer, train_texts, max_len)
    held_out = ListDataset(
        masked_held_out(tokenizer, pack_documents(tokenizer, held_out_texts, max_len), mask)
    )
    results: dict[str, dict[str, Any]] = {}
    for number, variant in enumerate(variants):
        progress("variants", number, len(variants))
        started = time.perf_counter()
        student = build_student(
            teacher,
            dim,
            layers=layers,
            init=variant.init,
            select=variant.select,
            projection=variant.projection,
            seed=seed,
        )
        model = student.model
        _, folder = open_model(teacher)
        pooling, normalize, _ = sentence_transformers_settings(folder)
        encoder = Encoder(
            model=model.base_model,
            tokenizer=tokenizer,
            pooling=pooling or "mean",
            normalize=normalize,
            max_length=max_len,
        )
        agreement_start = similarity_rank_correlation(encoder.encode(embed_texts), teacher_embeddings)
        trainer = mlm_trainer(
            model,
            tokenizer,
            train_sequences,
            held_out,
            mask=mask,
            settings=settings,
            work_dir=work_dir / f"variant-{number}",
            save=False,
        )
        start_loss = float(trainer.evaluate()["eval_loss"])
        trainer.train()
        history = loss_history(trainer)
        model.eval()
        agreement_end = similarity_rank_correlation(encoder.encode(embed_texts), teacher_embeddings)
        results[variant.name] = {
            "eval": [[0, start_loss], *history["eval"]],
            "train": history["train"],
            "final_loss": history["eval"][-1][1] if history["eval"] else start_loss,
            "agreement_start": agreement_start,
            "agreement_end": agreement_end,
            "explained_variance_ratio": student.projection.explained_variance_ratio,
            "seconds": time.perf_counter() - started,
        }
    progress("variants", len(variants), len(variants))
    return results
