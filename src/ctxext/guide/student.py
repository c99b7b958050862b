"""The GUIDE student in memory: its shape checked against the teacher, the family's masked-LM model filled
from the teacher (``build_student``), and the pooler written beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.architectures import position_scheme
from ctxext.checkpoint import ProgressFn, no_progress, tied_duplicates
from ctxext.errors import InvalidArgument, UnsupportedArchitecture
from ctxext.guide.assembly import Assembly, StudentShape, student_record
from ctxext.guide.projection import StreamProjection, block_sources, even_projection, pca_projection
from ctxext.guide.rules import FAMILIES, Family, Init, Projection, StudentOptions
from ctxext.io import CheckpointReader, ModelFolder, Source, open_model
from ctxext.manifest import OperationRecord
from ctxext.options import with_fields


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


def student_shape(config: dict[str, Any], options: StudentOptions) -> StudentShape:
    """The student's shape: the options' with what they leave to the teacher filled from its ``config``, checked
    against it."""
    dim, layers, heads, intermediate = options.dim, options.layers, options.heads, options.intermediate
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


def student_options(options: StudentOptions | None, fields: dict[str, Any], caller: str) -> StudentOptions:
    """``options`` with ``fields`` (:class:`StudentOptions` fields given as keywords) over it; without
    ``options``, ``fields`` must hold ``dim``."""
    if options is None and "dim" not in fields:
        raise TypeError(f"{caller}() needs StudentOptions or dim=")
    return with_fields(StudentOptions, options, fields, caller)


def build_student(
    teacher: str | Path,
    options: StudentOptions | None = None,
    *,
    revision: str | None = None,
    progress: ProgressFn = no_progress,
    **fields: Any,
) -> Student:
    """Build the student in memory (a masked-LM model) and the record of every tensor's origin.
    ``fields``: :class:`StudentOptions` fields given as keywords (over ``options``)."""
    options = student_options(options, fields, "build_student")
    dim, init, select, seed = options.dim, options.init, options.select, options.seed
    source, folder = open_model(teacher, revision=revision)
    config = folder.config
    family = family_of(config)
    shape = student_shape(config, options)
    reader = CheckpointReader(folder)
    names, unused = _teacher_names(reader, family)
    if family.token_table not in names:
        raise UnsupportedArchitecture(f"teacher has no token-embedding table ({family.prefix}.{family.token_table})")

    progress("projection", 0, 1)
    token_table = reader.array(names[family.token_table])
    pca = options.projection == Projection.pca
    stream = pca_projection(token_table, dim) if pca else even_projection(token_table, dim)
    progress("projection", 1, 1)

    model, student_config = _student_model(folder, family, shape, seed)
    assembly = Assembly(family, shape, config, reader, names, stream.matrix, select, model.state_dict())
    sources = block_sources(shape.layers, int(config["num_hidden_layers"]), init)
    block_zero = assembly.fill_blocks(sources, progress)
    pooler_values = assembly.fill_base_and_head(block_zero) if init != Init.none else {}
    extra = _pooler_tensors(family, shape, student_config, pooler_values, seed)
    tied = tied_duplicates(model)
    for name in [*extra, *(name for name in assembly.state if name not in tied)]:
        assembly.origins.setdefault(name, f"random init (family default, seed {seed})")
    record = student_record(assembly, stream, init, seed, sources, tied)
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
