"""The pipeline kinds as data: each stage's command, the folder it writes, the inputs the pipeline gives it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.errors import CtxextError


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


def at_revision(config: dict[str, Any], key: str = "revision") -> dict[str, Any]:
    """The config's ``revision`` (of its hub source or teacher) as the stage's option, when it names one."""
    return {key: str(config["revision"])} if config.get("revision") else {}


def _on_triplets(config: dict[str, Any], data: dict[str, Path], previous: Path | None) -> dict[str, Any]:
    return {"checkpoint": str(previous), "data": [str(data["triplets"])]}


_INTERPOLATE_FINETUNE = [
    Stage(
        "interpolate",
        "interpolated",
        lambda config, data, previous: {"source": config["source"], **at_revision(config)},
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
            lambda config, data, previous: {"teacher": config["teacher"], **at_revision(config)},
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
                **at_revision(config, "teacher_revision"),
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
            lambda config, data, previous: {"source": config["source"], "target": "bigbird", **at_revision(config)},
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
