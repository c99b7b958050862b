"""The chunk-level objective (`finetune --objective late-chunk`): chunks pooled in training exactly as late
chunking pools them at inference, and each query's target the chunk where its section starts."""

from __future__ import annotations

import numpy as np
import pytest

TEXTS = ["Intro\n\nsome words here about attention " * 5, "Usage\n\nother text " * 3]


@pytest.fixture(scope="module")
def encoder():
    from ctxext.encode import load_encoder

    return load_encoder("all-MiniLM-L6-v2")


def test_training_chunks_are_the_late_chunks_of_inference(encoder):
    import torch

    from ctxext.train.chunk_objective import chunk_means

    expected = encoder.late_chunks(TEXTS, chunk=8, batch_size=2)
    batch = encoder.tokenizer(TEXTS, padding=True, return_tensors="pt", return_special_tokens_mask=True)
    with torch.no_grad():
        states = encoder.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    content = batch["attention_mask"].bool() & ~batch["special_tokens_mask"].bool()
    means, first = chunk_means(states, content, 8)
    np.testing.assert_allclose(torch.nn.functional.normalize(means, dim=-1).numpy(), expected.vectors, atol=1e-6)
    assert first.tolist() == [0, *np.cumsum(np.bincount(expected.documents)).tolist()]


def test_a_query_targets_the_chunk_its_section_starts_in_or_none_past_the_kept_tokens(encoder):
    from ctxext.train.chunk_objective import NO_TARGET, ChunkTripletCollator, section_start

    collator = ChunkTripletCollator(encoder.tokenizer, 64, chunk=8)
    late = TEXTS[0].find("attention", 60)
    examples = [
        {"query": "q", "positive": TEXTS[0], "negative": TEXTS[1], "section_start": late},
        {"query": "q", "positive": TEXTS[1], "negative": TEXTS[0], "section_start": section_start(TEXTS[1], None)},
        {"query": "q", "positive": TEXTS[0] * 9, "negative": TEXTS[1], "section_start": len(TEXTS[0]) * 8},
        {"query": "q", "positive": TEXTS[1], "negative": TEXTS[0], "section_start": section_start(TEXTS[1], "Gone")},
    ]
    targets = collator(examples)["target_chunk"].tolist()
    ids = encoder.tokenizer(TEXTS[0])["input_ids"]
    chunk = encoder.tokenizer.convert_ids_to_tokens(ids[1 + 8 * targets[0] : 1 + 8 * targets[0] + 8])
    assert "attention" in chunk and targets[1:] == [0, NO_TARGET, NO_TARGET]
