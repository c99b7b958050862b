"""Model classes behind ``ctxext flip``: bidirectional encoders and extractive-QA heads.

:func:`register` (also reachable as ``ctxext.flip.register``, the name model cards give) registers them with
the transformers Auto classes, so a flipped folder loads with plain ``AutoModel`` /
``AutoModelForQuestionAnswering`` and no ``trust_remote_code``:

    import ctxext.flip
    ctxext.flip.register()
    model = AutoModel.from_pretrained("flipped-folder")

Which family flips how is data: ``ctxext.architectures.DECODER_FAMILIES``. Gemma 3 needs none of this for
its backbone: transformers honours ``use_bidirectional_attention`` in its config. Llama, Mistral, Qwen2 and
Gemma 2 get an encoder class per family (model type
``ctxext_<family>_encoder``) whose forward builds an all-visible 4-D additive mask (padding still
masked; sliding-window layers get a symmetric window) and position ids counted from the attention mask,
so left and right padding give the same outputs. A flipped folder never loads silently as a causal model:
without ``register()`` transformers refuses its unknown model type.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from transformers.loss.loss_utils import ForQuestionAnsweringLoss
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from ctxext.architectures import DECODER_FAMILIES, DecoderFamily

FULL = "full_attention"
SLIDING = "sliding_attention"
MASK_ATTENTION = ("eager", "sdpa")


def bidirectional_mask(padding_mask: torch.Tensor, window: int | None, dtype: torch.dtype) -> torch.Tensor:
    """A (batch, 1, length, length) additive mask: 0 where a query may see a key, the dtype's minimum
    elsewhere. Every real token is visible; with ``window`` only keys with ``|q - k| < window``."""
    batch, length = padding_mask.shape
    visible = padding_mask.bool()[:, None, None, :].expand(batch, 1, length, length)
    if window is not None:
        positions = torch.arange(length, device=padding_mask.device)
        visible = visible & ((positions[:, None] - positions[None, :]).abs() < window)
    mask = torch.zeros((batch, 1, length, length), dtype=dtype, device=padding_mask.device)
    return mask.masked_fill(~visible, torch.finfo(dtype).min)


def positions_from_mask(padding_mask: torch.Tensor) -> torch.Tensor:
    """Position 0 at each row's first real token, whichever side the padding is on."""
    return (padding_mask.long().cumsum(-1) - 1).clamp(min=0)


class BidirectionalEncoderMixin:
    """Forward of a decoder backbone with every real token visible to every other one."""

    # "mapping": the backbone accepts {layer type: mask}; "tensor": one mask for all layers.
    mask_form = "tensor"

    def _make_bidirectional(self) -> None:
        for module in self.modules():
            if hasattr(module, "is_causal"):
                module.is_causal = False

    def _sliding_layers(self) -> bool:
        config = self.config
        if self.mask_form == "tensor":
            return getattr(config, "sliding_window", None) is not None
        return SLIDING in (getattr(config, "layer_types", None) or [])

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Any,
    ):
        if self.config._attn_implementation not in MASK_ATTENTION:
            raise ValueError(
                f"{type(self).__name__} needs attn_implementation 'eager' or 'sdpa' (it passes an "
                f"explicit bidirectional mask), not {self.config._attn_implementation!r}"
            )
        reference = input_ids if input_ids is not None else inputs_embeds
        batch, length = reference.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones((batch, length), dtype=torch.long, device=reference.device)
        if attention_mask.ndim == 2:
            if position_ids is None:
                position_ids = positions_from_mask(attention_mask)
            dtype = self.get_input_embeddings().weight.dtype if inputs_embeds is None else inputs_embeds.dtype
            full = bidirectional_mask(attention_mask, None, dtype)
            window = self.config.bidirectional_window if self._sliding_layers() else None
            if self.mask_form == "mapping":
                attention_mask = {FULL: full, SLIDING: bidirectional_mask(attention_mask, window, dtype)}
            else:
                attention_mask = full if window is None else bidirectional_mask(attention_mask, window, dtype)
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )


def _encoder_config_class(base: type, family: str) -> type:
    def __init__(self, bidirectional_window: int | None = None, **kwargs: Any) -> None:
        base.__init__(self, **kwargs)
        # Exclusive half-width of the symmetric window of sliding layers (|q - k| < window). Stored as is:
        # unlike Gemma 3's use_bidirectional_attention, nothing rewrites it on load.
        self.bidirectional_window = bidirectional_window

    name = f"{base.__name__.removesuffix('Config')}EncoderConfig"
    return type(name, (base,), {"model_type": f"ctxext_{family}_encoder", "__init__": __init__, "__module__": __name__})


def _encoder_model_class(backbone: type, config_class: type, mask_form: str) -> type:
    def __init__(self, config: Any) -> None:
        backbone.__init__(self, config)
        self._make_bidirectional()

    name = f"{backbone.__name__.removesuffix('Model')}EncoderModel"
    return type(
        name,
        (BidirectionalEncoderMixin, backbone),
        {"config_class": config_class, "mask_form": mask_form, "__init__": __init__, "__module__": __name__},
    )


class QuestionAnsweringMixin:
    """An extractive-QA head on a backbone class: start/end logits from one linear layer over the last
    hidden states, cross-entropy on both ends. The head class *is* the backbone class plus ``qa_outputs``,
    so a QA folder has the backbone's own tensor names: AutoModel and sentence-transformers load its
    encoder (ignoring ``qa_outputs``), AutoModelForQuestionAnswering loads both."""

    def _add_qa_head(self) -> None:
        self.qa_outputs = torch.nn.Linear(self.config.hidden_size, 2)

    def encode(self, **kwargs: Any):
        """The backbone's forward: last hidden states."""
        return super().forward(**kwargs)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        start_positions: torch.LongTensor | None = None,
        end_positions: torch.LongTensor | None = None,
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput:
        kwargs.pop("past_key_values", None)
        kwargs.pop("use_cache", None)
        outputs = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        logits = self.qa_outputs(outputs.last_hidden_state)
        start_logits, end_logits = (part.squeeze(-1).contiguous() for part in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = ForQuestionAnsweringLoss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


def _qa_class(name: str, backbone: type) -> type:
    def __init__(self, config: Any) -> None:
        backbone.__init__(self, config)
        self._add_qa_head()

    return type(
        name,
        (QuestionAnsweringMixin, backbone),
        {"__init__": __init__, "__module__": __name__, "__doc__": QuestionAnsweringMixin.__doc__},
    )


def _mask_family(family: DecoderFamily) -> tuple[type, type, str]:
    """The transformers config and backbone classes of a family flipped by a mask, and its mask form."""
    if family.mask_form is None:
        raise ValueError(f"{family.model_type} flips by a mask but DECODER_FAMILIES names no mask_form for it")
    return getattr(transformers, family.config_class), getattr(transformers, family.backbone_class), family.mask_form


# source model_type -> (config class, backbone class, mask form), for the families flipped by a mask
ENCODER_FAMILIES: dict[str, tuple[type, type, str]] = {
    family.model_type: _mask_family(family) for family in DECODER_FAMILIES.values() if family.flip_by == "mask"
}

ENCODER_CONFIGS: dict[str, type] = {}
ENCODER_MODELS: dict[str, type] = {}
QA_MODELS: dict[str, type] = {}

for _family, (_config, _backbone, _form) in ENCODER_FAMILIES.items():
    ENCODER_CONFIGS[_family] = _encoder_config_class(_config, _family)
    ENCODER_MODELS[_family] = _encoder_model_class(_backbone, ENCODER_CONFIGS[_family], _form)
    QA_MODELS[_family] = _qa_class(
        f"{ENCODER_MODELS[_family].__name__.removesuffix('Model')}ForQuestionAnswering", ENCODER_MODELS[_family]
    )

# Families flipped by a config flag (Gemma 3): the backbone is transformers' own (bidirectional through its
# config); only the QA head is ours. The causal model with this head is the benchmark's baseline.
FLAG_CONFIGS: dict[str, type] = {}
for _flagged in (family for family in DECODER_FAMILIES.values() if family.flip_by == "config_flag"):
    FLAG_CONFIGS[_flagged.model_type] = getattr(transformers, _flagged.config_class)
    QA_MODELS[_flagged.model_type] = _qa_class(
        f"{_flagged.backbone_class.removesuffix('Model')}ForQuestionAnswering",
        getattr(transformers, _flagged.backbone_class),
    )

for _class in (*ENCODER_CONFIGS.values(), *ENCODER_MODELS.values(), *QA_MODELS.values()):
    globals()[_class.__name__] = _class

ENCODER_MODEL_NAMES = frozenset(model.__name__ for model in ENCODER_MODELS.values())
_CAUSAL_QA: dict[type, type] = {}


def causal_qa_class(config_class: type) -> type:
    """A QA head over the unflipped (causal) backbone of a family: the baseline a flip is compared with."""
    if config_class not in _CAUSAL_QA:
        for base_config, backbone, _form in ENCODER_FAMILIES.values():
            if base_config is config_class:
                name = f"{config_class.__name__.removesuffix('Config')}CausalForQuestionAnswering"
                _CAUSAL_QA[config_class] = _qa_class(name, backbone)
                break
        else:
            raise KeyError(f"no causal QA class for {config_class.__name__}")
    return _CAUSAL_QA[config_class]


_registered = False


def register() -> None:
    """Make flipped folders loadable with plain transformers Auto classes (idempotent, no remote code)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModel, AutoModelForQuestionAnswering

    for family, config_class in ENCODER_CONFIGS.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, ENCODER_MODELS[family], exist_ok=True)
        AutoModelForQuestionAnswering.register(config_class, QA_MODELS[family], exist_ok=True)
    for family, config_class in FLAG_CONFIGS.items():
        AutoModelForQuestionAnswering.register(config_class, QA_MODELS[family], exist_ok=True)
    _registered = True


def native_config(values: dict[str, Any]) -> dict[str, Any] | None:
    """The config of a flipped backbone as the family's own transformers model with ``is_causal: false``,
    which transformers >= 5.2 loads bidirectional with plain ``AutoModel`` and no ctxext import; None where
    that is not the same model: older transformers (it would load causal without a word), QA heads, and
    sliding windows (transformers' window is inclusive, ctxext's exclusive)."""
    from ctxext.compat import native_bidirectional_config

    source_type = next((f for f, c in ENCODER_CONFIGS.items() if c.model_type == values.get("model_type")), None)
    windowed = values.get("bidirectional_window") is not None or SLIDING in (values.get("layer_types") or ())
    if source_type is None or windowed or not native_bidirectional_config():
        return None
    family = DECODER_FAMILIES[source_type]
    return {**values, "model_type": source_type, "architectures": [family.backbone_class], "is_causal": False}


def config_for_saving(config: Any, architecture: str, dtype: str) -> dict[str, Any]:
    """config.json content that reloads into the same model (a family whose config constructor halves the
    window when the bidirectional flag is set gets the pre-rewrite ``sliding_window``). A backbone that
    transformers itself can load bidirectional is written as the family's own model (:func:`native_config`)."""
    values = config.to_dict()
    family = DECODER_FAMILIES.get(values.get("model_type", ""))
    if family is not None and family.window_halved_on_load and values.get(family.bidirectional_flag):
        values["sliding_window"] = 2 * (config.sliding_window - 1)
    values["architectures"] = [architecture]
    values["dtype"] = dtype
    values.pop("_name_or_path", None)
    return (native_config(values) if architecture in ENCODER_MODEL_NAMES else None) or values
