"""Masked-LM training on the Hugging Face Trainer (``train_mlm``), and the pieces every stage reuses.

The pieces are separate so each stage reuses them: reading text (:func:`read_documents`), packing it into
fixed-length sequences (:func:`pack_documents`), the masking collator (:class:`MaskingCollator`), a
held-out set masked once with a fixed seed (:func:`masked_held_out`), the Trainer setup
(:func:`training_arguments`, :func:`build_trainer`) and writing the trained model with a manifest
(:func:`write_trained_model`). Because everything runs through the Trainer, ``accelerate launch`` and
``torchrun`` run it unchanged; only the main process writes the output.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import shutil
import signal
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxext.errors import Interrupted, InvalidArgument, SourceNotFound, remote_code_refusal
from ctxext.io import (
    ModelFolder,
    OutTensor,
    check_output_target,
    file_sha256,
    input_file,
    open_model,
    read_jsonl,
    sigterm_as_interrupt,
)
from ctxext.manifest import Check, OperationRecord

TEXT_SUFFIXES = (".txt", ".jsonl", ".parquet")


# ----------------------------------------------------------------------------- text


def read_documents(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Documents from local files: ``.txt`` (blank-line separated paragraphs), ``.jsonl`` (a ``text`` field
    per line), ``.parquet`` (a ``text`` column). A folder stands for the supported files inside it."""
    documents: list[str] = []
    for path in data_files(paths):
        if path.suffix == ".txt":
            text = path.read_text(encoding="utf-8", errors="replace")
            documents += [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
        elif path.suffix == ".jsonl":
            documents += _jsonl_texts(path)
        else:
            documents += _parquet_texts(path)
    if not documents:
        raise InvalidArgument(f"the data ({', '.join(map(str, paths))}) holds no text")
    return documents


def data_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    if not paths:
        raise InvalidArgument("no training data: pass --data FILE (txt, jsonl or parquet)")
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(p for p in entry.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
            if not found:
                raise SourceNotFound(f"data folder {entry} holds no .txt, .jsonl or .parquet files")
            files += found
        elif entry.exists() or entry.is_symlink():
            input_file(entry, "data file")
            if entry.suffix not in TEXT_SUFFIXES:
                raise InvalidArgument(
                    f"data file {entry}: unsupported type {entry.suffix!r}; "
                    "use .txt, .jsonl (a 'text' field) or .parquet (a 'text' column)"
                )
            files.append(entry)
        else:
            raise SourceNotFound(f"data file {entry} does not exist")
    return files


def _jsonl_texts(path: Path) -> list[str]:
    texts = []
    for number, record in read_jsonl(path):
        if not isinstance(record.get("text"), str):
            raise InvalidArgument(f"{path}:{number} has no string 'text' field")
        texts.append(record["text"])
    return texts


def _parquet_texts(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=["text"])
    except (KeyError, ValueError) as error:
        raise InvalidArgument(f"{path} has no 'text' column ({error})") from None
    except OSError as error:
        raise InvalidArgument(f"{path} cannot be read as Parquet ({error})") from None
    return [text for text in table.column("text").to_pylist() if isinstance(text, str) and text.strip()]


def split_held_out(named: Iterable[tuple[str, str]], fraction: float) -> tuple[list[str], list[str]]:
    """Split (name, text) pairs by a hash of the name: the same name always lands on the same side."""
    train, held_out = [], []
    for name, text in named:
        (held_out if zlib.crc32(name.encode()) % 1000 < fraction * 1000 else train).append(text)
    return train, held_out


# ----------------------------------------------------------------------------- packing and masking


def pack_documents(tokenizer: Any, documents: Sequence[str], max_len: int) -> list[list[int]]:
    """Tokenize documents, join them with the separator token and cut the stream into sequences of exactly
    ``max_len`` tokens (each starts with CLS and ends with SEP); the last, incomplete piece is dropped."""
    if max_len < 8:
        raise InvalidArgument(f"--max-len {max_len} is too short; use at least 8")
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls_id is None or sep_id is None:
        raise InvalidArgument("the tokenizer has no CLS/SEP (or BOS/EOS) token to frame packed sequences")
    body = max_len - 2
    stream: list[int] = []
    encoded = tokenizer(list(documents), add_special_tokens=False, truncation=False, verbose=False)
    encoded = encoded["input_ids"]
    for ids in encoded:
        if ids:
            stream += ids + [sep_id]
    return [
        [cls_id, *stream[start : start + body], sep_id] for start in range(0, len(stream) - body + 1, body)
    ]


def mask_tokens(
    input_ids: Any, special_ids: Any, probability: float, mask_id: int, vocab_size: int, generator: Any
) -> tuple[Any, Any]:
    """BERT masking of one sequence: ``probability`` of the non-special tokens are chosen; of those 80% become
    the mask token, 10% a random token, 10% stay. Returns (masked input ids, labels with -100 elsewhere)."""
    import torch

    chances = torch.full(input_ids.shape, probability)
    chances[torch.isin(input_ids, special_ids)] = 0.0
    chosen = torch.bernoulli(chances, generator=generator).bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    draw = torch.rand(input_ids.shape, generator=generator)
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator)
    masked = input_ids.clone()
    masked[chosen & (draw < 0.8)] = mask_id
    replaced = chosen & (draw >= 0.8) & (draw < 0.9)
    masked[replaced] = random_tokens[replaced]
    return masked, labels


def mask_seed(seed: int, epoch: int, index: int) -> int:
    return zlib.crc32(f"{seed}:{epoch}:{index}".encode())


@dataclass
class MaskingCollator:
    """Masks a batch of packed sequences for masked-LM training (see :func:`mask_tokens`).

    Each example's mask comes from its own seed (run seed, epoch, example index; set by
    :class:`PackedDataset`), never from the global random state: the masks do not depend on batching,
    prefetching, the number of processes, or on whether the run was resumed from a checkpoint. Examples that
    already carry ``labels`` (a held-out set masked once) are stacked as they are."""

    tokenizer: Any
    probability: float = 0.3

    def __post_init__(self) -> None:
        import torch

        if self.tokenizer.mask_token_id is None:
            raise InvalidArgument("the tokenizer has no mask token; masked-LM training needs one")
        self.special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)), dtype=torch.long)
        self.vocab_size = len(self.tokenizer)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if "labels" in examples[0]:
            return {key: torch.as_tensor([example[key] for example in examples]) for key in examples[0]}
        masked, labels = [], []
        for example in examples:
            generator = torch.Generator().manual_seed(int(example["mask_seed"]))
            ids, label = mask_tokens(
                torch.as_tensor(example["input_ids"], dtype=torch.long),
                self.special_ids,
                self.probability,
                self.tokenizer.mask_token_id,
                self.vocab_size,
                generator,
            )
            masked.append(ids)
            labels.append(label)
        input_ids = torch.stack(masked)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "labels": torch.stack(labels),
        }


def masked_held_out(
    tokenizer: Any, sequences: Sequence[list[int]], probability: float, seed: int = 1234
) -> list[dict[str, list[int]]]:
    """A held-out set masked once with a fixed seed: every model is evaluated on the same masks."""
    collator = MaskingCollator(tokenizer, probability)
    items = []
    for index, ids in enumerate(sequences):
        batch = collator([{"input_ids": ids, "mask_seed": mask_seed(seed, 0, index)}])
        items.append(
            {
                "input_ids": batch["input_ids"][0].tolist(),
                "attention_mask": [1] * len(ids),
                "labels": batch["labels"][0].tolist(),
            }
        )
    return items


class PackedDataset:
    """Packed sequences for training; each item carries the seed of its mask for the current epoch (the
    Trainer's dataloader calls ``set_epoch``), so masks change from epoch to epoch but are reproducible."""

    def __init__(self, sequences: Sequence[list[int]], seed: int = 0):
        self.sequences = list(sequences)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.sequences[index], "mask_seed": mask_seed(self.seed, self.epoch, index)}


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
        for option, value in (("--steps", self.steps), ("--batch-size", self.batch_size),
                              ("--grad-accum", self.gradient_accumulation)):
            if value < 1:
                raise InvalidArgument(f"{option} {value} must be at least 1")
        for integration in self.report_to:
            if integration not in REPORT_TO:
                raise InvalidArgument(f"--report-to {integration!r}: choose {' or '.join(REPORT_TO)}")
            if importlib.util.find_spec(REPORT_TO[integration]) is None:
                raise InvalidArgument(f"--report-to {integration} needs the {REPORT_TO[integration]} package: "
                                      f"pip install {REPORT_TO[integration]}")


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
        warmup_ratio=settings.warmup_ratio,
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
        # transformers refuses bf16 on a machine without CUDA unless told to train on the CPU
        use_cpu=settings.bf16 and not torch.cuda.is_available(),
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not settings.progress_bars,
        remove_unused_columns=False,
        **settings.extra,
    )


def build_trainer(
    model: Any,
    tokenizer: Any,
    collator: Any,
    train_dataset: Any,
    eval_dataset: Any,
    arguments: Any,
    callbacks: Sequence[Any] = (),
):
    from transformers import Trainer

    return Trainer(
        model=model,
        args=arguments,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )


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


def training_paths(out: str | Path, work_dir: str | Path | None, *, resume: bool, force: bool,
                   protect: Iterable[str | Path] = ()) -> TrainingPaths:
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
            message = (f"checkpoint {kept} kept; rerun the same command with --resume to continue" if kept
                       else "nothing was written")
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


# ----------------------------------------------------------------------------- masked-LM stage


def load_masked_lm(folder: ModelFolder) -> tuple[Any, Any, list[str]]:
    """The checkpoint as a masked-LM model and its tokenizer; returns the head tensors that had to be newly
    initialised (a checkpoint without an MLM head, such as most sentence-transformers models)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = AutoModelForMaskedLM.from_pretrained(folder.model_dir, output_loading_info=True,
                                                           trust_remote_code=False)
    except ValueError as error:
        raise remote_code_refusal(error) or InvalidArgument(
            f"{folder.root} has no masked-LM class in transformers: {error}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    tokenizer_dir = (
        folder.model_dir if (folder.model_dir / "tokenizer_config.json").is_file() else folder.root
    )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, trust_remote_code=False)
    return model, tokenizer, list(info["missing_keys"])


def mlm_trainer(
    model: Any,
    tokenizer: Any,
    train_sequences: Sequence[list[int]],
    eval_dataset: Any,
    *,
    mask: float,
    settings: TrainSettings,
    work_dir: Path,
    save: bool = True,
    callbacks: Sequence[Any] = (),
):
    """A Trainer for masked-LM training of an in-memory model on packed sequences (call ``.train()``)."""
    arguments = training_arguments(work_dir, settings, save=save, evaluate=eval_dataset is not None)
    return build_trainer(
        model,
        tokenizer,
        MaskingCollator(tokenizer, mask),
        PackedDataset(train_sequences, settings.seed),
        eval_dataset,
        arguments,
        callbacks,
    )


@dataclass
class MlmResult:
    path: Path | None
    manifest: dict[str, Any] | None
    history: dict[str, list[list[float]]]
    global_step: int


def train_mlm(
    checkpoint: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    *,
    mask: float = 0.3,
    max_len: int | None = None,
    settings: TrainSettings | None = None,
    eval_fraction: float = 0.0,
    work_dir: str | Path | None = None,
    resume: bool = False,
    keep_checkpoints: bool = False,
    force: bool = False,
    callbacks: Sequence[Any] = (),
    argv: list[str] | None = None,
) -> MlmResult:
    """Masked-LM training of ``checkpoint`` on local text, packed to ``max_len`` tokens, with the Trainer.

    Trainer checkpoints go to ``work_dir`` (default: ``<out>.checkpoints`` beside the output); ``resume``
    continues from the latest one there. The trained model is written to ``out`` atomically with a manifest
    and loads with AutoModelForMaskedLM (a sentence-transformers input stays a sentence-transformers folder).
    """
    settings = settings or TrainSettings()
    if not 0.0 < mask < 1.0:
        raise InvalidArgument(f"--mask {mask} must be between 0 and 1")
    if not 0.0 <= eval_fraction < 1.0:
        raise InvalidArgument(f"--eval-fraction {eval_fraction} must be in [0, 1)")
    source, folder = open_model(checkpoint)
    files = data_files(data)
    paths = training_paths(out, work_dir, resume=resume, force=force, protect=[source.path, *files])
    out_path, work, resume_from = paths.out, paths.work, paths.resume_from
    from transformers import set_seed

    set_seed(settings.seed)  # a missing MLM head is initialised at load time: make it reproducible
    model, tokenizer, new_head = load_masked_lm(folder)
    from ctxext.encode import _model_max_length

    limit = _model_max_length(folder.config, tokenizer)
    max_len = max_len or min(512, limit)
    if max_len > limit:
        raise InvalidArgument(f"--max-len {max_len} exceeds the model's {limit} positions")
    documents = read_documents(files)
    named = [(f"{index}", text) for index, text in enumerate(documents)]
    train_texts, held_texts = split_held_out(named, eval_fraction) if eval_fraction else (documents, [])
    train_sequences = pack_documents(tokenizer, train_texts, max_len)
    if not train_sequences:
        raise InvalidArgument(f"the data holds fewer than {max_len} tokens: nothing to train on")
    held_sequences = pack_documents(tokenizer, held_texts, max_len) if held_texts else []
    eval_dataset = ListDataset(masked_held_out(tokenizer, held_sequences, mask)) if held_sequences else None

    with resumable_checkpoints_kept(work):
        trainer = mlm_trainer(
            model,
            tokenizer,
            train_sequences,
            eval_dataset,
            mask=mask,
            settings=settings,
            work_dir=work,
            callbacks=callbacks,
        )
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    final_eval = trainer.evaluate() if eval_dataset is not None else {}
    history = loss_history(trainer)
    if not trainer.is_world_process_zero():
        return MlmResult(None, None, history, trainer.state.global_step)

    record = OperationRecord(
        "mlm",
        parameters={
            "mask": mask,
            "max_len": max_len,
            "steps": settings.steps,
            "global_step": trainer.state.global_step,
            "batch_size": settings.batch_size,
            "learning_rate": settings.learning_rate,
            "seed": settings.seed,
            "world_size": trainer.args.world_size,
            "train_sequences": len(train_sequences),
            "held_out_sequences": len(held_sequences),
            "documents": len(documents),
            "data_files_sha256": {str(path): file_sha256(path) for path in files},
            "resumed_from": str(resume_from) if resume_from else None,
            "loss_history": history,
            "newly_initialised": new_head,
        },
    )
    if final_eval:
        record.checks.append(
            Check(
                "held_out_mlm_loss",
                float(final_eval["eval_loss"]),
                detail=f"masked-LM loss on {len(held_sequences)} held-out sequences, fixed masks",
            )
        )
    if new_head:
        record.notes.append(
            f"the checkpoint had no weights for {len(new_head)} tensors of the masked-LM class "
            "(no MLM head); they started from the family's init"
        )
    result = write_trained_model(
        model,
        folder,
        out_path,
        source,
        record,
        command="mlm",
        options={
            "checkpoint": str(checkpoint),
            "data": [str(p) for p in files],
            "mask": mask,
            "max_len": max_len,
            "eval_fraction": eval_fraction,
            "resume": resume,
            **vars(settings),
        },
        force=force,
        argv=argv,
    )
    if not keep_checkpoints:
        discard_checkpoints(work)
    return MlmResult(result.path, result.manifest, history, trainer.state.global_step)


def write_trained_model(model: Any, folder: ModelFolder, out: Path, source: Any, record: OperationRecord, *,
                        command: str, options: dict[str, Any], force: bool, argv: list[str] | None = None,
                        extra_files: dict[str, Any] | None = None, sources: dict[str, Any] | None = None,
                        finish: Any = None, config_updates: dict[str, Any] | None = None, carry: bool = True):
    """Write a trained model beside the input's tokenizer and sentence-transformers files; tensors of the input
    that the trained class does not hold (a pooler) are carried over unchanged, so AutoModel still loads it.

    ``extra_files`` are JSON files to add (relative path -> content), ``sources`` more manifest sources
    (role -> (Source, sha256 of its files)), ``finish(staging)`` writes further files into the staging folder
    and returns checks, before the manifest is written. ``carry=False`` writes the model's own tensors only
    (an embedding stage writes the base model; the input's MLM head is left out, and listed as dropped)."""
    from ctxext.checkpoint import OutputPlan, write_model_folder
    from ctxext.guide import model_tensors
    from ctxext.io import CheckpointReader

    reader = CheckpointReader(folder)
    tensors = model_tensors(_unwrap(model))
    written = {tensor.info.name for tensor in tensors}
    prefix = getattr(_unwrap(model), "base_model_prefix", "")
    carried: dict[str, str] = {}
    for name in reader.names:
        if (
            name.endswith(("position_ids", "token_type_ids"))
            or ".decoder." in name
            or name.startswith("decoder.")
        ):
            continue
        target = (
            name if name in written or not prefix or name.startswith(prefix + ".") else f"{prefix}.{name}"
        )
        if target not in written:
            carried[name] = target
    if not carry:
        record.dropped = sorted(carried)
        carried = {}
    for name, target in carried.items():
        tensors.append(OutTensor.copied(reader, name, target))
    record.modified = sorted(written)
    record.copied = sorted(carried.values())
    record.renamed = {n: t for n, t in carried.items() if n != t}
    config = _unwrap(model).config.to_dict()
    config["architectures"] = [type(_unwrap(model)).__name__]
    config.update(config_updates or {})
    plan = OutputPlan(command, options, {"model": (source, reader.sha256_of_files()), **(sources or {})}, tensors,
                      [record], config, support_from=folder, extra_files=dict(extra_files or {}))
    return write_model_folder(plan, out, force=force, argv=argv, checks=finish)


def _unwrap(model: Any) -> Any:
    return getattr(model, "module", model)
