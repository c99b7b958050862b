"""Every model output carries its own model card, written from its manifest; the source's card is never copied."""

from __future__ import annotations

import json
import shutil

import pytest
from huggingface_hub import ModelCard
from typer.testing import CliRunner

import tiny
import train_helpers
from ctxext.cli import app

STALE = "This card describes the SOURCE model: 256 word pieces."
TINY_TRAINING = ["--steps", 1, "--batch-size", 2, "--max-len", 32]


def run(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr


@pytest.fixture
def source(tiny_models, tmp_path):
    """A tiny BERT whose own card has a license and a stale figure."""
    folder = tiny_models("bert", copy_to=tmp_path / "src")
    (folder / "README.md").write_text(f"---\nlicense: mit\nlibrary_name: transformers\n---\n\n{STALE}\n")
    return folder


COMMANDS = {
    "interpolate": lambda src, tmp: ["interpolate", src, "--len", 128, "--tile"],
    "transfer": lambda src, tmp: ["transfer", src, "bigbird", "--len", 256, "--block-size", 8, "--random-blocks", 1],
    "guide": lambda src, tmp: ["guide", src, "--dim", 16, "--layers", 2],
    "average": lambda src, tmp: ["average", src, src],
    "finetune": lambda src, tmp: [
        "finetune",
        src,
        "--data",
        train_helpers.write_triplets(tmp / "t.jsonl", words=20),
        "--steps",
        1,
        "--batch-size",
        2,
        "--max-len",
        32,
        "--query-max-len",
        16,
    ],
    "mlm": lambda src, tmp: ["mlm", src, "--data", train_helpers.write_texts(tmp / "t.jsonl"), *TINY_TRAINING],
    "distill": lambda src, tmp: [
        "distill",
        src,
        "--teacher",
        tiny.make_sentence_transformer("bert", tmp / "teacher"),
        "--data",
        train_helpers.write_texts(tmp / "t.jsonl"),
        *TINY_TRAINING,
    ],
}
LIBRARY = {"guide": "sentence-transformers", "distill": "sentence-transformers"}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_model_output_has_its_own_card_that_the_hub_parses(command, source, tmp_path):
    run(*COMMANDS[command](source, tmp_path), "-o", tmp_path / "out")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    # guide and distill write a sentence-transformers folder around their student; the others keep the source's form
    assert card.data.library_name == LIBRARY.get(command, "transformers")
    assert card.data.license == "mit"
    assert card.data.base_model is None  # a local folder: no hub ID to link to
    assert {"ctxext", f"ctxext-{command}"} <= set(card.data.tags)
    assert STALE not in card.text and "## Checks" in card.text
    assert "from_pretrained" in card.text or "SentenceTransformer(" in card.text
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "README.md" in manifest["operations"][0]["files"].get("left_out", ["README.md"])


@pytest.mark.slow
def test_a_stretched_minilm_names_its_hub_base_and_drops_the_old_figures(minilm, tmp_path):
    run("interpolate", "all-MiniLM-L6-v2", "--len", 1024, "--tile", "-o", tmp_path / "out")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.library_name == "sentence-transformers" and card.data.pipeline_tag == "sentence-similarity"
    assert card.data.license == "apache-2.0"
    assert "256 word pieces" in (minilm / "README.md").read_text() and "256 word pieces" not in card.text
    assert "SentenceTransformer(" in card.text


def test_a_flipped_decoder_card_says_how_to_load_it(tiny_models, tmp_path):
    source = tiny_models("llama", copy_to=tmp_path / "src")
    run("flip", source, "--head", "qa", "-o", tmp_path / "out")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.pipeline_tag == "question-answering" and "ctxext.flip.register()" in card.text
    assert "AutoModelForQuestionAnswering" in card.text


@pytest.mark.parametrize("command", ["mntp", "finetune-qa"])
def test_a_trained_flipped_decoder_keeps_a_card_of_its_own(command, tiny_models, tmp_path):
    from ctxext.data.formats import QAExample, write_squad_jsonl

    run("flip", tiny_models("llama", copy_to=tmp_path / "src"), "--head", "qa", "-o", tmp_path / "flipped")
    context = "the sky is blue . the pass key is green here we go"
    write_squad_jsonl(
        tmp_path / "qa.jsonl", [QAExample("0", "the pass key", context, ["green"], [context.index("green")])] * 4
    )
    data = ["--data", train_helpers.write_texts(tmp_path / "t.jsonl")] if command == "mntp" else []
    data = data or ["--train", tmp_path / "qa.jsonl", "--max-length", 48]
    run(command, tmp_path / "flipped", *data, "--steps", 1, "--batch-size", 2, "-o", tmp_path / "out")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert {"ctxext", f"ctxext-{command}"} <= set(card.data.tags) and "## Checks" in card.text
    assert card.data.pipeline_tag == "question-answering" and "ctxext.flip.register()" in card.text


def test_a_source_without_a_card_gives_a_card_without_a_license(tiny_models, tmp_path):
    source = tiny_models("bert", copy_to=tmp_path / "src")
    shutil.rmtree(tmp_path / "src" / "README.md", ignore_errors=True)
    run("interpolate", source, "--len", 128, "--tile", "-o", tmp_path / "out", "--no-check")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.license is None and "offset rows unchanged" in card.text
    assert tiny.FAMILIES["bert"][1] in card.text


def test_written_configs_name_current_versions_and_no_local_paths(tiny_models, tmp_path):
    from importlib import metadata

    source = tiny.make_sentence_transformer("bert", tmp_path / "src")
    (source / "config_sentence_transformers.json").write_text(
        json.dumps({"__version__": {"sentence_transformers": "2.0.0", "transformers": "4.6.1", "pytorch": "1.8.1"}})
    )
    run("guide", source, "--dim", 16, "--layers", 2, "-o", tmp_path / "out")
    versions = json.loads((tmp_path / "out" / "config_sentence_transformers.json").read_text())["__version__"]
    assert versions["transformers"] == metadata.version("transformers")
    assert "_name_or_path" not in json.loads((tmp_path / "out" / "config.json").read_text())


def test_the_cli_runs_as_a_module():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ctxext.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("ctxext ")
