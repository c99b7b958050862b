"""`ctxext pipeline`: one of the training pipelines end to end, from a JSON or YAML config (configs/*.json).

  ctxext pipeline configs/modernbert_small_v2.json --work runs/msv2
  ctxext pipeline configs/specter2_bigbird_minilm.json --work runs/bigbird
  ctxext pipeline configs/minilm_spline_finetune.json --work runs/spline
  ctxext pipeline configs/ci_guide_distill.json --work /tmp/ci --set teacher=/path/to/tiny-teacher

Each stage is the ctxext command of the same name, run in-process, so every output folder carries its
manifest; the commands are printed as they run. A stage whose output exists is skipped (delete it, or run with
--force, to redo it); `--resume` continues interrupted Trainer runs. Scaling up is a matter of the numbers in
the config (steps, batch sizes, lengths); the training stages run under `accelerate launch` / `torchrun`.
A top-level `"revision"` reads a hub source (or teacher) at that branch, tag or commit in every stage.

Training text never needs a download: `docstrings.jsonl` is built from the docstrings of the standard
library and of the installed packages `"data": {"docstrings": {"packages": [...]}}` lists (`stdlib` by
default, never a held-out package; `ctxext.data.pydocs.python_docstrings`), `pydocs.jsonl` +
`triplets.jsonl` from the standard library's module documentation
(`ctxext data pydocs`, `ctxext data triplets`), and the retrieval set `pydocs-beir/` pairs a function's
docstring summary (query) with its source without the docstring (document; `write_pydocs_beir`).
`"data": {"triplets": {"corpus": "my-docs.jsonl"}}` makes the triplets from your own documents instead.
`"data": {"longdoc": {...}}` builds the long-document set (`ctxext data longdoc`) under `longdoc/`;
`"evaluate": {"task": "retrieval", "longdoc_split": "dev"}` evaluates on it, and `"baseline_chunk": 512` adds
the starting model over 512-token chunks.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ctxext.cli._common import reports_errors
from ctxext.errors import CtxextError, InvalidArgument


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


def run_unless_written(arguments: list[str], out: Path, flags: list[str], force: bool) -> None:
    if out.exists() and not force:
        print(f"skip {arguments[0]}: {out} exists", flush=True)
        return
    run([*arguments, "-o", str(out), *flags])
    if "accelerate.state" in sys.modules:  # a stage's mixed precision must not leak into the next stage's Trainer
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()


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
    from ctxext.data.pydocs import STDLIB, check_training_packages, python_docstrings, write_pydocs_beir
    from ctxext.io import atomic_file

    paths = {}
    data = config.get("data", {})
    if "docstrings" in data:
        path = paths["docstrings"] = work / "docstrings.jsonl"
        packages = data["docstrings"].get("packages", [STDLIB])
        check_training_packages(packages)
        if not path.exists():
            texts = dict.fromkeys(text for package in packages for _, text in python_docstrings(package=package))
            chosen = list(texts)[: data["docstrings"].get("limit")]  # each text once: libraries repeat docstrings
            with atomic_file(path) as temporary:  # an interrupted run leaves no half-written file to reuse
                temporary.write_text("".join(json.dumps({"text": text}) + "\n" for text in chosen))
    if "beir" in data:
        path = paths["beir"] = work / "pydocs-beir"
        if not path.exists():
            write_pydocs_beir(path, limit=data["beir"].get("limit", 300))
    if "longdoc" in data:
        path = paths["longdoc"] = work / "longdoc"
        if not path.exists():
            run(["data", "longdoc", "-o", str(path), *options(data["longdoc"])])
    if "triplets" in data:
        own = data["triplets"].get("corpus")  # the user's documents, else the standard library's pages
        corpus = Path(own).expanduser() if own else work / "pydocs.jsonl"
        triplets = paths["triplets"] = work / "triplets.jsonl"
        if own and not corpus.exists():
            raise InvalidArgument(f"data.triplets.corpus: {corpus} does not exist")
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
    if not isinstance(config, dict) or config.get("pipeline") not in PIPELINE_STAGES:
        raise InvalidArgument(f"{path}: 'pipeline' must be one of {', '.join(PIPELINE_STAGES)}")
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
    """Run a training pipeline end to end: guide-distill, transfer-finetune, interpolate-finetune or
    interpolate-finetune-transfer-finetune.

    Example: ctxext pipeline configs/minilm_spline_finetune.json --work runs/spline
    """
    config = read_config(config_path)
    for item in overrides or []:
        key, _, value = item.partition("=")
        config[key] = value
    run_pipeline(config, work.expanduser().absolute(), resume=resume, force=force)


@dataclass(frozen=True)
class Stage:
    """One stage: the ctxext command, the folder it writes (under --work; ``{previous}``: the folder of the
    stage before), its arguments before the config section's options, and whether ``--resume`` applies."""

    command: str
    out: str
    arguments: Callable[[dict[str, Any], dict[str, Path], Path | None], list[str]]
    resumable: bool = True
    section: str = ""
    """The config section of its options (default: the command's name)."""


def _at_revision(config: dict[str, Any], flag: str = "--revision") -> list[str]:
    """The config's ``revision`` (of its hub source or teacher) as the stage's option, when it names one."""
    return [flag, str(config["revision"])] if config.get("revision") else []


def _on_triplets(config: dict[str, Any], data: dict[str, Path], previous: Path | None) -> list[str]:
    return [str(previous), "--data", str(data["triplets"])]


_INTERPOLATE_FINETUNE = [
    Stage(
        "interpolate",
        "interpolated",
        lambda config, data, previous: [config["source"], *_at_revision(config)],
        resumable=False,
    ),
    Stage("finetune", "{previous}-finetuned", _on_triplets),
]

PIPELINE_STAGES: dict[str, list[Stage]] = {
    "guide-distill": [
        Stage(
            "guide",
            "student",
            lambda config, data, previous: [config["teacher"], *_at_revision(config)],
            resumable=False,
        ),
        Stage("mlm", "student-mlm", lambda config, data, previous: [str(previous), "--data", str(data["docstrings"])]),
        Stage(
            "distill",
            "student-distilled",
            lambda config, data, previous: [
                *[str(previous), "--teacher", config["teacher"], *_at_revision(config, "--teacher-revision")],
                *["--data", str(data["docstrings"])],
                *["--eval-beir", str(data["beir"])],
            ],
        ),
    ],
    "transfer-finetune": [
        Stage(
            "transfer",
            "bigbird",
            lambda config, data, previous: [config["source"], "bigbird", *_at_revision(config)],
            resumable=False,
        ),
        Stage("finetune", "{previous}-finetuned", _on_triplets),
    ],
    "interpolate-finetune": _INTERPOLATE_FINETUNE,
    # the long model with full attention first, then BigBird from it (the seed's swapped attention)
    "interpolate-finetune-transfer-finetune": [
        *_INTERPOLATE_FINETUNE,
        Stage("transfer", "bigbird", lambda config, data, previous: [str(previous), "bigbird"], resumable=False),
        Stage("finetune", "{previous}-finetuned", _on_triplets, section="finetune_bigbird"),
    ],
}


def run_pipeline(config: dict[str, Any], work: Path, *, resume: bool, force: bool) -> None:
    """Every stage of ``config["pipeline"]`` in order (a stage whose output exists is skipped unless
    ``force``), then ``ctxext evaluate`` on the starting model(s) and the result, plotted under ``work``."""
    from ctxext.train.runner import is_main_process

    data, written = run_stages(config, work, resume=resume, force=force)
    if is_main_process():  # the evaluation and its plot are written once
        evaluate_stages(config, data, written, work)


def run_stages(config: dict[str, Any], work: Path, *, resume: bool, force: bool) -> tuple[dict[str, Path], list[Path]]:
    """The data files, then every stage in order; the data paths and the folders the stages wrote."""
    from ctxext.train.runner import TrainSettings, is_main_process, main_process_first

    work.mkdir(parents=True, exist_ok=True)
    with main_process_first(TrainSettings()):
        data = build_data(work, config)  # the main process builds the files; the others find them
    written: list[Path] = []
    for stage in PIPELINE_STAGES[config["pipeline"]]:
        previous = written[-1] if written else None
        out = work / stage.out.format(previous=previous.name if previous else "")
        flags = [*(["--force"] if force else []), *(["--resume"] if resume and stage.resumable else [])]
        section = config.get(stage.section or stage.command, {})
        arguments = [stage.command, *stage.arguments(config, data, previous), *options(section)]
        if stage.resumable:  # a training stage: every process of a distributed run trains
            run_unless_written(arguments, out, flags, force)
        else:  # surgery: the main process writes; the others then find its output
            with main_process_first(TrainSettings()):
                run_unless_written(arguments, out, flags, force and is_main_process())
        written.append(out)
    return data, written


def evaluate_stages(config: dict[str, Any], data: dict[str, Path], written: list[Path], work: Path) -> None:
    starting = config["teacher"] if config["pipeline"] == "guide-distill" else config["source"]
    evaluated = [
        starting,
        *(str(path) for path in written[:-1] if config["pipeline"] != "guide-distill"),
        str(written[-1]),
    ]
    evaluation = dict(config.get("evaluate", {}))
    baseline_chunk = evaluation.pop("baseline_chunk", None)
    if evaluation.get("task") == "retrieval":
        split = evaluation.pop("longdoc_split", None)
        evaluation["beir"] = str(data["longdoc"] / split if split else data["beir"])
    if baseline_chunk:  # what users do today: the starting model over chunks
        run(["evaluate", starting, *options(evaluation), *_at_revision(config), "--chunk", str(baseline_chunk)])
    # the plot is this pipeline's own output, so a rerun replaces it
    run(
        [
            "evaluate",
            *evaluated,
            *options(evaluation),
            *_at_revision(config),
            "--plot",
            str(work / "evaluate.png"),
            "--force",
        ]
    )
