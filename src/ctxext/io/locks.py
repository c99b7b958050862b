"""One run: the inputs it reads (which its outputs must not replace) and the locks of its outputs."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

from ctxext.errors import OutputExists, WriteFailed

_run_inputs: ContextVar[dict[Path, bool] | None] = ContextVar("ctxext_run_inputs", default=None)


def is_main_process() -> bool:
    """The process that writes outputs: the only one, or rank 0 of a distributed launch (torchrun, accelerate)."""
    return int(os.environ.get("RANK", "0")) == 0


def absolute_path(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def register_input(path: str | os.PathLike[str], *, whole: bool = True) -> None:
    """Remember ``path`` as an input of the current run (:func:`run_scope`): no output of the run may replace it
    or hold it, nor (``whole``: a model folder, every file of which is read) replace anything inside it. A data
    folder is not ``whole``: its readers register each file they read, and may leave out ctxext's own outputs
    in it. The readers of files, folders and models call this, so every input a command (or any stage of a
    pipeline) reads is protected, not only those a command names in ``protect``."""
    inputs = _run_inputs.get()
    if inputs is not None:
        key = absolute_path(path)
        inputs[key] = inputs.get(key, False) or whole


def registered_inputs() -> dict[Path, bool]:
    """The inputs the current run has read so far (:func:`register_input`): path -> whether it is ``whole``."""
    return _run_inputs.get() or {}


@contextlib.contextmanager
def run_scope() -> Iterator[None]:
    """One command's run. The inputs it reads are protected from its outputs, and the output locks it takes are
    released when it ends, however it ends. A scope inside another (a pipeline's stage) shares the outer one's
    inputs, so a stage's output can never replace what an earlier stage read."""
    outer = _run_inputs.get()
    token = _run_inputs.set(outer if outer is not None else {})
    locks_before = set(_held_locks)
    try:
        yield
    finally:
        _run_inputs.reset(token)
        for target in set(_held_locks) - locks_before:
            release_output(target)


# ----------------------------------------------------------------------------- output locks


@dataclass
class _OutputLock:
    descriptor: int
    path: Path
    created_folders: list[Path]


_held_locks: dict[Path, _OutputLock] = {}


def lock_path(target: Path) -> Path:
    """The lock file of an output: ``.NAME.ctxext-lock`` beside it."""
    return target.with_name(f".{target.name}.ctxext-lock")


def claim_output(target: Path) -> None:
    """Hold the lock of ``target`` until the output is written (or the run ends): a second writer of the same
    output, in this process or another, is refused at once instead of racing the first.

    The lock is ``flock`` on the lock file, so the kernel releases it when its holder dies: a lock file left by
    a killed run is detected (it is unlocked) and taken over, with a warning naming the process that left it.
    Under a distributed launch only the main process writes, so only it takes the lock.
    """
    if target in _held_locks or not is_main_process():
        return
    created = _make_parents(target.parent)
    path = lock_path(target)
    try:
        descriptor, stale_owner = _lock_file(path, target)
    except BaseException:
        _remove_empty(created)
        raise
    _held_locks[target] = _OutputLock(descriptor, path, created)
    if stale_owner:
        import logging

        logging.getLogger("ctxext").warning(
            "took over the lock of %s left by process %s, which is no longer running", target, stale_owner
        )


def _lock_file(path: Path, target: Path) -> tuple[int, str]:
    """An open, locked descriptor of ``path`` with this process's id in it, and the id a dead holder left."""
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise WriteFailed(f"cannot lock the output {target}: {error.strerror or error}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(descriptor, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(descriptor)
            raise OutputExists(
                f"output {target} is being written by another ctxext run (process {owner}); wait for it to "
                "finish or name another output"
            ) from None
        except OSError:  # a file system without locks (some network mounts): the write goes on unlocked
            import logging

            logging.getLogger("ctxext").warning("%s cannot be locked here; two runs writing it would race", target)
            return descriptor, ""
        try:  # the previous holder may have removed the file between our open and our lock: lock the new one
            same = os.stat(path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(descriptor)
            continue
        stale_owner = os.read(descriptor, 64).decode("ascii", "replace").strip()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        return descriptor, stale_owner


def release_output(target: Path) -> None:
    """Give up the lock of ``target`` (a no-op when not held); the lock file is removed while still locked, so
    a waiting writer that opened it notices and locks a fresh one."""
    lock = _held_locks.pop(target, None)
    if lock is None:
        return
    with contextlib.suppress(OSError):
        lock.path.unlink()
    os.close(lock.descriptor)
    _remove_empty(lock.created_folders)


@atexit.register
def _release_all_outputs() -> None:
    for target in list(_held_locks):
        release_output(target)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; the ones created, deepest first (removed again if unused)."""
    missing = [folder, *folder.parents]
    missing = [path for path in missing if not path.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteFailed(f"cannot create the folder {folder}: {error.strerror or error}") from None
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()
