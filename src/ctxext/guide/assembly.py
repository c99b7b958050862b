"""A student being filled from its teacher, block by block through M, and the record of where each of its
tensors came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ctxext.checkpoint import ProgressFn
from ctxext.errors import CheckFailed
from ctxext.guide.projection import BlockSelection, StreamProjection, block_selection, project
from ctxext.guide.rules import Family, Init, Rule, RuleKind, Select
from ctxext.io import CheckpointReader
from ctxext.manifest import OperationRecord


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
class Assembly:
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


def student_record(
    assembly: Assembly, stream: StreamProjection, init: Init, seed: int, sources: list[int | None], tied: dict[str, str]
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
