"""The chunk-level objective (``finetune --objective late-chunk``): train a long model for late chunking.

Each document of the batch is read in one pass; its token states are mean-pooled per ``chunk`` content tokens
(special tokens belong to no chunk), exactly as ``Encoder.late_chunks`` pools them at inference. A query's
target is the chunk of its own document where its section starts (the query's ``heading`` in the
document's text; a title query's target is the first chunk); every other chunk of the batch, of its own
document and of the others (hard negatives included), is a negative. Loss: InfoNCE over cosine / temperature.

Where a query's section starts past the tokens a document keeps (``max_len``), the query has no target and
adds nothing to the loss. Chunks are counted per process, so under DDP each process contrasts its own batch's
chunks (their number differs between processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ctxext.data.formats import section_start
from ctxext.train.contrastive import ContrastiveModel, TripletCollator

__all__ = ["ChunkContrastiveModel", "ChunkTripletCollator", "chunk_means"]

NO_TARGET = -100
"""The label of a query whose section is not among the kept tokens (cross-entropy's ignore index)."""


@dataclass
class ChunkTripletCollator(TripletCollator):
    """:class:`TripletCollator`, and for each query the chunk of its positive its section starts in
    (``target_chunk``; ``NO_TARGET`` where that is past ``max_len``) and which document tokens are content."""

    chunk: int = 256
    document_marks: tuple[str, ...] = ("offsets_mapping", "special_tokens_mask")

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch, marked = self.collate(examples)
        content = marked["attention_mask"].bool() & ~marked["special_tokens_mask"].bool()
        targets = []
        for row, example in enumerate(examples):
            start = section_start(example["positive"], example.get("heading"))
            ends = marked["offset_mapping"][row][:, 1].tolist()
            kept = torch.nonzero(content[row]).flatten().tolist()
            reached = next((rank for rank, at in enumerate(kept) if start is not None and ends[at] > start), None)
            targets.append(NO_TARGET if reached is None else reached // self.chunk)
        batch["document_content_mask"] = content
        batch["target_chunk"] = torch.tensor(targets)
        return batch


class ChunkContrastiveModel(ContrastiveModel):
    """InfoNCE of each query against every chunk of the batch's documents, pooled from one pass each."""

    def __init__(self, backbone: Any, pooling: str, temperature: float = 0.05, chunk: int = 256):
        super().__init__(backbone, pooling, temperature)
        self.chunk = chunk

    def forward(  # type: ignore[override]
        self,
        query_input_ids: Any,
        query_attention_mask: Any,
        document_input_ids: Any,
        document_attention_mask: Any,
        document_content_mask: Any,
        target_chunk: Any,
        document_position_ids: Any = None,
    ) -> dict[str, Any]:
        import torch

        from ctxext.block_sparse import attention_ran

        queries = self.embed(query_input_ids, query_attention_mask)
        extra = {} if document_position_ids is None else {"position_ids": document_position_ids}
        states = self.backbone(input_ids=document_input_ids, attention_mask=document_attention_mask, **extra)
        if self.attention_type is not None:
            self.attention_runs[attention_ran(self.backbone) or "original_full"] += 1
        chunks, first_chunk = chunk_means(states.last_hidden_state, document_content_mask, self.chunk)
        chunks = torch.nn.functional.normalize(chunks, dim=-1)
        logits = queries @ chunks.T / self.temperature
        count = first_chunk[1 : len(queries) + 1] - first_chunk[: len(queries)]
        valid = (target_chunk >= 0) & (target_chunk < count)
        labels = torch.where(valid, first_chunk[: len(queries)] + target_chunk.clamp(min=0), NO_TARGET)
        if not bool(valid.any()):
            return {"loss": logits.sum() * 0.0}
        return {"loss": torch.nn.functional.cross_entropy(logits, labels, ignore_index=NO_TARGET)}


def chunk_means(states: Any, content: Any, chunk: int) -> tuple[Any, Any]:
    """The mean token state of each ``chunk`` content tokens of each sequence (a sequence without content: one
    zero chunk), all sequences' chunks in order, and where each sequence's chunks start (one more entry: the
    total)."""
    import torch

    ranks = content.long().cumsum(1) - 1
    counts = ((content.sum(1) + chunk - 1) // chunk).clamp(min=1)
    first = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
    owner = (first[:-1, None] + ranks.clamp(min=0) // chunk)[content]
    sums = states.new_zeros(int(first[-1]), states.shape[-1]).index_add(0, owner, states[content])
    sizes = states.new_zeros(int(first[-1])).index_add(0, owner, states.new_ones(len(owner)))
    return sums / sizes.clamp(min=1)[:, None], first
