"""Extractive-QA fine-tuning (start/end spans) of a ``ctxext flip --head qa`` folder: a stage of the shared
:class:`~ctxext.train.runner.TrainingRun` (checkpoints, ``--resume``, rank-0 writing), with exact match and
F1 on a held-out SQuAD-format file recorded in the manifest. :func:`train_qa_in_memory` is its core: it trains
an in-memory model and writes nothing (``finetune_qa`` runs it in its run; benchmarks/flip.py alone)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.compat import loading_info
from ctxext.data.formats import QAExample, read_squad_jsonl
from ctxext.errors import CheckFailed, InvalidArgument
from ctxext.flip import dtype_name
from ctxext.io import ModelFolder, open_model
from ctxext.manifest import Check, OperationRecord
from ctxext.options import with_fields
from ctxext.qa import DOCUMENT_STRIDE, encode_example, encode_windows, evaluate_qa, pad_batch
from ctxext.qa_prompt import PromptConfig, load_prompt_config
from ctxext.train.lora import train_with_lora
from ctxext.train.runner import (
    InMemoryTraining,
    ListDataset,
    RunOptions,
    TrainFn,
    TrainingResult,
    TrainingRun,
    TrainSettings,
    train_without_output,
    write_trained_model,
)


def qa_settings(**fields: Any) -> TrainSettings:
    """TrainSettings with QA fine-tuning's defaults (short runs, a small learning rate, no weight decay)."""
    defaults = {
        "steps": 100,
        "batch_size": 8,
        "learning_rate": 3e-5,
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "progress_bars": False,
    }
    return TrainSettings(**{**defaults, **fields})


@dataclass
class QAData:
    """Training features whose answer fits in ``max_length`` tokens, and how many did not."""

    dataset: ListDataset
    collator: Any
    skipped: int


def qa_training_data(
    tokenizer: Any, examples: list[QAExample], prompt: PromptConfig, max_length: int, stride: int = DOCUMENT_STRIDE
) -> QAData:
    """One feature per window that holds its example's answer (a long context gives several windows); an
    example none of whose windows holds the whole answer is skipped."""
    windows = [encode_windows(example, tokenizer, prompt, max_length, stride) for example in examples]
    usable = [[window for window in group if window.start_position is not None] for group in windows]
    if not any(usable):
        raise InvalidArgument("no training example keeps its answer within --max-length tokens")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dataset = ListDataset([window for group in usable for window in group])
    return QAData(dataset, lambda batch: pad_batch(batch, pad_id, with_labels=True), sum(not group for group in usable))


@dataclass(frozen=True)
class QaOptions:
    """How a QA fine-tuning run reads its examples and what trains (the CLI builds it from its options)."""

    max_length: int = 384
    """Tokens per input (question + context); a longer context is read in windows (:func:`encode_windows`)."""
    stride: int = DOCUMENT_STRIDE
    """Tokens that neighbouring windows of a long context share, in training and in prediction."""
    freeze_embeddings: bool = False
    """Keep the token embeddings fixed (fast on CPU)."""
    lora_rank: int = 0
    """> 0: LoRA adapters of this rank and the QA head train on the weights as they ship, merged after."""
    special_tokens: str | Path | None = None
    """The prompt's special tokens and template (:func:`~ctxext.qa_prompt.load_prompt_config`; None: the
    default), which the folder's tokenizer must know."""

    def check(self) -> None:
        if self.max_length < 8:
            raise InvalidArgument(f"--max-length {self.max_length} must be at least 8")
        if self.stride < 1:
            raise InvalidArgument(f"--stride {self.stride} must be at least 1")
        if self.lora_rank < 0:
            raise InvalidArgument(f"--lora-rank {self.lora_rank} must be 0 (off) or more")


# the options the manifest records, beside the input and the settings
RECORDED_OPTIONS = ("max_length", "stride", "freeze_embeddings", "lora_rank")


@dataclass
class QATraining(InMemoryTraining):
    """A QA model trained in memory, its training features, and exact match and F1 on the evaluation examples
    (None without)."""

    data: QAData
    metrics: dict[str, float] | None


def train_qa_in_memory(
    model: Any,
    tokenizer: Any,
    examples: list[QAExample],
    prompt: PromptConfig,
    settings: TrainSettings | None = None,
    options: QaOptions | None = None,
    *,
    eval_examples: Sequence[QAExample] | None = None,
    train: TrainFn = train_without_output,
    **fields: Any,
) -> QATraining:
    """Extractive-QA fine-tuning of an in-memory ...ForQuestionAnswering model on ``examples`` rendered with
    ``prompt`` (``options.special_tokens`` is the caller's to load), then exact match and F1 on
    ``eval_examples``; nothing is written. ``train`` runs the Trainer: :func:`train_without_output` (no
    checkpoints) unless given, :meth:`TrainingRun.train` in :func:`finetune_qa`. ``fields``: :class:`QaOptions`
    fields given as keywords (over ``options``)."""
    options = with_fields(QaOptions, options, fields, "train_qa_in_memory")
    options.check()
    settings = settings or qa_settings()
    if options.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    data = qa_training_data(tokenizer, examples, prompt, options.max_length, options.stride)
    trainers = []
    model, lora = train_with_lora(
        model,
        options.lora_rank,
        lambda trained: trainers.append(train(trained, None, data.collator, data.dataset, settings)),
        also_train=["qa_outputs"],
    )
    metrics = (
        evaluate_qa(model, tokenizer, eval_examples, prompt, max_length=options.max_length, stride=options.stride)
        if eval_examples
        else None
    )
    return QATraining(model, lora, trainers[-1], data, metrics)


@dataclass
class QAFinetuneResult(TrainingResult):
    train_examples: int
    skipped_examples: int  # answers truncated away: not trainable
    metrics: dict[str, float] | None

    title = "finetune-qa"

    def summary(self) -> dict[str, Any]:
        train = self.history["train"]
        return {
            "output": str(self.path),
            "train_examples": self.train_examples,
            "skipped_examples": self.skipped_examples,
            "final_loss": train[-1][1] if train else None,
            **({f"eval_{k}": v for k, v in self.metrics.items()} if self.metrics else {}),
        }


def finetune_qa(
    ref: str,
    train_path: str | Path,
    out: str | Path,
    options: QaOptions | None = None,
    *,
    eval_path: str | Path | None = None,
    settings: TrainSettings | None = None,
    revision: str | None = None,
    run_options: RunOptions | None = None,
    **fields: Any,
) -> QAFinetuneResult:
    """Fine-tune a QA model folder (``ctxext flip --head qa``) on SQuAD-format jsonl and write the result
    (atomically, with a manifest holding exact match and F1 on ``eval_path``): :func:`train_qa_in_memory` in a
    :class:`TrainingRun`. ``options`` (:class:`QaOptions`): the windows' length and overlap, frozen embeddings,
    LoRA (``lora_rank`` > 0 trains adapters and the QA head on the weights as they ship, bf16 staying bf16,
    merged on writing), the prompt's special tokens; ``fields``: its fields as keywords (over ``options``)."""
    from transformers import set_seed

    options = with_fields(QaOptions, options, fields, "finetune_qa")
    options.check()
    settings = settings or qa_settings()
    source, folder = open_model(ref, revision=revision)
    inputs = [source.path, train_path, *([eval_path] if eval_path else [])]
    run = TrainingRun(out, run_options, protect=inputs)
    prompt = load_prompt_config(options.special_tokens)
    train_examples = read_squad_jsonl(train_path)
    eval_examples = read_squad_jsonl(eval_path) if eval_path else None
    set_seed(settings.seed)
    model, tokenizer, head_missing = load_qa_model(folder, prompt, keep_dtype=options.lora_rank > 0)
    trained = train_qa_in_memory(
        model, tokenizer, train_examples, prompt, settings, options, eval_examples=eval_examples, train=run.train
    )
    history = run.history()
    model = trained.model.cpu().eval()
    recorded = {"ref": ref, **{key: getattr(options, key) for key in RECORDED_OPTIONS}, **vars(settings)}
    record = OperationRecord(
        "finetune_qa",
        parameters={
            **recorded,
            **run.parameters(settings, history),
            "prompt": prompt.describe(),
            "train": str(train_path),
            "eval": str(eval_path),
            "train_examples": len(trained.data.dataset),
            "skipped_examples": trained.data.skipped,
            "lora": {**trained.lora, "merged": True} if trained.lora else None,
        },
    )
    record.checks += qa_checks(history, trained.metrics)
    if head_missing:
        record.notes.append("the folder had no QA head: qa_outputs started from transformers' default init")
    probe = [encode_example(ex, tokenizer, prompt, options.max_length) for ex in (eval_examples or train_examples)[:4]]
    probe_batch = pad_batch(probe, tokenizer.pad_token_id or 0, with_labels=False)
    path, manifest = run.write(
        lambda: _write_qa_model(model, tokenizer, folder, source, record, run, recorded, probe_batch, inputs)
    )
    return QAFinetuneResult(
        path, manifest, history, run.global_step, len(trained.data.dataset), trained.data.skipped, trained.metrics
    )


def load_qa_model(folder: ModelFolder, prompt: PromptConfig, *, keep_dtype: bool = False) -> tuple[Any, Any, bool]:
    """The folder's ...ForQuestionAnswering model in float32 (``keep_dtype``: in the dtype its weights ship in),
    its tokenizer (which must know the prompt's tokens), and whether the QA head was missing (then
    transformers' default init)."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from ctxext.flip_models import register

    register()
    model, info = AutoModelForQuestionAnswering.from_pretrained(
        folder.model_dir,
        dtype="auto" if keep_dtype else torch.float32,
        output_loading_info=True,
        trust_remote_code=False,
    )
    info = loading_info(info)
    problems = [k for k in info["missing_keys"] if not k.startswith("qa_outputs.")] + info["unexpected_keys"]
    if problems or info["mismatched_keys"]:
        raise CheckFailed(f"{folder.model_dir} does not load as a QA model: {problems[:3] or info['mismatched_keys']}")
    tokenizer = AutoTokenizer.from_pretrained(folder.model_dir, trust_remote_code=False)
    unknown = [t for t in prompt.special_tokens if t not in tokenizer.get_vocab()]
    if unknown:
        raise InvalidArgument(
            f"the tokenizer lacks the prompt tokens {unknown}: flip with --head qa and the same "
            "--special-tokens file first"
        )
    return model, tokenizer, bool(info["missing_keys"])


def qa_checks(history: dict[str, Any], metrics: dict[str, float] | None) -> list[Check]:
    """The training outcome as manifest checks: final loss, exact match and F1."""
    losses = [loss for _, loss in history["train"]]
    checks = [
        Check(
            "final training loss",
            float(losses[-1] if losses else 0.0),
            detail=f"losses logged: {[round(x, 4) for x in losses]}",
        )
    ]
    if metrics:
        checks.append(Check("eval exact match (%)", metrics["exact_match"], detail=f"{metrics['count']} examples"))
        checks.append(Check("eval F1 (%)", metrics["f1"], detail=f"{metrics['count']} examples"))
    return checks


def _write_qa_model(
    model: Any,
    tokenizer: Any,
    folder: ModelFolder,
    source: Any,
    record: OperationRecord,
    run: TrainingRun,
    options: dict[str, Any],
    probe: dict[str, Any],
    inputs: list[str | Path],
) -> Any:
    """The trained QA model beside the folder's support files, with the tokenizer it was trained with (the
    prompt's tokens in it); the written folder must reload giving the same start logits on ``probe`` (a padded
    batch). A QA head the folder lacked is recorded as created."""
    from ctxext.flip_models import config_for_saving

    return write_trained_model(
        model,
        folder,
        run.out,
        source,
        record,
        command="finetune-qa",
        options=options,
        run_options=run.options,
        finish=lambda staging: [reload_logits_check(model, staging / folder.relative_model_dir, probe)],
        config_updates=config_for_saving(model.config, type(model).__name__, dtype_name(model.dtype)),
        carry=False,
        new_as_created=True,
        tokenizer=tokenizer,
        protect=inputs,
        require_checks=True,
    )


def reload_logits_check(model: Any, model_dir: Path, batch: dict[str, Any]) -> Check:
    """The written folder, reloaded, gives the in-memory model's start logits at every real position."""
    import torch
    from transformers import AutoModelForQuestionAnswering

    reloaded = AutoModelForQuestionAnswering.from_pretrained(
        model_dir, dtype=model.dtype, trust_remote_code=False
    ).eval()
    with torch.no_grad():
        before, after = model(**batch), reloaded(**batch)
    real = batch["attention_mask"].bool()
    difference = float((before.start_logits - after.start_logits)[real].abs().max())
    return Check(
        "reloaded equals trained: QA start logits",
        difference,
        0.0,
        passed=difference == 0.0,
        detail=f"both in {dtype_name(model.dtype)}",
    )
