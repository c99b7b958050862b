"""The flipped model: its config (bidirectional, the intended sliding window), its class, its tokenizer and its
tensors in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctxext.architectures import DecoderFamily
from ctxext.compat import add_extra_special_tokens, no_init_weights
from ctxext.errors import CheckFailed, InvalidArgument, UnsupportedArchitecture
from ctxext.flip.options import QA_HEAD, Head, family_of, register
from ctxext.flip.source import LoadedSource
from ctxext.qa_prompt import PromptConfig


def intended_window(config: dict[str, Any], window: int | None) -> int | None:
    """The exclusive half-width (|q - k| < w) of the flipped sliding layers: the user's, or the one
    transformers derives for Gemma 3 from the causal window (w // 2 + 1, the same number of tokens seen)."""
    sliding = config.get("sliding_window")
    if window is not None:
        if window < 1:
            raise InvalidArgument("--sliding-window must be at least 1")
        return window
    switch = family_of(config["model_type"]).sliding_switch
    if not sliding or (switch is not None and not config.get(switch)):
        return None
    return int(sliding) // 2 + 1


def flipped_config(
    config: dict[str, Any], *, bidirectional: bool, window: int | None, vocab_size: int, attn_implementation: str
) -> Any:
    """The config object of the flipped (or, with ``bidirectional=False``, the causal) model."""
    from transformers import AutoConfig

    from ctxext import flip_models

    values = {
        k: v
        for k, v in config.items()
        # a GGUF source is dequantized on load (transformers 5 still records it as quantized)
        if k not in ("architectures", "_name_or_path", "auto_map", "transformers_version", "quantization_config")
    }
    values.update(vocab_size=vocab_size, use_cache=False)
    family = family_of(values.pop("model_type"))
    if not bidirectional:
        result = AutoConfig.for_model(family.model_type, **values)
    elif family.flip_by == "config_flag":
        result = _flagged_config(family, values, intended_window(config, window))
    else:
        result = flip_models.ENCODER_CONFIGS[family.model_type](
            bidirectional_window=intended_window(config, window), **values
        )
    result._attn_implementation = attn_implementation
    return result


def _flagged_config(family: DecoderFamily, values: dict[str, Any], effective: int | None) -> Any:
    """The config of a family whose own backbone turns bidirectional through a config flag; the window is
    given so that the constructor's rewrite (if the family has one) gives back ``effective``."""
    from transformers import AutoConfig

    if family.bidirectional_flag is None:
        raise ValueError(f"{family.model_type} flips by a config flag but DECODER_FAMILIES names none")
    values[family.bidirectional_flag] = True
    if effective is not None:
        values["sliding_window"] = 2 * (effective - 1) if family.window_halved_on_load else effective
    result = AutoConfig.for_model(family.model_type, **values)
    if result.sliding_window != effective:
        raise CheckFailed(f"{family.model_type} sliding window {result.sliding_window} is not the intended {effective}")
    return result


def flipped_window(config: Any, bidirectional: bool) -> int | None:
    """The half-width of the flipped sliding layers, read where the family keeps it (None: no window)."""
    if not bidirectional:
        return None
    return getattr(config, family_of(config.model_type).window_key, None)


def model_class(config: Any, head: Head) -> Any:
    from transformers import AutoModel

    from ctxext import flip_models

    model_type = config.model_type
    if model_type.startswith("ctxext_"):
        classes = flip_models.QA_MODELS if head == Head.qa else flip_models.ENCODER_MODELS
        return classes[family_of(model_type).model_type]
    if head != Head.qa:
        return AutoModel._model_mapping[type(config)]
    if family_of(model_type).flip_by == "config_flag":
        return flip_models.QA_MODELS[model_type]  # one class, causal or not: the config flag decides
    return flip_models.causal_qa_class(type(config))


@dataclass
class BuiltModel:
    """An in-memory flipped model (as deep as the source's probe: ``LoadedSource.probe``) sharing the source's
    tensors, the config of the whole flipped model, and what was done to build it."""

    model: Any
    backbone: Any
    tokenizer: Any
    added_tokens: dict[str, int]
    changed: set[str]  # output tensor names computed rather than copied
    created: set[str]
    window: int | None
    config: Any
    dtype: Any
    probe: dict[str, Any]


def build_model(
    loaded: LoadedSource,
    *,
    head: Head = Head.none,
    bidirectional: bool = True,
    window: int | None = None,
    prompt: PromptConfig | None = None,
    seed: int = 0,
    output_dtype: Any = None,
) -> BuiltModel:
    """The flipped model in memory, in the source's dtype, as deep as the source model loaded (its probe), its
    weights the source's own tensors (no copy: the source's causal forward is unchanged).

    With ``head=qa`` the prompt's special tokens are added to a copy of the tokenizer; each new token's
    embedding row starts as the mean of the existing rows; the QA head starts as N(0, initializer_range)
    with zero bias. New values are rounded to ``output_dtype`` so the written folder equals the model.
    """
    import torch

    register()
    tokenizer, added = _flipped_tokenizer(loaded.tokenizer, (prompt or PromptConfig()) if head == Head.qa else None)
    vocab_size = loaded.backbone.get_input_embeddings().weight.shape[0]
    if head == Head.qa:
        vocab_size = max(vocab_size, len(tokenizer), max(added.values(), default=-1) + 1)
    options = {
        "bidirectional": bidirectional,
        "window": window,
        "vocab_size": vocab_size,
        "attn_implementation": loaded.model.config._attn_implementation,
    }
    config = flipped_config(loaded.config, **options)
    probe_config = flipped_config({**loaded.config, **loaded.probe}, **options)
    model = _empty_model(model_class(probe_config, head), probe_config)
    backbone = model  # a QA model is its backbone class plus qa_outputs: same tensor names
    round_to = output_dtype or loaded.dtype or torch.float32
    state, changed = _source_state(loaded, vocab_size, added, round_to)
    missing, unexpected = backbone.load_state_dict(state, strict=False, assign=True)
    if unexpected or set(missing) - set(QA_HEAD):
        raise CheckFailed(
            f"the flipped model does not take the source weights: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    _copy_buffers(loaded.backbone, backbone, family_of(config.model_type))
    created: set[str] = set()
    if head == Head.qa:
        _init_qa_head(model, config.initializer_range, seed, round_to)
        model.qa_outputs.to(loaded.dtype or torch.float32)
        created.update(QA_HEAD)
    window_of = flipped_window(config, bidirectional)
    dtype = loaded.dtype or torch.float32
    return BuiltModel(
        model.eval(), backbone, tokenizer, added, changed | created, created, window_of, config, dtype, loaded.probe
    )


def _flipped_tokenizer(source: Any, prompt: PromptConfig | None) -> tuple[Any, dict[str, int]]:
    """A right-padding copy of the source tokenizer, with the prompt's special tokens added (those it lacked,
    by id, are returned)."""
    import copy

    tokenizer = copy.deepcopy(source)
    tokenizer.padding_side = "right"
    if prompt is None:
        return tokenizer, {}
    known = set(tokenizer.get_vocab())
    add_extra_special_tokens(tokenizer, prompt.special_tokens)
    return tokenizer, {t: tokenizer.convert_tokens_to_ids(t) for t in prompt.special_tokens if t not in known}


def _empty_model(cls: Any, config: Any) -> Any:
    """``cls(config)`` without spending time on random init (every weight is loaded or set next)."""
    with no_init_weights():
        return cls(config)


def _source_state(
    loaded: LoadedSource, vocab_size: int, added: dict[str, int], round_to: Any
) -> tuple[dict[str, Any], set[str]]:
    """The source backbone's state dict, its embedding grown to ``vocab_size`` (new rows: the mean row), and
    the names of the tensors that changed."""
    import torch

    # load_state_dict(assign=True) takes these tensors as the flipped model's parameters: one copy of the
    # weights, shared by the causal source and the flipped model, in the dtype they ship in
    state = {name: tensor.detach() for name, tensor in loaded.backbone.state_dict().items()}
    source_embedding = loaded.backbone.get_input_embeddings().weight.detach()
    embedding_name = next(n for n, t in state.items() if t is not None and n.endswith("embed_tokens.weight"))
    if not added and vocab_size == source_embedding.shape[0]:
        return state, set()
    embedding = torch.zeros((vocab_size, source_embedding.shape[1]), dtype=source_embedding.dtype)
    embedding[: source_embedding.shape[0]] = source_embedding
    mean_row = source_embedding.double().mean(0).to(round_to).to(source_embedding.dtype)
    embedding[source_embedding.shape[0] :] = mean_row  # new rows, including gaps in the token ids
    embedding[list(added.values())] = mean_row
    state[embedding_name] = embedding
    return state, {embedding_name}


def _init_qa_head(model: Any, initializer_range: float, seed: int, round_to: Any) -> None:
    """The QA head: N(0, initializer_range) weights rounded to the output dtype, zero bias."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        weight = torch.empty_like(model.qa_outputs.weight).normal_(0.0, initializer_range, generator=generator)
        model.qa_outputs.weight.copy_(weight.to(round_to).float())
        model.qa_outputs.bias.zero_()


def _copy_buffers(source: Any, target: Any, family: DecoderFamily) -> None:
    """Non-persistent buffers (RoPE frequencies, Gemma's embedding scale) are not in the state dict: the
    family's, copied from the source; a buffer the family table does not name stops the flip."""
    source_buffers = dict(source.named_buffers())
    persistent = set(target.state_dict())
    for name, buffer in target.named_buffers():
        if name not in family.buffers and name not in persistent:
            raise UnsupportedArchitecture(
                f"{family.model_type} has buffer {name}, which ctxext.architectures.DECODER_FAMILIES does not name"
            )
        if name in source_buffers and buffer.shape == source_buffers[name].shape:
            buffer.copy_(source_buffers[name])
