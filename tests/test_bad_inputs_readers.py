"""Hostile records for the evaluation and QA readers (``evaluate --beir``, ``finetune-qa``) and ``embed``: every
field is checked, and each error names the file and line (the catalogue's rule: ``check_case``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ctxext.data.formats import read_beir
from test_bad_inputs import CORRUPT, INVALID, Case, Scene, case, check_case, prompts, scene  # noqa: F401 (fixtures)

CORPUS = [
    {"_id": "d1", "title": "Otters", "text": "Otters live in rivers."},
    {"_id": "d2", "title": "Herons", "text": "Herons eat fish."},
]
QUERIES = [{"_id": "q1", "text": "where do otters live"}, {"_id": "q2", "text": "what do herons eat"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n"


def beir(s: Scene, corpus: list | None = None, queries: list | None = None, qrels: str | None = None) -> Path:
    """A BEIR folder of two documents and two queries, with one file replaced."""
    s.jsonl("beir/corpus.jsonl", CORPUS if corpus is None else corpus)
    s.jsonl("beir/queries.jsonl", QUERIES if queries is None else queries)
    s.file("beir/qrels/test.tsv", QRELS if qrels is None else qrels)
    return s.root / "beir"


def evaluate(s: Scene, **files: Any) -> list:
    return ["evaluate", s.model(), "--task", "retrieval", "--lengths", "64", "--beir", beir(s, **files)]


SQUAD = {
    "id": "1",
    "question": "what colour is the sky",
    "context": "the sky is blue",
    "answers": {"text": ["blue"], "answer_start": [11]},
}


def squad(s: Scene, name: str = "qa.jsonl", **changes: Any) -> Path:
    """A SQuAD file whose second record has ``changes`` (``answers`` changes only the keys it names)."""
    record = {**SQUAD, **changes}
    if isinstance(changes.get("answers"), dict):
        record["answers"] = {**SQUAD["answers"], **changes["answers"]}
    return s.jsonl(name, [SQUAD, record])


def finetune_qa(s: Scene, train: Path, *extra: Any) -> list:
    return ["finetune-qa", s.model("llama"), "--train", train, *extra, "-o", "out"]


def without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


READER_CASES: list[Case] = [
    # --- evaluate --beir: qrels
    case("evaluate --beir: an infinite qrels score", INVALID, "test.tsv:2", "'inf'", "finite number")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\tinf\n")
    ),
    case("evaluate --beir: a NaN qrels score", INVALID, "test.tsv:3", "finite number")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\tnan\n")
    ),
    case("evaluate --beir: a qrels score past the float range", INVALID, "test.tsv:2", "finite number")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\t1e999\n")
    ),
    case("evaluate --beir: a qrels score that is a word", INVALID, "test.tsv:2", "'high'")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    ),
    case("evaluate --beir: a qrels line of two fields", INVALID, "test.tsv:2", "tab-separated")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq1 d1 1\n")
    ),
    case("evaluate --beir: qrels naming only unknown queries and documents", INVALID, "does not hold: 2")(
        lambda s: evaluate(s, qrels="query-id\tcorpus-id\tscore\nq9\td1\t1\nq1\td9\t1\n")
    ),
    # --- evaluate --beir: queries
    case("evaluate --beir: a null query", INVALID, "queries.jsonl:2: 'text' must be a string, not null")(
        lambda s: evaluate(s, queries=[QUERIES[0], {"_id": "q2", "text": None}])
    ),
    case("evaluate --beir: a query that is a list", INVALID, "queries.jsonl:1", "not a list")(
        lambda s: evaluate(s, queries=[{"_id": "q1", "text": ["where", "otters"]}, QUERIES[1]])
    ),
    case("evaluate --beir: a query without text", INVALID, "queries.jsonl:1", "no 'text' field")(
        lambda s: evaluate(s, queries=[{"_id": "q1"}, QUERIES[1]])
    ),
    case("evaluate --beir: a query without _id", INVALID, "queries.jsonl:2", "no '_id' field")(
        lambda s: evaluate(s, queries=[QUERIES[0], without(QUERIES[1], "_id")])
    ),
    case("evaluate --beir: a null query _id", INVALID, "queries.jsonl:1", "'_id' must be", "not null")(
        lambda s: evaluate(s, queries=[{**QUERIES[0], "_id": None}, QUERIES[1]])
    ),
    case("evaluate --beir: two queries with one _id", INVALID, "queries.jsonl:2", "already used on line 1")(
        lambda s: evaluate(s, queries=[QUERIES[0], {**QUERIES[1], "_id": "q1"}])
    ),
    case("evaluate --beir: a query group that is an object", INVALID, "queries.jsonl:1", "'group'")(
        lambda s: evaluate(s, queries=[{**QUERIES[0], "group": {"depth": 1}}, QUERIES[1]])
    ),
    # --- evaluate --beir: corpus
    case("evaluate --beir: a document whose text is a number", INVALID, "corpus.jsonl:2", "not 5")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {**CORPUS[1], "text": 5}])
    ),
    case("evaluate --beir: a null document text", INVALID, "corpus.jsonl:1", "'text'", "not null")(
        lambda s: evaluate(s, corpus=[{**CORPUS[0], "text": None}, CORPUS[1]])
    ),
    case("evaluate --beir: a document title that is a list", INVALID, "corpus.jsonl:2", "'title'", "not a list")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {**CORPUS[1], "title": ["Herons"]}])
    ),
    case("evaluate --beir: a document with neither text nor title", INVALID, "corpus.jsonl:2", "'text'")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {"_id": "d2"}])
    ),
    case("evaluate --beir: a document without _id", INVALID, "corpus.jsonl:1", "no '_id' field")(
        lambda s: evaluate(s, corpus=[without(CORPUS[0], "_id"), CORPUS[1]])
    ),
    case("evaluate --beir: a document _id that is true", INVALID, "corpus.jsonl:2", "'_id' must be", "not true")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {**CORPUS[1], "_id": True}])
    ),
    case("evaluate --beir: an empty document _id", INVALID, "corpus.jsonl:1", "an empty string")(
        lambda s: evaluate(s, corpus=[{**CORPUS[0], "_id": ""}, CORPUS[1]])
    ),
    case("evaluate --beir: two documents with one _id", INVALID, "corpus.jsonl:2", "'d1' was already used on line 1")(
        lambda s: evaluate(s, corpus=[CORPUS[0], {**CORPUS[1], "_id": "d1"}])
    ),
    # --- finetune-qa: SQuAD records
    case("finetune-qa: a null context", INVALID, "qa.jsonl:2: 'context' must be a string, not null")(
        lambda s: finetune_qa(s, squad(s, context=None))
    ),
    case("finetune-qa: a question that is a list", INVALID, "qa.jsonl:2", "'question' must be a string, not a list")(
        lambda s: finetune_qa(s, squad(s, question=["what", "colour"]))
    ),
    case("finetune-qa: a record without a question", INVALID, "qa.jsonl:2", "no 'question' field")(
        lambda s: finetune_qa(s, s.jsonl("qa.jsonl", [SQUAD, without(SQUAD, "question")]))
    ),
    case("finetune-qa: a record without answers", INVALID, "qa.jsonl:2", "no 'answers' field")(
        lambda s: finetune_qa(s, s.jsonl("qa.jsonl", [SQUAD, without(SQUAD, "answers")]))
    ),
    case("finetune-qa: answers that are a list", INVALID, "qa.jsonl:2", "'answers' must be an object")(
        lambda s: finetune_qa(s, s.jsonl("qa.jsonl", [SQUAD, {**SQUAD, "answers": ["blue"]}]))
    ),
    case("finetune-qa: more answer texts than starts", INVALID, "qa.jsonl:2", "holds 2 answers", "holds 1")(
        lambda s: finetune_qa(s, squad(s, answers={"text": ["blue", "sky"], "answer_start": [11]}))
    ),
    case("finetune-qa: answer_start is not a list", INVALID, "qa.jsonl:2", "'answers.answer_start' must be a list")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": 11}))
    ),
    case("finetune-qa: an answer_start that is a string", INVALID, "qa.jsonl:2", "item 0 must be a whole number")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": ["11"]}))
    ),
    case("finetune-qa: an answer_start that is a fraction", INVALID, "qa.jsonl:2", "whole number", "not 11.5")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": [11.5]}))
    ),
    case("finetune-qa: a negative answer_start", INVALID, "qa.jsonl:2", "whole number >= 0, not -4")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": [-4]}))
    ),
    case("finetune-qa: an answer text that is a number", INVALID, "qa.jsonl:2", "'answers.text' item 0")(
        lambda s: finetune_qa(s, squad(s, answers={"text": [7]}))
    ),
    case("finetune-qa: an empty answer text", INVALID, "qa.jsonl:2", "non-empty string")(
        lambda s: finetune_qa(s, squad(s, answers={"text": [""]}))
    ),
    case("finetune-qa: an answer_start past the context", CORRUPT, "qa.jsonl:2", "past the end of the context")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": [4000]}))
    ),
    case("finetune-qa: an answer not at its start", CORRUPT, "qa.jsonl:2", "'blue' is not at answer_start 4")(
        lambda s: finetune_qa(s, squad(s, answers={"answer_start": [4]}))
    ),
    case("finetune-qa: an id that is a list", INVALID, "qa.jsonl:2", "'id' must be")(
        lambda s: finetune_qa(s, squad(s, id=[1]))
    ),
    case("finetune-qa: a null question in the --eval file", INVALID, "dev.jsonl:2", "'question'", "not null")(
        lambda s: finetune_qa(s, s.jsonl("qa.jsonl", [SQUAD]), "--eval", squad(s, "dev.jsonl", question=None))
    ),
    # --- embed
    case("embed: a text that is a list", INVALID, "d.jsonl:2", "'text' must be a string, not a list")(
        lambda s: ["embed", s.model(), s.jsonl("d.jsonl", [{"text": "a"}, {"text": ["a", "b"]}]), "-o", "e.npy"]
    ),
    case("embed: a title that is an object", INVALID, "d.jsonl:1", "'title' must be a string, not an object")(
        lambda s: ["embed", s.model(), s.jsonl("d.jsonl", [{"title": {"x": 1}, "abstract": "a"}]), "-o", "e.npy"]
    ),
    case("embed: a huge text that is not a string names it briefly", INVALID, "d.jsonl:1", "not a list")(
        lambda s: ["embed", s.model(), s.jsonl("d.jsonl", [{"text": ["word"] * 200_000}]), "-o", "e.npy"]
    ),
]


def test_the_reader_catalogue_holds_at_least_12_distinct_cases():
    assert len({c.name for c in READER_CASES}) == len(READER_CASES) >= 12


@pytest.mark.parametrize("bad", READER_CASES, ids=[c.name for c in READER_CASES])
def test_reader_bad_input(bad: Case, scene: Scene, prompts: list[str]):  # noqa: F811 (the fixtures imported above)
    check_case(bad, scene, prompts)


def test_beir_reader_keeps_what_published_folders_hold(tmp_path, tiny_models):
    """Null titles, whole-number ids, blank and negative (TREC: judged not relevant) qrels lines, and qrels
    lines naming a query or document the folder does not hold (ArguAna and NFCorpus have some) are read."""
    s = Scene(tmp_path, tiny_models)
    folder = beir(
        s,
        corpus=[{"_id": 1, "title": None, "text": "Otters live in rivers."}, CORPUS[1]],
        queries=[{"_id": 7, "text": "where do otters live", "group": 3}, QUERIES[1]],
        qrels="query-id\tcorpus-id\tscore\n7\t1\t2\n\nq2\td2\t-2\nq2\tgone\t1\nq9\td2\t1\n",
    )
    beir_folder = read_beir(folder)
    assert beir_folder.documents == ["Otters live in rivers.", "Herons. Herons eat fish."]
    assert beir_folder.queries == ["where do otters live"]
    assert beir_folder.relevant == [{0: 2.0}] and beir_folder.groups == ["3"]


def test_a_reader_error_shows_a_long_value_briefly(tmp_path, tiny_models):
    from ctxext.errors import InvalidArgument

    s = Scene(tmp_path, tiny_models)
    folder = beir(s, qrels="query-id\tcorpus-id\tscore\nq1\td1\t" + "9" * 5000 + "x\n")
    with pytest.raises(InvalidArgument) as raised:
        read_beir(folder)
    assert len(str(raised.value)) < len(str(folder)) + 200
