"""What every command shares: option aliases, one-line errors, progress bars and output rendering."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ctxext.errors import CtxextError

stdout = Console()
stderr = Console(stderr=True)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (written atomically).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output folder if it exists.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of a table.")]
LenOpt = Annotated[int, typer.Option("--len", min=1, help="Target number of positions.")]


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ctxext errors, interrupts and OS errors into one line on stderr and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CtxextError as error:
            stderr.print(f"[bold red]error:[/] {error}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            stderr.print("[bold red]interrupted:[/] nothing was written", highlight=False)
            raise typer.Exit(130) from None
        except OSError as error:
            stderr.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as error:  # a bug: still one line, the traceback only on request
            if os.environ.get("CTXEXT_DEBUG"):
                raise
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            stderr.print(f"[bold red]internal error:[/] {type(error).__name__}: {first} "
                         "(set CTXEXT_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(70) from None

    return wrapper


@contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None]]:
    """A ProgressFn drawing one rich bar per task name, on stderr."""
    tasks: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=stderr, transient=False, disable=not stderr.is_terminal) as bars:

        def update(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bars.add_task(task, total=total)
            bars.update(tasks[task], completed=done, total=total)

        yield update


def emit(data: Any, as_json: bool, table: Callable[[Any], Table] | None = None) -> None:
    """Print a command's result: JSON for scripts, a rich table for people."""
    if as_json or table is None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        return
    stdout.print(table(data))


def key_value_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value, default=str))
    return table
