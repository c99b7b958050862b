"""Quiet on today's stack: the normal path of every kind of command raises no FutureWarning and no
DeprecationWarning of transformers or sentence-transformers (each one is an error here)."""

from __future__ import annotations

import json
import warnings

from typer.testing import CliRunner

import tiny
from ctxext.cli import app


def test_the_tiny_suite_of_commands_runs_without_a_future_or_deprecation_warning(tiny_models, tmp_path):
    texts = tmp_path / "texts.jsonl"
    words = " ".join(tiny.WORDS)
    texts.write_text("".join(json.dumps({"text": f"{words} {n}"}) + "\n" for n in range(8)))
    triplets = tmp_path / "triplets.jsonl"
    triplets.write_text(
        "".join(
            json.dumps({"query": "long model", "positive": words, "negative": "the sky is blue"}) + "\n"
            for _ in range(4)
        )
    )
    bert, llama = tiny_models("bert"), tiny.make_model("llama", tmp_path / "llama-bf16", dtype="bfloat16")
    steps = ["--steps", "1", "--batch-size", "2"]
    commands = [
        ["interpolate", bert, "--len", "96", "--linear", "-o", tmp_path / "interpolated"],
        [
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
            tmp_path / "bb",
        ],
        ["guide", bert, "--dim", "16", "--layers", "2", "-o", tmp_path / "student"],
        ["flip", llama, "--pooling", "mean", "-o", tmp_path / "flipped"],
        ["flip", tiny_models("qwen2"), "--head", "qa", "-o", tmp_path / "flipped-qa"],
        ["flip", tiny_models("gemma3"), "-o", tmp_path / "flipped-gemma"],
        ["embed", bert, texts, "-o", tmp_path / "e.npy"],
        [
            "finetune",
            bert,
            "--data",
            triplets,
            "--max-len",
            "32",
            "--query-max-len",
            "16",
            *steps,
            "-o",
            tmp_path / "ft",
        ],
        ["mlm", bert, "--data", texts, "--max-len", "32", *steps, "-o", tmp_path / "mlm"],
        ["mntp", tmp_path / "flipped", "--data", texts, "--max-len", "32", *steps, "-o", tmp_path / "mntp"],
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.filterwarnings("error", category=DeprecationWarning, module="(transformers|sentence_transformers)")
        for command in commands:
            result = CliRunner().invoke(app, [str(part) for part in command])
            assert result.exit_code == 0, (command[0], result.output)
