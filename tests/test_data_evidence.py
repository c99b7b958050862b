"""`ctxext data evidence`: posts, criteria and evidence spans from Python's language reference topics."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from ctxext.cli import app
from ctxext.data.evidence import reference_topics
from ctxext.data.formats import read_squad_jsonl
from ctxext.qa_prompt import load_prompt_config


def test_train_and_test_share_no_topic_and_every_answer_is_the_criterions_sentence(tmp_path):
    result = CliRunner().invoke(app, ["data", "evidence", "-o", str(tmp_path / "ev"), "--posts-per-topic", "3"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "ev" / "manifest.json").read_text())
    assert not set(manifest["topics"]["train"]) & set(manifest["topics"]["test"])
    topics = {topic.title: topic for topic in reference_topics()}
    for split in ("train", "test"):
        keys = set(manifest["topics"][split])
        examples = read_squad_jsonl(tmp_path / "ev" / f"{split}.jsonl")  # checks each answer sits at its start
        assert len(examples) == 3 * len(keys) == manifest["counts"][split]["examples"]
        for example in examples:
            criterion = topics[example.question]
            assert criterion.key in keys and example.id.split("-", 1)[1].rsplit("-", 1)[0] in keys
            assert example.answers[0] in criterion.sentences
            assert example.context.count(example.answers[0]) == 1


def test_the_prompt_is_the_seeds_and_the_set_is_the_same_for_the_same_seed(tmp_path):
    runner = CliRunner()
    for name in ("a", "b"):
        assert runner.invoke(app, ["data", "evidence", "-o", str(tmp_path / name), "--seed", "3"]).exit_code == 0
    assert (tmp_path / "a" / "test.jsonl").read_text() == (tmp_path / "b" / "test.jsonl").read_text()
    prompt = load_prompt_config(tmp_path / "a" / "prompt.json")
    text, offset = prompt.render("The assert statement", "A post.")
    assert text.index("[INST]") < text.index("[POST]") < text.index("[/POST]") < text.index("[CRITERION]")
    assert text[offset:].startswith("A post.") and "[CRITERION] The assert statement [/CRITERION]" in text


def test_an_existing_folder_is_kept_unless_forced(tmp_path):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "mine.txt").write_text("keep")
    result = CliRunner().invoke(app, ["data", "evidence", "-o", str(tmp_path / "ev")])
    assert result.exit_code != 0 and (tmp_path / "ev" / "mine.txt").read_text() == "keep"
    assert "Traceback" not in result.output
