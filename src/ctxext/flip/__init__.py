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

The package: :mod:`.options` (the model types flip takes, its heads and poolings), :mod:`.source` (the
source model and its tensors), :mod:`.build` (the flipped model), :mod:`.checks` (the numeric checks) and
:mod:`.write` (the tensors and sentence-transformers modules written). ``flip`` itself, and ``load_source``
with ``PROBE_BYTES``, live here in the package module: they look up ``PROBE_BYTES`` and ``reload_checks`` on
``ctxext.flip``, where tests set them.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

from ctxext.checkpoint import OutputPlan, OutputResult, ProgressFn, config_diff, no_progress, write_model_folder
from ctxext.compat import loading_info
from ctxext.errors import CheckFailed, InvalidArgument, SourceNotFound
from ctxext.flip.build import BuiltModel, build_model, flipped_config, flipped_window, intended_window, model_class
from ctxext.flip.checks import (
    bidirectionality_checks,
    dtype_name,
    hidden_states,
    last_token_effect,
    padding_difference,
    pool,
    probe_ids,
    probed,
    relative_tolerance,
    reload_checks,
    reloaded_window_check,
    sentence_transformers_check,
)
from ctxext.flip.options import (
    EMBEDDED_GGUF,
    LM_HEAD,
    NOT_FLIPPED,
    QA_HEAD,
    RELATIVE_TOLERANCE_OF,
    SUPPORTED_MODEL_TYPES,
    Head,
    Pooling,
    family_of,
    register,
)
from ctxext.flip.source import LoadedSource, beyond_probe, check_model_type, load_gguf, resolve_gguf, source_dtype
from ctxext.flip.write import full_tensor_names, output_tensors
from ctxext.io import CheckpointReader, ModelFolder, check_output_target, file_sha256, open_model
from ctxext.manifest import Check, OperationRecord, check_verdicts
from ctxext.qa_prompt import PromptConfig, load_prompt_config
from ctxext.sentence_folder import sentence_transformers_files

__all__ = [
    "BuiltModel",
    "EMBEDDED_GGUF",
    "FlipResult",
    "Head",
    "LM_HEAD",
    "LoadedSource",
    "NOT_FLIPPED",
    "PROBE_BYTES",
    "Pooling",
    "QA_HEAD",
    "RELATIVE_TOLERANCE_OF",
    "SUPPORTED_MODEL_TYPES",
    "beyond_probe",
    "bidirectionality_checks",
    "build_model",
    "check_model_type",
    "dtype_name",
    "family_of",
    "flip",
    "flip_plan",
    "flip_record",
    "flipped_config",
    "flipped_window",
    "full_tensor_names",
    "hidden_states",
    "intended_window",
    "last_token_effect",
    "load_gguf",
    "load_source",
    "model_class",
    "output_tensors",
    "padding_difference",
    "pool",
    "probe_ids",
    "probe_overrides",
    "probed",
    "register",
    "relative_tolerance",
    "reload_checks",
    "reloaded_window_check",
    "resolve_gguf",
    "sentence_transformers_check",
    "source_dtype",
]


# ----------------------------------------------------------------------------- the source, as deep as the checks need

PROBE_BYTES = 2**30
"""A source whose weights fit here is checked whole; a larger one on its first layers (every kind of layer it
has among them), so a flip's memory is that of a few layers and the embeddings, not of the model: every
layer runs the same code, and every written tensor is the source's bytes (sha256 in the manifest)."""


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


def load_source(
    ref: str, gguf_file: str | None = None, revision: str | None = None, *, shallowest: bool = False
) -> LoadedSource:
    """Load a causal decoder (folder, hub ID, GGUF file in a folder, or ``gemma-3-270m``) in the dtype its
    weights ship in, only as deep as the checks need (``probe_overrides``); its tensors are written from its
    files."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if gguf_file is not None or ref in EMBEDDED_GGUF:
        source, folder_path, name = resolve_gguf(ref, gguf_file, revision)
        digest = file_sha256(folder_path / name)
        model, tokenizer, cached = load_gguf(folder_path, name, digest)
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


# ----------------------------------------------------------------------------- the operation


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
        st_files = sentence_transformers_files(pooling, int(config["hidden_size"]), int(length))
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
