"""Retrieval forms side by side (`ctxext evaluate --forms`): late chunking, chunks, BM25 and their fusion, each
checked against a computation written out here."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from ctxext.cli import app
from ctxext.evaluate import RetrievalSet, chunk_vectors, mean_reciprocal_rank, similarity
from ctxext.retrieval import Form, FormChoice, FormOptions, evaluate_forms, parse_forms, reciprocal_rank_fusion

DOCUMENTS = [
    "Otters live in rivers and eat fish. Otters sleep in dens by the river bank.",
    "Herons stand in shallow water and eat fish and frogs.",
    "The lynx hunts hares in the snowy forest at night.",
    "Rivers carry water from the hills to the sea.",
]
QUERIES = ["where do otters live", "which bird eats frogs", "what hunts hares", "where does river water go"]
RELEVANT = [{0: 1.0}, {1: 1.0}, {2: 1.0}, {3: 1.0}]


@pytest.fixture(scope="module")
def encoder():
    from ctxext.encode import load_encoder

    return load_encoder("all-MiniLM-L6-v2")


def hand_bm25(queries: list[str], documents: list[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """Lucene's BM25 written out: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf / (tf + k1 (1 - b + b dl / avgdl))
    (Lucene dropped the constant k1 + 1 from the numerator), a query word counted per occurrence."""
    tokenized = [[w.strip(".,").lower() for w in d.split()] for d in documents]
    average = sum(map(len, tokenized)) / len(tokenized)
    scores = np.zeros((len(queries), len(documents)))
    for row, query in enumerate(queries):
        for word in query.lower().split():
            df = sum(word in words for words in tokenized)
            idf = math.log(1 + (len(documents) - df + 0.5) / (df + 0.5))
            for column, words in enumerate(tokenized):
                tf = Counter(words)[word]
                scores[row, column] += idf * tf / (tf + k1 * (1 - b + b * len(words) / average))
    return scores


def hand_reciprocal_rank(scores: np.ndarray, relevant: list[dict[int, float]]) -> float:
    """1 / rank of the relevant document, ranked by score and, on a tie, by document order; averaged."""
    total = 0.0
    for row, graded in zip(scores, relevant, strict=True):
        ranking = sorted(range(len(row)), key=lambda column: (-row[column], column))
        total += 1 / (ranking.index(next(iter(graded))) + 1)
    return total / len(relevant)


def scored(forms: str, encoder, **options) -> dict[str, float]:
    retrieval_set = RetrievalSet("tiny", 256, QUERIES, DOCUMENTS, RELEVANT)
    rows = evaluate_forms(["m"], [retrieval_set], FormOptions(parse_forms(forms), **options), lambda _ref: encoder)
    return {row.form: row.scores[0].mrr for row in rows}


def test_late_chunk_vectors_of_a_short_document_equal_the_whole_pass_mean_pooled_per_span(encoder):
    import torch

    texts = [DOCUMENTS[0] * 3, DOCUMENTS[2], ""]
    chunks = encoder.late_chunks(texts, chunk=8, overlap=3, batch_size=2)
    for index, text in enumerate(texts):
        inputs = encoder.tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            states = encoder.model(**inputs).last_hidden_state[0]
        content = states[1:-1] if len(states) > 2 else states  # [CLS] ... [SEP]: specials belong to no chunk
        starts = range(0, max(len(content) - 3, 1), 5)
        expected = [torch.nn.functional.normalize(content[s : s + 8].mean(0), dim=-1).numpy() for s in starts]
        rows = chunks.documents == index
        np.testing.assert_allclose(chunks.vectors[rows], np.stack(expected), atol=1e-5)
        assert chunks.token_spans[rows][0][0] == (1 if text else 0)
        whole = encoder.encode([text])[0]
        np.testing.assert_allclose(chunks.whole[index], whole, atol=1e-5)
        if text:  # each chunk's characters are what its tokens were read from
            begin, end = chunks.char_spans[rows][0]
            ids = inputs["input_ids"][0].tolist()
            first = encoder.tokenizer.decode(ids[1:9])
            assert encoder.tokenizer.decode(encoder.tokenizer(text[begin:end])["input_ids"][1:-1]) == first


def test_bm25_rows_on_a_tiny_corpus_equal_a_hand_computation(encoder):
    from ctxext.data.bm25 import BM25Index

    np.testing.assert_allclose(BM25Index(DOCUMENTS).scores(QUERIES), hand_bm25(QUERIES, DOCUMENTS), rtol=1e-5)
    assert scored("bm25", encoder)["bm25"] == pytest.approx(
        hand_reciprocal_rank(hand_bm25(QUERIES, DOCUMENTS), RELEVANT)
    )


def test_reciprocal_rank_fusion_on_a_hand_made_ranking():
    first = np.array([[3.0, 2.0, 1.0]])
    second = np.array([[0.0, 5.0, 5.0]])  # a tie: document 1 ranks before document 2
    expected = [1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 63 + 1 / 62]
    np.testing.assert_allclose(reciprocal_rank_fusion(first, second), [expected])


def test_hybrid_row_fuses_bm25_with_the_named_dense_form_by_reciprocal_rank(encoder):
    dense = similarity(encoder.encode(QUERIES), encoder.encode(DOCUMENTS))
    ranks = [
        np.argsort(np.argsort(-scores, axis=1, kind="stable"), axis=1) + 1
        for scores in (hand_bm25(QUERIES, DOCUMENTS), dense)
    ]
    fused = sum(1 / (60 + rank) for rank in ranks)
    assert scored("hybrid:whole", encoder)["hybrid:whole"] == pytest.approx(hand_reciprocal_rank(fused, RELEVANT))


def test_chunk_forms_are_the_mean_and_the_best_of_chunks_embedded_one_by_one(encoder):
    vectors, owners = chunk_vectors(encoder, DOCUMENTS, 10, 4)
    assert len(set(owners.tolist())) == len(DOCUMENTS) and len(owners) > len(DOCUMENTS)
    per_chunk = similarity(encoder.encode(QUERIES), vectors)
    best = np.stack([per_chunk[:, owners == d].max(1) for d in range(len(DOCUMENTS))], axis=1)
    means = np.stack([vectors[owners == d].mean(0) for d in range(len(DOCUMENTS))])
    mrr = scored("chunk-max,chunk-mean", encoder, chunk=10)
    assert mrr["chunk-max"] == pytest.approx(mean_reciprocal_rank(best, RELEVANT))
    assert mrr["chunk-mean"] == pytest.approx(
        mean_reciprocal_rank(similarity(encoder.encode(QUERIES), means), RELEVANT)
    )


def test_hybrid_fuses_late_chunks_for_a_model_longer_than_a_chunk_else_chunk_max(encoder):
    from ctxext.retrieval import ModelForms

    retrieval_set = RetrievalSet("tiny", 256, QUERIES, DOCUMENTS, RELEVANT)
    forms = parse_forms("hybrid")
    long_model = ModelForms(retrieval_set, encoder, encoder, FormOptions(forms, chunk=128))
    short_model = ModelForms(retrieval_set, encoder, encoder, FormOptions(forms, chunk=512))
    assert long_model.fused_form(forms[0]) == Form.late_chunk and short_model.fused_form(forms[0]) == Form.chunk_max


def test_forms_are_parsed_in_order_once_and_unknown_ones_refused():
    from ctxext.errors import InvalidArgument

    assert parse_forms("bm25, hybrid:chunk-max,bm25") == (
        FormChoice(Form.bm25),
        FormChoice(Form.hybrid, Form.chunk_max),
    )
    for bad in ("bm26", "hybrid:bm25", "whole:late-chunk", ""):
        with pytest.raises(InvalidArgument):
            parse_forms(bad)


def write_beir(folder):
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "text": text} for i, text in enumerate(DOCUMENTS)]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus))
    queries = [{"_id": f"q{i}", "text": text} for i, text in enumerate(QUERIES)]
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(QUERIES)))
    )


def test_cli_rows_carry_their_form_and_a_form_the_same_for_every_model_comes_once(tmp_path):
    write_beir(tmp_path / "beir")
    arguments = ["evaluate", "all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "--task", "retrieval"]
    arguments += ["--beir", str(tmp_path / "beir"), "--lengths", "128", "--chunk", "16", "--json"]
    result = CliRunner().invoke(app, [*arguments, "--forms", "whole,late-chunk,bm25,hybrid"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["form"] for row in rows] == ["whole", "late-chunk", "bm25", "hybrid"]
    assert rows[2]["model"].startswith("bm25") and rows[3]["model"] == "bm25 + all-MiniLM-L6-v2"
    refused = CliRunner().invoke(app, [*arguments, "--forms", "whole,bm26"])
    assert refused.exit_code == 4 and "unknown form 'bm26'" in refused.output and "Traceback" not in refused.output
    passkey = CliRunner().invoke(app, ["evaluate", "all-MiniLM-L6-v2", "--forms", "bm25"])
    assert passkey.exit_code == 4 and "--forms scores retrieval" in passkey.output


def test_symmetric_forms_represent_a_query_document_as_the_documents_are(encoder):
    from ctxext.retrieval import ModelForms

    retrieval_set = RetrievalSet("docs", 256, [DOCUMENTS[0] * 2, DOCUMENTS[3]], DOCUMENTS, [{3: 1.0}, {0: 1.0}])
    options = FormOptions(parse_forms("whole,chunk-max,late-chunk"), chunk=10, symmetric=True)
    forms = ModelForms(retrieval_set, encoder, encoder, options)
    whole = similarity(encoder.encode(retrieval_set.queries), encoder.encode(DOCUMENTS))
    np.testing.assert_allclose(forms.scores(FormChoice(Form.whole)), whole, atol=1e-5)
    asked, asked_owners = chunk_vectors(encoder, retrieval_set.queries, 10, 4)
    vectors, owners = chunk_vectors(encoder, DOCUMENTS, 10, 4)
    pairs = similarity(asked, vectors)
    best = [[pairs[np.ix_(asked_owners == q, owners == d)].max() for d in range(4)] for q in range(2)]
    np.testing.assert_allclose(forms.scores(FormChoice(Form.chunk_max)), best, atol=1e-6)
    late = forms.scores(FormChoice(Form.late_chunk))
    assert late.shape == (2, 4) and np.all(late <= 1 + 1e-6)


def test_data_links_relates_documents_by_link_field_qualified_names_and_markdown_links(tmp_path):
    from ctxext.data.links import write_links
    from ctxext.evaluate import beir_set

    pages = [{"id": f"pkg.m{i}", "title": f"pkg.m{i}", "text": f"Module {i} about topic {i}. " * 20} for i in range(40)]
    pages[0]["text"] += " It calls pkg.m1.helper and reads os or random, which are no links."
    pages[2]["links"] = ["pkg.m3", "missing"]
    pages[4]["text"] += " See [the other page](docs/pkg.m5.md#usage)."
    corpus = tmp_path / "pages.jsonl"
    corpus.write_text("".join(json.dumps(page) + "\n" for page in pages))
    result = write_links(str(corpus), tmp_path / "related", query_share=0.5)
    retrieval_set = beir_set(tmp_path / "related")
    related = {
        frozenset({query.split(".")[1].split()[0], retrieval_set_id})
        for query, graded in zip(retrieval_set.queries, retrieval_set.relevant, strict=True)
        for retrieval_set_id in (retrieval_set.documents[index].split(".")[1].split()[0] for index in graded)
    }
    linked = {frozenset(pair) for pair in (("m0", "m1"), ("m2", "m3"), ("m4", "m5"))}
    assert related <= linked and result.manifest["counts"]["test"]["queries"] == len(related) >= 2
    answer = CliRunner().invoke(app, ["data", "links", str(corpus), "-o", str(tmp_path / "none"), "--links", "field"])
    assert answer.exit_code != 0 and "link to a candidate" in answer.output and not (tmp_path / "none").exists()


def test_bm25_of_no_documents_or_documents_without_words_is_zero():
    from ctxext.data.bm25 import BM25Index

    assert BM25Index([]).scores(["any words"]).shape == (1, 0)
    assert not BM25Index(["", "  ", "!!"]).scores(["any", ""]).any()
    scores = BM25Index(["alpha alpha beta", "beta gamma", ""]).scores(["alpha", "beta beta", "unknown"])
    assert scores[0, 0] > 0 and scores[0, 1:].sum() == 0 and scores[2].sum() == 0 and scores[:, 2].sum() == 0
