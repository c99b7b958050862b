"""`ctxext pipeline`: one of the training pipelines end to end, from a JSON or YAML config (configs/*.json).

  ctxext pipeline configs/modernbert_small_v2.json --work runs/msv2
  ctxext pipeline configs/specter2_bigbird_minilm.json --work runs/bigbird
  ctxext pipeline configs/minilm_spline_finetune.json --work runs/spline
  ctxext pipeline configs/ci_guide_distill.json --work /tmp/ci --set teacher=/path/to/tiny-teacher

The pipeline itself is ``ctxext.pipeline`` (its kinds, the config's checks, the run); this module parses its
command line, types each stage's options with that command's own parameters (:func:`stage_arguments`, so a
config and the command line can never disagree), and prints each stage's command line and result as it runs.
Each stage writes its manifest; a stage whose output exists is skipped (delete it, or run with --force, to
redo it); `--resume` continues interrupted Trainer runs; the training stages run under `accelerate launch` /
`torchrun`. A top-level `"revision"` reads a hub source (or teacher) at that branch, tag or commit in every
stage.
"""

from __future__ import annotations

import difflib
import functools
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ctxext.cli._common import (
    _click_exception,
    _usage_message,
    emit,
    progress_bars,
    quiet_library_progress_bars,
    reports_errors,
)
from ctxext.errors import InvalidArgument


def register(app: typer.Typer) -> None:
    app.command("pipeline")(pipeline_command)


@functools.cache
def _click_command(command: str) -> Any:
    """The click command of ``command`` ("finetune", "data longdoc")."""
    import typer.main

    from ctxext.cli import app

    found: Any = typer.main.get_command(app)
    for word in command.split():
        found = found.get_command(None, word)
    return found


def stage_arguments(command: str, values: dict[str, Any], where: str) -> dict[str, Any]:
    """A stage's option values (keys spelt as its command line spells them, with underscores: ``max_len`` for
    ``--max-len``; arguments by name) -> every parameter of ``command``, typed and checked by that command's
    own parameters (types, bounds, choices, required ones) with its defaults: ``ctxext.pipeline``'s
    ``OptionParser``. A key it does not take, or a value it cannot, is one usage error naming ``where``."""
    click_command = _click_command(command)
    names: dict[str, str] = {}  # spelling -> parameter name
    for parameter in click_command.params:
        longs = [opt for opt in parameter.opts if opt.startswith("--")]
        spellings = [opt[2:].replace("-", "_") for opt in longs] if longs else [parameter.name]
        names.update(dict.fromkeys(spellings, parameter.name))
    by_name = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, list(names), n=1)
            hint = f" (did you mean --{close[0].replace('_', '-')}?)" if close else ""
            raise InvalidArgument(f"{where}: no such option: --{key.replace('_', '-')}{hint}")
        if value is not None:
            by_name[names[key]] = value
    try:
        context = click_command.make_context(command, [], default_map=by_name)
    except _click_exception() as error:
        spelt = {name: key for key, name in names.items() if key in values}  # parameter name -> the config's key
        given = values.get(spelt.get(getattr(getattr(error, "param", None), "name", None) or "", ""))
        shown = f" (given: {given!r})" if given is not None else ""
        raise InvalidArgument(f"{where}: {_usage_message(error)}{shown}") from None
    return dict(context.params)


def cli_events() -> Any:
    """The pipeline's events on the terminal: each stage's command line before it runs (`$ ctxext ...`), a
    skipped stage, each result as its command prints it, progress bars on stderr."""
    from ctxext.cli.data import _warn_problems, warn_missing_packages
    from ctxext.pipeline import Events

    def starting(step: Any) -> None:
        quiet_library_progress_bars()
        print("$ ctxext " + step.command_line(), flush=True)

    def finished(step: Any, result: Any) -> None:
        if step.command == "data longdoc":
            warn_missing_packages(result)
        if step.command == "data triplets":
            _warn_problems(result.problems)
        emit(result, False)

    def skipped(step: Any) -> None:
        print(f"skip {step.command}: {step.out} exists", flush=True)

    return Events(starting, skipped, finished, progress_bars, sys.argv)


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
    from ctxext.pipeline import check_config, claim_stage_outputs, read_config, run_pipeline, work_folder

    config = read_config(config_path)
    for item in overrides or []:
        key, _, value = item.partition("=")
        config[key] = value
    work = work.expanduser().absolute()
    plan = check_config(config, str(config_path), work, stage_arguments)
    with work_folder(work):
        claim_stage_outputs(plan, force=force)
        run_pipeline(plan, resume=resume, force=force, events=cli_events())
