"""Contrastive fine-tuning on (query, positive, negative) triplets with the Hugging Face Trainer.

Loss: InfoNCE over cosine similarities divided by a temperature; each query's candidates are every
positive and every hard negative of the batch (in-batch negatives plus the hard ones), and under DDP those of
every process's batch (gathered with their gradients), so N processes of batch B train as one of batch N x B.
Queries and documents go through the same encoder and pooling. A transferred BigBird trains on long inputs in
block-sparse mode (set again before every document batch; the manifest counts which attention ran), either
fully or only one adapter (``adapter``: the rest of the model frozen, the adapter saved in the adapters
format under ``OUT/adapters/NAME``), with gradient checkpointing.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.bottleneck import ADAPTERS_DIR
from ctxext.checkpoint import OutputResult
from ctxext.compat import checkpointing_enable
from ctxext.data.formats import read_triplet_examples
from ctxext.errors import InvalidArgument
from ctxext.io import file_sha256, open_model
from ctxext.manifest import Check, OperationRecord
from ctxext.options import with_fields
from ctxext.train.contrastive import ContrastiveModel, TripletCollator
from ctxext.train.embedding import check_max_len, load_backbone, retrieval_callbacks
from ctxext.train.positions_only import train_new_positions_only
from ctxext.train.runner import (
    ListDataset,
    RunOptions,
    TrainingResult,
    TrainingRun,
    TrainSettings,
    last_retrieval_check,
    write_trained_model,
)

# ----------------------------------------------------------------------------- stage


@dataclass
class FinetuneResult(TrainingResult):
    attention_runs: dict[str, int]

    title = "finetune"

    def stage_summary(self) -> dict[str, Any]:
        return {
            "triplets": self.parameters.get("triplets"),
            "adapter": self.parameters.get("adapter"),
            "attention_runs": self.attention_runs or None,
        }


def _position_offset(backbone: Any, position_span: int | None, max_len: int, limit: int) -> int:
    """The first position id of ``backbone``'s table, after checking ``position_span`` fits it."""
    import inspect

    from ctxext.architectures import learned_offset

    if position_span is None:
        return 0
    if not max_len < position_span <= limit:
        raise InvalidArgument(
            f"--position-span {position_span} must be above --max-len {max_len} and at most the "
            f"model's {limit} positions"
        )
    if "position_ids" not in inspect.signature(backbone.forward).parameters:
        raise InvalidArgument(f"--position-span: {type(backbone).__name__} takes no position ids")
    return learned_offset(backbone.config.to_dict())


def _prepare_adapter(backbone: Any, folder: Any, adapter: str, reduction_factor: int) -> tuple[Any, str]:
    """The backbone with ``adapter`` running and trainable (loaded from ``CKPT/adapters/NAME`` if there, else a
    new SPECTER2-style seq_bn bottleneck); everything else frozen."""
    from ctxext.bottleneck import SEQ_BN, activate_adapter, add_adapter, load_adapter_strictly, parse_config

    existing = next(
        (c for c in (folder.root / ADAPTERS_DIR / adapter, folder.model_dir / ADAPTERS_DIR / adapter) if c.is_dir()),
        None,
    )
    if existing is not None:
        load_adapter_strictly(backbone, existing, adapter)
        origin = f"loaded from {existing}"
    else:
        add_adapter(backbone, adapter, parse_config({**SEQ_BN, "reduction_factor": reduction_factor}, "--adapter"))
        origin = f"new seq_bn adapter, reduction factor {reduction_factor}"
    for name, parameter in backbone.named_parameters():
        parameter.requires_grad_(f".adapters.{adapter}." in name)
    activate_adapter(backbone, adapter)
    return backbone, origin


@dataclass(frozen=True)
class FinetuneOptions:
    """What a fine-tuning run trains, on what inputs, with which objective (the CLI builds it from its options)."""

    adapter: str | None = None
    """Train only this adapter (``CKPT/adapters/NAME`` if present, else a new seq_bn bottleneck)."""
    adapter_reduction_factor: int = 16
    max_len: int = 4096
    position_span: int | None = None
    """Documents of ``max_len`` tokens train positions up to this (``skipped_position_ids``)."""
    query_max_len: int = 128
    temperature: float = 0.05
    gradient_checkpointing: bool = True
    positions_only: bool = False
    """Only the position rows ``interpolate`` added train (:mod:`.positions_only`)."""
    cache_chunk: int | None = None
    """Gradient caching, that many texts embedded at a time (:mod:`.gradient_cache`)."""
    late_chunk: int | None = None
    """The chunk-level objective, chunks of this many tokens (:mod:`.chunk_objective`); None: one vector per
    document."""

    def check(self) -> None:
        if self.temperature <= 0:
            raise InvalidArgument(f"--temperature {self.temperature} must be positive")
        if self.adapter and self.positions_only:
            raise InvalidArgument("--adapter and --positions-only train different parts: choose one")
        if self.late_chunk is not None and (self.cache_chunk or self.late_chunk < 1):
            raise InvalidArgument("--late-chunk N takes N >= 1 tokens, and no --cache-chunk")


def finetune(
    checkpoint: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    options: FinetuneOptions | None = None,
    *,
    settings: TrainSettings | None = None,
    eval_beir: str | Path | None = None,
    revision: str | None = None,
    run_options: RunOptions | None = None,
    **fields: Any,
) -> FinetuneResult:
    """Contrastive fine-tuning of ``checkpoint`` on triplets; the output loads like the input (a
    sentence-transformers folder stays one; with an adapter the base is unchanged and the adapter is new).
    ``fields``: :class:`FinetuneOptions` fields given as keywords (over ``options``)."""
    options = with_fields(FinetuneOptions, options, fields, "finetune")
    options.check()
    settings = settings or TrainSettings(learning_rate=2e-5)
    from ctxext.encode import sentence_transformers_settings

    source, folder = open_model(checkpoint, revision=revision)
    inputs = [source.path, *data]
    run = TrainingRun(out, run_options, protect=inputs)
    backbone, tokenizer = load_backbone(folder)
    limit = check_max_len(folder, tokenizer, options.max_len)
    position_offset = _position_offset(backbone, options.position_span, options.max_len, limit)
    pooling = sentence_transformers_settings(folder)[0] or "cls"
    trains = (options.adapter, options.adapter_reduction_factor, options.positions_only)
    backbone, settings, trained = _what_trains(backbone, folder, settings, *trains)
    examples = read_triplet_examples(data, tokenizer.sep_token or "[SEP]")
    query_length = _query_length(tokenizer, options.query_max_len)
    model, collator = _objective(backbone, tokenizer, pooling, options, query_length, position_offset)
    if options.gradient_checkpointing:
        checkpointing_enable(backbone)
    model.train()
    callbacks = retrieval_callbacks(model, tokenizer, eval_beir, settings.eval_every, options.max_len, query_length)
    run.train(model, tokenizer, collator, ListDataset(examples), settings, callbacks=callbacks)
    history = run.history(retrieval=True)
    runs = dict(model.attention_runs)
    model.finish_training()
    files = [Path(p) for p in data]
    recorded = _recorded_options(checkpoint, options, eval_beir, files, settings)
    record = _finetune_record(run, settings, history, model, recorded, len(examples), files, trained)
    config_updates = {"attention_type": model.attention_type} if model.attention_type else {}
    path, manifest = run.write(
        lambda: _write_finetuned(
            backbone, options.adapter, folder, run.out, source, record, recorded, run.options, config_updates
        )
    )
    return FinetuneResult(path, manifest, history, run.global_step, runs)


def _objective(
    backbone: Any, tokenizer: Any, pooling: str, options: FinetuneOptions, query_length: int, position_offset: int
) -> tuple[ContrastiveModel, TripletCollator]:
    """The model that computes the loss and the collator that feeds it: one vector per document, or chunks."""
    collated = (tokenizer, options.max_len, query_length, options.position_span, position_offset)
    if options.late_chunk:
        from ctxext.train.chunk_objective import ChunkContrastiveModel, ChunkTripletCollator

        model = ChunkContrastiveModel(backbone, pooling, options.temperature, options.late_chunk)
        return model, ChunkTripletCollator(*collated, chunk=options.late_chunk)
    return ContrastiveModel(backbone, pooling, options.temperature, options.cache_chunk), TripletCollator(*collated)


def _finetune_record(
    run: TrainingRun,
    settings: TrainSettings,
    history: dict[str, Any],
    model: ContrastiveModel,
    options: dict[str, Any],
    triplets: int,
    files: Sequence[Path],
    trained: str | None,
) -> OperationRecord:
    runs = dict(model.attention_runs)
    world_size = run.trainer.args.world_size
    stage = ("temperature", "max_len", "position_span", "query_max_len")
    return OperationRecord(
        "finetune",
        parameters={
            "loss": (
                f"InfoNCE of each query against every {options['late_chunk']}-token chunk of the batch's documents, "
                "its target the chunk where its section starts, cosine / temperature"
                if options["late_chunk"]
                else "InfoNCE, in-batch + hard negatives of every process, cosine / temperature"
            ),
            **{key: options[key] for key in stage},
            "pooling": model.pooling,
            **run.parameters(settings, history),
            "candidates_per_query": None if options["late_chunk"] else 2 * settings.batch_size * world_size,
            "triplets": triplets,
            "gradient_checkpointing": options["gradient_checkpointing"],
            "attention_type": model.attention_type,
            "attention_runs": runs,
            "adapter": options["adapter"],
            "adapter_origin": trained if options["adapter"] else None,
            "trained": trained or "every weight",
            "data_files_sha256": {str(p): file_sha256(p) for p in files},
        },
        checks=last_retrieval_check(history, options["eval_beir"]),
        notes=_attention_notes(model.attention_type, runs),
    )


# the options of a run the manifest records, beside the input, the data, the evaluation set and the settings
RECORDED_OPTIONS = (
    "adapter",
    "max_len",
    "position_span",
    "query_max_len",
    "temperature",
    "gradient_checkpointing",
    "positions_only",
    "cache_chunk",
    "late_chunk",
)


def _recorded_options(
    checkpoint: str | Path,
    options: FinetuneOptions,
    eval_beir: str | Path | None,
    files: list[Path],
    settings: TrainSettings,
) -> dict[str, Any]:
    return {
        "checkpoint": str(checkpoint),
        "data": [str(p) for p in files],
        **{key: getattr(options, key) for key in RECORDED_OPTIONS},
        "eval_beir": str(eval_beir) if eval_beir else None,
        **vars(settings),
    }


def _what_trains(
    backbone: Any,
    folder: Any,
    settings: TrainSettings,
    adapter: str | None,
    reduction_factor: int,
    positions_only: bool,
) -> tuple[Any, TrainSettings, str | None]:
    """The backbone to train, the settings to train it with, and what trains (None: every weight): one adapter
    (the rest frozen), or only the position rows a stretch added."""
    if adapter:
        backbone, origin = _prepare_adapter(backbone, folder, adapter, reduction_factor)
        return backbone, settings, origin
    if positions_only:
        settings, note = train_new_positions_only(backbone, folder, settings)
        return backbone, settings, note
    return backbone, settings, None


def _query_length(tokenizer: Any, query_max_len: int) -> int:
    """Tokens a tokenizer adds beyond [CLS] and [SEP] (``transfer --global-registers``) come on top of the
    query budget: counted against it, they would truncate every query to nothing."""
    return query_max_len + max(0, tokenizer.num_special_tokens_to_add() - 2)


def _attention_notes(attention_type: str | None, runs: dict[str, int]) -> list[str]:
    if attention_type == "block_sparse" and runs.get("original_full"):
        return [
            f"{runs['original_full']} of {sum(runs.values())} training forward passes ran original_full: "
            "their batches were too short for block-sparse attention"
        ]
    return []


def _write_finetuned(
    model: Any,
    adapter: str | None,
    folder: Any,
    out: Path,
    source: Any,
    record: OperationRecord,
    options: dict[str, Any],
    run_options: RunOptions,
    config_updates: dict[str, Any],
) -> OutputResult:
    """The fine-tuned model; with ``adapter``, the base weights as they came in (checked unchanged) and the
    trained adapter in the adapters format under ``adapters/NAME``."""
    with tempfile.TemporaryDirectory(prefix="ctxext-adapter-") as temporary:
        finish = _adapter_copier(model, adapter, folder, record, Path(temporary)) if adapter else None
        return write_trained_model(
            model,
            folder,
            out,
            source,
            record,
            carry=False,
            command="finetune",
            options=options,
            run_options=run_options,
            finish=finish,
            config_updates=config_updates,
        )


def _adapter_copier(
    model: Any, adapter: str, folder: Any, record: OperationRecord, temporary: Path
) -> Callable[[Path], list[Check]]:
    """Saves the trained adapter under ``temporary`` and takes it off the model, after checking that no base
    weight changed; returns what copies it into the output (``finish`` of the writer)."""
    import torch

    from ctxext.bottleneck import remove_adapter, save_adapter
    from ctxext.io import CheckpointReader

    saved = temporary / adapter
    save_adapter(model, adapter, saved)
    remove_adapter(model, adapter)
    reader = CheckpointReader(folder)
    state = model.state_dict()
    changed = [
        name for name in reader.names if name in state and not torch.equal(state[name].cpu(), reader.torch(name))
    ]
    if changed:
        raise AssertionError(f"adapter-only training changed base weights: {changed[:3]}")
    record.checks.append(Check("base_weights_unchanged", 0.0, detail="every base tensor equals the input's"))

    def finish(staging: Path) -> list[Check]:
        target = staging / ADAPTERS_DIR / adapter
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(saved, target)
        record.files["adapter"] = sorted(f"{ADAPTERS_DIR}/{adapter}/{p.name}" for p in target.iterdir())
        record.files["adapter_sha256"] = {p.name: file_sha256(p) for p in sorted(target.iterdir())}
        return []

    return finish
