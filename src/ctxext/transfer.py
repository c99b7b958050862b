"""Architecture-to-architecture transfer: a BERT-family checkpoint and its adapters into BigBird.

The surgery streams tensors: every source tensor gets its canonical role from the source family's table in
``ctxext.architectures`` and is looked up in :data:`BERT_TO_BIGBIRD` (one row per role): copied byte for byte
under BigBird's name for the role, or, for the position table, stretched with the methods of
``ctxext.positions``; buffers and pre-training heads are dropped. A tensor with no role or no row stops the
transfer. Adapters (``adapters`` format) are renamed into the layout of the adapters plugin interface on
BigBird (``ctxext.bottleneck``) and written in the adapters format under ``adapters/<name>/``.

The numeric checks run on the finished temporary folder: for every adapter, the source model plus adapter
against BigBird plus adapter on short inputs (original_full, and block-sparse as configured), and one input
of the full new length in block-sparse attention.
"""

from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.architectures import BUFFERS, ENCODER_FAMILIES, EncoderFamily
from ctxext.bottleneck import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS_BIN,
    ADAPTER_WEIGHTS_SAFETENSORS,
    INTERFACE_FILE,
    AdapterFolder,
    check_supported,
    interface_file_content,
    rename_adapter_key,
    renamed_adapter_config,
)
from ctxext.checkpoint import OutputPlan, OutputResult, ProgressFn, config_diff, no_progress, write_model_folder
from ctxext.checks import max_abs_diff
from ctxext.errors import CheckFailed, InvalidArgument, SourceNotFound, UnsupportedArchitecture
from ctxext.io import (
    CheckpointReader,
    ModelFolder,
    OutTensor,
    Source,
    array_to_bytes,
    bytes_to_array,
    file_sha256,
    read_json,
    resolve_source,
)
from ctxext.manifest import Check, OperationRecord
from ctxext.positions import Grid, Method, check_target_length, extend_table, learned_layout

TARGETS = ("bigbird",)
TOLERANCE = 1e-4

# ----------------------------------------------------------------------------- the tensor table

COPY = "copy"
POSITIONS = "positions"
DROP = "drop"

BIGBIRD = ENCODER_FAMILIES["big_bird"]


@dataclass(frozen=True)
class TensorRule:
    """What happens to the tensors of one role (``ctxext.architectures``; weight and bias alike)."""

    role: str
    action: str = COPY
    why: str = ""


BERT_TO_BIGBIRD: tuple[TensorRule, ...] = (
    TensorRule("token_embd"),
    TensorRule("position_embd", POSITIONS),
    TensorRule("token_types"),
    TensorRule("token_embd_norm"),
    TensorRule("attn_q"),
    TensorRule("attn_k"),
    TensorRule("attn_v"),
    TensorRule("attn_output"),
    TensorRule("attn_output_norm"),
    TensorRule("ffn_up"),
    TensorRule("ffn_down"),
    TensorRule("layer_output_norm"),
    TensorRule("pooler"),  # pooler.dense.* -> pooler.*
    TensorRule("buffers", DROP, "non-persistent buffer in BigBird, rebuilt from max_position_embeddings"),
    TensorRule(
        "pretraining_heads", DROP, "pre-training head: BigBirdModel has none (the base model is what gets transferred)"
    ),
)
RULES = {rule.role: rule for rule in BERT_TO_BIGBIRD}
POOLER = [BIGBIRD.tensor_name("pooler.weight"), BIGBIRD.tensor_name("pooler.bias")]

# ----------------------------------------------------------------------------- the config table

# Fields with the same meaning in BigBird: taken from the source config completed with its own class
# defaults (never BigBird's: its hidden_act, vocab_size and special ids differ from BERT's).
CONFIG_CARRIED = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "classifier_dropout",
    "use_cache",
    "dtype",
    "id2label",
    "label2id",
    "problem_type",
    "finetuning_task",
    "tokenizer_class",
    "chunk_size_feed_forward",
)
# Source fields whose value BigBird cannot represent: the transfer refuses any other value.
CONFIG_REQUIRED = {"position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False}

# transformers' defaults (BertConfig, RobertaConfig, ...) for the model fields a hand-written source config may
# leave out; a saved config carries them all. As data, so the surgery needs no transformers import.
_BERT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "bos_token_id": None,
    "eos_token_id": None,
    "classifier_dropout": None,
    "use_cache": True,
    **CONFIG_REQUIRED,
}
_ROBERTA_TOKENS = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}
SOURCE_CONFIG_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": _BERT_DEFAULTS,
    "roberta": {**_BERT_DEFAULTS, **_ROBERTA_TOKENS, "vocab_size": 50265},
    "xlm-roberta": {**_BERT_DEFAULTS, **_ROBERTA_TOKENS},
    "camembert": {**_BERT_DEFAULTS, **_ROBERTA_TOKENS},
}
# The model types transfer reads: BERT's tensor layout (``ctxext.architectures``), a config it can complete.
SOURCE_MODEL_TYPES = tuple(SOURCE_CONFIG_DEFAULTS)
PRETRAINING_HEADS = tuple(sorted({root for t in SOURCE_MODEL_TYPES for root in ENCODER_FAMILIES[t].head_roots}))
# Fields every transformers config has (generation settings, labels, output flags); BigBird reads them as any
# model does, so a source's values for them are not reported as left out.
GENERIC_CONFIG_FIELDS = frozenset(
    {
        "_name_or_path",
        "add_cross_attention",
        "architectures",
        "bad_words_ids",
        "begin_suppress_tokens",
        "bos_token_id",
        "chunk_size_feed_forward",
        "cross_attention_hidden_size",
        "decoder_start_token_id",
        "diversity_penalty",
        "do_sample",
        "dtype",
        "torch_dtype",
        "early_stopping",
        "encoder_no_repeat_ngram_size",
        "eos_token_id",
        "exponential_decay_length_penalty",
        "finetuning_task",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "id2label",
        "is_decoder",
        "is_encoder_decoder",
        "label2id",
        "length_penalty",
        "max_length",
        "min_length",
        "model_type",
        "no_repeat_ngram_size",
        "num_beam_groups",
        "num_beams",
        "num_return_sequences",
        "output_attentions",
        "output_hidden_states",
        "output_scores",
        "pad_token_id",
        "prefix",
        "problem_type",
        "pruned_heads",
        "remove_invalid_values",
        "repetition_penalty",
        "return_dict",
        "return_dict_in_generate",
        "sep_token_id",
        "suppress_tokens",
        "task_specific_params",
        "temperature",
        "tf_legacy_loss",
        "tie_encoder_decoder",
        "tie_word_embeddings",
        "tokenizer_class",
        "top_k",
        "top_p",
        "torchscript",
        "transformers_version",
        "typical_p",
        "use_bfloat16",
    }
)


# ----------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """A source made of a base model and named adapters, each a hub ID a user may point elsewhere."""

    name: str
    base: str
    adapters: dict[str, str]


PRESETS = {
    "specter2": Preset(
        "specter2",
        "allenai/specter2_base",
        {
            "proximity": "allenai/specter2",
            "adhoc_query": "allenai/specter2_adhoc_query",
            "classification": "allenai/specter2_classification",
            "regression": "allenai/specter2_regression",
        },
    )
}
ADAPTER_FILES = [ADAPTER_CONFIG, ADAPTER_WEIGHTS_BIN, ADAPTER_WEIGHTS_SAFETENSORS, "head_config.json"]


@dataclass
class SourceAdapter:
    """An adapter to transfer: the name it gets in the output and where it was found."""

    name: str
    source: Source
    folder: AdapterFolder


@dataclass
class TransferSources:
    model: Source
    folder: ModelFolder
    adapters: list[SourceAdapter] = field(default_factory=list)


def parse_named(values: list[str] | tuple[str, ...], what: str) -> list[tuple[str | None, str]]:
    """``NAME=REF`` or ``REF`` items as (name or None, ref)."""
    parsed: list[tuple[str | None, str]] = []
    for value in values:
        name, sep, ref = value.partition("=")
        if sep and name and "/" not in name and ref:
            parsed.append((name, ref))
        elif sep:
            raise InvalidArgument(f"{what} {value!r}: expected NAME=PATH_OR_HUB_ID")
        else:
            parsed.append((None, value))
    return parsed


def resolve_sources(
    ref: str,
    *,
    base: str | None = None,
    adapter_paths: dict[str, str] | None = None,
    extra_adapters: list[tuple[str | None, str]] | None = None,
    revision: str | None = None,
) -> TransferSources:
    """Find every part before any work starts; report every part that is missing in one line."""
    adapter_paths = dict(adapter_paths or {})
    preset = PRESETS.get(ref)
    if preset is None and (base or adapter_paths):
        raise InvalidArgument(
            f"--base and --adapter-path point the parts of a preset ({', '.join(PRESETS)}); "
            f"{ref!r} is not one: give its adapters with --adapter"
        )
    unknown = sorted(set(adapter_paths) - set(preset.adapters if preset else ()))
    if unknown and preset is not None:
        raise InvalidArgument(
            f"{preset.name} has no adapter {unknown[0]!r}; its adapters: {', '.join(preset.adapters)}"
        )
    wanted: list[tuple[str, str | None, str]] = []  # (what, output name, ref)
    model_ref = (base or preset.base) if preset else ref
    wanted.append((f"{preset.name} base model" if preset else "model", None, model_ref))
    if preset:
        for role, hub_id in preset.adapters.items():
            wanted.append((f"{preset.name} adapter {role}", role, adapter_paths.get(role, hub_id)))
    for name, adapter_ref in extra_adapters or []:
        wanted.append(("adapter", name, adapter_ref))

    resolved: list[Source] = []
    missing: list[tuple[str, SourceNotFound]] = []
    for what, _, part_ref in wanted:
        patterns = None if what.endswith("model") else ADAPTER_FILES
        try:
            part_revision = revision if what.endswith("model") else None  # --revision is the model's
            resolved.append(resolve_source(part_ref, revision=part_revision, allow_patterns=patterns, what=what))
        except SourceNotFound as error:
            missing.append((f"{what} {part_ref!r}", error))
    if len(wanted) == 1 and missing:
        raise missing[0][1]
    if missing:
        hint = (
            "point the parts at local folders with --base / --adapter-path ROLE=PATH"
            if preset
            else "pass local folders"
        )
        if _offline():
            parts = "; ".join(label for label, _ in missing)
            reason = "HF_HUB_OFFLINE is set and they are neither local folders nor in the Hugging Face cache"
        else:
            parts = "; ".join(str(error) for _, error in missing)
            reason = "they could not be found or fetched"
        raise SourceNotFound(
            f"missing {len(missing)} of {len(wanted)} parts ({reason}): {parts}; download them once online or {hint}"
        )
    model_source = resolved[0]
    sources = TransferSources(model=model_source, folder=ModelFolder.open(model_source.path))
    names: set[str] = set()
    for (_, name, _), source in zip(wanted[1:], resolved[1:], strict=True):
        folder = AdapterFolder.open(source.path)
        out_name = safe_adapter_name(name or folder.stored_name)
        if out_name in names:
            raise InvalidArgument(f"two adapters would be called {out_name!r}; name them with --adapter NAME=PATH")
        names.add(out_name)
        sources.adapters.append(SourceAdapter(out_name, source, folder))
    return sources


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def safe_adapter_name(name: str) -> str:
    """An adapter name that is also a folder name and a module name (no dots): SPECTER2's ``[PRX]`` becomes
    ``PRX``."""
    cleaned = re.sub(r"[^\w-]+", "_", name).strip("_")
    if not cleaned:
        raise InvalidArgument(f"adapter name {name!r} has no usable characters; name it with --adapter NAME=PATH")
    return cleaned


# ----------------------------------------------------------------------------- mapping


def base_prefix(names: list[str], family: EncoderFamily) -> str:
    """The base-model prefix the checkpoint's encoder tensors carry ('' for a bare base model)."""
    prefix = family.prefix + "."
    encoder = [n for n in names if f".{family.block_root}" in f".{n}"]
    if encoder and all(n.startswith(prefix) for n in encoder):
        return prefix
    return ""


def map_tensor_name(name: str, prefix: str, family: EncoderFamily) -> tuple[TensorRule, str | None]:
    """The rule and the target name of one source tensor; an unmapped tensor raises."""
    bare = name[len(prefix) :] if prefix and name.startswith(prefix) else name
    if bare in BUFFERS:
        return RULES["buffers"], None
    if bare.startswith(PRETRAINING_HEADS):
        return RULES["pretraining_heads"], None
    found = family.role_of(bare)
    rule = RULES.get(found[0].rsplit(".", 1)[0]) if found else None
    if found is None or rule is None:
        raise UnsupportedArchitecture(f"source tensor {name!r} has no BigBird mapping; nothing was written")
    return rule, BIGBIRD.tensor_name(*found)


def bigbird_config(
    source_config: dict[str, Any], target_length: int, block_size: int, num_random_blocks: int, sep_token_id: int | None
) -> tuple[dict[str, Any], list[str]]:
    """The BigBird config (every model field explicit, none left to BigBird's defaults, which differ from
    BERT's) and the source fields that have no meaning in BigBird."""
    model_type = source_config["model_type"]
    complete = {**SOURCE_CONFIG_DEFAULTS[model_type], **source_config}
    for key, required in CONFIG_REQUIRED.items():
        if complete.get(key, required) != required:
            raise UnsupportedArchitecture(f"the source has {key}={complete[key]!r}; BigBird supports only {required!r}")
    carried = {key: complete[key] for key in CONFIG_CARRIED if key in complete}
    if carried.get("sep_token_id") is None:
        carried["sep_token_id"] = sep_token_id
    config = {
        "model_type": BIGBIRD.model_type,
        **carried,
        "max_position_embeddings": target_length,
        "attention_type": "block_sparse",
        "block_size": block_size,
        "num_random_blocks": num_random_blocks,
        "ctxext_block_sparse_seed": 0,  # the random-block pattern ctxext's attention draws (block_sparse.py)
        "use_bias": True,
        "rescale_embeddings": False,
        "architectures": ["BigBirdModel"],
    }
    left_out = sorted(key for key in source_config if key not in config and key not in GENERIC_CONFIG_FIELDS)
    if model_type != "bert":
        left_out.append(f"model_type={model_type}")
    return config, left_out


def tokenizer_sep_id(folder: ModelFolder) -> int | None:
    """The [SEP] id from the tokenizer files (tokenizer.json through the ``tokenizers`` library, else
    vocab.txt), for configs that do not name it (BigBird's default is 66). A transformers tokenizer class
    would import transformers, which costs seconds."""
    from tokenizers import Tokenizer

    for directory in dict.fromkeys([folder.model_dir, folder.root]):
        sep = _sep_token(directory)
        tokenizer_json, vocab = directory / "tokenizer.json", directory / "vocab.txt"
        if tokenizer_json.is_file():
            with contextlib.suppress(Exception):  # tokenizers raises a bare Exception on a file it cannot read
                found = Tokenizer.from_file(str(tokenizer_json)).token_to_id(sep)
                if found is not None:
                    return found
        if vocab.is_file():
            tokens = vocab.read_text(encoding="utf-8", errors="replace").splitlines()
            if sep in tokens:
                return tokens.index(sep)
    return None


def _sep_token(directory: Path) -> str:
    """The separator the tokenizer names (special_tokens_map.json or tokenizer_config.json), else [SEP]."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / name
        token = read_json(path).get("sep_token") if path.is_file() else None
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            return token
    return "[SEP]"


# ----------------------------------------------------------------------------- the operation


@dataclass
class AdapterOutput:
    """An adapter as it will be written: its folder name, config and renamed tensors."""

    name: str
    source: SourceAdapter
    config: dict[str, Any]
    tensors: dict[str, Any]
    record: OperationRecord


def transfer(
    ref: str,
    target: str,
    target_length: int,
    out: str | Path,
    *,
    base: str | None = None,
    adapter_paths: dict[str, str] | None = None,
    adapters: list[tuple[str | None, str]] | None = None,
    method: Method = Method.tile,
    grid: Grid = Grid.pinned,
    block_size: int = 64,
    num_random_blocks: int = 3,
    global_registers: bool = False,
    revision: str | None = None,
    force: bool = False,
    check: bool = True,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> TransferResult:
    """Transfer ``ref`` (a preset such as ``specter2``, or a BERT-family folder / hub ID) into BigBird with
    ``target_length`` positions, with every adapter renamed into the BigBird plugin layout.
    ``global_registers``: the tokenizer fills BigBird's global blocks with reserved tokens
    (``reserve_global_blocks``)."""
    check_bigbird_options(target, target_length, block_size, num_random_blocks)
    sources = resolve_sources(ref, base=base, adapter_paths=adapter_paths, extra_adapters=adapters, revision=revision)
    folder, config = sources.folder, sources.folder.config
    family = source_family(config)
    reader = CheckpointReader(folder)
    layout = learned_layout(config, {n: i.shape for n, i in reader.infos.items()}, None)
    _check_length(layout.length, target_length)
    new_config, left_out = bigbird_config(
        config, target_length, block_size, num_random_blocks, tokenizer_sep_id(folder)
    )
    options = {
        "source": ref,
        "target": target,
        "len": target_length,
        "method": method.value,
        "grid": grid.value,
        "block_size": block_size,
        "num_random_blocks": num_random_blocks,
        "global_registers": global_registers,
        "base": base,
        "adapter_paths": adapter_paths or {},
        "adapters": [f"{n}={r}" if n else r for n, r in adapters or []],
        "check": check,
    }
    same = ("target", "method", "grid", "block_size", "num_random_blocks", "global_registers")
    record = OperationRecord(
        "bert_to_bigbird",
        parameters={
            **{key: options[key] for key in same},
            "target_length": target_length,
            "original_length": layout.length,
            "offset_rows_dropped": layout.offset,
        },
    )
    record.config_changes.update(config_diff(config, new_config))
    tokenizer_files = _register_tokenizer_files(folder, block_size, record) if global_registers else {}
    if left_out:
        record.notes.append(f"source config fields with no meaning in BigBird, left out: {', '.join(left_out)}")
    tensors = _map_tensors(reader, family, layout, target_length, method, grid, new_config, record)
    adapter_outputs = [_map_adapter(item, new_config["hidden_size"]) for item in sources.adapters]
    plan = _transfer_plan(options, sources, reader, tensors, record, adapter_outputs, new_config, tokenizer_files)

    def finish(staging: Path) -> list[Check]:
        if not check:
            return []
        progress("numeric checks", 0, 1)
        names, model_dir = [a.name for a in adapter_outputs], Path(folder.relative_model_dir)
        lengths = (layout.length, target_length, block_size, num_random_blocks)
        return equivalence_checks(sources, staging, model_dir, names, *lengths)

    written = write_model_folder(plan, out, force=force, checks=finish, progress=progress, argv=argv)
    return TransferResult(written.path, written.manifest)


class TransferResult(OutputResult):
    """A transferred folder; its summary counts the weights, names each adapter and sums up the checks."""

    title = "transfer"
    view = "table"

    def summary(self) -> dict[str, Any]:
        operations = self.manifest["operations"]
        weights = operations[0]
        bounded = [c for c in operations[-1]["checks"] if c["threshold"] is not None]
        checked = self.manifest["options"].get("check", True)
        return {
            "output": str(self.path),
            "weights": {key: len(weights[key]) for key in ("copied", "modified", "renamed", "created", "dropped")},
            "adapters": {
                op["parameters"]["name"]: f"{op['parameters']['source_name']} -> {len(op['renamed'])} tensors"
                for op in operations
                if op["name"].startswith("adapter:")
            },
            "config": {
                k: weights["config_changes"][k]
                for k in ("max_position_embeddings", "attention_type", "block_size", "num_random_blocks")
                if k in weights["config_changes"]
            },
            "checks": f"{sum(c['passed'] for c in bounded)}/{len(bounded)} bounded checks passed, worst "
            f"{max((c['value'] for c in bounded), default=0.0):.2g}"
            if checked
            else "skipped (--no-check)",
        }


def check_bigbird_options(target: str, target_length: int, block_size: int, num_random_blocks: int) -> None:
    """Refuse, before any work, a target or a BigBird shape that cannot run block-sparse at ``target_length``."""
    if target not in TARGETS:
        raise UnsupportedArchitecture(f"transfer target {target!r} is not supported; targets: {', '.join(TARGETS)}")
    if block_size < 1 or num_random_blocks < 0:
        raise InvalidArgument("--block-size must be at least 1 and --random-blocks at least 0")
    if target_length % block_size:
        raise InvalidArgument(
            f"--len {target_length} is not a multiple of --block-size {block_size}: BigBird pads "
            "inputs to whole blocks, so the last positions would be out of the table"
        )
    full_up_to = full_attention_up_to(block_size, num_random_blocks)
    if target_length <= full_up_to:
        raise InvalidArgument(
            f"--len {target_length} is not above (5 + 2 * {num_random_blocks}) * {block_size} = "
            f"{full_up_to}: "
            "BigBird would always fall back to full attention; use a smaller --block-size or --random-blocks"
        )


def full_attention_up_to(block_size: int = 64, num_random_blocks: int = 3) -> int:
    """The longest input BigBird runs with full attention: 2 global, 3 sliding and 2 x the random blocks."""
    return (5 + 2 * num_random_blocks) * block_size


def source_family(config: dict[str, Any]) -> EncoderFamily:
    """The source's family in ``ctxext.architectures``, if transfer reads it."""
    model_type = config.get("model_type")
    if model_type not in SOURCE_MODEL_TYPES:
        raise UnsupportedArchitecture(
            f"cannot transfer a {model_type!r} model to BigBird; sources: {', '.join(SOURCE_MODEL_TYPES)}"
        )
    return ENCODER_FAMILIES[model_type]


def _register_tokenizer_files(folder: ModelFolder, block_size: int, record: OperationRecord) -> dict[str, Any]:
    """The tokenizer.json with global registers (``reserve_global_blocks``), noted in ``record``."""
    tokenizer_path, registers = _registered_tokenizer(folder, block_size)
    record.notes.append(
        f"global registers: the tokenizer puts {len(registers.head)} reserved tokens after [CLS] "
        f"({registers.head[0]}..{registers.head[-1]}) and {len(registers.tail)} before the last [SEP] "
        f"({registers.tail[0]}..{registers.tail[-1]}), so no text lands in BigBird's global blocks"
    )
    config_path = str(Path(tokenizer_path).with_name("tokenizer_config.json"))
    return {tokenizer_path: registers.tokenizer, config_path: registered_tokenizer_config(folder.root / config_path)}


def registered_tokenizer_config(path: Path) -> dict[str, Any]:
    """The tokenizer_config.json beside a registered tokenizer.json: loaded as ``PreTrainedTokenizerFast``,
    which takes tokenizer.json as it is. transformers 5 builds a ``BertTokenizer`` from a BERT config and
    replaces the stored post-processor, which would drop the registers without a word."""
    config = read_json(path) if path.is_file() else {}
    return {**config, "tokenizer_class": "PreTrainedTokenizerFast"}


def _transfer_plan(
    options: dict[str, Any],
    sources: TransferSources,
    reader: CheckpointReader,
    tensors: list[OutTensor],
    record: OperationRecord,
    adapter_outputs: list[AdapterOutput],
    new_config: dict[str, Any],
    tokenizer_files: dict[str, Any],
) -> OutputPlan:
    """The output folder: model tensors and config, the adapter interface file, each adapter under adapters/."""
    plan_sources = {"model": (sources.model, reader.sha256_of_files_in_background())}
    for item in adapter_outputs:
        plan_sources[f"adapter:{item.name}"] = (
            item.source.source,
            {item.source.folder.weights_file.name: file_sha256(item.source.folder.weights_file)},
        )
    checks_record = OperationRecord("numeric_checks", parameters={"tolerance": TOLERANCE, "enabled": options["check"]})
    operations = [record, *[item.record for item in adapter_outputs], checks_record]
    relative_model_dir = Path(sources.folder.relative_model_dir)
    return OutputPlan(
        "transfer",
        options,
        plan_sources,
        tensors,
        operations,
        new_config,
        new_config["max_position_embeddings"],
        sources.folder,
        extra_files={
            **({(relative_model_dir / INTERFACE_FILE).as_posix(): interface_file_content()} if adapter_outputs else {}),
            **tokenizer_files,
            **{f"adapters/{item.name}/{ADAPTER_CONFIG}": item.config for item in adapter_outputs},
        },
        extra_weights={
            f"adapters/{item.name}/{ADAPTER_WEIGHTS_SAFETENSORS}": _adapter_tensors(item) for item in adapter_outputs
        },
    )


@dataclass
class GlobalRegisters:
    tokenizer: dict[str, Any]
    head: list[str]
    tail: list[str]


def reserve_global_blocks(tokenizer: dict[str, Any], block_size: int) -> GlobalRegisters:
    """A copy of a BERT-style ``tokenizer.json`` whose template puts ``block_size - 1`` reserved tokens
    (``[unusedN]``) after [CLS] and as many before the last [SEP].

    BigBird's global tokens are the first and last block of the input: every token attends to them. Text
    there reaches the whole sequence while text anywhere else reaches a few blocks, so a document whose
    key sentence lands in a global block outweighs every other (passkey: all wrong answers go to them).
    With registers, the global blocks hold the same tokens for every input and gather the whole document
    evenly, as BigBird-ETC's extra global tokens do; any tokenizer built from the file adds them."""
    processor = tokenizer.get("post_processor") or {}
    vocabulary = (tokenizer.get("model") or {}).get("vocab") or {}
    if processor.get("type") != "TemplateProcessing" or len(processor.get("single", [])) != 3:
        raise UnsupportedArchitecture("--global-registers needs a BERT-style tokenizer.json ([CLS] $A [SEP])")
    reserved = sorted(
        (name for name in vocabulary if re.fullmatch(r"\[unused\d+\]", name)), key=lambda name: int(name[7:-1])
    )
    count = block_size - 1
    if len(reserved) < 2 * count:
        raise UnsupportedArchitecture(
            f"--global-registers needs {2 * count} [unusedN] tokens in the vocabulary; it has {len(reserved)}"
        )
    head, tail = reserved[:count], reserved[count : 2 * count]
    result = copy.deepcopy(tokenizer)
    template = result["post_processor"]
    for name, tokens in (("[GLOBAL_HEAD]", head), ("[GLOBAL_TAIL]", tail)):
        template["special_tokens"][name] = {"id": name, "ids": [vocabulary[t] for t in tokens], "tokens": tokens}

    def register(name: str, type_id: int) -> dict[str, Any]:
        return {"SpecialToken": {"id": name, "type_id": type_id}}

    first, text, last = template["single"]
    template["single"] = [first, register("[GLOBAL_HEAD]", 0), text, register("[GLOBAL_TAIL]", 0), last]
    if len(template.get("pair", [])) == 5:
        first, a, middle, b, last = template["pair"]
        template["pair"] = [first, register("[GLOBAL_HEAD]", 0), a, middle, b, register("[GLOBAL_TAIL]", 1), last]
    return GlobalRegisters(result, head, tail)


def _registered_tokenizer(folder: ModelFolder, block_size: int) -> tuple[str, GlobalRegisters]:
    """(path of tokenizer.json relative to the output root, its registered version)."""
    for directory in dict.fromkeys([folder.model_dir, folder.root]):
        path = directory / "tokenizer.json"
        if path.is_file():
            return path.relative_to(folder.root).as_posix(), reserve_global_blocks(read_json(path), block_size)
    raise SourceNotFound(f"--global-registers: no tokenizer.json in {folder.root}")


def _map_tensors(
    reader: CheckpointReader,
    family: EncoderFamily,
    layout: Any,
    target_length: int,
    method: Method,
    grid: Grid,
    new_config: dict[str, Any],
    record: OperationRecord,
) -> list[OutTensor]:
    prefix = base_prefix(reader.names, family)
    mapped = [(name, *map_tensor_name(name, prefix, family)) for name in reader.names]  # raises before any write
    tensors: list[OutTensor] = []
    for name, rule, target_name in mapped:
        if rule.action == DROP or target_name is None:
            record.dropped.append(name)
            continue
        if rule.action == POSITIONS:
            tensors.append(_position_table(reader, name, target_name, layout, target_length, method, grid, record))
            continue
        tensors.append(OutTensor.copied(reader, name, target_name))
        if target_name == name:
            record.copied.append(name)
        else:
            record.renamed[name] = target_name
    written = {t.info.name for t in tensors}
    if not set(POOLER) & written:
        tensors.extend(_new_pooler(new_config, reader, family, record))
    record.notes.append(
        f"dropped: {', '.join(sorted({map_tensor_name(n, prefix, family)[0].why for n in record.dropped}))}"
        if record.dropped
        else "no source tensor dropped"
    )
    return tensors


def _check_length(current: int, target_length: int) -> None:
    """A longer window, or the same one: that swaps the attention of a model already long (its positions are
    copied)."""
    if target_length != current:
        check_target_length(current, target_length)


def _position_table(
    reader: CheckpointReader,
    name: str,
    target_name: str,
    layout: Any,
    target_length: int,
    method: Method,
    grid: Grid,
    record: OperationRecord,
) -> OutTensor:
    """BigBird has no offset rows: the table keeps the rows after the source's offset, stretched (copied when
    the source has ``target_length`` positions already)."""
    original = reader.array(name)
    dtype = reader.infos[name].dtype
    positions = original[layout.offset :]
    copied = target_length == layout.length
    stretched = positions if copied else extend_table(positions, 0, target_length, method, grid)
    table = bytes_to_array(array_to_bytes(stretched, dtype), dtype, stretched.shape)
    finite = bool(np.isfinite(table).all())
    record.require(Check(f"{target_name}: all rows finite", float(finite), 1.0, passed=finite))
    if method == Method.tile or copied:
        difference = max_abs_diff(table[: layout.length], positions)
        record.require(
            Check(
                f"{target_name}: the first {layout.length} rows equal the source's",
                difference,
                0.0,
                passed=difference == 0.0,
            )
        )
    record.modified.append(target_name)
    if name != target_name:
        record.renamed[name] = target_name
    record.parameters["position_table"] = {
        "source": name,
        "target": target_name,
        "rows": [layout.rows, target_length],
        "stretch": "none: copied" if copied else method.value,
    }
    return OutTensor.from_array(target_name, table, dtype)


def _new_pooler(
    config: dict[str, Any], reader: CheckpointReader, family: EncoderFamily, record: OperationRecord
) -> list[OutTensor]:
    """BigBirdModel always has a pooler; a source without one gets a seeded random one (recorded)."""
    hidden = config["hidden_size"]
    token_table = family.tensor_name("token_embd.weight")
    dtype = reader.infos[next(n for n in reader.names if n.endswith(token_table))].dtype
    generator = np.random.default_rng(0)
    weight = generator.normal(0.0, config["initializer_range"], (hidden, hidden)).astype(np.float32)
    weight_name, bias_name = POOLER
    record.created.extend(POOLER)
    record.notes.append(
        "the source has no pooler; BigBird's pooler was created (normal init, seed 0): "
        "pooler_output is untrained, last_hidden_state is unaffected"
    )
    return [
        OutTensor.from_array(weight_name, weight, dtype),
        OutTensor.from_array(bias_name, np.zeros(hidden, np.float32), dtype),
    ]


def _map_adapter(item: SourceAdapter, hidden_size: int) -> AdapterOutput:
    adapter = item.folder
    check_supported(adapter, hidden_size)
    record = OperationRecord(
        f"adapter:{item.name}",
        parameters={
            "source_name": adapter.stored_name,
            "name": item.name,
            "methods": adapter.methods(),
            "source_file": adapter.weights_file.name,
        },
    )
    renamed: dict[str, Any] = {}
    for key, tensor in adapter.state_dict().items():
        new_key, _ = rename_adapter_key(key, adapter.stored_name, item.name)
        if new_key in renamed:
            raise UnsupportedArchitecture(f"adapter {adapter.stored_name!r}: two weights map to {new_key!r}")
        renamed[new_key] = tensor
        record.renamed[key] = new_key
    if not renamed:
        raise UnsupportedArchitecture(f"adapter {adapter.stored_name!r} ({adapter.path}) has no weights")
    config = renamed_adapter_config(adapter, item.name, hidden_size)
    record.files["written"] = [f"adapters/{item.name}/{f}" for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS_SAFETENSORS)]
    return AdapterOutput(item.name, item, config, renamed, record)


def _adapter_tensors(item: AdapterOutput) -> list[OutTensor]:
    """The adapter's weights for adapter.safetensors (hashed in the manifest, checked by verify)."""
    return [
        OutTensor.from_tensor(
            name, np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value.contiguous()
        )
        for name, value in item.tensors.items()
    ]


# ----------------------------------------------------------------------------- numeric checks


def equivalence_checks(
    sources: TransferSources,
    staging: Path,
    relative_model_dir: Path,
    adapter_names: list[str],
    source_length: int,
    target_length: int,
    block_size: int,
    num_random_blocks: int,
) -> list[Check]:
    """Source + adapter against BigBird + adapter, as loaded back from the written folder (with no adapter,
    plain transformers loads both: the adapters library is then not needed)."""
    from ctxext.checks import random_batch

    source_model, output_model = _loaded_pair(sources, staging, relative_model_dir)
    checks = [Check("output and adapters load with no missing or unexpected weights", 0.0, 0.0)]
    vocab_size = output_model.config.vocab_size
    short_length = min(source_length, 512)
    low = test_token_floor(vocab_size)
    short = random_batch(vocab_size, [short_length, max(1, short_length // 3)], seed=0, low=low)
    settings: list[str | None] = [*adapter_names] or [None]
    sparse_threshold = (5 + 2 * num_random_blocks) * block_size
    for adapter in settings:
        label = f"adapter {adapter}" if adapter else "no adapter"
        _activate(source_model, adapter)
        _activate(output_model, adapter)
        expected = run_model(source_model, *short)
        for attention in ("original_full", "block_sparse"):
            got, ran = run_model(output_model, *short, attention_type=attention, probe=True)
            name = f"{label}, inputs of up to {short_length} tokens, {attention} configured, {ran} ran"
            if ran == "original_full":
                checks.extend(pooled_checks(name, expected, got, short[1]))
            else:  # small blocks: sparse attention ran on a short input; it approximates full attention
                checks.append(
                    Check(
                        f"{name}: sparse attention approximates full attention",
                        max_abs_diff(_cls(expected), _cls(got)),
                        detail="max abs diff of CLS vectors; information only",
                    )
                )
        if source_length - source_length % block_size > sparse_threshold:
            checks.extend(
                _sparse_short_checks(source_model, output_model, label, vocab_size, source_length, block_size)
            )
    _activate(output_model, settings[0])
    long_batch = random_batch(vocab_size, [target_length], seed=1, low=low)
    hidden, ran = run_model(output_model, *long_batch, attention_type="block_sparse", probe=True)
    finite = bool(np.isfinite(hidden).all())
    label = f"adapter {settings[0]}" if settings[0] else "no adapter"
    checks.append(
        Check(
            f"{label}, a {target_length}-token input after short ones runs block-sparse",
            float(ran == "block_sparse"),
            1.0,
            passed=ran == "block_sparse",
            detail=f"{ran} ran",
        )
    )
    checks.append(
        Check(f"{label}, a {target_length}-token input gives finite outputs", float(finite), 1.0, passed=finite)
    )
    failed = [c for c in checks if not c.passed]
    if failed:
        bound = f" (bound {failed[0].threshold:g})" if failed[0].threshold is not None else ""
        raise CheckFailed(f"check {failed[0].name} failed: {failed[0].value:g}{bound} {failed[0].detail}".strip())
    return checks


def _sparse_short_checks(
    source_model: Any, output_model: Any, label: str, vocab_size: int, source_length: int, block_size: int
) -> list[Check]:
    """Blocks small enough that block-sparse really runs on a source-length input.

    Rows that fit in the first block (a global block) must match the source. Longer rows are an
    approximation, measured and not bounded: besides the window, transformers' BigBird in eval mode points
    every random block at block 0, so block 0 counts twice in the softmax of every non-global query block
    (even when the window already covers every real token).
    """
    from ctxext.checks import random_batch

    long_row = source_length - source_length % block_size
    batch = random_batch(
        vocab_size, [long_row, block_size, max(1, block_size // 2)], seed=2, low=test_token_floor(vocab_size)
    )
    expected = run_model(source_model, *batch)
    got, ran = run_model(output_model, *batch, attention_type="block_sparse", probe=True)
    name = f"{label}, block-sparse configured, {ran} ran"
    checks = pooled_checks(
        f"{name}, rows of up to {block_size} tokens (one block) padded to {long_row}",
        expected[1:],
        got[1:],
        batch[1][1:],
    )
    checks.append(
        Check(
            f"{name}, a {long_row}-token row: sparse attention approximates full attention",
            max_abs_diff(_cls(expected[:1]), _cls(got[:1])),
            detail="max abs diff of CLS vectors; information only",
        )
    )
    return checks


def test_token_floor(vocab_size: int) -> int:
    """Lowest token id drawn for check inputs: past the special ids of real vocabularies, or of tiny ones."""
    return 1000 if vocab_size > 2000 else 5


def _loaded_pair(sources: TransferSources, staging: Path, relative_model_dir: Path) -> tuple[Any, Any]:
    """The source and the written model, each with the adapters it has (strictly: nothing missing or left over)."""
    if not sources.adapters:
        from ctxext.checks import load_model_strictly

        source = load_model_strictly(sources.folder.model_dir)
        output = load_model_strictly(staging / relative_model_dir)
        return getattr(source, "base_model", source), getattr(output, "base_model", output)
    from ctxext.bottleneck import load_adapter_strictly, load_model_with_adapters

    source_model = load_model_with_adapters(sources.folder.model_dir)
    output_model = load_model_with_adapters(staging / relative_model_dir)
    for item in sources.adapters:
        load_adapter_strictly(source_model, item.folder.path, item.name)
        load_adapter_strictly(output_model, staging / "adapters" / item.name, item.name)
    return source_model, output_model


def _activate(model: Any, adapter: str | None) -> None:
    from ctxext.bottleneck import activate_adapter

    activate_adapter(model, adapter)


def run_model(
    model: Any, input_ids: Any, attention_mask: Any, *, attention_type: str | None = None, probe: bool = False
) -> Any:
    """Last hidden states (float64, padding zeroed); with ``probe`` also which attention ran."""
    from ctxext.block_sparse import attention_probe
    from ctxext.checks import last_hidden_state

    if attention_type is not None:
        getattr(model, BIGBIRD.prefix, model).set_attention_type(attention_type)
    if not probe:
        return last_hidden_state(model, input_ids, attention_mask)
    with attention_probe(model) as seen:
        hidden = last_hidden_state(model, input_ids, attention_mask)
    kinds = set(seen)
    ran = next((kind for kind in ("block_sparse", "original_full") if kinds == {kind}), f"mixed {sorted(kinds)}")
    return hidden, ran


def _cls(hidden: np.ndarray) -> np.ndarray:
    return hidden[:, 0]


def _mean(hidden: np.ndarray, mask: Any) -> np.ndarray:
    weights = np.asarray(mask, dtype=np.float64)[..., None]
    return (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


def pooled_checks(name: str, expected: np.ndarray, got: np.ndarray, mask: Any) -> list[Check]:
    checks = []
    for pooling, a, b in (("cls", _cls(expected), _cls(got)), ("mean", _mean(expected, mask), _mean(got, mask))):
        difference = max_abs_diff(a, b)
        checks.append(
            Check(
                f"{name}: {pooling} pooling matches the source",
                difference,
                TOLERANCE,
                passed=difference <= TOLERANCE,
                detail="max abs diff of pooled vectors",
            )
        )
    return checks
