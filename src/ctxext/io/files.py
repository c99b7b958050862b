"""Plain files: file hashes, JSON and JSONL inputs (regular files only; errors name the file and line)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ctxext.errors import CorruptCheckpoint, InvalidArgument, SourceNotFound
from ctxext.io.locks import register_input

CHUNK_BYTES = 16 * 2**20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceNotFound(f"{path} does not exist") from None
    except IsADirectoryError:
        raise InvalidArgument(f"{path} is a folder, not a JSON file") from None
    except UnicodeDecodeError:
        raise CorruptCheckpoint(f"{path} is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise CorruptCheckpoint(f"{path} is not valid JSON ({getattr(error, 'msg', 'nested too deeply')})") from None


def input_file(path: str | os.PathLike[str], what: str = "input file") -> Path:
    """``path`` if it is a regular file; a folder, device, FIFO or missing file is refused in one line."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceNotFound(f"{what} {path} does not exist") from None
    except OSError as error:  # a symlink loop, a permission problem
        raise SourceNotFound(f"{what} {path} cannot be opened: {error.strerror or error}") from None
    if stat.S_ISDIR(mode):
        raise InvalidArgument(f"{what} {path} is a folder; name a file")
    if not stat.S_ISREG(mode):
        raise InvalidArgument(f"{what} {path} is not a regular file (a device, FIFO or socket); name a file")
    register_input(path)
    return path


MAX_LINE_BYTES = 32 * 2**20
"""The longest line a JSON lines reader takes (one record); a longer one is a file that is not one record per line
(a JSON array, a binary file) more often than a record, and is refused without being held in memory."""


def bounded_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of each line of a file opened in binary mode; a line longer than
    :data:`MAX_LINE_BYTES` comes as None, read past a piece at a time (never held whole)."""
    limit = MAX_LINE_BYTES
    number = 0
    while raw := handle.readline(limit + 1):
        number += 1
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield number, raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = handle.readline(2**20)
        yield number, None


def line_too_long(where: str) -> str:
    """The message for a line over :data:`MAX_LINE_BYTES`, ``where`` naming the file and line."""
    return f"{where}: a line longer than {MAX_LINE_BYTES / 2**20:g} MiB (not one JSON record per line?)"


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line; a line that is not a JSON object (or not UTF-8, or longer
    than :data:`MAX_LINE_BYTES`) is an error naming the file and line."""
    path = input_file(path)
    with open(path, "rb") as handle:
        for number, raw in bounded_lines(handle):
            if raw is None:
                raise InvalidArgument(line_too_long(f"{path}:{number}"))
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgument(f"{path}:{number}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidArgument(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise InvalidArgument(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            yield number, record
