"""Decoder -> encoder: bidirectional attention, optional pooling and an extractive-QA head.

Gemma 3 flips through transformers' own ``use_bidirectional_attention``. Its config constructor rewrites
``sliding_window`` to ``window // 2 + 1`` whenever the flag is set, so a config saved as is halves the window
again on every reload (512 -> 257 -> 129). ``flip`` writes the pre-rewrite value (``2 * (window - 1)``), so
the folder reloads with the intended window, and checks that it does. Llama, Mistral, Qwen2 and Gemma 2 flip
into ctxext encoder classes (``ctxext.flip_models``) that load after one call::

    import ctxext.flip
    ctxext.flip.register()
    AutoModel.from_pretrained(folder)  # or AutoModelForQuestionAnswering / SentenceTransformer(folder)

Weights are streamed from safetensors sources byte for byte (only a resized embedding and a new QA head are
computed); GGUF sources are dequantized by transformers and written as float32.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ctxext.architectures import DECODER_FAMILIES, DecoderFamily
from ctxext.checkpoint import OutputPlan, OutputResult, ProgressFn, config_diff, no_progress, write_model_folder
from ctxext.compat import add_extra_special_tokens, loading_info, no_init_weights, transformers_warnings_off
from ctxext.errors import (
    CheckFailed,
    CorruptCheckpoint,
    CtxextError,
    InvalidArgument,
    SourceNotFound,
    UnsupportedArchitecture,
)
from ctxext.io import (
    MANIFEST_NAME,
    CheckpointReader,
    ModelFolder,
    OutTensor,
    Source,
    atomic_output,
    check_output_target,
    file_sha256,
    open_model,
    resolve_source,
    write_json,
)
from ctxext.manifest import Check, OperationRecord, check_verdicts, library_versions, manifest_header
from ctxext.qa_prompt import PromptConfig, load_prompt_config

SUPPORTED_MODEL_TYPES = tuple(DECODER_FAMILIES)
NOT_FLIPPED = {  # model types close to a supported one: what to flip instead
    "gemma3": "multimodal Gemma 3 (model_type gemma3) is not supported; flip its text model (gemma3_text, "
    "e.g. Gemma 3 270M / 1B)"
}
EMBEDDED_GGUF = {"gemma-3-270m": "gemma_gguf_path"}
LM_HEAD = "lm_head.weight"
QA_HEAD = ("qa_outputs.weight", "qa_outputs.bias")
# Relative bound of same-maths-different-order differences (left against right padding, pooling done by
# sentence-transformers against pooling here), by the dtype the model computes in: about its rounding step times
# the depth of the sums (measured on the tiny bf16 and fp16 fixtures of every family).
RELATIVE_TOLERANCE_OF = {"float32": 1e-5, "float64": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}


class Pooling(str, Enum):
    mean = "mean"
    last = "last"
    cls = "cls"


class Head(str, Enum):
    none = "none"
    qa = "qa"


ST_POOLING_KEYS = {
    Pooling.mean: "pooling_mode_mean_tokens",
    Pooling.last: "pooling_mode_lasttoken",
    Pooling.cls: "pooling_mode_cls_token",
}


def register() -> None:
    """Make flipped folders loadable with plain transformers Auto classes (idempotent, no remote code). The
    name every flipped model card gives; the classes and their registration live in ``ctxext.flip_models``."""
    from ctxext.flip_models import register as register_classes

    register_classes()


def family_of(model_type: str) -> DecoderFamily:
    """The decoder family of a source model type or of a flipped one (``ctxext_<family>_encoder``)."""
    return DECODER_FAMILIES[model_type.removeprefix("ctxext_").removesuffix("_encoder")]


# ----------------------------------------------------------------------------- sources


@dataclass
class LoadedSource:
    """The causal source model in float32, its tokenizer, and where its tensors can be streamed from."""

    source: Source
    model: Any
    tokenizer: Any
    config: dict[str, Any]
    hashes: dict[str, str]
    reader: CheckpointReader | None = None  # None for GGUF: tensors come from the dequantized model
    folder: ModelFolder | None = None
    gguf_file: str | None = None
    gguf_cache: str | None = None  # the cached dequantized copy the GGUF's weights were loaded from
    dtype: Any = None
    """The dtype the source's weights ship in (GGUF: float32, as transformers dequantizes them); the flipped
    model keeps it, and the checks compare in it."""
    probe: dict[str, Any] = field(default_factory=dict)
    """Config overrides of the models the checks run (``model`` among them): the first layers only, when the
    whole model is over ``PROBE_BYTES`` (empty: every layer)."""

    @property
    def backbone(self) -> Any:
        return self.model.model

    @property
    def tensor_prefix(self) -> str:
        """The prefix of backbone tensors in the source files ("model." for ...ForCausalLM checkpoints)."""
        if self.reader is not None and "embed_tokens.weight" in self.reader.infos:
            return ""
        return "model."


def check_model_type(config: dict[str, Any]) -> str:
    model_type = config.get("model_type", "")
    if model_type.startswith("ctxext_") or config.get("use_bidirectional_attention"):
        raise InvalidArgument(f"this {model_type} checkpoint is already bidirectional (flipped)")
    if model_type in NOT_FLIPPED:
        raise UnsupportedArchitecture(NOT_FLIPPED[model_type])
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedArchitecture(
            f"flip supports model types {', '.join(SUPPORTED_MODEL_TYPES)}, not {model_type!r}"
        )
    return model_type


PROBE_BYTES = 2**30
"""A source whose weights fit here is checked whole; a larger one on its first layers (every kind of layer it
has among them), so a flip's memory is that of a few layers and the embeddings, not of the model: every
layer runs the same code, and every written tensor is the source's bytes (sha256 in the manifest)."""


def source_dtype(reader: CheckpointReader) -> Any:
    """The dtype of the source's floating-point weights (bf16, fp16 or f32); mixed ones are refused by name."""
    from ctxext.io import torch_dtype

    example: dict[str, str] = {}  # a tensor of each floating-point dtype
    for name, info in reader.infos.items():
        if info.dtype in ("BF16", "F16", "F32", "F64"):
            example.setdefault(info.dtype, name)
    if len(example) != 1:
        shown = ", ".join(f"{name} is {dtype}" for dtype, name in example.items()) or "no floating-point tensor"
        raise CorruptCheckpoint(f"the source's weights mix dtypes ({shown}); flip keeps one: convert it first")
    return torch_dtype(next(iter(example)))


def probe_overrides(config: dict[str, Any], weight_bytes: int, *, shallowest: bool = False) -> dict[str, Any]:
    """Config overrides for the models the checks run: none when the weights fit ``PROBE_BYTES``, else the
    first layers, as many as it takes to hold every kind of layer the model has (at least two); with
    ``shallowest`` (no checks: only the embeddings are needed) one layer."""
    layers = int(config["num_hidden_layers"])
    if weight_bytes <= PROBE_BYTES and not shallowest:
        return {}
    kinds = config.get("layer_types") or []
    first_of_each = [kinds.index(kind) for kind in dict.fromkeys(kinds)]
    depth = 1 if shallowest else min(layers, max(2, 1 + max(first_of_each, default=0)))
    if depth == layers:
        return {}
    return {"num_hidden_layers": depth, **({"layer_types": kinds[:depth]} if kinds else {})}


def beyond_probe(name: str, probe: dict[str, Any]) -> bool:
    """Whether tensor ``name`` belongs to a layer the checks leave out."""
    match = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    return bool(probe) and match is not None and int(match.group(1)) >= probe["num_hidden_layers"]


def load_source(
    ref: str, gguf_file: str | None = None, revision: str | None = None, *, shallowest: bool = False
) -> LoadedSource:
    """Load a causal decoder (folder, hub ID, GGUF file in a folder, or ``gemma-3-270m``) in the dtype its
    weights ship in, only as deep as the checks need (``probe_overrides``); its tensors are written from its
    files."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf_file is not None or ref in EMBEDDED_GGUF:
        source, folder_path, name = _resolve_gguf(ref, gguf_file, revision)
        digest = file_sha256(folder_path / name)
        model, tokenizer, cached = _load_gguf(folder_path, name, digest)
        config = model.config.to_dict()
        check_model_type(config)
        hashes = {name: digest}
        return LoadedSource(
            source, model.eval(), tokenizer, config, hashes, gguf_file=name, gguf_cache=cached, dtype=torch.float32
        )
    source, folder = open_model(ref, revision=revision)
    folder = ModelFolder(folder.model_dir, folder.model_dir, False)  # flip writes a plain folder
    config = folder.config
    check_model_type(config)
    reader = CheckpointReader(folder)
    dtype = source_dtype(reader)
    probe = probe_overrides(config, reader.total_bytes(), shallowest=shallowest)
    model, info = AutoModelForCausalLM.from_pretrained(
        folder.model_dir, dtype=dtype, output_loading_info=True, trust_remote_code=False, **probe
    )
    info = loading_info(info)
    missing = [key for key in info["missing_keys"] if key != LM_HEAD]
    unexpected = [key for key in info["unexpected_keys"] if not beyond_probe(key, probe)]
    if missing or unexpected or info["mismatched_keys"]:
        raise CheckFailed(
            f"{folder.model_dir} does not load cleanly as a causal LM: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, mismatched {info['mismatched_keys'][:3]}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder.model_dir, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise SourceNotFound(
            f"{folder.model_dir} has no usable tokenizer ({str(error).strip().splitlines()[0]})"
        ) from None
    hashes = reader.sha256_of_files()
    return LoadedSource(source, model.eval(), tokenizer, config, hashes, reader, folder, dtype=dtype, probe=probe)


def _load_gguf(folder: Path, name: str, digest: str) -> tuple[Any, Any, str | None]:
    """The model (float32) and tokenizer of a GGUF file, and the cache folder they came from, if any.

    transformers parses a GGUF's metadata (a 262k-token vocabulary for Gemma 3) in Python once each for the
    config, the weights and the tokenizer: about 80 s for Gemma 3 270M on 2 cores. The dequantized model and
    tokenizer are kept in ctxext's cache under the file's sha256, so later flips of the same file load
    safetensors instead; a cache that cannot be written only costs time.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ctxext.presets import cache_dir

    cache = cache_dir() / "gguf-dequantized" / digest
    if (cache / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(cache, dtype=torch.float32, trust_remote_code=False)
        with transformers_warnings_off():  # 4.57 warns of a Mistral regex in any saved Gemma 3 GGUF tokenizer
            tokenizer = AutoTokenizer.from_pretrained(cache, trust_remote_code=False)
        return model, tokenizer, str(cache)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=False)
    except (ValueError, KeyError, OSError) as error:
        raise UnsupportedArchitecture(
            f"{name}: transformers cannot load this GGUF file ({str(error).strip().splitlines()[0]})"
        ) from None
    with contextlib.suppress(OSError, CtxextError), atomic_output(cache) as staging:
        _save_dequantized(model, staging)
        tokenizer.save_pretrained(staging)
        write_json(
            staging / MANIFEST_NAME,
            {**manifest_header("flip: GGUF dequantized by transformers"), "gguf": name, "sha256": digest},
        )
    return model, tokenizer, None


def _save_dequantized(model: Any, folder: Path) -> None:
    """The GGUF model's float32 weights and config as a plain folder. Not ``save_pretrained``: transformers 5
    marks a GGUF-loaded model as quantized and refuses to serialise it, although its weights are dequantized.
    A tied output head is left out, as transformers leaves it out (loading ties it to the input embedding)."""
    from safetensors.torch import save_file

    config = {key: value for key, value in model.config.to_dict().items() if key != "quantization_config"}
    write_json(folder / "config.json", config)
    tied = {LM_HEAD} if config.get("tie_word_embeddings", True) else set()
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items() if name not in tied}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _resolve_gguf(ref: str, gguf_file: str | None, revision: str | None) -> tuple[Source, Path, str]:
    if gguf_file is None:
        from ctxext import presets

        if revision is not None:
            raise InvalidArgument(f"a revision applies to hub sources only; {ref!r} is an embedded model")

        path = getattr(presets, EMBEDDED_GGUF[ref])()
        return Source(ref=ref, path=path.parent), path.parent, path.name
    source = resolve_source(ref, revision=revision, allow_patterns=[gguf_file, "*.json"], what="GGUF folder")
    if not (source.path / gguf_file).is_file():
        raise SourceNotFound(f"GGUF file {gguf_file!r} is not in {source.path}")
    return source, source.path, gguf_file


# ----------------------------------------------------------------------------- the flipped model


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


# ----------------------------------------------------------------------------- numeric checks


def probe_ids(vocab_size: int, length: int, rows: int, seed: int) -> Any:
    """Random token ids away from the low (special) ids."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    low = min(vocab_size // 4, 1000)
    return torch.randint(low, vocab_size, (rows, length), generator=generator)


def hidden_states(backbone: Any, input_ids: Any, attention_mask: Any) -> Any:
    import torch

    forward = getattr(backbone, "encode", backbone)  # QA models: the backbone's own forward
    with torch.no_grad():
        return forward(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.double()


def last_token_effect(
    backbone: Any, vocab_size: int, length: int = 12, seed: int = 0, window: int | None = None
) -> float:
    """How much the output at position 0 moves when only the last token changes (0 in a causal model).
    With a sliding ``window`` the input is kept short enough for position 0 to reach the last token."""
    import torch

    if window is not None:
        length = max(2, min(length, window))

    ids = probe_ids(vocab_size, length, 1, seed).repeat(2, 1)
    ids[1, -1] = vocab_size // 4 + (int(ids[0, -1]) - vocab_size // 4 + 1) % (vocab_size - vocab_size // 4)
    hidden = hidden_states(backbone, ids, torch.ones_like(ids))
    return float((hidden[0, 0] - hidden[1, 0]).abs().max())


def padding_difference(backbone: Any, vocab_size: int, lengths: tuple[int, int] = (12, 7), seed: int = 1) -> float:
    """Largest difference at real positions between right- and left-padded copies of the same batch,
    relative to the largest output value."""
    import torch

    longest = max(lengths)
    ids = probe_ids(vocab_size, longest, len(lengths), seed)
    right_ids, right_mask = torch.zeros_like(ids), torch.zeros_like(ids)
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        right_ids[row, :length], right_mask[row, :length] = ids[row, :length], 1
        left_ids[row, longest - length :], left_mask[row, longest - length :] = ids[row, :length], 1
    right = hidden_states(backbone, right_ids, right_mask)
    left = hidden_states(backbone, left_ids, left_mask)
    worst = 0.0
    for row, length in enumerate(lengths):
        worst = max(worst, float((right[row, :length] - left[row, longest - length :]).abs().max()))
    return worst / max(1.0, float(right.abs().max()))


def bidirectionality_checks(
    source_backbone: Any, flipped_backbone: Any, vocab_size: int, window: int | None = None
) -> list[Check]:
    source_effect = last_token_effect(source_backbone, vocab_size, window=window)
    flipped_effect = last_token_effect(flipped_backbone, vocab_size, window=window)
    padding = padding_difference(flipped_backbone, vocab_size)
    dtype = next(flipped_backbone.parameters()).dtype
    tolerance = relative_tolerance(dtype)
    return [
        Check(
            "source is causal: position 0 ignores the last token",
            source_effect,
            0.0,
            passed=source_effect == 0.0,
            detail="max abs change of the output at position 0",
        ),
        Check(
            "flipped: position 0 sees the last token",
            flipped_effect,
            1e-6,
            passed=flipped_effect > 1e-6,
            detail="max abs change of the output at position 0 (must exceed the bound)",
        ),
        Check(
            "flipped: left and right padding give the same outputs",
            padding,
            tolerance,
            passed=padding <= tolerance,
            detail=f"max abs diff at real positions / max abs output, in {dtype_name(dtype)}",
        ),
    ]


def reload_checks(
    model_dir: Path, built: BuiltModel, head: Head, vocab_size: int, pooling: Pooling | None
) -> list[Check]:
    """Load the written folder the documented way and compare it with the in-memory model."""
    import torch
    from transformers import AutoModel, AutoModelForQuestionAnswering

    from ctxext.checks import load_model_strictly

    register()
    reloaded = load_model_strictly(
        model_dir,
        AutoModelForQuestionAnswering if head == Head.qa else AutoModel,
        ignore_unexpected=lambda name: beyond_probe(name, built.probe),
        dtype=built.dtype,
        **built.probe,
    )
    reloaded_backbone = reloaded
    ids = probe_ids(vocab_size, 16, 2, seed=2)
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    expected, actual = hidden_states(built.backbone, ids, mask), hidden_states(reloaded_backbone, ids, mask)
    real = mask.bool()
    difference = float((expected[real] - actual[real]).abs().max())
    checks = [
        Check("reloaded folder loads with no missing or unexpected weights", 0.0, 0.0, detail=probed(built)),
        Check(
            "reloaded equals in-memory: last hidden states",
            difference,
            0.0,
            passed=difference == 0.0,
            detail=f"max abs diff at real positions, both in {dtype_name(built.dtype)}; {probed(built)}",
        ),
    ]
    if head == Head.qa:
        with torch.no_grad():
            before, after = (
                built.model(input_ids=ids, attention_mask=mask),
                reloaded(input_ids=ids, attention_mask=mask),
            )
        logits = max(
            float((before.start_logits - after.start_logits)[real].abs().max()),
            float((before.end_logits - after.end_logits)[real].abs().max()),
        )
        checks.append(Check("reloaded equals in-memory: QA start/end logits", logits, 0.0, passed=logits == 0.0))
    effect = last_token_effect(reloaded_backbone, vocab_size, window=built.window)
    checks.append(Check("reloaded: position 0 sees the last token", effect, 1e-6, passed=effect > 1e-6))
    if built.window is not None:
        checks.append(reloaded_window_check(reloaded, built.window))
    if pooling is not None:
        checks.append(sentence_transformers_check(model_dir, built, ids, mask, pooling))
    return checks


def probed(built: BuiltModel) -> str:
    """What the checks ran on: the whole model, or its first layers."""
    if not built.probe:
        return "every layer"
    return f"the first {built.probe['num_hidden_layers']} of {built.config.num_hidden_layers} layers"


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def relative_tolerance(dtype: Any) -> float:
    return RELATIVE_TOLERANCE_OF[dtype_name(dtype)]


def reloaded_window_check(reloaded: Any, window: int) -> Check:
    """The reloaded model's sliding window, where its family keeps it. A family flipped by a config flag has
    layers that take their window from the config (each is compared too); ctxext encoders build the mask from
    ``bidirectional_window`` (their layers' own sliding_window attribute is not used by eager/SDPA)."""
    family = family_of(reloaded.config.model_type)
    config_window = getattr(reloaded.config, family.window_key)
    windows: set[Any] = set()
    if family.flip_by == "config_flag":
        windows = {getattr(layer.self_attn, "sliding_window", None) for layer in reloaded.layers} - {None}
    return Check(
        "reloaded sliding window equals the intended one",
        float(config_window),
        float(window),
        passed=config_window == window and windows <= {window},
        detail=f"layer windows {sorted(windows)}",
    )


def pool(hidden: Any, mask: Any, pooling: Pooling) -> Any:
    if pooling == Pooling.cls:
        return hidden[:, 0]
    if pooling == Pooling.last:
        last = mask.shape[1] - 1 - mask.flip(1).float().argmax(1)
        return hidden[range(hidden.shape[0]), last]
    weights = mask[..., None].to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def sentence_transformers_check(model_dir: Path, built: BuiltModel, ids: Any, mask: Any, pooling: Pooling) -> Check:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(model_dir), device="cpu", model_kwargs={"dtype": built.dtype}, config_kwargs=dict(built.probe)
    )
    with torch.no_grad():
        embedded = model({"input_ids": ids, "attention_mask": mask})["sentence_embedding"].double()
    expected = pool(hidden_states(built.backbone, ids, mask), mask, pooling)
    difference = float((embedded - expected).abs().max())
    bound = relative_tolerance(built.dtype) * max(1.0, float(expected.abs().max()))
    return Check(
        f"sentence-transformers ({pooling.value} pooling) equals pooled in-memory outputs",
        difference,
        bound,
        passed=difference <= bound,
        detail=f"in {dtype_name(built.dtype)}; {probed(built)}",
    )


# ----------------------------------------------------------------------------- writing


def output_tensors(loaded: LoadedSource, built: BuiltModel, record: OperationRecord) -> list[OutTensor]:
    """Every tensor of the whole flipped model: copied ones streamed from the source files (byte for byte, one
    at a time), computed ones (a grown embedding, a QA head) and a GGUF's dequantized ones from memory."""
    computed = built.model.state_dict()
    used: set[str] = set()
    tensors = []
    for name in full_tensor_names(built):
        source_name = loaded.tensor_prefix + name
        if loaded.reader is not None and name not in built.changed:
            if source_name not in loaded.reader.infos:
                raise UnsupportedArchitecture(f"tensor {name} of the flipped model has no source tensor {source_name}")
            tensors.append(OutTensor.copied(loaded.reader, source_name, name))
            used.add(source_name)
            record.copied.append(name)  # byte for byte, under the encoder's name where it differs
            if source_name != name:
                record.renamed[source_name] = name
            continue
        tensors.append(OutTensor.from_tensor(name, computed[name].detach().contiguous()))
        if name in built.created:
            record.created.append(name)
        elif name in built.changed:
            record.modified.append(name)
        else:
            record.copied.append(name)  # dequantized from GGUF
    if loaded.reader is not None:
        used.update(loaded.tensor_prefix + n for n in built.changed if n not in built.created)
        leftover = sorted(set(loaded.reader.names) - used)
        unexpected = [n for n in leftover if n != LM_HEAD]
        if unexpected:
            raise UnsupportedArchitecture(f"source tensor {unexpected[0]} has no place in the flipped model")
        record.dropped.extend(leftover)
    else:
        record.dropped.append(LM_HEAD + " (tied to the embeddings in GGUF; an encoder has no LM head)")
    return tensors


def full_tensor_names(built: BuiltModel) -> list[str]:
    """The tensor names of the whole flipped model (the in-memory one may hold only the first layers), read from
    an instance on the meta device: no memory."""
    import torch

    if not built.probe:
        return list(built.model.state_dict())
    with torch.device("meta"), no_init_weights():
        return list(type(built.model)(built.config).state_dict())


def sentence_transformers_files(hidden_size: int, pooling: Pooling, max_seq_length: int) -> dict[str, Any]:
    """modules.json, sentence_bert_config.json, 1_Pooling/config.json and config_sentence_transformers.json
    (relative path -> content): the folder loads with SentenceTransformer."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    pooling_config = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    pooling_config[ST_POOLING_KEYS[pooling]] = True
    versions = library_versions()
    return {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "1_Pooling/config.json": pooling_config,
        "config_sentence_transformers.json": {
            "__version__": {
                "sentence_transformers": versions.get("sentence-transformers"),
                "transformers": versions.get("transformers"),
                "pytorch": versions.get("torch"),
            },
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    }


def flip(
    ref: str,
    out: str | Path,
    *,
    gguf_file: str | None = None,
    pooling: Pooling | None = None,
    head: Head = Head.none,
    special_tokens: str | Path | None = None,
    sliding_window: int | None = None,
    seed: int = 0,
    check: bool = True,
    revision: str | None = None,
    force: bool = False,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> FlipResult:
    """Turn a causal decoder into a bidirectional encoder and write it to ``out`` (atomically, with a
    manifest holding every check: the source is causal, the flip is bidirectional, padding side does not
    matter, the reloaded folder equals the in-memory model, the sliding window survives reload)."""
    out = check_output_target(out, force=force)  # before the slow load; write_model_folder checks again
    prompt = load_prompt_config(special_tokens) if head == Head.qa else None
    if special_tokens is not None and head != Head.qa:
        raise InvalidArgument("--special-tokens goes with --head qa")
    progress("loading the source", 0, 1)
    loaded = load_source(ref, gguf_file, revision, shallowest=not check)
    progress("loading the source", 1, 1)
    options = {
        "ref": ref,
        "gguf": gguf_file,
        "pooling": pooling.value if pooling else None,
        "head": head.value,
        "special_tokens": str(special_tokens) if special_tokens else None,
        "sliding_window": sliding_window,
        "seed": seed,
        "check": check,
    }
    dtype = loaded.dtype
    built = build_model(loaded, head=head, window=sliding_window, prompt=prompt, seed=seed, output_dtype=dtype)
    record = flip_record(loaded, built, head, pooling, prompt)
    vocab_size = loaded.backbone.get_input_embeddings().weight.shape[0]
    if check:
        progress("bidirectionality checks", 0, 1)
        for verdict in bidirectionality_checks(loaded.backbone, built.backbone, vocab_size, built.window):
            record.require(verdict)
        progress("bidirectionality checks", 1, 1)
    else:
        record.parameters["checked_layers"] = "none (--no-check)"
        record.notes.append("--no-check: no forward check ran; the tensors are the source's bytes (sha256 above)")
    plan = flip_plan(loaded, built, record, options, pooling, dtype_name(dtype))

    def checks(staging: Path) -> list[Check]:
        loaded.model = None  # written: its memory goes to the reloaded copy the checks load
        gc.collect()
        return reload_checks(staging, built, head, vocab_size, pooling) if check else []

    written = write_model_folder(plan, out, force=force, checks=checks, progress=progress, argv=argv)
    return FlipResult(written.path, written.manifest)


class FlipResult(OutputResult):
    """A flipped folder; its summary names the family, the tensor counts, the window and every check."""

    title = "flip"
    view = "table"

    def summary(self) -> dict[str, Any]:
        operation = self.manifest["operations"][0]
        return {
            "output": str(self.path),
            "model_type": operation["parameters"]["model_type"],
            **{key: len(operation[key]) for key in ("copied", "renamed", "modified", "created", "dropped")},
            "sliding_window": operation["parameters"]["sliding_window"],
            "added_special_tokens": json.dumps(operation["parameters"]["added_special_tokens"]),
            "checks": check_verdicts(operation["checks"]),
        }


def flip_record(
    loaded: LoadedSource, built: BuiltModel, head: Head, pooling: Pooling | None, prompt: PromptConfig | None
) -> OperationRecord:
    """The flip's operation record before anything is written: its parameters and notes."""
    record = OperationRecord(
        "flip_to_bidirectional",
        parameters={
            "model_type": loaded.config["model_type"],
            "head": head.value,
            "pooling": pooling.value if pooling else None,
            "sliding_window": built.window,
            "added_special_tokens": built.added_tokens,
            "prompt": prompt.describe() if prompt else None,
            "dtype": dtype_name(built.dtype),
            "checked_layers": probed(built),
        },
    )
    if built.probe:
        record.notes.append(
            f"the forward checks ran on {probed(built)} (the weights are over {PROBE_BYTES / 2**30:g} GiB): every "
            "layer runs the same code, and every other written tensor is copied byte for byte from the source"
        )
    if built.added_tokens:
        record.notes.append("new special-token embedding rows start as the mean of the existing rows")
    if loaded.gguf_cache:
        record.notes.append(
            f"{loaded.gguf_file} loaded from ctxext's cache of its dequantized weights "
            f"({loaded.gguf_cache}, keyed by the file's sha256)"
        )
    if loaded.gguf_file:
        record.notes.append(f"weights dequantized from {loaded.gguf_file} by transformers and written as float32")
    return record


def flip_plan(
    loaded: LoadedSource,
    built: BuiltModel,
    record: OperationRecord,
    options: dict[str, Any],
    pooling: Pooling | None,
    dtype: str,
) -> OutputPlan:
    """What ``flip`` writes: the source's support files, the flipped tokenizer and config, the
    sentence-transformers modules with ``pooling``, and the tensors (copied ones streamed from the source)."""
    from ctxext.flip_models import config_for_saving

    config = config_for_saving(built.config, type(built.model).__name__, dtype)
    record.config_changes.update(config_diff(loaded.config, config))
    st_files = {}
    if pooling is not None:
        length = min(
            config.get("max_position_embeddings") or 512, getattr(built.tokenizer, "model_max_length", 10**9) or 10**9
        )
        st_files = sentence_transformers_files(int(config["hidden_size"]), pooling, int(length))
        record.files["sentence_transformers"] = list(st_files)
    return OutputPlan(
        "flip",
        options,
        {"model": (loaded.source, loaded.hashes)},
        output_tensors(loaded, built, record),
        [record],
        config,
        support_from=loaded.folder,
        extra_files=st_files,
        tokenizer=built.tokenizer,
        require_checks=True,
    )
