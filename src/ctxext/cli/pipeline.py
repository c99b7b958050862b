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

import contextlib
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from ctxext.cli._common import _click_exception, _given_value, _usage_message, reports_errors
from ctxext.errors import CtxextError, InvalidArgument


class StageFailed(CtxextError):
    """A stage of a pipeline failed; the pipeline exits with that stage's code and says which stage it was."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def run(arguments: list[str]) -> None:
    """One stage: the ctxext command, in this process; a failed stage stops the pipeline with its own message
    (naming the stage) and its exit code."""
    from ctxext.cli import app

    print("$ ctxext " + " ".join(shlex.quote(a) for a in arguments), flush=True)
    try:
        code = app(arguments, prog_name="ctxext", standalone_mode=False)
    except SystemExit as error:
        code = error.code
    except CtxextError as error:
        raise StageFailed(f"stage ctxext {_command_name(arguments)}: {error}", error.exit_code) from None
    except _click_exception() as error:
        raise StageFailed(f"stage ctxext {_command_name(arguments)}: {_usage_message(error)}", 4) from None
    if code:
        raise StageFailed(f"stage ctxext {_command_name(arguments)} failed (exit {code})", int(code))


def _command_name(arguments: list[str]) -> str:
    return " ".join(arguments[:2] if arguments[0] == "data" else arguments[:1])


def check_command_line(arguments: list[str], where: str) -> None:
    """Parse a stage's command line as its command will, without running it: an unknown or misspelt option, or
    a value its option cannot take, is one usage error now, before any stage has run."""
    import typer.main

    from ctxext.cli import app

    command: Any = typer.main.get_command(app)
    remaining = list(arguments)
    while hasattr(command, "get_command"):  # a group: the next word names its command
        command = command.get_command(None, remaining.pop(0))
    try:
        command.make_context(_command_name(arguments), remaining)
    except _click_exception() as error:
        raise InvalidArgument(f"{where}: {_usage_message(error)}{_given_value(error, remaining)}") from None


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


def data_paths(work: Path, config: dict[str, Any]) -> dict[str, Path]:
    """Where each data file or folder the config asks for lies under ``work``."""
    names = {
        "docstrings": "docstrings.jsonl",
        "beir": "pydocs-beir",
        "longdoc": "longdoc",
        "triplets": "triplets.jsonl",
    }
    return {kind: work / name for kind, name in names.items() if kind in config.get("data", {})}


def data_command_lines(work: Path, config: dict[str, Any]) -> dict[str, list[str]]:
    """The ``ctxext data`` commands that build the data (longdoc, pydocs, triplets), by what they write."""
    data, paths = config.get("data", {}), data_paths(work, config)
    lines = {}
    if "longdoc" in data:
        lines["longdoc"] = ["data", "longdoc", "-o", str(paths["longdoc"]), *options(data["longdoc"])]
    if "triplets" in data:
        corpus = _triplets_corpus(work, data["triplets"])
        lines["pydocs"] = ["data", "pydocs", "-o", str(corpus), *options(data["triplets"].get("pydocs", {}))]
        triplets = options(data["triplets"].get("options", {}))
        lines["triplets"] = ["data", "triplets", str(corpus), "-o", str(paths["triplets"]), *triplets]
    return lines


def _triplets_corpus(work: Path, section: dict[str, Any]) -> Path:
    """The user's documents (``corpus``), else the standard library's pages."""
    own = section.get("corpus")
    return Path(own).expanduser() if own else work / "pydocs.jsonl"


def build_data(work: Path, config: dict[str, Any]) -> dict[str, Path]:
    from ctxext.data.pydocs import STDLIB, check_training_packages, python_docstrings, write_pydocs_beir
    from ctxext.io import atomic_file

    paths, lines, data = data_paths(work, config), data_command_lines(work, config), config.get("data", {})
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
    if "longdoc" in data and not paths["longdoc"].exists():
        run(lines["longdoc"])
    if "triplets" in data:
        corpus = _triplets_corpus(work, data["triplets"])
        if data["triplets"].get("corpus") and not corpus.exists():
            raise InvalidArgument(f"data.triplets.corpus: {corpus} does not exist")
        if not corpus.exists():
            run(lines["pydocs"])
        if not paths["triplets"].exists():
            run(lines["triplets"])
    return paths


def register(app: typer.Typer) -> None:
    app.command("pipeline")(pipeline_command)


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
    work = work.expanduser().absolute()
    check_config(config, str(config_path), work)
    with work_folder(work):
        claim_stage_outputs(config, work, force=force)
        run_pipeline(config, work, resume=resume, force=force)


def claim_stage_outputs(config: dict[str, Any], work: Path, *, force: bool) -> None:
    """Before any stage runs, each stage output the run will write is checked against every input the config
    names (``--force`` replaces none of them) and locked for this run, so a second run of the same pipeline
    is refused at once rather than racing this one."""
    from ctxext.io import check_output_target, register_input

    start = config["teacher"] if config["pipeline"] == "guide-distill" else config["source"]
    corpus = config.get("data", {}).get("triplets", {}).get("corpus")
    for named in (start, corpus):
        if named and Path(named).expanduser().exists():
            register_input(named)
    for _, out, _ in stage_command_lines(config, work):
        if force or not out.exists():
            check_output_target(out, force=force)


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
    needs: tuple[str, ...] = ()
    """The data (``data`` sections of the config) its arguments name."""


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
    Stage("finetune", "{previous}-finetuned", _on_triplets, needs=("triplets",)),
]

PIPELINE_STAGES: dict[str, list[Stage]] = {
    "guide-distill": [
        Stage(
            "guide",
            "student",
            lambda config, data, previous: [config["teacher"], *_at_revision(config)],
            resumable=False,
        ),
        Stage(
            "mlm",
            "student-mlm",
            lambda config, data, previous: [str(previous), "--data", str(data["docstrings"])],
            needs=("docstrings",),
        ),
        Stage(
            "distill",
            "student-distilled",
            lambda config, data, previous: [
                *[str(previous), "--teacher", config["teacher"], *_at_revision(config, "--teacher-revision")],
                *["--data", str(data["docstrings"])],
                *["--eval-beir", str(data["beir"])],
            ],
            needs=("docstrings", "beir"),
        ),
    ],
    "transfer-finetune": [
        Stage(
            "transfer",
            "bigbird",
            lambda config, data, previous: [config["source"], "bigbird", *_at_revision(config)],
            resumable=False,
        ),
        Stage("finetune", "{previous}-finetuned", _on_triplets, needs=("triplets",)),
    ],
    "interpolate-finetune": _INTERPOLATE_FINETUNE,
    # the long model with full attention first, then BigBird from it (the seed's swapped attention)
    "interpolate-finetune-transfer-finetune": [
        *_INTERPOLATE_FINETUNE,
        Stage("transfer", "bigbird", lambda config, data, previous: [str(previous), "bigbird"], resumable=False),
        Stage("finetune", "{previous}-finetuned", _on_triplets, section="finetune_bigbird", needs=("triplets",)),
    ],
}


def run_pipeline(config: dict[str, Any], work: Path, *, resume: bool, force: bool) -> None:
    """Every stage of ``config["pipeline"]`` in order (a stage whose output exists is skipped unless
    ``force``), then ``ctxext evaluate`` on the starting model(s) and the result, plotted under ``work``."""
    from ctxext.train.runner import is_main_process

    data, written = run_stages(config, work, resume=resume, force=force)
    if is_main_process():  # the evaluation and its plot are written once
        for arguments in evaluate_command_lines(config, data, written, work):
            run(arguments)


def stage_command_lines(config: dict[str, Any], work: Path) -> list[tuple[Stage, Path, list[str]]]:
    """Each stage, the folder it writes and its command line (before ``-o`` and the run's flags)."""
    data, lines, previous = data_paths(work, config), [], None
    for stage in PIPELINE_STAGES[config["pipeline"]]:
        out = work / stage.out.format(previous=previous.name if previous else "")
        section = config.get(stage.section or stage.command, {})
        lines.append((stage, out, [stage.command, *stage.arguments(config, data, previous), *options(section)]))
        previous = out
    return lines


def run_stages(config: dict[str, Any], work: Path, *, resume: bool, force: bool) -> tuple[dict[str, Path], list[Path]]:
    """The data files, then every stage in order; the data paths and the folders the stages wrote."""
    from ctxext.train.runner import TrainSettings, is_main_process, main_process_first

    work.mkdir(parents=True, exist_ok=True)
    with main_process_first(TrainSettings()):
        data = build_data(work, config)  # the main process builds the files; the others find them
    written: list[Path] = []
    for stage, out, arguments in stage_command_lines(config, work):
        flags = [*(["--force"] if force else []), *(["--resume"] if resume and stage.resumable else [])]
        if stage.resumable:  # a training stage: every process of a distributed run trains
            run_unless_written(arguments, out, flags, force)
        else:  # surgery: the main process writes; the others then find its output
            with main_process_first(TrainSettings()):
                run_unless_written(arguments, out, flags, force and is_main_process())
        written.append(out)
    return data, written


def evaluate_command_lines(config: dict[str, Any], data: dict[str, Path], written: list[Path], work: Path) -> list:
    """``ctxext evaluate`` of the starting model (over chunks, when ``baseline_chunk`` asks) and of the stages'
    models, plotted under ``work``."""
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
    lines = []
    if baseline_chunk:  # what users do today: the starting model over chunks
        lines.append(
            ["evaluate", starting, *options(evaluation), *_at_revision(config), "--chunk", str(baseline_chunk)]
        )
    # the plot is this pipeline's own output, so a rerun replaces it
    plot = ["--plot", str(work / "evaluate.png"), "--force"]
    lines.append(["evaluate", *evaluated, *options(evaluation), *_at_revision(config), *plot])
    return lines


# ----------------------------------------------------------------------------- the whole config, before any stage

TOP_LEVEL_KEYS = ("pipeline", "about", "source", "teacher", "revision", "data", "evaluate")
DATA_KEYS = {
    "docstrings": ("packages", "limit"),
    "beir": ("limit",),
    "longdoc": None,
    "triplets": ("corpus", "options", "pydocs"),
}


def check_config(config: dict[str, Any], where: str, work: Path) -> None:
    """Everything a config asks, checked before any stage runs: its keys and sections, the model it starts
    from, the data its stages need, and every stage's command line as that command will parse it. A mistake
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
    for kind, line in data_command_lines(work, config).items():
        check_command_line(line, f"{where}: data.{kind}")
    stage_lines = stage_command_lines(config, work)
    for (_, out, line), section in zip(stage_lines, sections, strict=True):
        check_command_line([*line, "-o", str(out)], f"{where}: {section}")
    for line in evaluate_command_lines(config, data_paths(work, config), [out for _, out, _ in stage_lines], work):
        check_command_line(line, f"{where}: evaluate")


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
        if keys is None:  # the command's own options, parsed with its command line
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
