"""A training pipeline end to end, from a JSON or YAML config (configs/*.json): what ``ctxext pipeline`` and
``ctxext extend`` run.

The pipeline kinds are data (:data:`PIPELINE_STAGES`): each stage names the command it is, the folder it
writes under the work folder, and the inputs the pipeline gives it; the config's section of that stage holds
the command's options, spelt as on its command line with underscores (``max_len`` for ``--max-len``).
:func:`check_config` checks the whole config before anything runs and returns the :class:`Plan`: every step
with its typed arguments, parsed by an :data:`OptionParser` (the command line's own parameters: see
``ctxext.cli.pipeline.stage_arguments``), so an unknown key, a misspelt option or a bad value in the last stage
is one usage error (exit 4) naming that stage and option. :func:`run_pipeline` then calls each stage's library
function (``ctxext.commands``), skipping a stage whose output exists (unless ``force``); ``resume`` continues
interrupted Trainer runs. Nothing is printed here: the caller's :class:`Events` hear each step.

Training text never needs a download: ``docstrings.jsonl`` is built from the docstrings of the standard
library and of the installed packages ``"data": {"docstrings": {"packages": [...]}}`` lists (``stdlib`` by
default, never a held-out package), ``pydocs.jsonl`` + ``triplets.jsonl`` from the standard library's module
documentation (``data pydocs``, ``data triplets``; ``"corpus"`` makes the triplets from your own documents),
the retrieval set ``pydocs-beir/`` from functions' docstrings and sources (``write_pydocs_beir``), and
``"longdoc"`` the long-document set (``data longdoc``) under ``longdoc/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.errors import CtxextError, InvalidArgument
from ctxext.pipeline.kinds import PIPELINE_STAGES, OptionParser, Stage, StageFailed, command_line
from ctxext.pipeline.plan import Plan, Step, check_config, data_paths, read_config, triplets_corpus

__all__ = [
    "PIPELINE_STAGES",
    "Events",
    "OptionParser",
    "PipelineResult",
    "Plan",
    "Stage",
    "StageFailed",
    "Step",
    "build_data",
    "check_config",
    "claim_stage_outputs",
    "command_line",
    "data_paths",
    "read_config",
    "run_pipeline",
    "run_stages",
    "run_step",
    "work_folder",
]


# ----------------------------------------------------------------------------- running the plan


def _no_event(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class Events:
    """What the caller hears of a run (the library prints nothing): a step about to run, a stage skipped
    because its output exists, a step's result; ``progress`` draws a step's progress, ``argv`` is the command
    line each manifest records."""

    starting: Callable[[Step], None] = _no_event
    skipped: Callable[[Step], None] = _no_event
    finished: Callable[[Step, Any], None] = _no_event
    progress: Callable[[], AbstractContextManager[ProgressFn]] = field(
        default=lambda: contextlib.nullcontext(no_progress)
    )
    argv: list[str] | None = None


def run_step(step: Step, events: Events) -> Any:
    """One step: its command's library call, in a run scope of its own (sharing the pipeline's inputs); a failed
    step stops the pipeline with its own message (naming the stage) and its exit code."""
    from ctxext.commands import COMMANDS, CallContext
    from ctxext.io import run_scope

    events.starting(step)
    try:
        with run_scope(), events.progress() as progress:
            result = COMMANDS[step.command](step.arguments, CallContext(progress, events.argv))
    except CtxextError as error:
        raise StageFailed(f"stage ctxext {step.command}: {error}", error.exit_code) from None
    events.finished(step, result)
    return result


def _run_unless_written(step: Step, events: Events, *, resume: bool, force: bool) -> None:
    if step.out is not None and step.out.exists() and not force:
        events.skipped(step)
        return
    run_step(_with_flags(step, resume=resume, force=force), events)
    if "accelerate.state" in sys.modules:  # a stage's mixed precision must not leak into the next stage's Trainer
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state()


def _with_flags(step: Step, *, resume: bool, force: bool) -> Step:
    """The step with the run's ``--force`` and (a training stage) ``--resume``."""
    flags = {"force": force, **({"resume": resume} if step.resumable else {})}
    shown = {key: value for key, value in flags.items() if value}
    return Step(
        step.command,
        step.section,
        {**step.values, **shown},
        {**step.arguments, **flags},
        step.positional,
        step.out,
        step.resumable,
    )


def build_data(work: Path, config: dict[str, Any], plan: Plan | None = None, events: Events | None = None) -> dict:
    """The data files the config asks for under ``work`` (each kept once built); ``plan``: its data commands."""
    from ctxext.data.pydocs import STDLIB, check_training_packages, python_docstrings, write_pydocs_beir
    from ctxext.io import atomic_file

    paths, data, events = data_paths(work, config), config.get("data", {}), events or Events()
    steps = plan.data_steps if plan else {}
    if "docstrings" in data:
        packages = data["docstrings"].get("packages", [STDLIB])
        check_training_packages(packages)
        if not paths["docstrings"].exists():
            texts = dict.fromkeys(text for package in packages for _, text in python_docstrings(package=package))
            chosen = list(texts)[: data["docstrings"].get("limit")]  # each text once: libraries repeat docstrings
            with atomic_file(paths["docstrings"]) as temporary:  # an interrupted run leaves no half-written file
                temporary.write_text("".join(json.dumps({"text": text}) + "\n" for text in chosen))
    if "beir" in data and not paths["beir"].exists():
        write_pydocs_beir(paths["beir"], limit=data["beir"].get("limit", 300))
    if "longdoc" in steps and not paths["longdoc"].exists():
        run_step(steps["longdoc"], events)
    if "triplets" in steps:
        corpus = triplets_corpus(work, data["triplets"])
        if data["triplets"].get("corpus") and not corpus.exists():
            raise InvalidArgument(f"data.triplets.corpus: {corpus} does not exist")
        if not corpus.exists():
            run_step(steps["pydocs"], events)
        if not paths["triplets"].exists():
            run_step(steps["triplets"], events)
    return paths


def claim_stage_outputs(plan: Plan, *, force: bool) -> None:
    """Before any stage runs, each stage output the run will write is checked against every input the config
    names (``--force`` replaces none of them) and locked for this run, so a second run of the same pipeline
    is refused at once rather than racing this one."""
    from ctxext.io import check_output_target, register_input

    config = plan.config
    start = config["teacher"] if config["pipeline"] == "guide-distill" else config["source"]
    corpus = config.get("data", {}).get("triplets", {}).get("corpus")
    for named in (start, corpus):
        if named and Path(named).expanduser().exists():
            register_input(named)
    for step in plan.stages:
        assert step.out is not None
        if force or not step.out.exists():
            check_output_target(step.out, force=force)


def run_stages(plan: Plan, *, resume: bool, force: bool, events: Events | None = None) -> tuple[dict, list[Path]]:
    """The data files, then every stage in order; the data paths and the folders the stages wrote."""
    from ctxext.train.runner import TrainSettings, is_main_process, main_process_first

    events = events or Events()
    plan.work.mkdir(parents=True, exist_ok=True)
    with main_process_first(TrainSettings()):
        data = build_data(plan.work, plan.config, plan, events)  # the main process builds the files
    written: list[Path] = []
    for step in plan.stages:
        assert step.out is not None
        if step.resumable:  # a training stage: every process of a distributed run trains
            _run_unless_written(step, events, resume=resume, force=force)
        else:  # surgery: the main process writes; the others then find its output
            with main_process_first(TrainSettings()):
                _run_unless_written(step, events, resume=resume, force=force and is_main_process())
        written.append(step.out)
    return data, written


@dataclass
class PipelineResult:
    """What a pipeline wrote: its data, each stage's folder, and the evaluations (on the main process)."""

    data: dict[str, Path]
    written: list[Path]
    evaluations: list[Any] = field(default_factory=list)


def run_pipeline(plan: Plan, *, resume: bool, force: bool, events: Events | None = None) -> PipelineResult:
    """Every stage of the plan in order (a stage whose output exists is skipped unless ``force``), then
    ``evaluate`` on the starting model(s) and the result, plotted under the work folder."""
    from ctxext.train.runner import is_main_process

    events = events or Events()
    data, written = run_stages(plan, resume=resume, force=force, events=events)
    result = PipelineResult(data, written)
    if is_main_process():  # the evaluation and its plot are written once
        result.evaluations = [run_step(step, events) for step in plan.evaluations]
    return result


@contextlib.contextmanager
def work_folder(work: Path) -> Iterator[None]:
    """Around a pipeline's stages: a work folder this run created is removed again if the run fails before
    anything was kept in it (a stage's finished output is kept, for a rerun to skip or --resume)."""
    created = not work.exists()
    try:
        yield
    except BaseException:
        if created:
            for folder, _, _ in sorted(os.walk(work), key=lambda entry: -len(entry[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only empty ones
        raise
