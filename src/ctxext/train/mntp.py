"""Masked next-token prediction (``ctxext mntp``), LLM2Vec's adaptation of a flipped decoder, a stage of
:class:`~ctxext.train.runner.TrainingRun`.

A flipped model attends both ways, so every hidden state it was trained on has changed. MNTP re-adapts it
before any task: tokens are masked as in BERT (``mlm.mask_tokens``), and the masked token at position i is
predicted from the hidden state at i - 1 through the tied input embeddings, the way the causal model
predicted its next token (so its LM head is reused, nothing is initialised). Only the backbone trains; a
QA head of the folder stays as it is, and the folder is written back in the same form, with the adaptation
recorded in its manifest. With ``lora_rank`` only LoRA adapters on the attention and MLP projections train
(peft, as LLM2Vec does, to keep memory low); they are merged into the weights before writing.

:func:`train_mntp_in_memory` is the stage's core: MNTP of an in-memory model on texts, writing nothing
(``train_mntp`` runs it in its run; benchmarks/flip.py alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ctxext.data.sources import data_files, read_documents
from ctxext.errors import InvalidArgument, remote_code_refusal
from ctxext.io import ModelFolder, file_sha256, open_model
from ctxext.manifest import OperationRecord, recorded_operations
from ctxext.options import with_fields
from ctxext.train.lora import train_with_lora
from ctxext.train.mlm import MaskingCollator, PackedDataset, pack_documents
from ctxext.train.runner import (
    InMemoryTraining,
    RunOptions,
    TrainFn,
    TrainingResult,
    TrainingRun,
    TrainSettings,
    train_without_output,
    write_trained_model,
)

MASK_STAND_INS = ("<mask>", "[MASK]", "<unused0>", "_")
"""Decoders have no mask token: the first of these the vocabulary holds stands in (LLM2Vec uses ``_``)."""


HEADS = ("qa_outputs.",)
"""Tensors of a head on the backbone (``flip --head qa``): MNTP leaves them as they are."""


def mntp_loss(logits: Any, labels: Any) -> Any:
    """Cross-entropy of the masked tokens, each predicted from the position before it: ``logits[:, i - 1]``
    against ``labels[:, i]`` (labels are -100 where nothing is masked)."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    if not bool((targets != -100).any()):  # cross-entropy over nothing is NaN, which would spoil the weights
        return shifted.sum() * 0.0
    return torch.nn.functional.cross_entropy(shifted.float(), targets, ignore_index=-100)


def mask_token_id(tokenizer: Any) -> int:
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    vocabulary = tokenizer.get_vocab()
    for token in MASK_STAND_INS:
        if token in vocabulary:
            return int(vocabulary[token])
    raise InvalidArgument(f"the tokenizer has no mask token and none of {', '.join(MASK_STAND_INS)} to stand in")


class MntpModel(torch.nn.Module):
    """The loaded folder's model with an MNTP loss: logits are the backbone's hidden states times the input
    embeddings (Gemma 2's final soft-capping kept), as the causal model's tied LM head computed them."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model
        self.config = model.config
        if not hasattr(model, "peft_config"):  # LoRA has frozen all but its adapters already
            for name, parameter in model.named_parameters():  # a QA head stays as it is
                parameter.requires_grad_(not name.startswith(HEADS))

    def forward(self, input_ids: Any, attention_mask: Any = None, labels: Any = None) -> dict[str, Any]:
        backbone = getattr(self.model, "encode", self.model)  # a QA class is its backbone plus a head
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = hidden @ self.model.get_input_embeddings().weight.T
        cap = getattr(self.config, "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return {"loss": mntp_loss(logits, labels) if labels is not None else None, "logits": logits}


def load_flipped(folder: ModelFolder) -> tuple[Any, Any]:
    """A folder written by ``ctxext flip`` (encoder or QA head) as its own class, and its tokenizer."""
    from transformers import AutoModel, AutoModelForQuestionAnswering, AutoTokenizer

    from ctxext.flip import register

    register()
    architectures = folder.config.get("architectures") or []
    operations = [op.get("name") for op in recorded_operations(folder.root)]
    if "flip_to_bidirectional" not in operations and "mntp" not in operations:
        raise InvalidArgument(f"{folder.root} is not a flipped model: run `ctxext flip` on the causal model first")
    cls = AutoModelForQuestionAnswering if any("QuestionAnswering" in a for a in architectures) else AutoModel
    try:
        model = cls.from_pretrained(folder.model_dir, trust_remote_code=False)
    except ValueError as error:
        raise remote_code_refusal(error) or InvalidArgument(f"{folder.root}: {error}") from None
    return model, AutoTokenizer.from_pretrained(folder.model_dir, trust_remote_code=False)


@dataclass(frozen=True)
class MntpOptions:
    """What MNTP masks and trains (the CLI builds it from its options)."""

    mask: float = 0.2
    """Share of the tokens masked (LLM2Vec: 0.2)."""
    max_len: int = 128
    """Tokens per packed sequence."""
    lora_rank: int = 0
    """> 0: LoRA adapters of this rank train instead of every backbone weight, merged after."""

    def check(self) -> None:
        if not 0.0 < self.mask < 1.0:
            raise InvalidArgument(f"--mask {self.mask} must be between 0 and 1")
        if self.lora_rank < 0:
            raise InvalidArgument(f"--lora-rank {self.lora_rank} must be 0 (off) or more")


@dataclass
class MntpTraining(InMemoryTraining):
    """A flipped model adapted in memory, the token masked positions became and how many packed sequences it
    trained on."""

    mask_id: int
    train_sequences: int


def train_mntp_in_memory(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    settings: TrainSettings | None = None,
    options: MntpOptions | None = None,
    *,
    train: TrainFn = train_without_output,
    **fields: Any,
) -> MntpTraining:
    """MNTP of an in-memory flipped model (encoder or QA class, as :func:`load_flipped` gives it) on ``texts``
    packed to ``options.max_len`` tokens; nothing is written. Its parameters train afterwards as they did before
    (MNTP leaves a QA head alone, LoRA freezes the weights it adapts). ``train`` runs the Trainer:
    :func:`train_without_output` (no checkpoints) unless given, :meth:`TrainingRun.train` in :func:`train_mntp`.
    ``fields``: :class:`MntpOptions` fields given as keywords (over ``options``)."""
    options = with_fields(MntpOptions, options, fields, "train_mntp_in_memory")
    options.check()
    settings = settings or TrainSettings(learning_rate=5e-5)
    mask_id = mask_token_id(tokenizer)
    sequences = pack_documents(tokenizer, texts, options.max_len)
    if not sequences:
        raise InvalidArgument(f"the data holds fewer than {options.max_len} tokens: nothing to train on")
    collator = MaskingCollator(tokenizer, options.mask, mask_id=mask_id)
    trains = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    trainers = []
    model, lora = train_with_lora(
        model,
        options.lora_rank,
        lambda trained: trainers.append(
            train(MntpModel(trained), tokenizer, collator, PackedDataset(sequences, settings.seed), settings)
        ),
    )
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trains.get(name, parameter.requires_grad))
    return MntpTraining(model, lora, trainers[-1], mask_id, len(sequences))


class MntpResult(TrainingResult):
    title = "mntp"

    def stage_summary(self) -> dict[str, Any]:
        return {"train_sequences": self.parameters.get("train_sequences"), "mask_token": self.parameters.get("mask")}


def train_mntp(
    checkpoint: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    options: MntpOptions | None = None,
    *,
    settings: TrainSettings | None = None,
    revision: str | None = None,
    run_options: RunOptions | None = None,
    **fields: Any,
) -> MntpResult:
    """MNTP of a flipped model on local text (:func:`train_mntp_in_memory` in a :class:`TrainingRun`); the output
    loads as the input did. ``options`` (:class:`MntpOptions`): the share masked, the packed length, LoRA
    (``lora_rank`` > 0 trains adapters of that rank instead of every backbone weight, merged on writing);
    ``fields``: its fields as keywords (over ``options``)."""
    from transformers import set_seed

    options = with_fields(MntpOptions, options, fields, "train_mntp")
    options.check()
    settings = settings or TrainSettings(learning_rate=5e-5)
    source, folder = open_model(checkpoint, revision=revision)
    files = data_files(data)
    run = TrainingRun(out, run_options, protect=[source.path, *files])
    set_seed(settings.seed)  # LoRA adapters start at random: the seed makes them, and so the run, reproducible
    model, tokenizer = load_flipped(folder)
    adapted = train_mntp_in_memory(model, tokenizer, read_documents(files), settings, options, train=run.train)
    history = run.history()
    record = OperationRecord(
        "mntp",
        parameters={
            "mask": options.mask,
            "mask_token": tokenizer.convert_ids_to_tokens(adapted.mask_id),
            "max_len": options.max_len,
            **run.parameters(settings, history),
            "train_sequences": adapted.train_sequences,
            "lora": {**adapted.lora, "merged": True} if adapted.lora else None,
            "data_files_sha256": {str(path): file_sha256(path) for path in files},
        },
        notes=[
            "masked next-token prediction (LLM2Vec): "
            + ("LoRA adapters of the backbone trained, then merged" if adapted.lora else "the backbone trained")
            + ", any head left as it was"
        ],
    )
    recorded = {
        "checkpoint": str(checkpoint),
        "data": [str(p) for p in files],
        **{key: getattr(options, key) for key in ("mask", "max_len", "lora_rank")},
        **vars(settings),
    }
    path, manifest = run.write(
        lambda: write_trained_model(
            adapted.model,
            folder,
            run.out,
            source,
            record,
            command="mntp",
            options=recorded,
            run_options=run.options,
            config_updates=folder.config,
        )
    )
    return MntpResult(path, manifest, history, run.global_step)
