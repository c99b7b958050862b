"""The causal source model: loaded (a folder, a hub ID or a GGUF file) in the dtype its weights ship in, with
where its tensors can be streamed from."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxext.compat import transformers_warnings_off
from ctxext.errors import CorruptCheckpoint, CtxextError, InvalidArgument, SourceNotFound, UnsupportedArchitecture
from ctxext.flip.options import EMBEDDED_GGUF, LM_HEAD, NOT_FLIPPED, SUPPORTED_MODEL_TYPES
from ctxext.io import MANIFEST_NAME, CheckpointReader, ModelFolder, Source, atomic_output, resolve_source, write_json
from ctxext.manifest import manifest_header


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


def beyond_probe(name: str, probe: dict[str, Any]) -> bool:
    """Whether tensor ``name`` belongs to a layer the checks leave out."""
    match = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    return bool(probe) and match is not None and int(match.group(1)) >= probe["num_hidden_layers"]


def load_gguf(folder: Path, name: str, digest: str) -> tuple[Any, Any, str | None]:
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


def resolve_gguf(ref: str, gguf_file: str | None, revision: str | None) -> tuple[Source, Path, str]:
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
