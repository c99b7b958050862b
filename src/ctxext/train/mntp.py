"""Masked next-token prediction (``ctxext mntp``), LLM2Vec's adaptation of a flipped decoder, a stage of
:class:`~ctxext.train.runner.TrainingRun`.

A flipped model attends both ways, so every hidden state it was trained on has changed. MNTP re-adapts it
before any task: tokens are masked as in BERT (``mlm.mask_tokens``), and the masked token at position i is
predicted from the hidden state at i - 1 through the tied input embeddings, the way the causal model
predicted its next token (so its LM head is reused, nothing is initialised). Only the backbone trains; a
QA head of the folder stays as it is, and the folder is written back in the same form, with the adaptation
recorded in its manifest. With ``lora_rank`` only LoRA adapters on the attention and MLP projections train
(peft, as LLM2Vec does, to keep memory low); they are merged into the weights before writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ctxext.data.sources import data_files
from ctxext.errors import InvalidArgument, remote_code_refusal
from ctxext.io import ModelFolder, file_sha256, open_model
from ctxext.manifest import OperationRecord, recorded_operations
from ctxext.train.lora import train_with_lora
from ctxext.train.mlm import MaskingCollator, PackedDataset, mlm_data
from ctxext.train.runner import RunOptions, TrainingResult, TrainingRun, TrainSettings, write_trained_model

MASK_STAND_INS = ("<mask>", "[MASK]", "<unused0>", "_")
"""Decoders have no mask token: the first of these the vocabulary holds stands in (LLM2Vec uses ``_``)."""


HEADS = ("qa_outputs.",)
"""Tensors of a head on the backbone (``flip --head qa``): MNTP leaves them as they are."""

"""The projections LoRA adapts (LLM2Vec's choice), named alike in every decoder family ``flip`` reads."""


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


class MntpResult(TrainingResult):
    title = "mntp"

    def stage_summary(self) -> dict[str, Any]:
        return {"train_sequences": self.parameters.get("train_sequences"), "mask_token": self.parameters.get("mask")}


def train_mntp(
    checkpoint: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    *,
    mask: float = 0.2,
    max_len: int = 128,
    lora_rank: int = 0,
    settings: TrainSettings | None = None,
    revision: str | None = None,
    run_options: RunOptions | None = None,
) -> MntpResult:
    """MNTP of a flipped model on local text packed to ``max_len`` tokens; the output loads as the input did.
    ``lora_rank`` > 0 trains LoRA adapters of that rank instead of every backbone weight, merged on writing."""
    settings = settings or TrainSettings(learning_rate=5e-5)
    if not 0.0 < mask < 1.0:
        raise InvalidArgument(f"--mask {mask} must be between 0 and 1")
    source, folder = open_model(checkpoint, revision=revision)
    files = data_files(data)
    run = TrainingRun(out, run_options, protect=[source.path, *files])
    model, tokenizer = load_flipped(folder)
    mask_id = mask_token_id(tokenizer)
    data_set = mlm_data(tokenizer, files, max_len, mask, 0.0)
    collator = MaskingCollator(tokenizer, mask, mask_id=mask_id)
    model, lora = train_with_lora(
        model,
        lora_rank,
        lambda trained: run.train(
            MntpModel(trained), tokenizer, collator, PackedDataset(data_set.train_sequences, settings.seed), settings
        ),
    )
    history = run.history()
    record = OperationRecord(
        "mntp",
        parameters={
            "mask": mask,
            "mask_token": tokenizer.convert_ids_to_tokens(mask_id),
            "max_len": max_len,
            **run.parameters(settings, history),
            "train_sequences": len(data_set.train_sequences),
            "lora": {**lora, "merged": True} if lora else None,
            "data_files_sha256": {str(path): file_sha256(path) for path in files},
        },
        notes=[
            "masked next-token prediction (LLM2Vec): "
            + ("LoRA adapters of the backbone trained, then merged" if lora else "the backbone trained")
            + ", any head left as it was"
        ],
    )
    options = {"checkpoint": str(checkpoint), "data": [str(p) for p in files], "mask": mask, "max_len": max_len}
    options["lora_rank"] = lora_rank
    path, manifest = run.write(
        lambda: write_trained_model(
            model,
            folder,
            run.out,
            source,
            record,
            command="mntp",
            options={**options, **vars(settings)},
            run_options=run.options,
            config_updates=folder.config,
        )
    )
    return MntpResult(path, manifest, history, run.global_step)
