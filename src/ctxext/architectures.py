"""Each architecture family described once: tensor-name prefixes, layer template, role -> tensor name,
non-weight buffers, position scheme and attention flags, as data (the llama.cpp tensor_mapping way).

Operations (``positions``, ``transfer``, ``guide``, ``flip``) read these tables instead of keeping their own
copies; each may still keep its own mapping between two families.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from ctxext.errors import UnsupportedArchitecture

# ---- encoder families
# Tensor roles are llama.cpp's names where it has one (token_embd, attn_q, ffn_up, output, ...), one per tensor:
# ``<role>.weight`` / ``<role>.bias``. A family maps each role to the tensor's name in its checkpoints: base and
# block names relative to the base-model prefix (a checkpoint saved with a head carries ``<prefix>.``, a bare base
# model none), block names relative to one block of ``layer``, head names top-level.

LEARNED = "learned"
ROPE = "rope"


class Offset(str, Enum):
    """Rows a learned position table holds before position 0."""

    none = "none"
    padding = "padding_idx + 1"  # RoBERTa's numbering: positions start after the padding id


@dataclass(frozen=True)
class Positions:
    """How a model type encodes positions: ``learned`` (an absolute table with ``offset`` rows before position
    0), ``rope`` (no table; the config carries the scaling) or the name of another scheme."""

    scheme: str
    offset: Offset = Offset.none


class Attention(str, Enum):
    """Which tokens attend to which."""

    full = "full"
    block_sparse = "block_sparse"  # BigBird: window, random and global blocks; full attention on short inputs
    local_global = "local_global"  # ModernBERT: sliding-window layers, a global one every few layers


# Not weights: buffers sized by max_position_embeddings that transformers no longer saves and older checkpoints
# still carry (under any base prefix), and how each is rebuilt at another length.
BUFFERS: dict[str, str] = {"embeddings.position_ids": "arange", "embeddings.token_type_ids": "zeros"}

# The learned absolute position table, in every family that has one.
POSITION_TABLE = "embeddings.position_embeddings.weight"


def _tensors(role: str, path: str, params: tuple[str, ...] = ("weight", "bias")) -> dict[str, str]:
    return {f"{role}.{param}": f"{path}.{param}" for param in params}


@dataclass(frozen=True)
class EncoderFamily:
    """One encoder family: where each tensor role lives, how positions work, which tokens attend to which.

    ``aliases``: head tensors that are another tensor under a second name (tied decoders), which carry nothing.
    ``input_names``: the inputs a tokenizer must be limited to, where the model takes fewer than BERT's.
    """

    model_type: str
    mlm_class: str
    prefix: str
    layer: str
    base: dict[str, str]
    blocks: dict[str, str]
    head: dict[str, str]
    positions: Positions
    attention: Attention = Attention.full
    aliases: tuple[str, ...] = ()
    input_names: tuple[str, ...] | None = None

    def tensor_name(self, role: str, block: int | None = None) -> str:
        """A role's tensor: relative to ``prefix`` for base and block roles, top-level for head roles."""
        if block is not None:
            return self.layer.format(block) + self.blocks[role]
        return self.base[role] if role in self.base else self.head[role]

    def role_of(self, name: str) -> tuple[str, int | None] | None:
        """(role, block index or None) of a tensor named as in :meth:`tensor_name`; None when no role has it."""
        for table in (self.base, self.head):
            for role, path in table.items():
                if path == name:
                    return role, None
        before, after = self.layer.split("{}")
        index, separator, rest = name.removeprefix(before).partition(after)
        if name.startswith(before) and separator and index.isdigit():
            for role, path in self.blocks.items():
                if path == rest:
                    return role, int(index)
        return None

    @property
    def block_root(self) -> str:
        """What every block's tensor names start with (``encoder.layer.``)."""
        return self.layer.split("{}")[0]

    @property
    def base_roots(self) -> tuple[str, ...]:
        """First components of the base model's tensor names (``embeddings.``, ``encoder.``, ...)."""
        return tuple(dict.fromkeys(name.split(".")[0] + "." for name in (*self.base.values(), self.layer)))

    @property
    def head_roots(self) -> tuple[str, ...]:
        """First components of the masked-LM head's tensor names (``cls.``, ``lm_head.``), sorted."""
        return tuple(sorted({name.split(".")[0] + "." for name in (*self.head.values(), *self.aliases)}))


BERT_EMBEDDINGS: dict[str, str] = {
    **_tensors("token_embd", "embeddings.word_embeddings", ("weight",)),
    "position_embd.weight": POSITION_TABLE,
    **_tensors("token_types", "embeddings.token_type_embeddings", ("weight",)),
    **_tensors("token_embd_norm", "embeddings.LayerNorm"),
}
BERT_BLOCK: dict[str, str] = {
    **_tensors("attn_q", "attention.self.query"),
    **_tensors("attn_k", "attention.self.key"),
    **_tensors("attn_v", "attention.self.value"),
    **_tensors("attn_output", "attention.output.dense"),
    **_tensors("attn_output_norm", "attention.output.LayerNorm"),
    **_tensors("ffn_up", "intermediate.dense"),
    **_tensors("ffn_down", "output.dense"),
    **_tensors("layer_output_norm", "output.LayerNorm"),
}
BERT_HEAD: dict[str, str] = {
    **_tensors("mlm_dense", "cls.predictions.transform.dense"),
    **_tensors("mlm_norm", "cls.predictions.transform.LayerNorm"),
    "output.weight": "cls.predictions.decoder.weight",  # tied to token_embd
    "output.bias": "cls.predictions.bias",
}
ROBERTA_HEAD: dict[str, str] = {
    **_tensors("mlm_dense", "lm_head.dense"),
    **_tensors("mlm_norm", "lm_head.layer_norm"),
    "output.weight": "lm_head.decoder.weight",  # tied to token_embd
    "output.bias": "lm_head.bias",
}

BERT = EncoderFamily(
    "bert",
    "BertForMaskedLM",
    "bert",
    "encoder.layer.{}.",
    {**BERT_EMBEDDINGS, **_tensors("pooler", "pooler.dense")},
    BERT_BLOCK,
    BERT_HEAD,
    Positions(LEARNED),
    aliases=("cls.predictions.decoder.bias",),
)
ROBERTA = replace(
    BERT,
    model_type="roberta",
    mlm_class="RobertaForMaskedLM",
    prefix="roberta",
    head=ROBERTA_HEAD,
    positions=Positions(LEARNED, Offset.padding),
    aliases=("lm_head.decoder.bias",),
)
MPNET = EncoderFamily(
    "mpnet",
    "MPNetForMaskedLM",
    "mpnet",
    "encoder.layer.{}.",
    {
        **{role: name for role, name in BERT_EMBEDDINGS.items() if not role.startswith("token_types")},
        "rel_attn_bias.weight": "encoder.relative_attention_bias.weight",  # one bias per distance bucket and head
        **_tensors("pooler", "pooler.dense"),
    },
    {
        **_tensors("attn_q", "attention.attn.q"),
        **_tensors("attn_k", "attention.attn.k"),
        **_tensors("attn_v", "attention.attn.v"),
        **_tensors("attn_output", "attention.attn.o"),
        **_tensors("attn_output_norm", "attention.LayerNorm"),
        **_tensors("ffn_up", "intermediate.dense"),
        **_tensors("ffn_down", "output.dense"),
        **_tensors("layer_output_norm", "output.LayerNorm"),
    },
    ROBERTA_HEAD,
    Positions(LEARNED, Offset.padding),
    aliases=("lm_head.decoder.bias",),
)
ELECTRA = EncoderFamily(
    "electra",
    "ElectraForMaskedLM",
    "electra",
    "encoder.layer.{}.",
    {**BERT_EMBEDDINGS, **_tensors("token_embd_proj", "embeddings_project")},  # only if embedding_size differs
    BERT_BLOCK,
    {
        **_tensors("mlm_dense", "generator_predictions.dense"),
        **_tensors("mlm_norm", "generator_predictions.LayerNorm"),
        **_tensors("output", "generator_lm_head"),
    },
    Positions(LEARNED),
)
DISTILBERT = EncoderFamily(
    "distilbert",
    "DistilBertForMaskedLM",
    "distilbert",
    "transformer.layer.{}.",
    {role: name for role, name in BERT_EMBEDDINGS.items() if not role.startswith("token_types")},
    {
        **_tensors("attn_q", "attention.q_lin"),
        **_tensors("attn_k", "attention.k_lin"),
        **_tensors("attn_v", "attention.v_lin"),
        **_tensors("attn_output", "attention.out_lin"),
        **_tensors("attn_output_norm", "sa_layer_norm"),
        **_tensors("ffn_up", "ffn.lin1"),
        **_tensors("ffn_down", "ffn.lin2"),
        **_tensors("layer_output_norm", "output_layer_norm"),
    },
    {
        **_tensors("mlm_dense", "vocab_transform"),
        **_tensors("mlm_norm", "vocab_layer_norm"),
        **_tensors("output", "vocab_projector"),  # weight tied to token_embd
    },
    Positions(LEARNED),
)
MODERNBERT = EncoderFamily(
    "modernbert",
    "ModernBertForMaskedLM",
    "model",
    "layers.{}.",
    {
        **_tensors("token_embd", "embeddings.tok_embeddings", ("weight",)),
        **_tensors("token_embd_norm", "embeddings.norm"),
        **_tensors("output_norm", "final_norm"),
    },
    {  # pre-norm; block 0 has no attn_norm; biases only with norm_bias / attention_bias / mlp_bias
        **_tensors("attn_norm", "attn_norm"),
        **_tensors("attn_qkv", "attn.Wqkv"),  # q, k and v stacked
        **_tensors("attn_output", "attn.Wo"),
        **_tensors("ffn_norm", "mlp_norm"),
        **_tensors("ffn_gate_up", "mlp.Wi"),  # GLU: input and gate stacked
        **_tensors("ffn_down", "mlp.Wo"),
    },
    {
        **_tensors("mlm_dense", "head.dense"),
        **_tensors("mlm_norm", "head.norm"),
        **_tensors("output", "decoder"),  # weight tied to token_embd
    },
    Positions(ROPE),
    Attention.local_global,
    input_names=("input_ids", "attention_mask"),
)
DEBERTA_V2 = EncoderFamily(
    "deberta-v2",
    "DebertaV2ForMaskedLM",
    "deberta",
    "encoder.layer.{}.",
    {  # position_embd only with position_biased_input, token_types only with type_vocab_size > 0
        **BERT_EMBEDDINGS,
        **_tensors("token_embd_proj", "embeddings.embed_proj", ("weight",)),
        **_tensors("rel_embd", "encoder.rel_embeddings", ("weight",)),
        **_tensors("rel_embd_norm", "encoder.LayerNorm"),
        **_tensors("conv", "encoder.conv.conv"),
        **_tensors("conv_norm", "encoder.conv.LayerNorm"),
    },
    {
        **_tensors("attn_q", "attention.self.query_proj"),
        **_tensors("attn_k", "attention.self.key_proj"),
        **_tensors("attn_v", "attention.self.value_proj"),
        **{role: name for role, name in BERT_BLOCK.items() if not role.startswith(("attn_q", "attn_k", "attn_v"))},
    },
    BERT_HEAD,
    Positions("relative positions"),
    aliases=("cls.predictions.decoder.bias",),
)
BIG_BIRD = EncoderFamily(
    "big_bird",
    "BigBirdForMaskedLM",
    "bert",
    "encoder.layer.{}.",
    {**BERT_EMBEDDINGS, **_tensors("pooler", "pooler")},
    BERT_BLOCK,
    BERT_HEAD,
    Positions(LEARNED),
    Attention.block_sparse,
    aliases=("cls.predictions.decoder.bias",),
)

ENCODER_FAMILIES: dict[str, EncoderFamily] = {
    family.model_type: family
    for family in (
        BERT,
        ROBERTA,
        replace(ROBERTA, model_type="xlm-roberta", mlm_class="XLMRobertaForMaskedLM"),
        replace(ROBERTA, model_type="camembert", mlm_class="CamembertForMaskedLM"),
        MPNET,
        ELECTRA,
        DISTILBERT,
        MODERNBERT,
        DEBERTA_V2,
        BIG_BIRD,
    )
}

# Position schemes of model types known by their positions alone (no tensor table): interpolate handles them.
OTHER_POSITIONS: dict[str, Positions] = {
    "albert": Positions(LEARNED),
    "xlm-roberta-xl": Positions(LEARNED, Offset.padding),
    "longformer": Positions(LEARNED, Offset.padding),
    **{
        model_type: Positions(ROPE)
        for model_type in (
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3",
            "gemma3_text",
            "phi3",
            "olmo",
            "olmo2",
            "gpt_neox",
            "falcon",
            "nomic_bert",
            "jina_bert",
            "eurobert",
        )
    },
    "deberta": Positions("relative positions"),
    "t5": Positions("relative position buckets"),
    "mt5": Positions("relative position buckets"),
    "bloom": Positions("ALiBi"),
    "mpt": Positions("ALiBi"),
}
POSITIONS: dict[str, Positions] = {
    **{model_type: family.positions for model_type, family in ENCODER_FAMILIES.items()},
    **OTHER_POSITIONS,
}


def position_scheme(config: dict[str, Any]) -> str:
    """``learned``, ``rope`` or the name of another scheme, from the config's model_type (and, for a learned
    table, the config switches that replace it)."""
    model_type = config.get("model_type", "")
    positions = POSITIONS.get(model_type)
    if positions is None:
        known = [sorted(t for t, p in POSITIONS.items() if p.scheme == scheme) for scheme in (LEARNED, ROPE)]
        raise UnsupportedArchitecture(
            f"model type {model_type!r} is not supported; known: {', '.join(known[0] + known[1])}"
        )
    if positions.scheme == LEARNED:
        if config.get("position_embedding_type", "absolute") != "absolute":
            return f"{config['position_embedding_type']} positions"
        if config.get("sinusoidal_pos_embds"):
            return "fixed sinusoidal positions"
    return positions.scheme


def learned_offset(config: dict[str, Any]) -> int:
    """Rows before position 0 in the config's learned position table: RoBERTa's numbering starts after the
    padding id."""
    positions = POSITIONS.get(config.get("model_type", ""))
    if positions is not None and positions.offset == Offset.padding:
        return int(config.get("pad_token_id", 1)) + 1
    return 0


def buffer_kind(name: str) -> str | None:
    """How a length buffer (any base prefix) is rebuilt (``arange`` / ``zeros``); None for any other tensor."""
    for suffix, kind in BUFFERS.items():
        if name.endswith(suffix):
            return kind
    return None


def is_buffer(name: str) -> bool:
    return buffer_kind(name) is not None


# ---- decoder families (flip)


@dataclass(frozen=True)
class DecoderFamily:
    """A causal decoder family ``ctxext flip`` turns into a bidirectional encoder.

    ``flip_by`` says how: ``"config_flag"``, transformers' own backbone honours ``bidirectional_flag`` in its
    config (and its layers take their window from the config); ``"mask"``, a ctxext encoder class (model type
    ``ctxext_<family>_encoder``, ``ctxext.flip_models``) passes an all-visible 4-D additive mask built from
    ``bidirectional_window``, as one tensor for all layers (``mask_form="tensor"``) or as ``{layer type: mask}``
    (``"mapping"``). ``window_key`` is the config key the flipped window is read from after reload;
    ``window_halved_on_load``: the config constructor turns ``sliding_window`` s into ``s // 2 + 1`` when the
    flag is set, so config.json holds ``2 * (window - 1)``. ``sliding_switch``: a config key that must be true
    for ``sliding_window`` to apply at all. ``buffers``: the backbone's non-persistent buffers (not in the state
    dict), copied from the source model; the names of both supported transformers releases are listed.
    """

    model_type: str
    config_class: str  # transformers class names
    backbone_class: str
    flip_by: str
    bidirectional_flag: str | None = None
    mask_form: str | None = None
    window_key: str = "bidirectional_window"
    window_halved_on_load: bool = False
    sliding_switch: str | None = None
    buffers: tuple[str, ...] = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq")


DECODER_FAMILIES: dict[str, DecoderFamily] = {
    family.model_type: family
    for family in (
        DecoderFamily(
            "gemma3_text",
            "Gemma3TextConfig",
            "Gemma3TextModel",
            "config_flag",
            bidirectional_flag="use_bidirectional_attention",
            window_key="sliding_window",
            window_halved_on_load=True,
            buffers=(
                "embed_tokens.embed_scale",
                "rotary_emb.inv_freq",  # transformers 4.57
                "rotary_emb_local.inv_freq",
                *(
                    f"rotary_emb.{kind}_attention_{part}inv_freq"
                    for kind in ("full", "sliding")
                    for part in ("", "original_")
                ),
            ),
        ),
        DecoderFamily("llama", "LlamaConfig", "LlamaModel", "mask", mask_form="tensor"),
        DecoderFamily("mistral", "MistralConfig", "MistralModel", "mask", mask_form="tensor"),
        DecoderFamily(
            "qwen2", "Qwen2Config", "Qwen2Model", "mask", mask_form="mapping", sliding_switch="use_sliding_window"
        ),
        DecoderFamily(
            "gemma2",
            "Gemma2Config",
            "Gemma2Model",
            "mask",
            mask_form="mapping",
            buffers=("embed_tokens.embed_scale", "rotary_emb.inv_freq", "rotary_emb.original_inv_freq"),
        ),
    )
}

CAUSAL_DECODER_TYPES = frozenset(
    {*DECODER_FAMILIES, "qwen3", "gemma", "gemma3", "mixtral", "phi3", "olmo", "olmo2", "gpt_neox", "falcon"}
)
"""Causal language models: a text's one vector is its last token's state, unless a pooling is given."""
