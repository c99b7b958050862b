"""Extractive-QA fine-tuning (start/end spans) of a ``ctxext flip --head qa`` folder: a stage of the shared
:class:`~ctxext.train.runner.TrainingRun` (checkpoints, ``--resume``, rank-0 writing), with exact match and
F1 on a held-out SQuAD-format file recorded in the manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.checkpoint import OutputPlan, OutputResult, model_tensors, write_model_folder
from ctxext.compat import loading_info
from ctxext.data.formats import QAExample, read_squad_jsonl
from ctxext.errors import CheckFailed, InvalidArgument
from ctxext.flip import dtype_name
from ctxext.io import CheckpointReader, ModelFolder, Source, open_model
from ctxext.manifest import Check, OperationRecord
from ctxext.qa import DOCUMENT_STRIDE, encode_example, encode_windows, evaluate_qa, pad_batch
from ctxext.qa_prompt import PromptConfig, load_prompt_config
from ctxext.train.lora import train_with_lora
from ctxext.train.runner import ListDataset, RunOptions, TrainingResult, TrainingRun, TrainSettings


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
    *,
    eval_path: str | Path | None = None,
    settings: TrainSettings | None = None,
    max_length: int = 384,
    stride: int = DOCUMENT_STRIDE,
    freeze_embeddings: bool = False,
    lora_rank: int = 0,
    special_tokens: str | Path | None = None,
    revision: str | None = None,
    run_options: RunOptions | None = None,
) -> QAFinetuneResult:
    """Fine-tune a QA model folder (``ctxext flip --head qa``) on SQuAD-format jsonl and write the result
    (atomically, with a manifest holding exact match and F1 on ``eval_path``). ``freeze_embeddings`` keeps
    the token embeddings fixed (fast on CPU); a context longer than ``max_length`` is read in windows that share
    ``stride`` tokens (:func:`ctxext.qa.encode_windows`), for training and for prediction. ``lora_rank`` > 0
    trains LoRA adapters of that rank and the QA head on the weights as they ship (bf16 stays bf16), merged
    on writing."""
    from transformers import set_seed

    settings = settings or qa_settings()
    source, folder = open_model(ref, revision=revision)
    inputs = [source.path, train_path, *([eval_path] if eval_path else [])]
    run = TrainingRun(out, run_options, protect=inputs)
    prompt = load_prompt_config(special_tokens)
    train_examples = read_squad_jsonl(train_path)
    eval_examples = read_squad_jsonl(eval_path) if eval_path else None
    set_seed(settings.seed)
    model, tokenizer, head_missing = load_qa_model(folder, prompt, keep_dtype=lora_rank > 0)
    if freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    data = qa_training_data(tokenizer, train_examples, prompt, max_length, stride)
    model, lora = train_with_lora(
        model,
        lora_rank,
        lambda trained: run.train(trained, None, data.collator, data.dataset, settings),
        also_train=["qa_outputs"],
    )
    history = run.history()
    metrics = (
        evaluate_qa(model, tokenizer, eval_examples, prompt, max_length=max_length, stride=stride)
        if eval_examples
        else None
    )
    model = model.cpu().eval()
    options = {
        "ref": ref,
        "max_length": max_length,
        "stride": stride,
        "freeze_embeddings": freeze_embeddings,
        "lora_rank": lora_rank,
        **vars(settings),
    }
    record = OperationRecord(
        "finetune_qa",
        parameters={
            **options,
            **run.parameters(settings, history),
            "prompt": prompt.describe(),
            "train": str(train_path),
            "eval": str(eval_path),
            "train_examples": len(data.dataset),
            "skipped_examples": data.skipped,
            "lora": {**lora, "merged": True} if lora else None,
        },
    )
    record.checks += qa_checks(history, metrics)
    if head_missing:
        record.notes.append("the folder had no QA head: qa_outputs started from transformers' default init")
    probe = [encode_example(ex, tokenizer, prompt, max_length) for ex in (eval_examples or train_examples)[:4]]
    probe_batch = pad_batch(probe, tokenizer.pad_token_id or 0, with_labels=False)
    path, manifest = run.write(
        lambda: write_qa_model(
            model, tokenizer, folder, source, record, run.out, options, probe_batch, inputs, run.options
        )
    )
    return QAFinetuneResult(path, manifest, history, run.global_step, len(data.dataset), data.skipped, metrics)


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


def write_qa_model(
    model: Any,
    tokenizer: Any,
    folder: ModelFolder,
    source: Source,
    record: OperationRecord,
    out: Path,
    options: dict[str, Any],
    probe: dict[str, Any],
    protect: list[str | Path],
    run_options: RunOptions,
) -> OutputResult:
    """Write the trained QA model beside the folder's support files; the written folder must reload giving
    the same start logits on ``probe`` (a padded batch)."""
    from ctxext.flip_models import config_for_saving

    reader = CheckpointReader(folder)
    source_names = set(reader.names)
    for name in model.state_dict():
        (record.modified if name in source_names else record.created).append(name)
    plan = OutputPlan(
        "finetune-qa",
        options,
        {"model": (source, reader.sha256_of_files())},
        model_tensors(model),
        [record],
        config_for_saving(model.config, type(model).__name__, dtype_name(model.dtype)),
        support_from=folder,
        tokenizer=tokenizer,
        protect=protect,
        require_checks=True,
    )
    return write_model_folder(
        plan,
        out,
        force=run_options.force,
        argv=run_options.argv,
        checks=lambda staging: [reload_logits_check(model, staging / folder.relative_model_dir, probe)],
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
