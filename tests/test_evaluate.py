from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from ctxext.cli import app
from ctxext.evaluate import (
    FIRST_NAMES,
    RetrievalSet,
    accuracy_at_1,
    beir_set,
    ndcg_at_k,
    needle_sets,
    passkey_sets,
    score_set,
)


@pytest.fixture(scope="module")
def tokenizer(minilm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm)


def name_vectors(texts: list[str]) -> np.ndarray:
    """A perfect model for passkey and needle: one dimension per name mentioned."""
    vectors = np.zeros((len(texts), len(FIRST_NAMES)))
    for row, text in enumerate(texts):
        for column, name in enumerate(FIRST_NAMES):
            if re.search(rf"\b{name}\b", text):
                vectors[row, column] = 1.0
    return vectors


def constant_vectors(texts: list[str]) -> np.ndarray:
    return np.ones((len(texts), 4))


def test_longembed_sizes_are_the_defaults_and_build(tokenizer):
    for builder in (passkey_sets, needle_sets):
        (built,) = builder(tokenizer, [256])
        assert len(built.documents) == 100 and len(built.queries) == 50
        assert len({name for name in FIRST_NAMES if any(re.search(rf"\b{name}\b", d) for d in built.documents)}) == 100


def test_perfect_model_scores_one_and_constant_model_scores_chance(tokenizer):
    for retrieval_set in passkey_sets(tokenizer, [256], documents=40, queries=20):
        perfect = score_set(name_vectors, name_vectors, retrieval_set)
        constant = score_set(constant_vectors, constant_vectors, retrieval_set)
        assert perfect.acc_at_1 == 1.0 and perfect.ndcg_at_10 == pytest.approx(1.0)
        assert constant.acc_at_1 == pytest.approx(1 / 40)


@pytest.mark.parametrize("builder", [passkey_sets, needle_sets])
def test_a_seed_draws_other_sets_and_the_same_seed_the_same(builder, tokenizer):
    (first,), (again,), (other,) = (builder(tokenizer, [128], 10, 5, seed=seed) for seed in (0, 0, 1))
    assert (first.documents, first.queries) == (again.documents, again.queries)
    assert first.documents != other.documents


def test_ndcg_on_a_hand_made_ranking():
    scores = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3]])
    relevant = [{1: 1.0}, {2: 1.0, 0: 1.0}]
    expected_first = 1 / np.log2(3)
    expected_second = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    assert ndcg_at_k(scores, relevant) == pytest.approx((expected_first + expected_second) / 2)
    assert accuracy_at_1(scores, relevant) == 0.5


@pytest.mark.parametrize("builder", [passkey_sets, needle_sets])
def test_documents_fit_their_length_and_hold_their_needle(builder, tokenizer):
    sets = builder(tokenizer, [256, 1024], documents=10, queries=5)
    for retrieval_set in sets:
        assert len(retrieval_set.documents) == 10 and len(retrieval_set.queries) == 5
        # within one filler unit of the length: a passkey unit is about 25 tokens, a prose sentence longer
        slack = 30 if builder is passkey_sets else retrieval_set.length * 0.2
        for document in retrieval_set.documents:
            tokens = len(tokenizer(document)["input_ids"])
            assert retrieval_set.length - slack <= tokens <= retrieval_set.length
        for query, relevant in zip(retrieval_set.queries, retrieval_set.relevant, strict=True):
            (gold,) = relevant
            name = query.split("for ")[-1].rstrip("?") if builder is passkey_sets else query.split()[2][:-2]
            assert f"{name}'s" in retrieval_set.documents[gold]
            assert sum(f"{name}'s" in d for d in retrieval_set.documents) == 1


def test_passkey_sets_are_reproducible(tokenizer):
    first = passkey_sets(tokenizer, [256], documents=5, queries=3)[0]
    second = passkey_sets(tokenizer, [256], documents=5, queries=3)[0]
    assert first.documents == second.documents and first.queries == second.queries


def write_beir(folder):
    (folder / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": "d1", "title": "Otters", "text": "Otters live in rivers."},
        {"_id": "d2", "title": "Herons", "text": "Herons eat fish."},
    ]
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus))
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "where do otters live"}))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")


def test_beir_folder_is_read_with_its_judgements(tmp_path):
    write_beir(tmp_path / "beir")
    retrieval_set = beir_set(tmp_path / "beir")
    assert retrieval_set.queries == ["where do otters live"]
    assert retrieval_set.relevant == [{0: 1.0}]
    assert isinstance(retrieval_set, RetrievalSet)


def test_cli_scores_two_models_side_by_side_with_a_plot(tmp_path):
    write_beir(tmp_path / "beir")
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "all-MiniLM-L6-v2",
            "all-MiniLM-L6-v2",
            "--task",
            "retrieval",
            "--beir",
            str(tmp_path / "beir"),
            "--lengths",
            "128,256",
            "--plot",
            str(tmp_path / "plot.png"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert len(data) == 2 and [s["length"] for s in data[0]["scores"]] == [128, 256]
    assert data[0]["scores"][0]["ndcg_at_10"] == 1.0
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_rejects_retrieval_without_beir_folder():
    result = CliRunner().invoke(app, ["evaluate", "all-MiniLM-L6-v2", "--task", "retrieval"])
    assert result.exit_code != 0 and "--beir" in result.output and "Traceback" not in result.output


def test_mrr_on_a_hand_made_ranking_and_per_query_group():
    from ctxext.evaluate import mean_reciprocal_rank

    scores = np.array([[0.9, 0.8, 0.1], [0.1, 0.2, 0.3], [0.5, 0.4, 0.3]])
    relevant = [{1: 1.0}, {2: 1.0, 0: 1.0}, {0: 1.0}]
    assert mean_reciprocal_rank(scores, relevant) == pytest.approx((1 / 2 + 1 + 1) / 3)
    retrieval_set = RetrievalSet("s", None, ["a", "b", "c"], ["x", "y", "z"], relevant, ["0-512", "512-1024", "0-512"])
    score = score_set(lambda texts: scores, lambda texts: np.eye(3), retrieval_set)
    assert score.mrr == pytest.approx(5 / 6)
    assert score.groups == {
        "0-512": {"mrr": pytest.approx(0.75), "acc_at_1": 0.5, "queries": 2},
        "512-1024": {"mrr": 1.0, "acc_at_1": 1.0, "queries": 1},
    }


def test_beir_query_groups_are_read_and_scored_apart(tmp_path):
    write_beir(tmp_path / "beir")
    (tmp_path / "beir" / "queries.jsonl").write_text(
        json.dumps({"_id": "q1", "text": "where do otters live", "group": "2048-4096"})
    )
    assert beir_set(tmp_path / "beir").groups == ["2048-4096"]
    plain = tmp_path / "plain"
    write_beir(plain)
    assert beir_set(plain).groups is None
