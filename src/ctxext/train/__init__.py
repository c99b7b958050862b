"""Training stages on the Hugging Face Trainer, all run by one :class:`~ctxext.train.runner.TrainingRun`:
masked-LM (:mod:`.mlm`), distillation of a teacher's sentence embeddings (:mod:`.distill`) and contrastive
fine-tuning on triplets (:mod:`.finetune`).

Everything runs through the Trainer, so ``accelerate launch`` and ``torchrun`` run each stage unchanged;
only the main process writes the output.
"""

from __future__ import annotations

from ctxext.train.mlm import train_mlm
from ctxext.train.runner import RunOptions, TrainingResult, TrainingRun, TrainSettings

__all__ = ["RunOptions", "TrainSettings", "TrainingResult", "TrainingRun", "train_mlm"]
