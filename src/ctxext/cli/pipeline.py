"""`ctxext pipeline`: one of the training pipelines end to end, from a JSON or YAML config (configs/*.json).

  ctxext pipeline configs/modernbert_small_v2.json --work runs/msv2
  ctxext pipeline configs/specter2_bigbird_minilm.json --work runs/bigbird
  ctxext pipeline configs/minilm_spline_finetune.json --work runs/spline
  ctxext pipeline configs/ci_guide_distill.json --work /tmp/ci --set teacher=/path/to/tiny-teacher

Each stage is the ctxext command of the same name, run in-process, so every output folder carries its
manifest; the commands are printed as they run. A stage whose output exists is skipped (delete it, or run with
--force, to redo it); `--resume` continues interrupted Trainer runs. Scaling up is a matter of the numbers in
the config (steps, batch sizes, lengths); the training stages run under `accelerate launch` / `torchrun`.

Training text never needs a download: `docstrings.jsonl` is built from the standard library's docstrings
(`ctxext.train.python_docstrings`), `pydocs.jsonl` + `triplets.jsonl` from its module documentation
(`ctxext data pydocs`, `ctxext data triplets`), and the retrieval set `pydocs-beir/` pairs a function's
docstring summary (query) with its source without the docstring (document; `write_pydocs_beir`).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from ctxext.cli._common import reports_errors
from ctxext.errors import CtxextError

PIPELINES = ("guide-distill", "transfer-finetune", "interpolate-finetune")


class StageFailed(CtxextError):
    """A stage of a pipeline failed; the pipeline exits with that stage's code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def run(arguments: list[str]) -> None:
    """One stage: the ctxext command, in this process; a failed stage stops the pipeline with its exit code."""
    from ctxext.cli import app

    print("$ ctxext " + " ".join(shlex.quote(a) for a in arguments), flush=True)
    try:
        code = app(arguments, prog_name="ctxext", standalone_mode=False)
    except SystemExit as error:
        code = error.code
    if code:
        raise StageFailed(f"stage failed: ctxext {arguments[0]} (exit {code}); its own message is above", int(code))


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
    from ctxext.data.pydocs import python_docstrings
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


def register(app: typer.Typer) -> None:
    app.command("pipeline")(pipeline_command)


def read_config(path: Path) -> dict[str, Any]:
    """A pipeline config: JSON, or YAML (``.yaml``/``.yml``) read with ``yaml.safe_load``."""
    from ctxext.errors import InvalidArgument
    from ctxext.io import input_file, read_json

    path = input_file(path, "pipeline config")
    if path.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise InvalidArgument(f"{path} is not valid YAML ({str(error).splitlines()[0]})") from None
    else:
        config = read_json(path)
    if not isinstance(config, dict) or config.get("pipeline") not in PIPELINES:
        raise InvalidArgument(f"{path}: 'pipeline' must be one of {', '.join(PIPELINES)}")
    return config


@reports_errors
def pipeline_command(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="Pipeline config (configs/*.json, or YAML).")],
    work: Annotated[Path, typer.Option("--work", help="Folder for every stage's output.")],
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=VALUE", help="Override a top-level config value (teacher, source, ...); repeatable."
        ),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue interrupted Trainer runs.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo stages whose output exists.")] = False,
) -> None:
    """Run a training pipeline end to end: guide-distill, transfer-finetune or interpolate-finetune.

    Example: ctxext pipeline configs/minilm_spline_finetune.json --work runs/spline
    """
    config = read_config(config_path)
    for item in overrides or []:
        key, _, value = item.partition("=")
        config[key] = value
    work = work.expanduser().absolute()
    work.mkdir(parents=True, exist_ok=True)
    data = build_data(work, config)
    extra = ["--resume"] if resume else []
    forced = ["--force"] if force else []

    def stage(name: str, out: Path, command: list[str], resumable: bool = True) -> Path:
        if out.exists() and not force:
            print(f"skip {name}: {out} exists", flush=True)
            return out
        run([*command, "-o", str(out), *forced, *(extra if resumable else [])])
        return out

    if config["pipeline"] == "guide-distill":
        student = stage(
            "guide", work / "student", ["guide", config["teacher"], *options(config.get("guide", {}))], resumable=False
        )
        trained = stage(
            "mlm",
            work / "student-mlm",
            ["mlm", str(student), "--data", str(data["docstrings"]), *options(config.get("mlm", {}))],
        )
        final = stage(
            "distill",
            work / "student-distilled",
            [
                "distill",
                str(trained),
                "--teacher",
                config["teacher"],
                "--data",
                str(data["docstrings"]),
                "--eval-beir",
                str(data["beir"]),
                *options(config.get("distill", {})),
            ],
        )
        evaluated = [config["teacher"], str(final)]
    else:
        if config["pipeline"] == "transfer-finetune":
            long_model = stage(
                "transfer",
                work / "bigbird",
                ["transfer", config["source"], "bigbird", *options(config.get("transfer", {}))],
                resumable=False,
            )
        else:
            long_model = stage(
                "interpolate",
                work / "interpolated",
                ["interpolate", config["source"], *options(config.get("interpolate", {}))],
                resumable=False,
            )
        final = stage(
            "finetune",
            work / f"{long_model.name}-finetuned",
            ["finetune", str(long_model), "--data", str(data["triplets"]), *options(config.get("finetune", {}))],
        )
        evaluated = [config["source"], str(long_model), str(final)]
    evaluation = config.get("evaluate", {})
    if evaluation.get("task") == "retrieval":
        evaluation = {**evaluation, "beir": str(data["beir"])}
    # the plot is this pipeline's own output, so a rerun replaces it
    run(["evaluate", *evaluated, *options(evaluation), "--plot", str(work / "evaluate.png"), "--force"])
