"""What every command shares: option aliases, one-line errors, progress bars and output rendering."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from ctxext.card import held_out_rows
from ctxext.errors import CtxextError, InvalidArgument, remote_code_refusal
from ctxext.positions import Grid

stdout = Console()
stderr = Console(stderr=True)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output folder if it exists.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")]
LenOpt = Annotated[int, typer.Option("--len", min=1, help="Target number of positions.")]
RevisionOpt = Annotated[
    str | None,
    typer.Option("--revision", help="Branch, tag or commit of a hub source (the commit used is in the manifest)."),
]
SpecialTokensOpt = Annotated[
    Path | None,
    typer.Option(
        "--special-tokens",
        help="JSON file with 'special_tokens' and a 'template' (default: configs/qa_special_tokens.json's content).",
    ),
]
LinearOpt = Annotated[bool, typer.Option("--linear", help="Linear interpolation between the original rows.")]
SplineOpt = Annotated[bool, typer.Option("--spline", help="Cubic spline through the original rows.")]
TileOpt = Annotated[bool, typer.Option("--tile", help="Repeat the original rows; short inputs stay exact.")]
GridOpt = Annotated[
    Grid,
    typer.Option(
        help="linear/spline: 'pinned' (context-extension's grid, ends pinned) or "
        "'scaled' (PI: row i lands on position i*N/n)."
    ),
]


def quiet_library_progress_bars() -> None:
    """No tqdm bars from transformers and huggingface_hub (transformers 5 draws one for every model load, so
    a one-line error would come after two lines of bars): ctxext draws its own progress.
    ``HF_HUB_DISABLE_PROGRESS_BARS=0`` brings them back. Works whether or not transformers is imported yet."""
    if os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1") == "1" and "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ctxext errors, interrupts (SIGINT, SIGTERM) and OS errors into one line on stderr and a non-zero
    exit; the codes are listed in docs/errors.md."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ctxext.io import run_scope, sigterm_as_interrupt

        quiet_library_progress_bars()
        if _reporting:  # a stage of a pipeline: the pipeline's command reports its errors, in one line
            with run_scope():
                return command(*args, **kwargs)
        _reporting.append(command.__name__)
        try:
            with run_scope(), sigterm_as_interrupt():
                return command(*args, **kwargs)
        except CtxextError as error:
            fail(str(error), error.exit_code)
        except KeyboardInterrupt as error:
            signal_number = getattr(error, "signal_number", signal.SIGINT)
            kept = getattr(error, "kept", None) or "nothing was written"
            fail(f"{signal.Signals(signal_number).name}: {kept}", 128 + signal_number, label="interrupted")
        except MemoryError:
            fail(OUT_OF_MEMORY, 8)
        except OSError as error:
            fail(f"{error.strerror or error}" + (f": {error.filename}" if error.filename else ""), 1)
        except Exception as error:  # a library's refusal said plainly, else a bug: one line, traceback on request
            if os.environ.get("CTXEXT_DEBUG"):
                raise
            known = _known_library_error(error)
            if known:
                fail(*known)
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            fail(f"{type(error).__name__}: {first} (set CTXEXT_DEBUG=1 for the traceback)", 70, label="internal error")
        finally:
            _reporting.pop()

    return wrapper


_reporting: list[str] = []
"""The command whose wrapper reports errors now (at most one: commands a pipeline runs inside it do not)."""


OUT_OF_MEMORY = "out of memory: try a shorter length, a smaller batch or a smaller model (or --no-check)"


def _known_library_error(error: Exception) -> tuple[str, int] | None:
    """Refusals of transformers and torch that are the user's input, not a ctxext bug."""
    text = str(error)
    refusal = remote_code_refusal(error)
    if refusal:
        return str(refusal), refusal.exit_code
    if isinstance(error, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text):
        return OUT_OF_MEMORY, 8
    return None


def fail(message: str, exit_code: int, *, label: str = "error") -> NoReturn:
    """Print one line on stderr and exit (from a command's wrapper: a command itself raises a CtxextError)."""
    print_one_line(message, label)
    raise typer.Exit(exit_code)


def print_one_line(message: str, label: str = "error") -> None:
    """``label: message`` on stderr, whitespace folded to one line, markup in the message shown as text."""
    stderr.print(f"[bold red]{label}:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def _click_exception() -> type[Exception]:
    # typer bundles its own Click and does not export its exception base; BadParameter (public) derives from it.
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _given_value(error: Exception, arguments: list[str]) -> str:
    """`` (given: VALUE)`` for a bad option value, read back from the command line (Click does not keep it)."""
    names = getattr(getattr(error, "param", None), "opts", None) or []
    for index, argument in enumerate(arguments):
        for name in names:
            if argument == name and index + 1 < len(arguments):
                return f" (given: {arguments[index + 1]!r})"
            if argument.startswith(name + "="):
                return f" (given: {argument[len(name) + 1 :]!r})"
    return ""


def _usage_message(error: Exception) -> str:
    """Click's message, or for a choice (an Enum-typed option) the choices: ``--pooling takes mean, last or cls``."""
    parameter = getattr(error, "param", None)
    annotation = getattr(getattr(parameter, "type_descriptor", None), "annotation", None)
    choices = next(
        (a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type) and issubclass(a, Enum)), None
    )
    opts = getattr(parameter, "opts", None)
    if choices is None or not opts:
        return str(getattr(error, "format_message", lambda: str(error))())
    values = [choice.value for choice in choices]
    listed = f"{', '.join(values[:-1])} or {values[-1]}" if len(values) > 1 else values[0]
    return f"{max(opts, key=len)} takes {listed}"


class OneLineUsageErrors(TyperGroup):
    """Usage errors (a bad or missing option value) as one line naming the option, not typer's box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        if not standalone_mode:
            return super().main(*args, **kwargs)
        arguments = list(kwargs.get("args") or (args[0] if args else sys.argv[1:]) or [])
        try:
            code = super().main(*args, **kwargs)
        except _click_exception() as error:
            context = getattr(error, "ctx", None)
            hint = f" (see {context.command_path} --help)" if context is not None else ""
            print_one_line(_usage_message(error) + _given_value(error, arguments) + hint)
            sys.exit(InvalidArgument.exit_code)
        except typer.Abort:
            print_one_line("the command was aborted", label="aborted")
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A ProgressFn drawing one rich bar per task name, on stderr."""
    tasks: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
        disable=not stderr.is_terminal,
    ) as bars:

        def update(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bars.add_task(task, total=total)
            bars.update(tasks[task], completed=done, total=total)

        yield update


def emit(result: Any, as_json: bool) -> None:
    """Print an operation's result: its ``summary()`` as JSON for scripts, or rendered for people as its
    ``view`` says (``written``: a model folder, ``scores``: evaluations side by side, ``counts``: a data
    output, ``verified``; otherwise a table titled with its ``title``). A distributed run's other processes
    wrote nothing (``manifest`` None) and print nothing."""
    if getattr(result, "manifest", True) is None:
        return
    data = result.summary()
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        return
    view = VIEWS.get(getattr(result, "view", ""))
    stdout.print(view(result, data) if view else key_value_table(result.title, data))


def key_value_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows.items():
        table.add_row(escape(key), escape(value if isinstance(value, str) else json.dumps(value, default=str)))
    return table


def render_written(summary: dict[str, Any]) -> Group:
    """The summary of a written checkpoint as rich tables: what each operation did, then the checks."""
    operations = Table(title=f"wrote {summary['output']}", title_justify="left")
    for column in ("operation", "copied", "modified", "created", "dropped"):
        operations.add_column(column, justify="left" if column == "operation" else "right")
    for op in summary["operations"]:
        operations.add_row(op["name"], *(str(op[k]) for k in ("copied", "modified", "created", "dropped")))
    parts: list[Any] = [operations]
    if summary["config_changes"]:
        parts.append(key_value_table("config changes", summary["config_changes"]))
    if summary["checks"]:
        checks = Table(title="checks", title_justify="left")
        for column in ("check", "value", "bound", "result"):
            checks.add_column(column, overflow="fold")
        for check in summary["checks"]:
            bound = "" if check["threshold"] is None else f"{check['threshold']:.3g}"
            verdict = "[green]passed[/]" if check["passed"] else "[red]FAILED[/]"
            checks.add_row(check["name"], f"{check['value']:.3g}", bound, verdict)
        parts.append(checks)
    return Group(*parts)


def score_table(results: list[dict]):
    """Acc@1 (passkey, needle) or nDCG@10 and MRR (retrieval) per length; with query groups (the depth
    buckets of ``ctxext data longdoc``), a row of MRR per group under each length."""
    retrieval = results[0]["task"] == "retrieval"
    table = Table(
        title=f"{results[0]['task']}: {'nDCG@10 / MRR' if retrieval else 'Acc@1'} by length", title_justify="left"
    )
    table.add_column("length", justify="right")
    for result in results:
        table.add_column(f"{Path(result['model']).name}\n{result['form']}", justify="right")
    for row, first in enumerate(results[0]["scores"]):
        scores = [r["scores"][row] for r in results]
        if not retrieval:
            table.add_row(str(first["length"]), *[f"{s['acc_at_1']:.3f}" for s in scores])
            continue
        table.add_row(str(first["length"]), *[f"{s['ndcg_at_10']:.3f} / {s['mrr']:.3f}" for s in scores])
        for group in first.get("groups", {}):
            table.add_row(f"  MRR, {group}", *[f"{s['groups'][group]['mrr']:.3f}" for s in scores])
    return table


COUNT_HEADERS = {
    "documents": "docs",
    "chunked_documents": "chunked",
    "exact_duplicates": "exact dup",
    "near_duplicates": "near dup",
    "tokens_before": "tokens in",
    "tokens_after": "tokens out",
    "title_queries": "title q",
    "section_queries": "section q",
    "passage_queries": "passage q",
    "summary_queries": "summary q",
    "dropped_verbatim": "verbatim dropped",
}


def render_counts(result: Any, summary: dict[str, Any]) -> Table:
    """A data output: one row of counts per source."""
    table = Table(title=f"{result.title} -> {summary['output']}", title_justify="left")
    columns, rows = result.columns, result.count_rows()
    table.add_column("source", style="bold", overflow="fold")
    for column in columns:
        table.add_column(COUNT_HEADERS.get(column, column.replace("_", " ")), justify="right")
    for label, counts in rows.items():
        table.add_row(label, *(f"{counts.get(column, 0):,}" for column in columns))
    return table


def render_verified(result: Any, summary: dict[str, Any]) -> str:
    return f"[green]ok[/]: {summary['tensors']} tensors match the manifest"


def render_held_out(result: Any, summary: dict[str, Any]) -> Table:
    """``ctxext extend``: the source over chunks against the extended model, on the held-out documents."""
    found = summary["held_out"]
    table = Table(
        title=f"wrote {summary['output']}; {found['queries']} queries over {found['documents']} held-out documents",
        title_justify="left",
    )
    for column in ("form", "model", "MRR", "Acc@1", "nDCG@10"):
        table.add_column(column, justify="left" if column in ("form", "model") else "right")
    for row in held_out_rows(found):
        metrics = (f"{row[metric]:.3f}" for metric in ("mrr", "acc_at_1", "ndcg_at_10"))
        table.add_row(escape(row["form"]), escape(row["model"]), *metrics)
    return table


VIEWS: dict[str, Callable[[Any, Any], Any]] = {
    "held_out": render_held_out,
    "written": lambda result, summary: render_written(summary),
    "scores": lambda result, summary: score_table(summary),
    "counts": render_counts,
    "verified": render_verified,
}
