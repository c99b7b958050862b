"""Every writing command run twice into the same output: the second run, with --force, replaces the first (its
own previous output is always a ctxext output that --force may replace)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import train_helpers
from ctxext.cli import app
from data_helpers import structured_record, write_jsonl

STEPS = ["--steps", "1", "--batch-size", "2"]


def long_documents(tmp_path: Path) -> Path:
    from test_extend import write_documents

    write_documents(tmp_path / "long.jsonl")
    return tmp_path / "long.jsonl"


def commands(tmp_path: Path, tiny_models) -> dict[str, list]:
    bert, llama = tiny_models("bert"), tiny_models("llama")
    texts = train_helpers.write_texts(tmp_path / "texts.jsonl", count=8, words=20)
    triplets = train_helpers.write_triplets(tmp_path / "triplets.jsonl", count=4, words=20)
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [structured_record("astronomy", n, n) for n in range(6)])
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        json.dumps(
            {
                "id": "1",
                "question": "what is green",
                "context": "the grass is green",
                "answers": {"text": ["green"], "answer_start": [13]},
            }
        )
        + "\n"
    )
    flipped_qa = tmp_path / "flipped-qa"
    CliRunner().invoke(app, ["flip", str(llama), "--head", "qa", "-o", str(flipped_qa)])
    out = tmp_path / "out"
    return {
        "interpolate": ["interpolate", bert, "--len", "96", "--linear", "-o", out],
        "transfer": [
            "transfer",
            bert,
            "bigbird",
            "--len",
            "128",
            "--block-size",
            "8",
            "--random-blocks",
            "1",
            "-o",
            out,
        ],
        "guide": ["guide", bert, "--dim", "16", "--layers", "2", "-o", out],
        "flip": ["flip", llama, "-o", out],
        "average": ["average", bert, bert, "-o", out],
        "embed": ["embed", bert, texts, "-o", tmp_path / "e.npy"],
        "evaluate --plot": [
            "evaluate",
            bert,
            "--lengths",
            "64",
            "--documents",
            "4",
            "--queries",
            "2",
            "--plot",
            tmp_path / "p.png",
        ],
        "mlm": ["mlm", bert, "--data", texts, "--max-len", "32", *STEPS, "-o", out],
        "finetune": [
            "finetune",
            bert,
            "--data",
            triplets,
            "--max-len",
            "32",
            "--query-max-len",
            "16",
            *STEPS,
            "-o",
            out,
        ],
        "mntp": ["mntp", flipped_qa, "--data", texts, "--max-len", "32", *STEPS, "-o", out],
        "finetune-qa": ["finetune-qa", flipped_qa, "--train", qa, "--max-length", "32", *STEPS, "-o", out],
        "data corpus": ["data", "corpus", texts, "--tokenizer", bert, "-o", tmp_path / "c.parquet"],
        "data fit": ["data", "fit", texts, "--tokenizer", bert, "--budget", "16", "-o", tmp_path / "f.parquet"],
        "data triplets": ["data", "triplets", corpus, "--negatives-from", "bm25", "-o", tmp_path / "t.jsonl"],
        "data evidence": ["data", "evidence", "-o", out],
        "data longdoc": ["data", "longdoc", "--corpus", long_documents(tmp_path), "--tokenizer", bert]
        + ["--held-out", "0.3", "--min-tokens", "64", "--max-tokens", "128", "-o", out],
    }


NAMES = [
    "interpolate",
    "transfer",
    "guide",
    "flip",
    "average",
    "embed",
    "evaluate --plot",
    "mlm",
    "finetune",
    "mntp",
    "finetune-qa",
    "data corpus",
    "data fit",
    "data triplets",
    "data evidence",
    "data longdoc",
]


@pytest.mark.parametrize("name", NAMES)
def test_a_writing_command_run_twice_with_force_replaces_its_own_output(name, tiny_models, tmp_path):
    command = [str(part) for part in commands(tmp_path, tiny_models)[name]]
    first = CliRunner().invoke(app, command)
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, [*command, "--force"])
    assert second.exit_code == 0, second.output
