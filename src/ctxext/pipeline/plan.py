"""A config read and checked in full, into the plan of every step with its typed arguments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.errors import InvalidArgument
from ctxext.pipeline.kinds import PIPELINE_STAGES, OptionParser, at_revision, command_line

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


def triplets_corpus(work: Path, section: dict[str, Any]) -> Path:
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
        corpus = triplets_corpus(work, data["triplets"])
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
    revision = at_revision(config)
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
