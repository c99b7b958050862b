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


class StageFailed(CtxextError):
    """A stage of a pipeline failed; the pipeline exits with that stage's code and says which stage it was."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


OptionParser = Callable[[str, dict[str, Any], str], dict[str, Any]]
"""``(command, values, where) -> arguments``: a command's option values, keyed by their command-line spelling
with underscores (arguments by their name), into every parameter of the command, typed and with its defaults;
a key the command does not take or a value it cannot take raises ``InvalidArgument`` naming ``where``."""


# ----------------------------------------------------------------------------- the pipeline kinds


@dataclass(frozen=True)
class Stage:
    """One stage: the command it runs, the folder it writes (under the work folder; ``{previous}``: the folder
    of the stage before), the inputs the pipeline gives it (by option spelling) besides its config section's
    options, and whether ``--resume`` applies (a training stage)."""

    command: str
    out: str
    inputs: Callable[[dict[str, Any], dict[str, Path], Path | None], dict[str, Any]]
    positional: tuple[str, ...] = ()
    """Its inputs that are arguments of the command (not options), in order."""
    resumable: bool = True
    section: str = ""
    """The config section of its options (default: the command's name)."""
    needs: tuple[str, ...] = ()
    """The data (``data`` sections of the config) its inputs name."""

    def arguments(self, config: dict[str, Any], data: dict[str, Path], previous: Path | None) -> list[str]:
        """Its inputs as the command line would give them."""
        return command_line(self.inputs(config, data, previous), self.positional)


def command_line(values: dict[str, Any], positional: tuple[str, ...] = ()) -> list[str]:
    """{"source": "x", "max_len": 128, "tile": true} -> ["x", "--max-len", "128", "--tile"] (``positional``:
    the keys that are arguments)."""
    out: list[str] = []
    for key in positional:
        value = values[key]
        out += [str(item) for item in value] if isinstance(value, list) else [str(value)]
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if key in positional or key == "out" or value is False or value is None:
            continue
        if value is True:
            out.append(flag)
        else:
            for item in value if isinstance(value, list) else [value]:
                out += [flag, str(item)]
    return [*out, "-o", str(values["out"])] if values.get("out") else out


def _at_revision(config: dict[str, Any], key: str = "revision") -> dict[str, Any]:
    """The config's ``revision`` (of its hub source or teacher) as the stage's option, when it names one."""
    return {key: str(config["revision"])} if config.get("revision") else {}


def _on_triplets(config: dict[str, Any], data: dict[str, Path], previous: Path | None) -> dict[str, Any]:
    return {"checkpoint": str(previous), "data": [str(data["triplets"])]}


_INTERPOLATE_FINETUNE = [
    Stage(
        "interpolate",
        "interpolated",
        lambda config, data, previous: {"source": config["source"], **_at_revision(config)},
        positional=("source",),
        resumable=False,
    ),
    Stage("finetune", "{previous}-finetuned", _on_triplets, positional=("checkpoint",), needs=("triplets",)),
]

PIPELINE_STAGES: dict[str, list[Stage]] = {
    "guide-distill": [
        Stage(
            "guide",
            "student",
            lambda config, data, previous: {"teacher": config["teacher"], **_at_revision(config)},
            positional=("teacher",),
            resumable=False,
        ),
        Stage(
            "mlm",
            "student-mlm",
            lambda config, data, previous: {"checkpoint": str(previous), "data": [str(data["docstrings"])]},
            positional=("checkpoint",),
            needs=("docstrings",),
        ),
        Stage(
            "distill",
            "student-distilled",
            lambda config, data, previous: {
                "student": str(previous),
                "teacher": config["teacher"],
                **_at_revision(config, "teacher_revision"),
                "data": [str(data["docstrings"])],
                "eval_beir": str(data["beir"]),
            },
            positional=("student",),
            needs=("docstrings", "beir"),
        ),
    ],
    "transfer-finetune": [
        Stage(
            "transfer",
            "bigbird",
            lambda config, data, previous: {"source": config["source"], "target": "bigbird", **_at_revision(config)},
            positional=("source", "target"),
            resumable=False,
        ),
        Stage("finetune", "{previous}-finetuned", _on_triplets, positional=("checkpoint",), needs=("triplets",)),
    ],
    "interpolate-finetune": _INTERPOLATE_FINETUNE,
    # the long model with full attention first, then BigBird from it (the seed's swapped attention)
    "interpolate-finetune-transfer-finetune": [
        *_INTERPOLATE_FINETUNE,
        Stage(
            "transfer",
            "bigbird",
            lambda config, data, previous: {"source": str(previous), "target": "bigbird"},
            positional=("source", "target"),
            resumable=False,
        ),
        Stage(
            "finetune",
            "{previous}-finetuned",
            _on_triplets,
            positional=("checkpoint",),
            section="finetune_bigbird",
            needs=("triplets",),
        ),
    ],
}


# ----------------------------------------------------------------------------- the plan: every step, typed


@dataclass
class Step:
    """One command the pipeline runs: its config section (for messages), the values it was given (inputs and
    options, by command-line spelling), its typed arguments, and the output it writes."""

    command: str
    section: str
    values: dict[str, Any]
    arguments: dict[str, Any]
    positional: tuple[str, ...] = ()
    out: Path | None = None
    resumable: bool = False

    def command_line(self) -> str:
        """The ctxext command line this step is (what it prints before it runs)."""
        import shlex

        return " ".join(
            shlex.quote(part) for part in [*self.command.split(), *command_line(self.values, self.positional)]
        )


@dataclass
class Plan:
    """A checked config: the data it builds, its stages and its evaluations, each step with typed arguments."""

    config: dict[str, Any]
    work: Path
    data: dict[str, Path]
    data_steps: dict[str, Step]
    stages: list[Step]
    evaluations: list[Step]


def _step(parse: OptionParser, command: str, where: str, options: dict[str, Any], inputs: dict[str, Any]) -> Step:
    """A step of ``command``: the config's ``options`` besides the ``inputs`` the pipeline gives it (which the
    config cannot set), parsed in full now."""
    for key in options:
        if key in inputs:
            raise InvalidArgument(f"{where}: {key!r} is set by the pipeline, not by the config")
    values = {**inputs, **options}
    return Step(command, where, values, parse(command, values, where))


def data_paths(work: Path, config: dict[str, Any]) -> dict[str, Path]:
    """Where each data file or folder the config asks for lies under ``work``."""
    names = {
        "docstrings": "docstrings.jsonl",
        "beir": "pydocs-beir",
        "longdoc": "longdoc",
        "triplets": "triplets.jsonl",
    }
    return {kind: work / name for kind, name in names.items() if kind in config.get("data", {})}


def _triplets_corpus(work: Path, section: dict[str, Any]) -> Path:
    """The user's documents (``corpus``), else the standard library's pages."""
    own = section.get("corpus")
    return Path(own).expanduser() if own else work / "pydocs.jsonl"


def _data_steps(config: dict[str, Any], where: str, work: Path, parse: OptionParser) -> dict[str, Step]:
    """The data commands (longdoc, pydocs, triplets), by what they write."""
    data, paths, steps = config.get("data", {}), data_paths(work, config), {}
    if "longdoc" in data:
        out = {"out": str(paths["longdoc"])}
        steps["longdoc"] = _step(parse, "data longdoc", f"{where}: data.longdoc", data["longdoc"], out)
    if "triplets" in data:
        corpus = _triplets_corpus(work, data["triplets"])
        pydocs = data["triplets"].get("pydocs", {})
        steps["pydocs"] = _step(parse, "data pydocs", f"{where}: data.pydocs", pydocs, {"out": str(corpus)})
        inputs = {"corpus": str(corpus), "out": str(paths["triplets"])}
        options = data["triplets"].get("options", {})
        steps["triplets"] = _step(parse, "data triplets", f"{where}: data.triplets", options, inputs)
        steps["triplets"].positional = ("corpus",)
    for step in steps.values():
        step.out = Path(step.values["out"])
    return steps


def _stage_steps(config: dict[str, Any], where: str, work: Path, parse: OptionParser) -> list[Step]:
    data, steps, previous = data_paths(work, config), [], None
    for stage in PIPELINE_STAGES[config["pipeline"]]:
        out = work / stage.out.format(previous=previous.name if previous else "")
        section = stage.section or stage.command
        inputs = {**stage.inputs(config, data, previous), "out": str(out)}
        step = _step(parse, stage.command, f"{where}: {section}", config.get(section, {}), inputs)
        step.positional, step.out, step.resumable = stage.positional, out, stage.resumable
        steps.append(step)
        previous = out
    return steps


def _evaluation_steps(config: dict[str, Any], where: str, plan: Plan, parse: OptionParser) -> list[Step]:
    """``evaluate`` of the starting model (over chunks, when ``baseline_chunk`` asks) and of the stages' models,
    plotted under the work folder."""
    starting = config["teacher"] if config["pipeline"] == "guide-distill" else config["source"]
    written = [str(step.out) for step in plan.stages]
    evaluated = [starting, *(written[:-1] if config["pipeline"] != "guide-distill" else []), written[-1]]
    evaluation = dict(config.get("evaluate", {}))
    baseline_chunk = evaluation.pop("baseline_chunk", None)
    if evaluation.get("task") == "retrieval":
        split = evaluation.pop("longdoc_split", None)
        evaluation["beir"] = str(plan.data["longdoc"] / split if split else plan.data["beir"])
    revision = _at_revision(config)
    where = f"{where}: evaluate"
    steps = []
    if baseline_chunk:  # what users do today: the starting model over chunks
        inputs = {"checkpoints": [starting], **revision, "chunk": baseline_chunk}
        steps.append(_step(parse, "evaluate", where, evaluation, inputs))
    # the plot is this pipeline's own output, so a rerun replaces it
    inputs = {"checkpoints": evaluated, **revision, "plot": str(plan.work / "evaluate.png"), "force": True}
    steps.append(_step(parse, "evaluate", where, evaluation, inputs))
    for step in steps:
        step.positional = ("checkpoints",)
    return steps


# ----------------------------------------------------------------------------- the whole config, before any stage

TOP_LEVEL_KEYS = ("pipeline", "about", "source", "teacher", "revision", "data", "evaluate")
DATA_KEYS = {
    "docstrings": ("packages", "limit"),
    "beir": ("limit",),
    "longdoc": None,
    "triplets": ("corpus", "options", "pydocs"),
}


def check_config(config: dict[str, Any], where: str, work: Path, parse: OptionParser) -> Plan:
    """Everything a config asks, checked before any stage runs: its keys and sections, the model it starts
    from, the data its stages need, and every step's options as its command takes them (``parse``). A mistake
    anywhere, in the last stage too, is one usage error naming it (exit 4), and nothing has run."""
    stages = PIPELINE_STAGES[config["pipeline"]]
    sections = [stage.section or stage.command for stage in stages]
    known = [*TOP_LEVEL_KEYS, *dict.fromkeys(sections)]
    for key in config:
        if key not in known:
            raise InvalidArgument(
                f"{where}: unknown key {key!r} in a {config['pipeline']} config (it takes {', '.join(known)})"
            )
    start = "teacher" if config["pipeline"] == "guide-distill" else "source"
    if not isinstance(config.get(start), str) or not config[start].strip():
        raise InvalidArgument(
            f"{where}: {start!r} must name the model to start from (a folder, hub ID or embedded name)"
        )
    if not isinstance(config.get("revision") or "", str):
        raise InvalidArgument(f"{where}: 'revision' must be a branch, tag or commit name")
    for section in [*sections, "evaluate"]:
        _check_options(config.get(section, {}), f"{where}: {section}")
    _check_data(config.get("data", {}), f"{where}: data", work)
    needed = {need: section for stage, section in zip(stages, sections, strict=True) for need in stage.needs}
    evaluation = config.get("evaluate", {})
    if evaluation.get("task") == "retrieval":
        needed.setdefault("longdoc" if evaluation.get("longdoc_split") else "beir", "evaluate")
    for need, section in needed.items():
        if need not in config.get("data", {}):
            raise InvalidArgument(f"{where}: {section} needs data.{need}, and the config's 'data' has no {need!r}")
    plan = Plan(config, work, data_paths(work, config), {}, [], [])
    plan.data_steps = _data_steps(config, where, work, parse)
    plan.stages = _stage_steps(config, where, work, parse)
    plan.evaluations = _evaluation_steps(config, where, plan, parse)
    return plan


def _check_options(section: Any, where: str) -> None:
    """A section of command options: a mapping of option names to numbers, strings or true/false."""
    if not isinstance(section, dict):
        raise InvalidArgument(f"{where} must be a mapping of options, not {type(section).__name__}")
    for key, value in section.items():
        if isinstance(value, (dict, list)):
            raise InvalidArgument(
                f"{where}.{key} must be a number, a string or true/false, not a {type(value).__name__}"
            )


def _check_data(data: Any, where: str, work: Path) -> None:
    if not isinstance(data, dict):
        raise InvalidArgument(f"{where} must be a mapping (docstrings, beir, longdoc, triplets)")
    for kind, section in data.items():
        if kind not in DATA_KEYS:
            raise InvalidArgument(f"{where}: unknown data {kind!r} (it takes {', '.join(DATA_KEYS)})")
        keys = DATA_KEYS[kind]
        if keys is None:  # the command's own options, parsed with its parameters
            _check_options(section, f"{where}.{kind}")
            continue
        if not isinstance(section, dict) or set(section) - set(keys):
            raise InvalidArgument(f"{where}.{kind} must be a mapping with at most {', '.join(keys)}")
    docstrings, triplets = data.get("docstrings", {}), data.get("triplets", {})
    packages = docstrings.get("packages", [])
    if not isinstance(packages, list) or not all(isinstance(p, str) for p in packages):
        raise InvalidArgument(f"{where}.docstrings.packages must be a list of package names")
    for kind, section in (("docstrings", docstrings), ("beir", data.get("beir", {}))):
        limit = section.get("limit", 1)
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidArgument(f"{where}.{kind}.limit must be a whole number of 1 or more")
    for key in ("options", "pydocs"):
        _check_options(triplets.get(key, {}), f"{where}.triplets.{key}")
    corpus = triplets.get("corpus")
    if corpus is not None and not isinstance(corpus, str):
        raise InvalidArgument(f"{where}.triplets.corpus must be the path of your documents")
    built_by_the_run = corpus is not None and work in Path(corpus).expanduser().absolute().parents
    if corpus is not None and not built_by_the_run and not Path(corpus).expanduser().exists():
        raise InvalidArgument(f"{where}.triplets.corpus: {corpus} does not exist")


# ----------------------------------------------------------------------------- reading a config

CONFIG_MAX_BYTES = 2**20
CONFIG_MAX_VALUES = 10_000
CONFIG_MAX_DEPTH = 16


def read_config(path: Path) -> dict[str, Any]:
    """A pipeline config: JSON, or YAML (``.yaml``/``.yml``) read with ``yaml.safe_load``. A config is small:
    over 1 MiB, 10,000 values (a YAML alias bomb expands past that) or 16 levels of nesting is refused."""
    from ctxext.io import input_file, read_json

    path = input_file(path, "pipeline config")
    if path.stat().st_size > CONFIG_MAX_BYTES:
        raise InvalidArgument(f"{path} is over {CONFIG_MAX_BYTES // 2**20} MiB: not a pipeline config")
    if path.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise InvalidArgument(f"{path} is not valid YAML ({str(error).splitlines()[0]})") from None
        except RecursionError:
            raise InvalidArgument(f"{path} is nested too deeply for a pipeline config") from None
    else:
        config = read_json(path)
    _check_size(config, path)
    if not isinstance(config, dict) or config.get("pipeline") not in PIPELINE_STAGES:
        raise InvalidArgument(f"{path}: 'pipeline' must be one of {', '.join(PIPELINE_STAGES)}")
    return config


def _check_size(config: Any, path: Path) -> None:
    """Count the config's values (shared YAML aliases once per use) and its depth, stopping at the limits."""
    pending, count = [(config, 0)], 0
    while pending:
        value, depth = pending.pop()
        count += 1
        if count > CONFIG_MAX_VALUES or depth > CONFIG_MAX_DEPTH:
            what = f"{CONFIG_MAX_VALUES:,} values" if count > CONFIG_MAX_VALUES else f"{CONFIG_MAX_DEPTH} levels"
            raise InvalidArgument(f"{path} holds more than {what} (are YAML aliases expanding?): not a pipeline config")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, depth + 1) for child in children)


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
        corpus = _triplets_corpus(work, data["triplets"])
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
