"""Training stages on the Hugging Face Trainer: masked-LM (:mod:`.mlm`), distillation of a teacher's sentence
embeddings (:mod:`.distill`) and contrastive fine-tuning on triplets (:mod:`.finetune`).

Everything runs through the Trainer, so ``accelerate launch`` and ``torchrun`` run each stage unchanged;
only the main process writes the output.
"""

from __future__ import annotations

from ctxext.data.pydocs import python_docstrings
from ctxext.train.mlm import (
    TEXT_SUFFIXES,
    ListDataset,
    MaskingCollator,
    MlmResult,
    PackedDataset,
    TrainSettings,
    _unwrap,
    build_trainer,
    data_files,
    latest_checkpoint,
    load_masked_lm,
    loss_history,
    masked_held_out,
    mlm_trainer,
    pack_documents,
    read_documents,
    split_held_out,
    train_mlm,
    training_arguments,
    write_trained_model,
)

__all__ = [
    "TEXT_SUFFIXES", "ListDataset", "MaskingCollator", "MlmResult", "PackedDataset", "TrainSettings", "_unwrap",
    "build_trainer",
    "data_files", "latest_checkpoint", "load_masked_lm", "loss_history", "masked_held_out", "mlm_trainer",
    "pack_documents", "python_docstrings", "read_documents", "split_held_out", "train_mlm",
    "training_arguments", "write_trained_model",
]
