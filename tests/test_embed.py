"""`ctxext embed`: one float32 row per input line, in order, with the checkpoint's pooling and adapter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import specter2_tiny
import tiny
from ctxext.cli import app

runner = CliRunner()
WORDS = tiny.WORDS


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict[str, Path]:
    return specter2_tiny.make_specter2(tmp_path_factory.mktemp("specter2-tiny"))


@pytest.fixture(scope="module")
def bigbird(parts, tmp_path_factory) -> Path:
    """The tiny SPECTER2 in BigBird, 256 positions, blocks of 8 (block-sparse past 56 tokens)."""
    from ctxext.transfer import transfer

    out = tmp_path_factory.mktemp("bigbird") / "out"
    transfer(
        "specter2",
        "bigbird",
        256,
        out,
        base=str(parts["base"]),
        block_size=8,
        num_random_blocks=1,
        adapter_paths={role: str(parts[role]) for role in specter2_tiny.SPECTER2_ADAPTERS},
        check=False,
    )
    return out


def text(words: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(words))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_rows_come_out_in_input_order_one_float32_row_per_line(bigbird, tmp_path):
    records = [{"text": text(n, n)} for n in (3, 40, 7, 90, 1, 25)]
    source = write_jsonl(tmp_path / "docs.jsonl", records)
    result = runner.invoke(
        app,
        [
            "embed",
            str(bigbird),
            str(source),
            "-o",
            str(tmp_path / "emb.npy"),
            "--adapter",
            "proximity",
            "--batch-size",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = np.load(tmp_path / "emb.npy")
    assert rows.shape == (len(records), 32) and rows.dtype == np.float32
    for index, record in enumerate(records):  # each row equals that document embedded alone
        single = write_jsonl(tmp_path / f"one{index}.jsonl", [record])
        assert (
            runner.invoke(
                app,
                ["embed", str(bigbird), str(single), "-o", str(tmp_path / f"one{index}.npy"), "--adapter", "proximity"],
            ).exit_code
            == 0
        )
        # ctxext's block-sparse attention runs each row by its own length: batching changes nothing
        np.testing.assert_allclose(np.load(tmp_path / f"one{index}.npy")[0], rows[index], atol=1e-5)
    manifest = json.loads((tmp_path / "emb.npy.manifest.json").read_text())
    assert manifest["output"]["shape"] == [len(records), 32] and manifest["adapter"]["name"] == "proximity"
    assert manifest["options"]["pooling"] == "cls" and manifest["input"]["lines"] == len(records)


def test_title_and_abstract_are_joined_with_sep_as_specter2_does(bigbird, tmp_path):
    from ctxext.embed import embed_file

    title, abstract = text(4), text(9, 5)
    joined = embed_file(
        str(bigbird),
        write_jsonl(tmp_path / "a.jsonl", [{"title": title, "abstract": abstract}]),
        tmp_path / "a.npy",
        adapter="proximity",
    )
    plain = embed_file(
        str(bigbird),
        write_jsonl(tmp_path / "b.jsonl", [{"text": f"{title}[SEP]{abstract}"}]),
        tmp_path / "b.npy",
        adapter="proximity",
    )
    np.testing.assert_array_equal(np.load(joined.path), np.load(plain.path))


def test_bigbird_embeddings_equal_source_bert_plus_adapter_on_short_documents(parts, bigbird, tmp_path):
    from ctxext.embed import embed_file

    docs = write_jsonl(tmp_path / "docs.jsonl", [{"title": text(5, i), "abstract": text(20 + i, i)} for i in range(5)])
    for role in ("proximity", "adhoc_query"):
        source = embed_file(str(parts["base"]), docs, tmp_path / f"src-{role}.npy", adapter=str(parts[role]))
        target = embed_file(str(bigbird), docs, tmp_path / f"bb-{role}.npy", adapter=role)
        assert np.max(np.abs(np.load(source.path) - np.load(target.path))) <= 1e-4
    plain = embed_file(str(bigbird), docs, tmp_path / "plain.npy")
    assert np.max(np.abs(np.load(plain.path) - np.load(target.path))) > 1e-3  # the adapter was active


def test_an_adapter_given_as_a_path_with_dots_loads_under_its_stored_name(parts, tmp_path):
    import shutil

    from ctxext.embed import embed_file, resolve_checkpoint

    folder = tmp_path / "v1.2" / "my.prx"
    shutil.copytree(parts["proximity"], folder)
    *_, name = resolve_checkpoint(str(parts["base"]), str(folder))
    assert name == "PRX"  # the name stored in the adapter ([PRX]), not the path
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": text(20)}])
    assert embed_file(str(parts["base"]), docs, tmp_path / "e.npy", adapter=str(folder)).path.is_file()


def test_a_long_batch_after_a_short_one_still_runs_block_sparse(bigbird):
    from ctxext.block_sparse import attention_probe
    from ctxext.embed import adapter_loader
    from ctxext.encode import load_encoder

    encoder = load_encoder(bigbird, model_loader=adapter_loader(bigbird / "adapters" / "proximity", "proximity"))
    with attention_probe(encoder.model) as seen:
        encoder.encode([text(10)])
    assert set(seen) == {"original_full"}  # 12 tokens: BigBird falls back, and would stay there
    with attention_probe(encoder.model) as seen:
        rows = encoder.encode([text(200)])
    assert set(seen) == {"block_sparse"} and np.isfinite(rows).all()


def test_mean_pooling_and_max_len_are_honoured(bigbird, tmp_path):
    from ctxext.embed import embed_file

    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": text(30)}])
    short = embed_file(str(bigbird), docs, tmp_path / "a.npy", pooling="mean", max_length=8)
    same = embed_file(
        str(bigbird), write_jsonl(tmp_path / "b.jsonl", [{"text": text(6)}]), tmp_path / "b.npy", pooling="mean"
    )
    assert short.manifest["options"]["pooling"] == "mean"
    np.testing.assert_allclose(np.load(short.path), np.load(same.path), atol=1e-6)  # 6 words + CLS + SEP


def test_existing_output_is_refused_and_bad_lines_are_named(bigbird, tmp_path):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": "the"}])
    (tmp_path / "emb.npy").write_bytes(b"keep")
    result = runner.invoke(app, ["embed", str(bigbird), str(docs), "-o", str(tmp_path / "emb.npy")])
    assert result.exit_code == 5 and (tmp_path / "emb.npy").read_bytes() == b"keep"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "the"}\n{"text": \n')
    result = runner.invoke(app, ["embed", str(bigbird), str(bad), "-o", str(tmp_path / "x.npy")])
    assert result.exit_code == 4 and "bad.jsonl:2" in result.output and not (tmp_path / "x.npy").exists()
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"body": "the"}])
    result = runner.invoke(app, ["embed", str(bigbird), str(wrong), "-o", str(tmp_path / "y.npy")])
    assert result.exit_code == 4 and "'text'" in result.output


@pytest.mark.slow
def test_sentence_transformers_checkpoint_keeps_its_pooling_and_matches_the_library(minilm, tmp_path):
    from sentence_transformers import SentenceTransformer

    from ctxext.embed import embed_file

    texts = ["a short sentence about attention", "position embeddings for long documents " * 5]
    result = embed_file(
        "all-MiniLM-L6-v2", write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in texts]), tmp_path / "e.npy"
    )
    assert result.manifest["options"]["pooling"] == "mean" and result.manifest["options"]["normalize"]
    expected = SentenceTransformer(str(minilm), device="cpu").encode(texts)
    np.testing.assert_allclose(np.load(result.path), expected, atol=1e-5)


def test_a_short_batch_never_leaves_a_sentence_transformer_in_full_attention(tmp_path):
    """transformers' BigBird stays on full attention after a short batch; after ``use_block_sparse`` a long
    batch after a short one runs block-sparse again (what a plain sentence-transformers user needs)."""
    from sentence_transformers import SentenceTransformer

    from ctxext.block_sparse import attention_probe, use_block_sparse
    from ctxext.transfer import transfer

    source = tiny.make_sentence_transformer("bert", tmp_path / "bert")
    out = transfer(str(source), "bigbird", 256, tmp_path / "bigbird", block_size=8, num_random_blocks=1).path
    long_text = text(200)

    def attention_of_long_after_short(model) -> set[str]:
        model.encode(["the model"])
        with attention_probe(model[0].auto_model) as seen:
            model.encode([long_text])
        return set(seen)

    assert attention_of_long_after_short(SentenceTransformer(str(out))) == {"original_full"}  # the trap
    assert attention_of_long_after_short(use_block_sparse(SentenceTransformer(str(out)))) == {"block_sparse"}


def test_late_chunks_of_block_sparse_bigbird_are_one_pass_pooled_per_span_with_offsets_beside(bigbird, tmp_path):
    """`embed --late-chunk`: one row per chunk, each the mean of its tokens' states from one block-sparse pass over
    the whole document; OUT.chunks.jsonl says which document, tokens and characters each row is."""
    import torch

    from ctxext.block_sparse import attention_probe
    from ctxext.encode import load_encoder

    texts = [text(150), text(5, 3), text(70, 9)]
    source = write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in texts])
    arguments = ["embed", str(bigbird), str(source), "-o", str(tmp_path / "c.npy"), "--late-chunk", "32"]
    result = runner.invoke(app, [*arguments, "--overlap", "4", "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    rows = np.load(tmp_path / "c.npy")
    offsets = [json.loads(line) for line in (tmp_path / "c.chunks.jsonl").read_text().splitlines()]
    assert len(offsets) == len(rows) and [o["row"] for o in offsets] == list(range(len(rows)))
    assert [o["document"] for o in offsets if o["chunk"] == 0] == [0, 1, 2]
    encoder = load_encoder(bigbird)
    for document, body in enumerate(texts):
        inputs = encoder.tokenizer(body, return_tensors="pt")
        with attention_probe(encoder.model) as seen, torch.inference_mode():
            states = encoder.model(**inputs).last_hidden_state[0]
        assert document == 1 or set(seen) == {"block_sparse"}
        for record in (o for o in offsets if o["document"] == document):
            begin, end = record["tokens"]
            assert 1 <= begin < end <= len(states) - 1 and end - begin <= 32  # [CLS] and [SEP] in no chunk
            np.testing.assert_allclose(rows[record["row"]], states[begin:end].mean(0).numpy(), atol=1e-5)
            first, last = record["characters"]
            assert body[first:last].split() == body.split()[begin - 1 : end - 1]  # one token per tiny word
    manifest = json.loads((tmp_path / "c.npy.manifest.json").read_text())
    assert manifest["options"]["late_chunking"] == {"chunk": 32, "overlap": 4}
    assert manifest["output"]["chunks"]["file"] == "c.chunks.jsonl"
    refused = runner.invoke(app, ["embed", str(bigbird), str(source), "-o", str(tmp_path / "d.npy"), "--overlap", "4"])
    assert refused.exit_code == 4 and "--overlap goes with --late-chunk" in refused.output
