"""Run one of the training pipelines end to end from a JSON config (configs/*.json).

  python scripts/pipeline.py configs/modernbert_small_v2.json --work runs/msv2
  python scripts/pipeline.py configs/specter2_bigbird_minilm.json --work runs/bigbird
  python scripts/pipeline.py configs/minilm_spline_finetune.json --work runs/spline
  python scripts/pipeline.py configs/ci_guide_distill.json --work /tmp/ci --set teacher=/path/to/tiny-teacher

Each stage is the ctxext CLI command of the same name, run in-process (`ctxext.cli.app`), so every output
folder carries its manifest; the commands are printed as they run. A stage whose output exists is skipped
(delete it, or run with --force, to redo it); `--resume` continues interrupted Trainer runs.

Training text never needs a download: `docstrings.jsonl` is built from the standard library's docstrings
(`ctxext.train.python_docstrings`), `pydocs.jsonl` + `triplets.jsonl` from its module documentation
(`ctxext data pydocs`, `ctxext data triplets`), and the retrieval set `pydocs-beir/` pairs a function's
docstring summary (query) with its source without the docstring (document; `write_pydocs_beir`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

PIPELINES = ("guide-distill", "transfer-finetune", "interpolate-finetune")


def run(arguments: list[str]) -> None:
    from ctxext.cli import app

    print("$ ctxext " + " ".join(shlex.quote(a) for a in arguments), flush=True)
    try:
        code = app(arguments, prog_name="ctxext", standalone_mode=False)
    except SystemExit as error:
        code = error.code
    if code:
        raise SystemExit(f"stage failed: ctxext {arguments[0]} (exit {code})")


def options(values: dict[str, Any]) -> list[str]:
    """{"max_len": 128, "keep_checkpoints": true} -> ["--max-len", "128", "--keep-checkpoints"]."""
    out: list[str] = []
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is False or value is None:
            continue
        else:
            out += [flag, str(value)]
    return out


def build_data(work: Path, config: dict[str, Any]) -> dict[str, Path]:
    from ctxext.train import python_docstrings
    from ctxext.train.distill import write_pydocs_beir

    paths = {}
    data = config.get("data", {})
    if "docstrings" in data:
        path = paths["docstrings"] = work / "docstrings.jsonl"
        if not path.exists():
            pairs = python_docstrings()[: data["docstrings"].get("limit")]
            path.write_text("".join(json.dumps({"text": text}) + "\n" for _, text in pairs))
    if "beir" in data:
        path = paths["beir"] = work / "pydocs-beir"
        if not path.exists():
            write_pydocs_beir(path, limit=data["beir"].get("limit", 300))
    if "triplets" in data:
        corpus, triplets = work / "pydocs.jsonl", work / "triplets.jsonl"
        paths["triplets"] = triplets
        if not corpus.exists():
            run(["data", "pydocs", "-o", str(corpus), *options(data["triplets"].get("pydocs", {}))])
        if not triplets.exists():
            run(["data", "triplets", str(corpus), "-o", str(triplets), *options(data["triplets"].get("options", {}))])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--work", type=Path, required=True, help="folder for every stage's output")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a top-level config value (teacher, source, ...)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--force", action="store_true")
    arguments = parser.parse_args()
    config = json.loads(arguments.config.read_text())
    for item in arguments.set:
        key, _, value = item.partition("=")
        config[key] = value
    if config.get("pipeline") not in PIPELINES:
        raise SystemExit(f"{arguments.config}: 'pipeline' must be one of {', '.join(PIPELINES)}")
    work = arguments.work.expanduser().absolute()
    work.mkdir(parents=True, exist_ok=True)
    data = build_data(work, config)
    extra = (["--resume"] if arguments.resume else [])
    force = ["--force"] if arguments.force else []

    def stage(name: str, out: Path, command: list[str], resumable: bool = True) -> Path:
        if out.exists() and not arguments.force:
            print(f"skip {name}: {out} exists", flush=True)
            return out
        run([*command, "-o", str(out), *force, *(extra if resumable else [])])
        return out

    if config["pipeline"] == "guide-distill":
        student = stage("guide", work / "student", ["guide", config["teacher"],
                                                    *options(config.get("guide", {}))], resumable=False)
        trained = stage("mlm", work / "student-mlm", ["mlm", str(student), "--data", str(data["docstrings"]),
                                                      *options(config.get("mlm", {}))])
        final = stage("distill", work / "student-distilled",
                      ["distill", str(trained), "--teacher", config["teacher"], "--data", str(data["docstrings"]),
                       "--eval-beir", str(data["beir"]), *options(config.get("distill", {}))])
        evaluated = [config["teacher"], str(final)]
    else:
        if config["pipeline"] == "transfer-finetune":
            long_model = stage("transfer", work / "bigbird", ["transfer", config["source"], "bigbird",
                                                              *options(config.get("transfer", {}))], resumable=False)
        else:
            long_model = stage("interpolate", work / "interpolated", ["interpolate", config["source"],
                                                                      *options(config.get("interpolate", {}))],
                               resumable=False)
        final = stage("finetune", work / f"{long_model.name}-finetuned",
                      ["finetune", str(long_model), "--data", str(data["triplets"]),
                       *options(config.get("finetune", {}))])
        evaluated = [config["source"], str(long_model), str(final)]
    evaluation = config.get("evaluate", {})
    if evaluation.get("task") == "retrieval":
        evaluation = {**evaluation, "beir": str(data["beir"])}
    run(["evaluate", *evaluated, *options(evaluation), "--plot", str(work / "evaluate.png")])


if __name__ == "__main__":
    sys.exit(main())
