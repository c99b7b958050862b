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
from ctxext.data.formats import read_triplets
from ctxext.errors import InvalidArgument
from ctxext.io import file_sha256, open_model
from ctxext.manifest import Check, OperationRecord
from ctxext.train.embedding import EmbeddingModel, check_max_len, load_backbone, retrieval_callbacks
from ctxext.train.gradient_cache import cached_embeddings
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

# ----------------------------------------------------------------------------- data


def skipped_position_ids(lengths: Sequence[int], width: int, span: int, offset: int = 0) -> Any:
    """Position ids for documents of ``lengths`` tokens (padded to ``width``) that reach up to ``span``:
    positional skip-wise training (PoSE, Zhu et al. 2023). Each document is cut at a random point after its
    first token; the second part's ids jump ahead by a random skip, so that over many steps every position
    below ``span`` is trained while the inputs stay short. Padding ids continue, capped at the span (padding
    is masked). ``offset``: the first position id (RoBERTa-style tables start after their reserved rows)."""
    import torch

    rows = []
    for length in lengths:
        ids = torch.arange(width)
        if 1 < length < span:
            cut = int(torch.randint(1, length, ()))
            ids[cut:] += int(torch.randint(0, span - length + 1, ()))
        rows.append(ids.clamp(max=span - 1))
    return torch.stack(rows) + offset


@dataclass
class TripletCollator:
    """Tokenizes a batch of triplets: queries up to ``query_max_len``, positives then negatives up to
    ``max_len`` tokens (padded to the longest in the batch). With ``position_span``, document position ids
    spread over that many positions (``skipped_position_ids``)."""

    tokenizer: Any
    max_len: int
    query_max_len: int = 128
    position_span: int | None = None
    position_offset: int = 0

    def __call__(self, examples: list[dict[str, str]]) -> dict[str, Any]:
        queries = self.tokenizer(
            [e["query"] for e in examples],
            truncation=True,
            max_length=self.query_max_len,
            padding=True,
            return_tensors="pt",
        )
        documents = [e["positive"] for e in examples] + [e["negative"] for e in examples]
        docs = self.tokenizer(documents, truncation=True, max_length=self.max_len, padding=True, return_tensors="pt")
        batch = {
            "query_input_ids": queries["input_ids"],
            "query_attention_mask": queries["attention_mask"],
            "document_input_ids": docs["input_ids"],
            "document_attention_mask": docs["attention_mask"],
        }
        if self.position_span:
            batch["document_position_ids"] = skipped_position_ids(
                docs["attention_mask"].sum(dim=1).tolist(),
                docs["input_ids"].shape[1],
                self.position_span,
                self.position_offset,
            )
        return batch


class ContrastiveModel(EmbeddingModel):
    """InfoNCE with in-batch and hard negatives; ``forward`` returns ``{"loss": ...}`` for the Trainer.
    ``cache_chunk``: embed that many texts at a time with gradient caching (:mod:`.gradient_cache`), so the
    batch, and with it the number of candidates each query sees, is not bounded by memory."""

    def __init__(self, backbone: Any, pooling: str, temperature: float = 0.05, cache_chunk: int | None = None):
        super().__init__(backbone, pooling, normalize=True)
        self.temperature = temperature
        self.cache_chunk = cache_chunk

    def forward(
        self,
        query_input_ids: Any,
        query_attention_mask: Any,
        document_input_ids: Any,
        document_attention_mask: Any,
        document_position_ids: Any = None,
    ) -> dict[str, Any]:
        import torch

        if self.cache_chunk:
            queries = cached_embeddings(self.embed, self.cache_chunk, query_input_ids, query_attention_mask)
            documents = cached_embeddings(
                self._embed_documents,
                self.cache_chunk,
                document_input_ids,
                document_attention_mask,
                document_position_ids,
            )
        else:
            queries = self.embed(query_input_ids, query_attention_mask)
            documents = self._embed_documents(document_input_ids, document_attention_mask, document_position_ids)
        documents, first = every_process_rows(documents)
        logits = queries @ documents.T / self.temperature
        labels = torch.arange(queries.shape[0], device=logits.device) + first
        return {"loss": torch.nn.functional.cross_entropy(logits, labels)}

    def _embed_documents(self, input_ids: Any, attention_mask: Any, position_ids: Any) -> Any:
        import torch

        # counted once per batch: gradient caching embeds each chunk again, with gradients, in the backward pass
        record = not (self.cache_chunk and torch.is_grad_enabled())
        return self.embed(input_ids, attention_mask, record=record, position_ids=position_ids)


def every_process_rows(local: Any) -> tuple[Any, int]:
    """``local`` rows of every process, concatenated in rank order (this process's keep their gradients, and
    the gradients the others' losses give them come back through the gather), and where this process's rows
    start; ``local`` itself outside DDP. Under DDP's gradient averaging, the step is then that of one process
    holding the whole global batch."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    from sentence_transformers.util import all_gather_with_grad

    return all_gather_with_grad(local), dist.get_rank() * local.shape[0]


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


def finetune(
    checkpoint: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    *,
    adapter: str | None = None,
    max_len: int = 4096,
    position_span: int | None = None,
    query_max_len: int = 128,
    temperature: float = 0.05,
    gradient_checkpointing: bool = True,
    adapter_reduction_factor: int = 16,
    positions_only: bool = False,
    cache_chunk: int | None = None,
    settings: TrainSettings | None = None,
    eval_beir: str | Path | None = None,
    revision: str | None = None,
    run_options: RunOptions | None = None,
) -> FinetuneResult:
    """Contrastive fine-tuning of ``checkpoint`` on triplets; the output loads like the input (a
    sentence-transformers folder stays one; with ``adapter`` the base is unchanged and the adapter is new).
    ``position_span``: documents of ``max_len`` tokens train positions up to this (``skipped_position_ids``);
    ``positions_only``: only the position rows ``interpolate`` added train (:mod:`.positions_only`);
    ``cache_chunk``: gradient caching, that many texts embedded at a time (:mod:`.gradient_cache`)."""
    arguments = dict(locals())
    settings = settings or TrainSettings(learning_rate=2e-5)
    if temperature <= 0:
        raise InvalidArgument(f"--temperature {temperature} must be positive")
    if adapter and positions_only:
        raise InvalidArgument("--adapter and --positions-only train different parts: choose one")
    from ctxext.encode import sentence_transformers_settings

    source, folder = open_model(checkpoint, revision=revision)
    inputs = [source.path, *data]
    run = TrainingRun(out, run_options, protect=inputs)
    backbone, tokenizer = load_backbone(folder)
    position_offset = _position_offset(backbone, position_span, max_len, check_max_len(folder, tokenizer, max_len))
    pooling = sentence_transformers_settings(folder)[0] or "cls"
    trains = (adapter, adapter_reduction_factor, positions_only)
    backbone, settings, trained = _what_trains(backbone, folder, settings, *trains)
    triplets = read_triplets(data, tokenizer.sep_token or "[SEP]")
    query_length = _query_length(tokenizer, query_max_len)
    model = ContrastiveModel(backbone, pooling, temperature, cache_chunk)
    if gradient_checkpointing:
        checkpointing_enable(backbone)
    model.train()
    callbacks = retrieval_callbacks(model, tokenizer, eval_beir, settings.eval_every, max_len, query_length)
    dataset = ListDataset([{"query": q, "positive": p, "negative": n} for q, p, n in triplets])
    collator = TripletCollator(tokenizer, max_len, query_length, position_span, position_offset)
    run.train(model, tokenizer, collator, dataset, settings, callbacks=callbacks)
    history = run.history(retrieval=True)
    runs = dict(model.attention_runs)
    model.finish_training()
    files = [Path(p) for p in data]
    options = _recorded_options(arguments, files, settings)
    record = _finetune_record(run, settings, history, model, options, len(triplets), files, trained)
    config_updates = {"attention_type": model.attention_type} if model.attention_type else {}
    path, manifest = run.write(
        lambda: _write_finetuned(
            backbone, adapter, folder, run.out, source, record, options, run.options, config_updates
        )
    )
    return FinetuneResult(path, manifest, history, run.global_step, runs)


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
    stage = ("temperature", "max_len", "position_span", "query_max_len")
    return OperationRecord(
        "finetune",
        parameters={
            "loss": "InfoNCE, in-batch + hard negatives of every process, cosine / temperature",
            **{key: options[key] for key in stage},
            "pooling": model.pooling,
            **run.parameters(settings, history),
            "candidates_per_query": 2 * settings.batch_size * run.trainer.args.world_size,
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
)


def _recorded_options(arguments: dict[str, Any], files: list[Path], settings: TrainSettings) -> dict[str, Any]:
    eval_beir = arguments["eval_beir"]
    return {
        "checkpoint": str(arguments["checkpoint"]),
        "data": [str(p) for p in files],
        **{key: arguments[key] for key in RECORDED_OPTIONS},
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
