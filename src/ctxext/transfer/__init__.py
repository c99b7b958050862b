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

The package: :mod:`.options` (``TransferOptions``: the BigBird asked for, and its check), :mod:`.tables` (the
tensor and config tables), :mod:`.sources` (presets, the base model and its adapters), :mod:`.tokenizer` (the
[SEP] id, global registers), :mod:`.mapping` (source tensors and adapters -> BigBird's) and :mod:`.checks` (the
numeric checks); ``transfer`` itself lives here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ctxext.architectures import ENCODER_FAMILIES, EncoderFamily
from ctxext.bottleneck import ADAPTER_CONFIG, ADAPTER_WEIGHTS_SAFETENSORS, INTERFACE_FILE, interface_file_content
from ctxext.checkpoint import OutputPlan, OutputResult, ProgressFn, config_diff, no_progress, write_model_folder
from ctxext.errors import UnsupportedArchitecture
from ctxext.io import CheckpointReader, OutTensor, file_sha256
from ctxext.manifest import Check, OperationRecord
from ctxext.options import with_fields
from ctxext.positions import check_target_length, learned_layout
from ctxext.transfer.checks import equivalence_checks, pooled_checks, run_model, test_token_floor
from ctxext.transfer.mapping import (
    AdapterOutput,
    adapter_tensors,
    base_prefix,
    bigbird_config,
    map_adapter,
    map_tensor_name,
    map_tensors,
)
from ctxext.transfer.options import TransferOptions, full_attention_up_to
from ctxext.transfer.sources import (
    ADAPTER_FILES,
    PRESETS,
    Preset,
    SourceAdapter,
    TransferSources,
    parse_named,
    resolve_sources,
    safe_adapter_name,
)
from ctxext.transfer.tables import (
    BERT_TO_BIGBIRD,
    BIGBIRD,
    CONFIG_CARRIED,
    CONFIG_REQUIRED,
    COPY,
    DROP,
    GENERIC_CONFIG_FIELDS,
    POOLER,
    POSITIONS,
    PRETRAINING_HEADS,
    RULES,
    SOURCE_CONFIG_DEFAULTS,
    SOURCE_MODEL_TYPES,
    TARGETS,
    TOLERANCE,
    TensorRule,
)
from ctxext.transfer.tokenizer import (
    GlobalRegisters,
    register_tokenizer_files,
    registered_tokenizer_config,
    reserve_global_blocks,
    tokenizer_sep_id,
)

__all__ = [
    "ADAPTER_FILES",
    "AdapterOutput",
    "BERT_TO_BIGBIRD",
    "BIGBIRD",
    "CONFIG_CARRIED",
    "CONFIG_REQUIRED",
    "COPY",
    "DROP",
    "GENERIC_CONFIG_FIELDS",
    "GlobalRegisters",
    "POOLER",
    "POSITIONS",
    "PRESETS",
    "PRETRAINING_HEADS",
    "Preset",
    "RULES",
    "SOURCE_CONFIG_DEFAULTS",
    "SOURCE_MODEL_TYPES",
    "SourceAdapter",
    "TARGETS",
    "TOLERANCE",
    "TensorRule",
    "TransferOptions",
    "TransferResult",
    "TransferSources",
    "adapter_tensors",
    "base_prefix",
    "bigbird_config",
    "equivalence_checks",
    "full_attention_up_to",
    "map_adapter",
    "map_tensor_name",
    "map_tensors",
    "parse_named",
    "pooled_checks",
    "register_tokenizer_files",
    "registered_tokenizer_config",
    "reserve_global_blocks",
    "resolve_sources",
    "run_model",
    "safe_adapter_name",
    "source_family",
    "test_token_floor",
    "tokenizer_sep_id",
    "transfer",
]


# ----------------------------------------------------------------------------- the operation


def transfer(
    ref: str,
    target: str,
    target_length: int,
    out: str | Path,
    options: TransferOptions | None = None,
    *,
    base: str | None = None,
    adapter_paths: dict[str, str] | None = None,
    adapters: list[tuple[str | None, str]] | None = None,
    revision: str | None = None,
    force: bool = False,
    check: bool = True,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
    **fields: Any,
) -> TransferResult:
    """Transfer ``ref`` (a preset such as ``specter2``, or a BERT-family folder / hub ID) into BigBird with
    ``target_length`` positions, with every adapter renamed into the BigBird plugin layout; ``options`` says how
    (:class:`TransferOptions`). ``base``, ``adapter_paths`` and ``adapters`` point the preset's parts elsewhere
    or add adapters (``resolve_sources``); ``check``: run the numeric checks on the output.
    ``fields``: :class:`TransferOptions` fields given as keywords (over ``options``)."""
    options = with_fields(TransferOptions, options, fields, "transfer")
    options.check(target, target_length)
    block_size, num_random_blocks = options.block_size, options.num_random_blocks
    sources = resolve_sources(ref, base=base, adapter_paths=adapter_paths, extra_adapters=adapters, revision=revision)
    folder, config = sources.folder, sources.folder.config
    family = source_family(config)
    reader = CheckpointReader(folder)
    layout = learned_layout(config, {n: i.shape for n, i in reader.infos.items()}, None)
    _check_length(layout.length, target_length)
    new_config, left_out = bigbird_config(
        config, target_length, block_size, num_random_blocks, tokenizer_sep_id(folder)
    )
    recorded = {
        "source": ref,
        "target": target,
        "len": target_length,
        "method": options.method.value,
        "grid": options.grid.value,
        "block_size": block_size,
        "num_random_blocks": num_random_blocks,
        "global_registers": options.global_registers,
        "base": base,
        "adapter_paths": adapter_paths or {},
        "adapters": [f"{n}={r}" if n else r for n, r in adapters or []],
        "check": check,
    }
    same = ("target", "method", "grid", "block_size", "num_random_blocks", "global_registers")
    record = OperationRecord(
        "bert_to_bigbird",
        parameters={
            **{key: recorded[key] for key in same},
            "target_length": target_length,
            "original_length": layout.length,
            "offset_rows_dropped": layout.offset,
        },
    )
    record.config_changes.update(config_diff(config, new_config))
    tokenizer_files = register_tokenizer_files(folder, block_size, record) if options.global_registers else {}
    if left_out:
        record.notes.append(f"source config fields with no meaning in BigBird, left out: {', '.join(left_out)}")
    tensors = map_tensors(reader, family, layout, target_length, options.method, options.grid, new_config, record)
    adapter_outputs = [map_adapter(item, new_config["hidden_size"]) for item in sources.adapters]
    plan = _transfer_plan(recorded, sources, reader, tensors, record, adapter_outputs, new_config, tokenizer_files)

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


def source_family(config: dict[str, Any]) -> EncoderFamily:
    """The source's family in ``ctxext.architectures``, if transfer reads it."""
    model_type = config.get("model_type")
    if model_type not in SOURCE_MODEL_TYPES:
        raise UnsupportedArchitecture(
            f"cannot transfer a {model_type!r} model to BigBird; sources: {', '.join(SOURCE_MODEL_TYPES)}"
        )
    return ENCODER_FAMILIES[model_type]


def _transfer_plan(
    recorded: dict[str, Any],
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
    checks_record = OperationRecord("numeric_checks", parameters={"tolerance": TOLERANCE, "enabled": recorded["check"]})
    operations = [record, *[item.record for item in adapter_outputs], checks_record]
    relative_model_dir = Path(sources.folder.relative_model_dir)
    return OutputPlan(
        "transfer",
        recorded,
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
            f"adapters/{item.name}/{ADAPTER_WEIGHTS_SAFETENSORS}": adapter_tensors(item) for item in adapter_outputs
        },
    )


def _check_length(current: int, target_length: int) -> None:
    """A longer window, or the same one: that swaps the attention of a model already long (its positions are
    copied)."""
    if target_length != current:
        check_target_length(current, target_length)
