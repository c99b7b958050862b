"""The contrastive models and collators of fine-tuning: (query, positive, negative) triplets tokenized, with
PoSE position ids on request, and InfoNCE over cosine / temperature with in-batch and hard negatives (those of
every process under DDP). ``ctxext.train.finetune`` is the stage that trains them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ctxext.train.embedding import EmbeddingModel
from ctxext.train.gradient_cache import cached_embeddings

# ----------------------------------------------------------------------------- data


def skipped_position_ids(lengths: Sequence[int], width: int, span: int, offset: int = 0) -> Any:
    """Position ids for documents of ``lengths`` tokens (padded to ``width``) that reach up to ``span``:
    positional skip-wise training (PoSE, Zhu et al. 2023). Each document is cut at a random point after its
    first token; the second part's ids jump ahead by a random skip, so that over many steps every position
    below ``span`` is trained while the inputs stay short. Padding ids continue, capped at the span (padding
    is masked). ``offset``: the first position id (RoBERTa-style tables start after their reserved rows)."""
    import torch

    rows = []
    for length in lengths:
        ids = torch.arange(width)
        if 1 < length < span:
            cut = int(torch.randint(1, length, ()))
            ids[cut:] += int(torch.randint(0, span - length + 1, ()))
        rows.append(ids.clamp(max=span - 1))
    return torch.stack(rows) + offset


@dataclass
class TripletCollator:
    """Tokenizes a batch of triplets: queries up to ``query_max_len``, positives then negatives up to
    ``max_len`` tokens (padded to the longest in the batch). With ``position_span``, document position ids
    spread over that many positions (``skipped_position_ids``)."""

    tokenizer: Any
    max_len: int
    query_max_len: int = 128
    position_span: int | None = None
    position_offset: int = 0

    document_marks: tuple[str, ...] = ()
    """More of the tokenizer's per-token outputs for the documents (``offsets_mapping``, ...), kept in
    :meth:`collate`'s encoding for a subclass."""

    def __call__(self, examples: list[dict[str, str]]) -> dict[str, Any]:
        return self.collate(examples)[0]

    def collate(self, examples: list[dict[str, str]]) -> tuple[dict[str, Any], Any]:
        """The batch, and the documents' encoding (positives then negatives) it was made from."""
        queries = self.tokenizer(
            [e["query"] for e in examples],
            truncation=True,
            max_length=self.query_max_len,
            padding=True,
            return_tensors="pt",
        )
        documents = [e["positive"] for e in examples] + [e["negative"] for e in examples]
        marks = {f"return_{mark}": True for mark in self.document_marks}
        docs = self.tokenizer(
            documents, truncation=True, max_length=self.max_len, padding=True, return_tensors="pt", **marks
        )
        batch = {
            "query_input_ids": queries["input_ids"],
            "query_attention_mask": queries["attention_mask"],
            "document_input_ids": docs["input_ids"],
            "document_attention_mask": docs["attention_mask"],
        }
        if self.position_span:
            batch["document_position_ids"] = skipped_position_ids(
                docs["attention_mask"].sum(dim=1).tolist(),
                docs["input_ids"].shape[1],
                self.position_span,
                self.position_offset,
            )
        return batch, docs


class ContrastiveModel(EmbeddingModel):
    """InfoNCE with in-batch and hard negatives; ``forward`` returns ``{"loss": ...}`` for the Trainer.
    ``cache_chunk``: embed that many texts at a time with gradient caching (:mod:`.gradient_cache`), so the
    batch, and with it the number of candidates each query sees, is not bounded by memory."""

    def __init__(self, backbone: Any, pooling: str, temperature: float = 0.05, cache_chunk: int | None = None):
        super().__init__(backbone, pooling, normalize=True)
        self.temperature = temperature
        self.cache_chunk = cache_chunk

    def forward(
        self,
        query_input_ids: Any,
        query_attention_mask: Any,
        document_input_ids: Any,
        document_attention_mask: Any,
        document_position_ids: Any = None,
    ) -> dict[str, Any]:
        import torch

        if self.cache_chunk:
            queries = cached_embeddings(self.embed, self.cache_chunk, query_input_ids, query_attention_mask)
            documents = cached_embeddings(
                self._embed_documents,
                self.cache_chunk,
                document_input_ids,
                document_attention_mask,
                document_position_ids,
            )
        else:
            queries = self.embed(query_input_ids, query_attention_mask)
            documents = self._embed_documents(document_input_ids, document_attention_mask, document_position_ids)
        documents, first = every_process_rows(documents)
        logits = queries @ documents.T / self.temperature
        labels = torch.arange(queries.shape[0], device=logits.device) + first
        return {"loss": torch.nn.functional.cross_entropy(logits, labels)}

    def _embed_documents(self, input_ids: Any, attention_mask: Any, position_ids: Any) -> Any:
        import torch

        # counted once per batch: gradient caching embeds each chunk again, with gradients, in the backward pass
        record = not (self.cache_chunk and torch.is_grad_enabled())
        return self.embed(input_ids, attention_mask, record=record, position_ids=position_ids)


def every_process_rows(local: Any) -> tuple[Any, int]:
    """``local`` rows of every process, concatenated in rank order (this process's keep their gradients, and
    the gradients the others' losses give them come back through the gather), and where this process's rows
    start; ``local`` itself outside DDP. Under DDP's gradient averaging, the step is then that of one process
    holding the whole global batch."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    from sentence_transformers.util import all_gather_with_grad

    return all_gather_with_grad(local), dist.get_rank() * local.shape[0]
