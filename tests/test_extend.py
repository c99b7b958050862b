"""`ctxext extend` and `data longdoc --corpus`: a held-out share of the user's documents is the test, never
trained on; the published model carries the comparison with chunking."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
from typer.testing import CliRunner

import tiny
from ctxext.cli import app
from ctxext.data.longdoc import is_held_out, write_longdoc
from ctxext.errors import SourceNotFound


def write_documents(path, count: int = 16, sections: int = 6) -> None:
    """Documents in tiny.WORDS (so the tiny tokenizer knows every word): each section a one-line summary,
    then a paragraph."""
    rng = random.Random(0)
    with open(path, "w") as file:
        for number in range(count):
            parts = [
                {
                    "heading": f"part {index}",
                    "text": " ".join(rng.choices(tiny.WORDS, k=9)) + "\n\n" + " ".join(rng.choices(tiny.WORDS, k=24)),
                }
                for index in range(sections)
            ]
            file.write(json.dumps({"id": f"doc-{number}", "title": f"document {number}", "sections": parts}) + "\n")


@pytest.fixture
def source(tmp_path):
    return tiny.make_sentence_transformer("bert", tmp_path / "source")


def test_held_out_documents_are_the_test_and_never_in_the_training_text(tmp_path, source):
    write_documents(tmp_path / "docs.jsonl")
    result = write_longdoc(
        tmp_path / "ld", tokenizer=str(source), corpus=str(tmp_path / "docs.jsonl"), held_out=0.3, min_tokens=64
    )
    train = {json.loads(line)["id"] for line in (result.path / "train.jsonl").open()}
    tested = {json.loads(line)["_id"] for line in (result.path / "test" / "corpus.jsonl").open()}
    queries = [json.loads(line)["text"] for line in (result.path / "test" / "queries.jsonl").open()]
    pages = [json.loads(line)["text"] for line in (result.path / "test" / "corpus.jsonl").open()]
    assert len(tested) >= 2 and train and not train & tested
    assert train | {f"doc-{n}" for n in range(16) if is_held_out(f"doc-{n}", 0.3)} == {f"doc-{n}" for n in range(16)}
    assert not any(query in " ".join(page.split()) for query in queries for page in pages)
    assert not (result.path / "dev").exists()
    assert result.manifest["documents"] == {"train": len(train), "held_out": 16 - len(train)}
    [read] = result.manifest["inputs"]  # the corpus is identified by content, not only by path
    assert read["sha256"] == hashlib.sha256((tmp_path / "docs.jsonl").read_bytes()).hexdigest()


def test_too_few_held_out_documents_is_one_clear_error_and_writes_nothing(tmp_path, source):
    write_documents(tmp_path / "docs.jsonl", count=2)
    with pytest.raises(SourceNotFound, match="a held-out test needs 2 or more"):
        write_longdoc(tmp_path / "ld", tokenizer=str(source), corpus=str(tmp_path / "docs.jsonl"), min_tokens=64)
    assert not (tmp_path / "ld").exists()


def extend_arguments(source, docs, out, length: int, recipe: str) -> list[str]:
    arguments = ["extend", str(source), "--len", str(length), "--corpus", str(docs), "-o", str(out)]
    return [*arguments, "--recipe", recipe, "--steps", "2", "--held-out", "0.3", "--min-tokens", "64", "--chunk", "32"]


def test_extend_trains_new_rows_and_publishes_the_held_out_comparison(tmp_path, source):
    write_documents(tmp_path / "docs.jsonl")
    out = tmp_path / "extended"
    arguments = [*extend_arguments(source, tmp_path / "docs.jsonl", out, 256, "positions"), "--json"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{\n") :])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["positions_only"] is True and manifest["held_out_evaluation"] == summary["held_out"]
    assert summary["held_out"]["chunk_mean"]["form"] == "mean of 32-token chunks"
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 256
    card = (out / "README.md").read_text()
    assert "## Held-out documents" in card and "mean of 32-token chunks" in card
    assert (tmp_path / "extended.ctxext-work" / "longdoc" / "test" / "qrels" / "test.tsv").is_file()

    again = CliRunner().invoke(app, arguments)  # an existing output is refused before any stage runs
    assert again.exit_code != 0 and "exists" in again.stderr and "$ ctxext" not in again.stdout


def test_the_bigbird_recipe_ends_block_sparse_and_refuses_a_source_transfer_cannot_read(tmp_path, source):
    write_documents(tmp_path / "docs.jsonl")
    result = CliRunner().invoke(app, extend_arguments(source, tmp_path / "docs.jsonl", tmp_path / "bb", 1024, "auto"))
    assert result.exit_code == 0, result.output
    assert "$ ctxext transfer" in result.stdout
    config = json.loads((tmp_path / "bb" / "config.json").read_text())
    assert config["model_type"] == "big_bird" and config["attention_type"] == "block_sparse"
    assert json.loads((tmp_path / "bb" / "manifest.json").read_text())["held_out_evaluation"]["length"] == 1024

    for family, length, reason in (("bert", 256, "--len above 704"), ("mpnet", 1024, "not 'mpnet'")):
        other = tiny.make_sentence_transformer(family, tmp_path / family)
        out = tmp_path / f"{family}-out"
        refused = CliRunner().invoke(app, extend_arguments(other, tmp_path / "docs.jsonl", out, length, "bigbird"))
        assert refused.exit_code != 0 and "--recipe bigbird needs" in refused.stderr and reason in refused.stderr
        assert "$ ctxext" not in refused.stdout and not out.exists()


def test_the_held_out_report_scores_every_retrieval_form_and_the_card_names_no_machine_path(tmp_path, source):
    write_documents(tmp_path / "docs.jsonl")
    out = tmp_path / "extended"
    result = CliRunner().invoke(
        app, [*extend_arguments(source, tmp_path / "docs.jsonl", out, 256, "positions"), "--json"]
    )
    assert result.exit_code == 0, result.output
    found = json.loads((out / "manifest.json").read_text())["held_out_evaluation"]
    forms = {(row["form"], row["model"]): row["mrr"] for row in found["forms"]}
    assert list(forms) == [
        ("chunk-mean", "source"),
        ("chunk-max", "source"),
        ("whole", "extended"),
        ("late-chunk", "extended"),
        ("bm25", "bm25"),
        ("hybrid:chunk-max", "bm25 + source"),
        ("hybrid:late-chunk", "bm25 + extended"),
    ]
    assert (
        forms[("chunk-mean", "source")] == found["chunk_mean"]["mrr"]
        and forms[("whole", "extended")] == found["extended"]["mrr"]
    )
    card = (out / "README.md").read_text()
    assert "| late-chunk | this model |" in card and "| hybrid:chunk-max | BM25 + source |" in card
    held_out = card[card.index("## Held-out documents") :]
    assert str(tmp_path) not in held_out and found["set"] == "longdoc/test" and "(`longdoc/test` in the work" in card
    best = max(found["forms"], key=lambda row: row["mrr"])
    assert ("scores best" in result.stderr) == ("extended" not in best["model"])
