"""The one training runner every stage uses (:class:`TrainingRun`) and what it is built from.

A stage supplies a model, its data, a collator and the record of what it did; the run owns the rest: the
output check before any work, the folder of Trainer checkpoints (``<out>.checkpoints`` unless named), resume,
the Trainer itself, the loss history, writing on the main process only, and removing the checkpoints once the
output is in place. Because everything runs through the Hugging Face Trainer, ``accelerate launch`` and
``torchrun`` run each stage unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxext.architectures import is_buffer
from ctxext.checkpoint import OutputPlan, OutputResult, model_tensors, write_model_folder
from ctxext.compat import warmup_arguments
from ctxext.errors import Interrupted, InvalidArgument, SourceNotFound
from ctxext.io import (
    CheckpointReader,
    ModelFolder,
    OutTensor,
    check_output_target,
    release_output,
    sigterm_as_interrupt,
)
from ctxext.io import is_main_process as is_main_process  # re-exported: where training code looks for it
from ctxext.manifest import Check, OperationRecord


class ListDataset:
    """A plain in-memory dataset (what the Trainer needs: ``__len__`` and ``__getitem__``)."""

    def __init__(self, items: Sequence[Any]):
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


# ----------------------------------------------------------------------------- Trainer


# --report-to integrations and the package each needs.
REPORT_TO = {"tensorboard": "tensorboard", "wandb": "wandb"}


@dataclass
class TrainSettings:
    """What a training run does; the same fields go into the manifest."""

    steps: int = 1000
    batch_size: int = 16
    learning_rate: float = 5e-4
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0
    eval_every: int = 0
    save_every: int = 500
    save_limit: int = 2
    logging_every: int = 10
    gradient_accumulation: int = 1
    bf16: bool = False
    report_to: tuple[str, ...] = ()
    """Trainer integrations to log to (``tensorboard``, ``wandb``); none by default."""
    progress_bars: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse values the Trainer would only reject (as an internal error) after the model is loaded."""
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InvalidArgument(f"--lr {self.learning_rate} must be a positive number")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise InvalidArgument(f"--warmup {self.warmup_ratio} must be a share of the steps, in [0, 1)")
        if self.weight_decay < 0:
            raise InvalidArgument(f"weight decay {self.weight_decay} must not be negative")
        for option, value in (
            ("--steps", self.steps),
            ("--batch-size", self.batch_size),
            ("--grad-accum", self.gradient_accumulation),
        ):
            if value < 1:
                raise InvalidArgument(f"{option} {value} must be at least 1")
        for integration in self.report_to:
            if integration not in REPORT_TO:
                raise InvalidArgument(f"--report-to {integration!r}: choose {' or '.join(REPORT_TO)}")
            if importlib.util.find_spec(REPORT_TO[integration]) is None:
                raise InvalidArgument(
                    f"--report-to {integration} needs the {REPORT_TO[integration]} package: "
                    f"pip install {REPORT_TO[integration]}"
                )


def training_arguments(work_dir: Path, settings: TrainSettings, *, save: bool = True, evaluate: bool = False):
    """TrainingArguments for a ctxext stage: checkpoints every ``save_every`` steps; reporting, bf16 and
    gradient accumulation as ``settings`` say."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(work_dir),
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation,
        learning_rate=settings.learning_rate,
        **warmup_arguments(settings.warmup_ratio, settings.steps),
        weight_decay=settings.weight_decay,
        lr_scheduler_type="linear",
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=max(1, settings.logging_every),
        eval_strategy="steps" if evaluate and settings.eval_every else "no",
        eval_steps=settings.eval_every or None,
        save_strategy="steps" if save else "no",
        save_steps=max(1, settings.save_every),
        save_total_limit=settings.save_limit,
        report_to=list(settings.report_to),
        bf16=settings.bf16,
        # without CUDA, transformers refuses bf16, and under torchrun does not set up DDP (each process would
        # train alone), unless told to train on the CPU
        use_cpu=trains_on_cpu(settings),
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not settings.progress_bars,
        remove_unused_columns=False,
        **settings.extra,
    )


def world_size() -> int:
    """Processes of this run, as torchrun / accelerate launch set them (1 when run alone)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def trains_on_cpu(settings: TrainSettings) -> bool:
    import torch

    return not torch.cuda.is_available() and (settings.bf16 or world_size() > 1)


@contextlib.contextmanager
def main_process_first(settings: TrainSettings) -> Iterator[None]:
    """The main process runs the block first, the others after it (accelerate's ``main_process_first``): work
    whose result the main process writes (teacher embeddings, a pipeline's surgery stages) is done once. Sets
    up the same distributed state the Trainer will use; a process run alone just runs the block."""
    if world_size() == 1:
        yield
        return
    from accelerate import PartialState

    with PartialState(cpu=trains_on_cpu(settings)).main_process_first():
        yield


def build_trainer(
    model: Any,
    tokenizer: Any,
    collator: Any,
    train_dataset: Any,
    eval_dataset: Any,
    arguments: Any,
    callbacks: Sequence[Any] = (),
):
    from transformers import PrinterCallback, Trainer

    trainer = Trainer(
        model=model,
        args=arguments,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # the library never prints; losses stay in the log history
    return trainer


TrainFn = Callable[[Any, Any, Any, Any, TrainSettings], Any]
"""Runs the Trainer: ``train(model, tokenizer, collator, dataset, settings)`` -> the Trainer, trained. A stage's
core takes one: :meth:`TrainingRun.train` when the stage writes, :func:`train_without_output` alone."""


def train_without_output(
    model: Any,
    tokenizer: Any,
    collator: Any,
    dataset: Any,
    settings: TrainSettings,
    *,
    work_dir: str | Path | None = None,
    eval_dataset: Any = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """Train an in-memory model with the Trainer a stage's run builds, keeping no checkpoint and writing no
    output (experiments, benchmarks), in ``work_dir`` (default: a temporary folder, removed after). Returns the
    Trainer, trained."""
    with tempfile.TemporaryDirectory(prefix="ctxext-train-") as temporary:
        work = Path(work_dir) if work_dir else Path(temporary)
        arguments = training_arguments(work, settings, save=False, evaluate=eval_dataset is not None)
        trainer = build_trainer(model, tokenizer, collator, dataset, eval_dataset, arguments, callbacks)
        trainer.train()
    return trainer


@dataclass
class InMemoryTraining:
    """What a stage's core trained in memory: the model (LoRA adapters merged into it), the LoRA settings (None
    without) and the Trainer, whose logged losses are :attr:`history`."""

    model: Any
    lora: dict | None
    trainer: Any

    @property
    def history(self) -> dict[str, list[list[float]]]:
        return loss_history(self.trainer)


def loss_history(trainer: Any) -> dict[str, list[list[float]]]:
    """Training and evaluation losses the Trainer logged, as [step, loss] pairs."""
    history: dict[str, list[list[float]]] = {"train": [], "eval": []}
    for entry in trainer.state.log_history:
        if "loss" in entry:
            history["train"].append([entry["step"], float(entry["loss"])])
        if "eval_loss" in entry:
            history["eval"].append([entry["step"], float(entry["eval_loss"])])
    return history


def latest_checkpoint(work_dir: Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    return Path(found) if work_dir.is_dir() and (found := get_last_checkpoint(str(work_dir))) else None


# ----------------------------------------------------------------------------- where a run keeps its checkpoints


@dataclass(frozen=True)
class TrainingPaths:
    out: Path
    work: Path
    resume_from: Path | None


def training_paths(
    out: str | Path, work_dir: str | Path | None, *, resume: bool, force: bool, protect: Iterable[str | Path] = ()
) -> TrainingPaths:
    """The output (checked before any training: see ``io.check_output_target``), the folder for Trainer
    checkpoints (default ``<out>.checkpoints``) and, with ``resume``, the checkpoint to continue from."""
    out_path = check_output_target(out, force=force, protect=protect)
    work = Path(work_dir).expanduser().absolute() if work_dir else out_path.with_name(out_path.name + ".checkpoints")
    resume_from = latest_checkpoint(work) if resume else None
    if resume and resume_from is None:
        raise SourceNotFound(f"--resume: no Trainer checkpoint in {work}")
    return TrainingPaths(out_path, work, resume_from)


@contextlib.contextmanager
def resumable_checkpoints_kept(work: Path) -> Iterator[None]:
    """Around training: a failed or interrupted run leaves its Trainer checkpoints (and says how to resume
    from them) or, with none written yet, nothing at all."""
    try:
        with sigterm_as_interrupt():
            yield
    except BaseException as error:
        kept = latest_checkpoint(work)
        if kept is None:
            discard_checkpoints(work)
        if isinstance(error, KeyboardInterrupt):
            message = (
                f"checkpoint {kept} kept; rerun the same command with --resume to continue"
                if kept
                else "nothing was written"
            )
            raise Interrupted(getattr(error, "signal_number", signal.SIGINT), kept=message) from None
        raise


def discard_checkpoints(work: Path) -> None:
    """Remove the Trainer checkpoints in ``work``, then ``work`` itself if nothing else is in it (a
    ``--work-dir`` the user named may hold other files, which stay)."""
    if not work.is_dir():
        return
    for checkpoint in work.glob("checkpoint-*"):
        if checkpoint.is_dir() and not checkpoint.is_symlink():
            shutil.rmtree(checkpoint, ignore_errors=True)
    with contextlib.suppress(OSError):
        work.rmdir()


# ----------------------------------------------------------------------------- writing


def write_trained_model(
    model: Any,
    folder: ModelFolder,
    out: Path,
    source: Any,
    record: OperationRecord,
    *,
    command: str,
    options: dict[str, Any],
    run_options: RunOptions,
    extra_files: dict[str, Any] | None = None,
    sources: dict[str, Any] | None = None,
    finish: Any = None,
    config_updates: dict[str, Any] | None = None,
    carry: bool = True,
    new_as_created: bool = False,
    **plan_fields: Any,
):
    """Write a trained model beside the input's tokenizer and sentence-transformers files; tensors of the input
    that the trained class does not hold (a pooler) are carried over unchanged, so AutoModel still loads it.
    The one writer of every training stage.

    ``extra_files`` are JSON files to add (relative path -> content), ``sources`` more manifest sources
    (role -> (Source, sha256 of its files)), ``finish(staging)`` writes further files into the staging folder
    and returns checks, before the manifest is written; ``config_updates`` are set over the model's config.
    ``carry=False`` writes the model's own tensors only (an embedding stage writes the base model; the input's
    MLM head is left out, and listed as dropped).

    The record lists every written tensor as modified, sorted; with ``new_as_created``, in the model's order,
    those the input lacks as created (a QA head the folder had none of) and the others as modified.
    ``plan_fields`` are further :class:`~ctxext.checkpoint.OutputPlan` fields: ``tokenizer`` (one changed
    in memory, saved over the input's), ``protect`` (inputs besides the model that the output must not
    replace), ``require_checks`` (a failed check of ``finish`` stops the write)."""

    reader = CheckpointReader(folder)
    tensors = model_tensors(_unwrap(model))
    written = {tensor.info.name for tensor in tensors}
    prefix = getattr(_unwrap(model), "base_model_prefix", "")
    carried: dict[str, str] = {}
    for name in reader.names:
        if is_buffer(name) or ".decoder." in name or name.startswith("decoder."):
            continue
        target = name if name in written or not prefix or name.startswith(prefix + ".") else f"{prefix}.{name}"
        if target not in written:
            carried[name] = target
    if not carry:
        record.dropped = sorted(carried)
        carried = {}
    for name, target in carried.items():
        tensors.append(OutTensor.copied(reader, name, target))
    if new_as_created:
        in_input = set(reader.names)
        record.modified = [tensor.info.name for tensor in tensors if tensor.info.name in in_input]
        record.created = [tensor.info.name for tensor in tensors if tensor.info.name not in in_input]
    else:
        record.modified = sorted(written)
    record.copied = sorted(carried.values())
    record.renamed = {n: t for n, t in carried.items() if n != t}
    config = _unwrap(model).config.to_dict()
    config["architectures"] = [type(_unwrap(model)).__name__]
    config.update(config_updates or {})
    plan = OutputPlan(
        command,
        {**options, "resume": run_options.resume},
        {"model": (source, reader.sha256_of_files()), **(sources or {})},
        tensors,
        [record],
        config,
        support_from=folder,
        extra_files=dict(extra_files or {}),
        **plan_fields,
    )
    return write_model_folder(plan, out, force=run_options.force, argv=run_options.argv, checks=finish)


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)


# ----------------------------------------------------------------------------- the run


@dataclass
class TrainingResult:
    """What every stage returns: the written folder and its manifest (``None`` on processes other than the
    main one, which write nothing), the loss history and the last step."""

    path: Path | None
    manifest: dict[str, Any] | None
    history: dict[str, Any]
    global_step: int

    title = "train"

    @property
    def parameters(self) -> dict[str, Any]:
        """What the stage recorded in the manifest (empty on processes other than the main one)."""
        return self.manifest["operations"][0]["parameters"] if self.manifest else {}

    def summary(self) -> dict[str, Any]:
        return {
            "output": str(self.path),
            "steps": self.global_step,
            **self.stage_summary(),
            **losses_summary(self.history),
        }

    def stage_summary(self) -> dict[str, Any]:
        """What this stage adds to the summary."""
        return {}


def losses_summary(history: dict[str, Any]) -> dict[str, Any]:
    train, retrieval = history.get("train") or [], history.get("retrieval")
    summary = {"first_train_loss": train[0][1] if train else None, "last_train_loss": train[-1][1] if train else None}
    if retrieval is not None:
        summary["retrieval_ndcg_at_10"] = [[e["step"], round(e["retrieval_ndcg_at_10"], 4)] for e in retrieval] or None
    return summary


@dataclass(frozen=True)
class RunOptions:
    """How a stage runs and writes, whatever it trains (every stage takes one): the folder of its Trainer
    checkpoints (default ``<out>.checkpoints``), whether to ``resume`` from the latest one, whether to keep them
    after a successful run, whether to replace a previous output, extra Trainer callbacks, and the command line
    the manifest records."""

    work_dir: str | Path | None = None
    resume: bool = False
    keep_checkpoints: bool = False
    force: bool = False
    callbacks: Sequence[Any] = ()
    argv: list[str] | None = None


class TrainingRun:
    """One training stage from output check to cleanup; see the module docstring.

    ``TrainingRun(out, options)`` checks the output and finds the checkpoint to resume from before any model
    loads; ``train(...)`` runs the Trainer (a failed or interrupted run keeps its checkpoints and says how to
    resume); ``parameters(settings)`` is what every manifest records about the run; ``write(writer)`` calls
    ``writer()`` on the main process only and then removes the checkpoints unless ``options.keep_checkpoints``."""

    def __init__(self, out: str | Path, options: RunOptions | None = None, *, protect: Iterable[str | Path] = ()):
        self.options = options = options or RunOptions()
        self.paths = training_paths(out, options.work_dir, resume=options.resume, force=options.force, protect=protect)
        self.trainer: Any = None

    @property
    def out(self) -> Path:
        return self.paths.out

    def train(
        self,
        model: Any,
        tokenizer: Any,
        collator: Any,
        dataset: Any,
        settings: TrainSettings,
        *,
        eval_dataset: Any = None,
        callbacks: Sequence[Any] = (),
        save: bool = True,
    ) -> Any:
        try:
            with resumable_checkpoints_kept(self.paths.work):
                arguments = training_arguments(self.paths.work, settings, save=save, evaluate=eval_dataset is not None)
                callbacks = [*self.options.callbacks, *callbacks]
                self.trainer = build_trainer(model, tokenizer, collator, dataset, eval_dataset, arguments, callbacks)
                resume_from = self.paths.resume_from
                self.trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        except BaseException:
            release_output(self.out)  # the output will not be written: another run may write it now
            raise
        return self.trainer

    @property
    def global_step(self) -> int:
        return int(self.trainer.state.global_step)

    @property
    def is_main_process(self) -> bool:
        return bool(self.trainer.is_world_process_zero())

    def history(self, *, retrieval: bool = False) -> dict[str, Any]:
        """Losses as [step, loss] pairs; with ``retrieval``, the retrieval evaluations logged during training."""
        history: dict[str, Any] = loss_history(self.trainer)
        if retrieval:
            history["retrieval"] = [e for e in self.trainer.state.log_history if "retrieval_ndcg_at_10" in e]
        return history

    def parameters(self, settings: TrainSettings, history: dict[str, Any]) -> dict[str, Any]:
        resume_from = self.paths.resume_from
        return {
            "steps": settings.steps,
            "global_step": self.global_step,
            "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
            "seed": settings.seed,
            "world_size": self.trainer.args.world_size,
            "resumed_from": str(resume_from) if resume_from else None,
            "loss_history": history,
        }

    def write(self, writer: Callable[[], OutputResult]) -> tuple[Path | None, dict[str, Any] | None]:
        """The written folder and its manifest; (None, None) on the other processes, which write nothing."""
        if not self.is_main_process:
            return None, None
        result = writer()
        if not self.options.keep_checkpoints:
            discard_checkpoints(self.paths.work)
        return result.path, result.manifest


def last_retrieval_check(history: dict[str, Any], eval_set: str | Path | None) -> list[Check]:
    """The last retrieval evaluation of the run as a manifest check (none if the run evaluated none)."""
    if not history.get("retrieval"):
        return []
    last = history["retrieval"][-1]
    return [
        Check("retrieval_ndcg_at_10", float(last["retrieval_ndcg_at_10"]), detail=f"{eval_set}, at step {last['step']}")
    ]
