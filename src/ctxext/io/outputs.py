"""Where an output may be written (``check_output_target``) and how it is put in place: atomically, whole or not
at all, with SIGINT and SIGTERM handled."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ctxext.errors import InvalidArgument, OutputExists, WriteFailed
from ctxext.io.folder import MANIFEST_NAME
from ctxext.io.locks import absolute_path, claim_output, registered_inputs, release_output


def file_manifest_path(out: str | os.PathLike[str]) -> Path:
    """Where a file output's manifest lies: ``<output>.manifest.json`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def is_ctxext_manifest(path: Path) -> bool:
    """A JSON object with the fields every ctxext manifest has."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and "command" in data and "libraries" in data


def _never_replaced() -> dict[Path, str]:
    """Folders no output may ever replace, whatever --force says."""
    cwd = Path.cwd().resolve()
    places = {Path(cwd.anchor): "the root folder", Path.home().resolve(): "your home folder"}
    places.update({parent: "a parent of the current directory" for parent in cwd.parents})
    places[cwd] = "the current directory"
    return places


def check_output_target(
    target: str | os.PathLike[str],
    *,
    force: bool,
    protect: Iterable[str | os.PathLike[str]] = (),
    is_file: bool = False,
) -> Path:
    """The absolute output path, once it is safe to write there and this run holds its lock
    (:func:`claim_output`); refuse anything else in one line.

    ``--force`` replaces only a previous ctxext output (a folder holding a ctxext ``manifest.json``, or a
    file with ``<file>.manifest.json`` beside it); never the current directory, ``/``, the home folder,
    an input of the run (``protect``, and every input read so far: :func:`register_input`), a folder that holds
    one, or a place inside one; never through a symbolic link.
    """
    text = os.fspath(target)
    if not text.strip():
        raise InvalidArgument("the output path is empty: name the file or folder to write with -o")
    absolute = absolute_path(text)
    if absolute.is_symlink():
        raise OutputExists(
            f"output {absolute} is a symbolic link (to {os.readlink(absolute)}); name the real path or a new one"
        )
    special = _never_replaced().get(absolute.resolve())
    if special:
        raise OutputExists(f"output {absolute} is {special}; name a new folder to write into")
    claim_output(absolute)
    try:
        registered = registered_inputs()
        _check_inputs_kept(absolute, [*((path, True) for path in protect), *registered.items()])
        _check_replaceable(absolute, force=force, is_file=is_file)
    except BaseException:
        release_output(absolute)
        raise
    return absolute


def _check_inputs_kept(absolute: Path, inputs: Iterable[tuple[str | os.PathLike[str], bool]]) -> None:
    """Refuse an output that is an input of the run, holds one, or would replace something inside a whole one."""
    real = absolute.resolve()
    for source, whole in inputs:
        source_path = absolute_path(source).resolve()
        if real == source_path:
            raise OutputExists(f"output {absolute} is an input of this command; name another output")
        if real in source_path.parents:
            raise OutputExists(f"output {absolute} holds the input {source_path}; name another output")
        if whole and absolute.exists() and source_path in real.parents:
            raise OutputExists(f"output {absolute} lies inside the input {source_path}; name another output")


def _check_replaceable(absolute: Path, *, force: bool, is_file: bool) -> None:
    """A new path, or with ``force`` a previous ctxext output of the expected kind."""
    if not absolute.exists():
        return
    if not force:
        raise OutputExists(f"output {absolute} already exists; pass --force to replace it")
    if is_file:
        if not absolute.is_file():
            raise OutputExists(f"output {absolute} exists and is not a file; name another output")
        if not is_ctxext_manifest(file_manifest_path(absolute)):
            raise OutputExists(
                f"output {absolute} was not written by ctxext (no ctxext "
                f"{file_manifest_path(absolute).name} beside it), so --force will not replace "
                "it; remove it yourself or name another output"
            )
    elif not absolute.is_dir():
        raise OutputExists(f"output {absolute} exists and is not a folder; name another output")
    elif not is_ctxext_manifest(absolute / MANIFEST_NAME):
        raise OutputExists(
            f"output {absolute} is not a ctxext output (no ctxext {MANIFEST_NAME} in it), so "
            "--force will not replace it; remove it yourself or name a new folder"
        )


# ----------------------------------------------------------------------------- atomic output


def _write_failed(target: Path, error: OSError) -> WriteFailed:
    if error.errno == errno.ENOSPC:
        return WriteFailed(f"disk full while writing {target}; nothing was written")
    return WriteFailed(f"writing {target} failed: {error.strerror or error}; nothing was written")


@contextlib.contextmanager
def atomic_output(
    target: str | os.PathLike[str], *, force: bool = False, protect: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; rename it into place only if the block succeeds.

    The target is checked and locked first (:func:`check_output_target`, with the command's sources in
    ``protect``), and unlocked at the end. Any failure, interrupt or SIGTERM removes the temporary folder.
    With ``force`` a previous output is replaced only after the new one is complete.
    """
    target = check_output_target(target, force=force, protect=protect)
    try:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".ctxext-tmp", dir=target.parent))
            temporary.chmod(0o777 & ~_umask())
        except OSError as error:
            raise WriteFailed(f"cannot create the output beside {target}: {error.strerror or error}") from None
        with _removed_unless_placed([temporary], target):
            yield temporary
            _replace_together([(temporary, target)])
    finally:
        release_output(target)


@contextlib.contextmanager
def atomic_files(
    targets: list[str | os.PathLike[str]], *, force: bool = False, protect: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[list[Path]]:
    """Yield temporary file paths beside ``targets``; all are renamed into place together, or none.

    The file counterpart of :func:`atomic_output`, for an output and its manifest: any failure,
    interrupt or SIGTERM removes the temporary files and leaves the previous files as they were.
    Only the first target is checked (and locked) as the user's output; the others travel with it.
    """
    first = check_output_target(targets[0], force=force, protect=protect, is_file=True)
    temporaries: list[Path] = []
    try:
        paths = [first] + [_companion_path(target) for target in targets[1:]]
        with _removed_unless_placed(temporaries, first):
            try:
                first.parent.mkdir(parents=True, exist_ok=True)
                for path in paths:
                    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".ctxext-tmp", dir=path.parent)
                    os.close(handle)
                    temporaries.append(Path(name))
                    Path(name).chmod(0o666 & ~_umask())
            except OSError as error:
                raise WriteFailed(f"cannot create the output beside {first}: {error.strerror or error}") from None
            yield temporaries
            _replace_together(list(zip(temporaries, paths, strict=True)))
    finally:
        release_output(first)


@contextlib.contextmanager
def _removed_unless_placed(temporaries: list[Path], target: Path) -> Iterator[None]:
    """Around a write: on any failure, interrupt or SIGTERM, the temporaries are removed; an OS error is said
    as a failed write."""
    try:
        with sigterm_as_interrupt():
            yield
    except OSError as error:
        for temporary in temporaries:
            _remove(temporary)
        raise _write_failed(target, error) from None
    except BaseException:
        for temporary in temporaries:
            _remove(temporary)
        raise


def _companion_path(target: str | os.PathLike[str]) -> Path:
    """A file that travels with an output (its manifest): replaced only if it is a ctxext manifest."""
    path = Path(os.path.abspath(os.path.expanduser(os.fspath(target))))
    if path.is_symlink() or (path.exists() and not (path.is_file() and is_ctxext_manifest(path))):
        raise OutputExists(
            f"{path} is in the way of the output's manifest and was not written by ctxext; "
            "remove it or name another output"
        )
    return path


@contextlib.contextmanager
def atomic_file(
    target: str | os.PathLike[str], *, force: bool = False, protect: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """One file written atomically (see :func:`atomic_files`)."""
    with atomic_files([target], force=force, protect=protect) as (temporary,):
        yield temporary


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _replace_together(moves: list[tuple[Path, Path]]) -> None:
    """Rename each finished temporary onto its target; if any rename fails, put every target back.

    SIGINT and SIGTERM are held while the renames run, so a signal can never leave half of a pair in place: one
    that arrives meanwhile stops the command right after, and says that the output was written.
    """
    with _signals_held(", ".join(str(target) for _, target in moves)):
        retired: list[tuple[Path, Path]] = []
        placed: list[Path] = []
        try:
            for _, target in moves:
                if target.exists():
                    old = target.with_name(f".{target.name}.{os.getpid()}.ctxext-old")
                    target.rename(old)
                    retired.append((old, target))
            for temporary, target in moves:
                temporary.rename(target)
                placed.append(target)
        except BaseException:
            for target in placed:
                _remove(target)
            for old, target in retired:
                old.rename(target)
            raise
        for old, _ in retired:
            _remove(old)


INTERRUPTING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _signals_held(written: str) -> Iterator[None]:
    """Hold SIGINT and SIGTERM across the block; one that arrived meanwhile is taken after it, as
    :class:`~ctxext.errors.Interrupted` saying that ``written`` was written (when the block succeeded).

    Python runs signal handlers in the main thread whichever thread the signal reached, so a handler that only
    records the signal holds it (blocking with ``pthread_sigmask`` would not: another thread can take it)."""
    from ctxext.errors import Interrupted

    taken: list[int] = []
    with _signal_handlers(INTERRUPTING_SIGNALS, lambda number, frame: taken.append(number)):
        yield
    if taken:
        raise Interrupted(taken[0], kept=f"{written} was written completely before the signal was taken")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`~ctxext.errors.Interrupted`, so cleanup code runs."""
    from ctxext.errors import Interrupted

    def interrupt(signum, frame):
        raise Interrupted(signum)

    with _signal_handlers((signal.SIGTERM,), interrupt):
        yield


@contextlib.contextmanager
def _signal_handlers(numbers: Iterable[int], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """``handler`` for the signals ``numbers`` within the block, the previous handlers after it; outside the
    main thread (where Python cannot set handlers) signals are left alone."""
    try:
        previous = {number: signal.signal(number, handler) for number in numbers}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for number, earlier in previous.items():
            signal.signal(number, earlier)
