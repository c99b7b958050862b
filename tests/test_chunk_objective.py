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
    from ctxext.train.chunk_objective import NO_TARGET, ChunkTripletCollator

    collator = ChunkTripletCollator(encoder.tokenizer, 64, chunk=8)
    examples = [
        {"query": "q", "positive": TEXTS[0], "negative": TEXTS[1], "heading": "attention"},
        {"query": "q", "positive": TEXTS[1], "negative": TEXTS[0], "heading": None},
        {"query": "q", "positive": TEXTS[0] * 9 + "Tail", "negative": TEXTS[1], "heading": "Tail"},
        {"query": "q", "positive": TEXTS[1], "negative": TEXTS[0], "heading": "Gone"},
    ]
    targets = collator(examples)["target_chunk"].tolist()
    ids = encoder.tokenizer(TEXTS[0])["input_ids"]
    chunk = encoder.tokenizer.convert_ids_to_tokens(ids[1 + 8 * targets[0] : 1 + 8 * targets[0] + 8])
    assert "attention" in chunk and targets[1:] == [0, NO_TARGET, NO_TARGET]


def test_finetune_trains_for_late_chunking_and_records_the_objective(tmp_path, tiny_models):
    """Each query's section sits at a different depth of its document; the chunk objective trains on it and the
    manifest says so."""
    import json
    import math

    import tiny
    from ctxext.train import TrainSettings
    from ctxext.train.finetune import FinetuneOptions, finetune

    words = tiny.WORDS
    lines = []
    for index in range(6):
        filler = " ".join(words[(index + k) % 20 + 20] for k in range(12 * index))
        section = " ".join(words[index * 3 : index * 3 + 3] * 4)
        positive = f"{filler}\n\nSection{index}\n\n{section}"
        lines.append(
            {
                "query": {
                    "text": " ".join(words[index * 3 : index * 3 + 3]),
                    "kind": "section",
                    "heading": f"Section{index}",
                },
                "positive": {"doc_id": f"p{index}", "title": None, "abstract": positive},
                "negative": {"doc_id": f"n{index}", "title": None, "abstract": filler or "empty"},
            }
        )
    data = tmp_path / "t.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    settings = TrainSettings(
        steps=3, batch_size=3, learning_rate=1e-3, save_every=100, logging_every=1, progress_bars=False
    )
    result = finetune(
        tiny_models("bert"), [data], tmp_path / "out", FinetuneOptions(max_len=64, late_chunk=8), settings=settings
    )
    operation = result.manifest["operations"][0]["parameters"]
    assert result.manifest["options"]["late_chunk"] == 8 and "8-token chunk" in operation["loss"]
    losses = [loss for _, loss in result.history["train"]]
    assert len(losses) == 3 and all(math.isfinite(loss) and loss > 0 for loss in losses)
