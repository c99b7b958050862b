"""Masked-LM training (``train_mlm``), a stage of :class:`~ctxext.train.runner.TrainingRun`.

Text comes from :func:`ctxext.data.sources.read_documents`; it is packed into fixed-length sequences
(:func:`pack_documents`) and masked per example from its own seed (:class:`MaskingCollator`), so masks do not
depend on batching, processes or resuming; the held-out set is masked once (:func:`masked_held_out`).
:func:`mlm_trainer` builds a Trainer for an in-memory model with no output (experiments, benchmarks/guide.py).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.compat import loading_info, transformers_warnings_off
from ctxext.data.sources import data_files, read_documents
from ctxext.errors import InvalidArgument, remote_code_refusal
from ctxext.io import ModelFolder, file_sha256, open_model
from ctxext.manifest import Check, OperationRecord
from ctxext.options import with_fields
from ctxext.train.runner import (
    ListDataset,
    RunOptions,
    TrainingResult,
    TrainingRun,
    TrainSettings,
    build_trainer,
    training_arguments,
    write_trained_model,
)

# ----------------------------------------------------------------------------- text


def split_held_out(named: Iterable[tuple[str, str]], fraction: float) -> tuple[list[str], list[str]]:
    """Split (name, text) pairs by a hash of the name: the same name always lands on the same side."""
    train: list[str] = []
    held_out: list[str] = []
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
    return [[cls_id, *stream[start : start + body], sep_id] for start in range(0, len(stream) - body + 1, body)]


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
    mask_id: int | None = None
    """The token masked positions become (default: the tokenizer's mask token)."""

    def __post_init__(self) -> None:
        import torch

        self.mask_id = self.tokenizer.mask_token_id if self.mask_id is None else self.mask_id
        if self.mask_id is None:
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
                int(self.mask_id),  # type: ignore[arg-type]  # set in __post_init__
                self.vocab_size,
                generator,
            )
            masked.append(ids)
            labels.append(label)
        input_ids = torch.stack(masked)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": torch.stack(labels)}


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


# ----------------------------------------------------------------------------- masked-LM stage


def load_masked_lm(folder: ModelFolder) -> tuple[Any, Any, list[str]]:
    """The checkpoint as a masked-LM model and its tokenizer; returns the head tensors that had to be newly
    initialised (a checkpoint without an MLM head, such as most sentence-transformers models)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    try:
        with transformers_warnings_off():
            model, info = AutoModelForMaskedLM.from_pretrained(
                folder.model_dir, output_loading_info=True, trust_remote_code=False
            )
    except ValueError as error:
        raise remote_code_refusal(error) or InvalidArgument(
            f"{folder.root} has no masked-LM class in transformers: {error}"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(folder.tokenizer_dir, trust_remote_code=False)
    return model, tokenizer, loading_info(info)["missing_keys"]


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


class MlmResult(TrainingResult):
    title = "mlm"

    def stage_summary(self) -> dict[str, Any]:
        held_out = self.history["eval"]
        return {
            "train_sequences": self.parameters.get("train_sequences"),
            "held_out_loss": held_out[-1][1] if held_out else None,
        }


@dataclass
class MlmData:
    """Packed training sequences and the held-out set, masked once."""

    documents: int
    train_sequences: list[list[int]]
    held_sequences: list[list[int]]
    eval_dataset: ListDataset | None


def mlm_data(tokenizer: Any, files: Sequence[Path], max_len: int, mask: float, eval_fraction: float) -> MlmData:
    documents = read_documents(files)
    named = [(f"{index}", text) for index, text in enumerate(documents)]
    train_texts, held_texts = split_held_out(named, eval_fraction) if eval_fraction else (documents, [])
    train_sequences = pack_documents(tokenizer, train_texts, max_len)
    if not train_sequences:
        raise InvalidArgument(f"the data holds fewer than {max_len} tokens: nothing to train on")
    held_sequences = pack_documents(tokenizer, held_texts, max_len) if held_texts else []
    eval_dataset = ListDataset(masked_held_out(tokenizer, held_sequences, mask)) if held_sequences else None
    return MlmData(len(documents), train_sequences, held_sequences, eval_dataset)


@dataclass(frozen=True)
class MlmOptions:
    """What masked-LM training masks, how long its packed sequences are and what it holds out (the CLI builds it
    from its options)."""

    mask: float = 0.3
    """Share of the tokens masked."""
    max_len: int | None = None
    """Tokens per packed sequence (None: the model's, at most 512)."""
    eval_fraction: float = 0.0
    """Share of the documents held out for the evaluation loss (0: none)."""

    def check(self) -> None:
        if not 0.0 < self.mask < 1.0:
            raise InvalidArgument(f"--mask {self.mask} must be between 0 and 1")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise InvalidArgument(f"--eval-fraction {self.eval_fraction} must be in [0, 1)")


# the options of a run the manifest records, beside the input, the data and the settings
RECORDED_OPTIONS = ("mask", "max_len", "eval_fraction")


def train_mlm(
    checkpoint: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    options: MlmOptions | None = None,
    *,
    settings: TrainSettings | None = None,
    revision: str | None = None,
    run_options: RunOptions | None = None,
    **fields: Any,
) -> MlmResult:
    """Masked-LM training of ``checkpoint`` on local text, packed to ``options.max_len`` tokens, with the Trainer.

    ``options`` (:class:`MlmOptions`): the share masked, the packed length, the share held out; ``fields``: its
    fields as keywords (over ``options``). ``run_options`` say where the Trainer checkpoints go (default:
    ``<out>.checkpoints`` beside the output) and whether to resume from the latest one there. The trained model is
    written to ``out`` atomically with a manifest and loads with AutoModelForMaskedLM (a sentence-transformers
    input stays a sentence-transformers folder).
    """
    options = with_fields(MlmOptions, options, fields, "train_mlm")
    options.check()
    settings = settings or TrainSettings()
    source, folder = open_model(checkpoint, revision=revision)
    files = data_files(data)
    inputs = [source.path, *files]
    run = TrainingRun(out, run_options, protect=inputs)
    from transformers import set_seed

    set_seed(settings.seed)  # a missing MLM head is initialised at load time: make it reproducible
    model, tokenizer, new_head = load_masked_lm(folder)
    from ctxext.encode import _model_max_length

    limit = _model_max_length(folder.config, tokenizer)
    max_len = options.max_len or min(512, limit)
    options = dataclasses.replace(options, max_len=max_len)  # the manifest records the length trained at
    if max_len > limit:
        raise InvalidArgument(f"--max-len {max_len} exceeds the model's {limit} positions")
    data_set = mlm_data(tokenizer, files, max_len, options.mask, options.eval_fraction)
    trainer = run.train(
        model,
        tokenizer,
        MaskingCollator(tokenizer, options.mask),
        PackedDataset(data_set.train_sequences, settings.seed),
        settings,
        eval_dataset=data_set.eval_dataset,
    )
    final_eval = trainer.evaluate() if data_set.eval_dataset is not None else {}
    history = run.history()
    record = _mlm_record(run, settings, history, options.mask, max_len, data_set, files, new_head, final_eval)
    recorded = {
        "checkpoint": str(checkpoint),
        "data": [str(p) for p in files],
        **{key: getattr(options, key) for key in RECORDED_OPTIONS},
        **vars(settings),
    }
    path, manifest = run.write(
        lambda: write_trained_model(
            model, folder, run.out, source, record, command="mlm", options=recorded, run_options=run.options
        )
    )
    return MlmResult(path, manifest, history, run.global_step)


def _mlm_record(
    run: TrainingRun,
    settings: TrainSettings,
    history: dict[str, Any],
    mask: float,
    max_len: int,
    data_set: MlmData,
    files: Sequence[Path],
    new_head: list[str],
    final_eval: dict[str, float],
) -> OperationRecord:
    record = OperationRecord(
        "mlm",
        parameters={
            "mask": mask,
            "max_len": max_len,
            **run.parameters(settings, history),
            "train_sequences": len(data_set.train_sequences),
            "held_out_sequences": len(data_set.held_sequences),
            "documents": data_set.documents,
            "data_files_sha256": {str(path): file_sha256(path) for path in files},
            "newly_initialised": new_head,
        },
    )
    if final_eval:
        record.checks.append(
            Check(
                "held_out_mlm_loss",
                float(final_eval["eval_loss"]),
                detail=f"masked-LM loss on {len(data_set.held_sequences)} held-out sequences, fixed masks",
            )
        )
    if new_head:
        record.notes.append(
            f"the checkpoint had no weights for {len(new_head)} tensors of the masked-LM class "
            "(no MLM head); they started from the family's init"
        )
    return record
