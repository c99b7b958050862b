"""Pieces shared by the embedding stages (distill, finetune): a backbone with its pooling as one module the
Trainer can train, BigBird on ctxext's block-sparse attention, and retrieval scoring during training."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctxext import sentence_folder
from ctxext.compat import transformers_warnings_off
from ctxext.errors import InvalidArgument, remote_code_refusal
from ctxext.io import ModelFolder

EMBEDDING_MODE_KEYS = (*sentence_folder.CLASSIC_MODE_KEYS, sentence_folder.MODE_KEY[sentence_folder.Pooling.last])
"""The pooling flags the embedding stages write: a trained model pools by cls, mean, max or the last token."""


def load_backbone(folder: ModelFolder) -> Any:
    """The checkpoint's base model (AutoModel) and tokenizer; heads the checkpoint holds are ignored."""
    from transformers import AutoModel, AutoTokenizer

    try:
        with transformers_warnings_off():
            model = AutoModel.from_pretrained(folder.model_dir, trust_remote_code=False)
    except (ValueError, OSError) as error:
        raise remote_code_refusal(error) or InvalidArgument(
            f"{folder.root} does not load with transformers' AutoModel: {error}"
        ) from None
    return model, AutoTokenizer.from_pretrained(folder.tokenizer_dir, trust_remote_code=False)


def check_max_len(folder: ModelFolder, tokenizer: Any, max_len: int, what: str = "model") -> int:
    """The model's number of positions, after refusing a ``--max-len`` beyond it."""
    from ctxext.encode import _model_max_length

    limit = _model_max_length(folder.config, tokenizer)
    if max_len > limit:
        raise InvalidArgument(f"--max-len {max_len} exceeds the {what}'s {limit} positions")
    return limit


def _module_base():
    import torch

    return torch.nn.Module


class EmbeddingModel(_module_base()):  # type: ignore[misc]  # torch loads on first use, not at import
    """A transformers backbone plus pooling (and L2 normalisation): one vector per text.

    A block-sparse BigBird runs ctxext's fixed-pattern attention (``ctxext.block_sparse``), the one
    ``embed`` and ``evaluate`` use, so training and inference attend alike; ``attention_runs`` counts what
    each recorded call ran (full attention for inputs too short for block-sparse)."""

    def __init__(self, backbone: Any, pooling: str, normalize: bool):
        from ctxext.block_sparse import use_block_sparse

        super().__init__()
        self.backbone = use_block_sparse(backbone)
        self.pooling = pooling
        self.normalize = normalize
        config = backbone.config
        self.attention_type = getattr(config, "attention_type", None) if config.model_type == "big_bird" else None
        self.attention_runs: Counter[str] = Counter()

    def embed(
        self,
        input_ids: Any,
        attention_mask: Any,
        *,
        normalize: bool | None = None,
        record: bool = False,
        position_ids: Any = None,
    ) -> Any:
        """Pooled embeddings; ``record`` counts which attention ran."""
        import torch

        from ctxext.block_sparse import attention_ran

        extra = {} if position_ids is None else {"position_ids": position_ids}
        output = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra)
        if self.attention_type is not None and record:
            self.attention_runs[attention_ran(self.backbone) or "original_full"] += 1
        pooled = sentence_folder.pool(output.last_hidden_state, attention_mask, self.pooling)
        if self.normalize if normalize is None else normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return pooled

    def finish_training(self) -> None:
        """Ready to be written and evaluated: no gradient checkpointing, eval mode."""
        from ctxext.compat import checkpointing_disable

        checkpointing_disable(self.backbone)
        self.eval()


def encode_texts(
    model: EmbeddingModel, tokenizer: Any, texts: Sequence[str], max_len: int, batch_size: int = 16
) -> np.ndarray:
    """Embeddings of ``texts`` with the model in eval mode (restores train mode after), longest first."""
    import torch

    from ctxext.encode import truncated_input_ids

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    encoded = truncated_input_ids(tokenizer, texts, max_len)
    order = np.argsort([-len(ids) for ids in encoded], kind="stable")
    rows: list[Any] = [None] * len(texts)
    try:
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in indices]}, return_tensors="pt")
            with torch.no_grad():
                pooled = model.embed(batch["input_ids"].to(device), batch["attention_mask"].to(device), normalize=True)
            for row, index in zip(pooled.float().cpu().numpy(), indices, strict=True):
                rows[index] = row
    finally:
        model.train(was_training)
    return np.stack(rows) if rows else np.zeros((0, model.backbone.config.hidden_size), np.float32)


def retrieval_callbacks(
    model: EmbeddingModel,
    tokenizer: Any,
    eval_beir: str | Path | None,
    every: int,
    max_len: int,
    query_max_len: int = 128,
) -> list[Any]:
    """The Trainer callbacks that evaluate on the BEIR folder ``eval_beir`` during training: none without one."""
    if not eval_beir:
        return []
    from ctxext.evaluate import beir_set

    return [retrieval_callback(model, tokenizer, beir_set(Path(eval_beir)), every, max_len, query_max_len)]


def retrieval_callback(
    model: EmbeddingModel, tokenizer: Any, retrieval_set: Any, every: int, max_len: int, query_max_len: int = 128
):
    """A TrainerCallback that scores ``retrieval_set`` (Acc@1, nDCG@10) every ``every`` steps and at the end;
    the scores go into the Trainer's log history (``retrieval_ndcg_at_10``, ``retrieval_acc_at_1``)."""
    from transformers import TrainerCallback

    from ctxext.evaluate import accuracy_at_1, ndcg_at_k, similarity

    def score() -> dict[str, float]:
        queries = encode_texts(model, tokenizer, retrieval_set.queries, query_max_len)
        documents = encode_texts(model, tokenizer, retrieval_set.documents, max_len)
        scores = similarity(queries, documents)
        return {
            "retrieval_acc_at_1": accuracy_at_1(scores, retrieval_set.relevant),
            "retrieval_ndcg_at_10": ndcg_at_k(scores, retrieval_set.relevant),
        }

    class RetrievalEvaluation(TrainerCallback):
        def __init__(self) -> None:
            self.scores: list[dict[str, float]] = []

        def _run(self, state: Any) -> None:
            if not state.is_world_process_zero:
                return
            result = {"step": state.global_step, **score()}
            self.scores.append(result)
            state.log_history.append(dict(result))

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            if not any(entry["step"] == state.global_step for entry in self.scores):
                self._run(state)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if every and state.global_step % every == 0:
                self._run(state)

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if not self.scores or self.scores[-1]["step"] != state.global_step:
                self._run(state)

    return RetrievalEvaluation()


def sentence_transformers_files(pooling: str, dim: int, max_seq_length: int) -> dict[str, Any]:
    """modules.json and friends that make a plain transformers folder a sentence-transformers model: the
    classic pooling flags and the last token's (:func:`ctxext.sentence_folder.sentence_transformers_files`)."""
    return sentence_folder.sentence_transformers_files(
        pooling, dim, max_seq_length, mode_keys=EMBEDDING_MODE_KEYS, library_config=False
    )


def relative_to_model_dir(folder: ModelFolder, names: dict[str, Any]) -> dict[str, Any]:
    return {(Path(folder.relative_model_dir) / name).as_posix(): content for name, content in names.items()}
