"""ctxext's fixed-pattern block-sparse attention for BigBird: transformers' output where the patterns agree,
one pattern in training and inference, each row attended by its own length, nothing ever stuck in full
attention."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ctxext.block_sparse import attention_ran, random_blocks, sparse_threshold, use_block_sparse

BLOCK, RANDOM = 8, 2


def tiny_bigbird(layers: int = 2):
    from transformers import BigBirdConfig, BigBirdModel

    torch.manual_seed(0)
    config = BigBirdConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
        block_size=BLOCK,
        num_random_blocks=RANDOM,
        attention_type="block_sparse",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BigBirdModel(config).eval()


@pytest.fixture
def transformers_with_our_pattern(monkeypatch):
    """transformers' BigBird drawing ctxext's random blocks (its layer index is its ``seed``)."""
    from transformers.models.big_bird import modeling_big_bird

    def ours(self, from_seq_length, to_seq_length, from_block_size, to_block_size, num_heads, *args, **kwargs):
        return list(random_blocks(from_seq_length // from_block_size, RANDOM, num_heads, self.seed))

    monkeypatch.setattr(modeling_big_bird.BigBirdBlockSparseAttention, "_bigbird_block_rand_mask_with_head", ours)


def run(model, input_ids, attention_mask=None):
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def test_random_blocks_avoid_each_rows_window_and_the_global_blocks_and_repeat_exactly():
    blocks = 20
    pattern = random_blocks(blocks, 3, 4, seed=7)
    assert pattern.shape == (4, blocks - 2, 3)
    for row, chosen in enumerate(pattern.reshape(-1, blocks - 2, 3).transpose(1, 0, 2), start=1):
        assert not np.isin(chosen, [0, blocks - 1, row - 1, row, row + 1]).any()
        assert all(len(set(head)) == 3 for head in chosen)
    np.testing.assert_array_equal(pattern, random_blocks(blocks, 3, 4, seed=7))
    assert not np.array_equal(pattern, random_blocks(blocks, 3, 4, seed=8))


def test_equals_transformers_block_sparse_where_the_patterns_agree(transformers_with_our_pattern):
    theirs = tiny_bigbird()
    ours = use_block_sparse(copy.deepcopy(theirs))
    input_ids = torch.randint(5, 100, (2, 13 * BLOCK))  # one batch, every row as long: the same blocks
    expected = run(theirs, input_ids)
    assert theirs.attention_type == "block_sparse"
    torch.testing.assert_close(run(ours, input_ids), expected, rtol=0, atol=1e-5)
    assert attention_ran(ours) == "block_sparse"


def test_each_row_attends_as_it_would_alone(transformers_with_our_pattern):
    """transformers lays blocks over the padded batch, so a row's output depends on its neighbours; ctxext
    attends each row over its own blocks (full attention when it alone is short), as transformers does for
    the row alone."""
    theirs = tiny_bigbird()
    ours = use_block_sparse(copy.deepcopy(theirs))
    lengths = [25 * BLOCK, 150, 90, 40]
    input_ids = torch.randint(5, 100, (len(lengths), max(lengths)))
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    batched = run(ours, input_ids, mask)
    for row, length in enumerate(lengths):
        theirs.set_attention_type("block_sparse")
        alone = run(theirs, input_ids[row : row + 1, :length])[0]
        torch.testing.assert_close(batched[row, :length], alone, rtol=0, atol=1e-5)
    assert sparse_threshold(BLOCK, RANDOM) >= 40  # the last row ran full attention, as transformers alone does


def test_training_and_inference_attend_with_the_same_pattern():
    """transformers draws random blocks in training but points them all at block 0 in eval, so its two
    modes differ (the trap); ctxext's pattern is the same in both."""
    theirs = tiny_bigbird()
    input_ids = torch.randint(5, 100, (1, 16 * BLOCK))
    ours = use_block_sparse(copy.deepcopy(theirs))
    assert (run(theirs.train(), input_ids) - run(theirs.eval(), input_ids)).abs().max() > 1e-3
    torch.testing.assert_close(run(ours.train(), input_ids), run(ours.eval(), input_ids), rtol=0, atol=1e-6)


def test_a_short_batch_does_not_switch_anything():
    model = use_block_sparse(tiny_bigbird())
    long_ids = torch.randint(5, 100, (1, 16 * BLOCK))
    before = run(model, long_ids)
    run(model, long_ids[:, :10])
    assert attention_ran(model) == "original_full"
    torch.testing.assert_close(run(model, long_ids), before, rtol=0, atol=0)
    assert attention_ran(model) == "block_sparse" and model.config.attention_type == "block_sparse"


def test_gradient_checkpointing_recomputes_the_same_pattern():
    gradients = []
    for checkpointing in (False, True):
        model = use_block_sparse(tiny_bigbird()).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        hidden = model(input_ids=torch.arange(5, 5 + 12 * BLOCK).unsqueeze(0) % 100).last_hidden_state
        (hidden * torch.randn(hidden.shape, generator=torch.Generator().manual_seed(0))).sum().backward()
        gradients.append(model.encoder.layer[0].attention.self.query.weight.grad.clone())
    torch.testing.assert_close(gradients[0], gradients[1], rtol=1e-5, atol=1e-6)


def test_the_model_saves_as_a_plain_block_sparse_bigbird_with_its_seed(tmp_path):
    from transformers import AutoModel

    model = use_block_sparse(tiny_bigbird(), seed=3)
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert reloaded.config.attention_type == "block_sparse" and reloaded.attention_type == "block_sparse"
    assert reloaded.config.ctxext_block_sparse_seed == 3
    input_ids = torch.randint(5, 100, (1, 16 * BLOCK))
    torch.testing.assert_close(run(use_block_sparse(reloaded), input_ids), run(model, input_ids), rtol=0, atol=0)


def test_embedding_a_long_text_after_a_short_one_runs_block_sparse(tmp_path):
    """The path of `ctxext embed` / `evaluate`: load_encoder gives a transferred BigBird ctxext's attention."""
    import tiny
    from ctxext.encode import load_encoder
    from ctxext.transfer import transfer

    bert = tiny.make_sentence_transformer("bert", tmp_path / "bert")
    folder = transfer(str(bert), "bigbird", 256, tmp_path / "bigbird", block_size=BLOCK, num_random_blocks=1).path
    encoder = load_encoder(folder)
    long_text = " ".join(tiny.WORDS[i % len(tiny.WORDS)] for i in range(200))
    alone = encoder.encode([long_text])
    encoder.encode(["the model"])
    assert attention_ran(encoder.model) == "original_full"
    after_short = encoder.encode([long_text])
    assert attention_ran(encoder.model) == "block_sparse"
    np.testing.assert_array_equal(after_short, alone)


def test_a_plain_sentence_transformer_keeps_block_sparse_after_a_short_batch(tmp_path):
    """The documented way for sentence-transformers users: ``use_block_sparse(SentenceTransformer(OUT))``
    embeds as ctxext does, and a short batch switches nothing."""
    from sentence_transformers import SentenceTransformer

    import tiny
    from ctxext.encode import load_encoder
    from ctxext.transfer import transfer

    bert = tiny.make_sentence_transformer("bert", tmp_path / "bert", max_seq_length=256)
    folder = transfer(str(bert), "bigbird", 256, tmp_path / "bigbird", block_size=BLOCK, num_random_blocks=1).path
    model = use_block_sparse(SentenceTransformer(str(folder), device="cpu"))
    long_text = " ".join(tiny.WORDS[i % len(tiny.WORDS)] for i in range(200))
    alone = model.encode([long_text])
    model.encode(["the model"])
    assert attention_ran(model) == "original_full"
    after_short = model.encode([long_text])
    assert attention_ran(model) == "block_sparse"
    np.testing.assert_allclose(after_short, alone, atol=1e-6)
    np.testing.assert_allclose(after_short, load_encoder(folder).encode([long_text]), atol=1e-5)
