"""What guide is asked for (``StudentOptions``: the student's shape; init, selection, projection) and what it does
to each tensor: one rule per tensor role, and the families it reads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ctxext.architectures import ENCODER_FAMILIES, EncoderFamily, is_buffer
from ctxext.errors import UnsupportedArchitecture


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


@dataclass(frozen=True)
class StudentOptions:
    """The student asked for (the CLI builds it from its options): its width, its depth, heads and feed-forward
    units (None: from the teacher, see ``student_shape``), and how it is initialised from the teacher."""

    dim: int
    layers: int | None = None
    """Default: the teacher's depth."""
    heads: int | None = None
    """Default: the teacher's head size kept (``dim`` / the teacher's head size heads)."""
    intermediate: int | None = None
    """Default: the teacher's ratio of units to width."""
    init: Init = Init.first
    select: Select = Select.norm
    projection: Projection = Projection.pca
    seed: int = 0
    """Seed of the random init of everything not taken from the teacher."""


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
