"""File outputs of the data commands: written atomically, each with ``<output>.manifest.json`` beside it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ctxext.data.options import OutputFormat
from ctxext.data.sources import EmptySource, SourceFile
from ctxext.errors import InvalidArgument
from ctxext.io import atomic_files, check_output_target, file_manifest_path, file_sha256, write_json
from ctxext.manifest import _jsonable, manifest_header

OUTPUT_FORMATS = {".parquet": OutputFormat.parquet, ".jsonl": OutputFormat.jsonl}


def output_format(out: str | Path, allowed: tuple[OutputFormat, ...] = tuple(OutputFormat)) -> OutputFormat:
    found = OUTPUT_FORMATS.get(Path(out).suffix.lower())
    if found not in allowed:
        raise InvalidArgument(f"output {out}: name it *.{' or *.'.join(kind.value for kind in allowed)}")
    return found


@dataclass
class InputRecord:
    """One input file as the manifest lists it."""

    source: str
    file: str
    format: str
    bytes: int
    sha256: str | None
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, source: SourceFile) -> InputRecord:
        """The file's size and sha256; None when it cannot be read (the reader reports why)."""
        try:
            return cls(
                source.label, str(source.path), source.format, source.path.stat().st_size, file_sha256(source.path)
            )
        except OSError:
            return cls(source.label, str(source.path), source.format, 0, None)


def checked_output(out: str | Path, *, force: bool, inputs: Sequence[SourceFile] = ()) -> Path:
    """The output path, refused before any work if it may not be written (see ``io.check_output_target``)."""
    return check_output_target(out, force=force, protect=[source.path for source in inputs], is_file=True)


@contextlib.contextmanager
def atomic_file_with_manifest(
    out: str | Path, *, force: bool, inputs: Sequence[SourceFile] = ()
) -> Iterator[tuple[Path, Path]]:
    """Temporary paths for the output and its manifest; both are moved into place together on success,
    or neither. No input may be the output."""
    out = Path(out)
    protect = [source.path for source in inputs]
    with atomic_files([out, file_manifest_path(out)], force=force, protect=protect) as (temporary, manifest):
        yield temporary, manifest


def write_file_manifest(
    path: Path,
    *,
    command: str,
    options: dict[str, Any],
    inputs: list[InputRecord],
    counts: dict[str, Any],
    output: Path,
    written: Path,
    rows: int,
    problems: list[str],
    argv: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the manifest of a file output; ``written`` is the finished temporary file, ``output`` its
    final name."""
    manifest = {
        **manifest_header(command, argv),
        "options": _jsonable(options),
        "inputs": [_jsonable(vars(record)) for record in inputs],
        "counts": _jsonable(counts),
        "problems": list(problems),
        "output": {"path": str(output), "bytes": written.stat().st_size, "sha256": file_sha256(written), "rows": rows},
        **_jsonable(extra or {}),
    }
    write_json(path, manifest, sort_keys=True)
    return manifest


class JsonlWriter:
    """Append JSON records to an open file, one per line."""

    def __init__(self, path: Path):
        self.handle = open(path, "w", encoding="utf-8")
        self.rows = 0

    def write(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        self.rows += len(records)

    def close(self) -> None:
        self.handle.close()


class ParquetRowWriter:
    """Write lists of records as Parquet row groups; the schema is given or taken from the first batch. Each
    ``write`` is a row group, unless ``rows_per_group``: then records gather until that many are there."""

    def __init__(self, path: Path, schema: Any = None, rows_per_group: int | None = None):
        self.path = path
        self.schema = schema
        self.rows_per_group = rows_per_group or 1
        self.pending: list[dict[str, Any]] = []
        self.writer: Any = None
        self.rows = 0
        self.closed = False

    def write(self, records: list[dict[str, Any]]) -> None:
        self.pending.extend(records)
        self.rows += len(records)
        if len(self.pending) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records, self.pending = self.pending, []
        if not records:
            return
        try:
            table = pa.Table.from_pylist(records, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise InvalidArgument(f"records do not fit one Parquet schema ({error}); write *.jsonl instead") from None
        if self.writer is None:
            self.schema = table.schema
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self.writer.write_table(table)

    def write_columns(self, columns: dict[str, list[Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pydict(columns, schema=self.schema)
        if not len(table):
            return
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        self.writer.write_table(table)
        self.rows += len(table)

    def close(self) -> None:
        """Finish the file (an empty one when nothing was written and the schema is known); once."""
        import pyarrow.parquet as pq

        if self.closed:
            return
        self.closed = True
        self._flush()
        if self.writer is None and self.schema is not None:
            self.writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")
        if self.writer is not None:
            self.writer.close()


class RowWriter(Protocol):
    rows: int

    def write(self, records: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


Writer = TypeVar("Writer", bound=RowWriter)


def open_writer(
    path: Path, kind: OutputFormat, schema: Any = None, rows_per_group: int | None = None
) -> JsonlWriter | ParquetRowWriter:
    """The writer of ``kind`` (``schema`` and ``rows_per_group``: see :class:`ParquetRowWriter`)."""
    return JsonlWriter(path) if kind == OutputFormat.jsonl else ParquetRowWriter(path, schema, rows_per_group)


class FileOutput:
    """One file a data command writes, with ``<file>.manifest.json`` beside it: refused before any work if it
    may not be written, then both are written atomically together, or neither (no input may be the output).

    Use: ``with output.writing(make_writer) as writer:`` write the rows, then ``output.finish(writer, ...)``
    inside the same block."""

    def __init__(self, path: Path, inputs: Sequence[SourceFile] = (), *, force: bool):
        checked_output(path, force=force, inputs=inputs)
        self.path = Path(path)
        self.inputs = inputs
        self.force = force
        self.manifest: dict[str, Any] = {}
        self._temporaries: tuple[Path, Path] | None = None

    @property
    def manifest_path(self) -> Path:
        return file_manifest_path(self.path)

    @contextlib.contextmanager
    def writing(self, make_writer: Callable[[Path], Writer]) -> Iterator[Writer]:
        """The writer of the temporary output; closed on the way out, also when the block fails."""
        with atomic_file_with_manifest(self.path, force=self.force, inputs=self.inputs) as temporaries:
            self._temporaries = temporaries
            writer = make_writer(temporaries[0])
            try:
                yield writer
            finally:
                writer.close()

    def finish(self, writer: Writer, *, empty: str, **manifest: Any) -> dict[str, Any]:
        """Close ``writer`` and write the manifest (``manifest``: the fields of :func:`write_file_manifest`
        about the run); an output without rows is refused with the message ``empty``."""
        assert self._temporaries is not None, "finish() belongs inside writing()"
        writer.close()
        if writer.rows == 0:
            raise EmptySource(empty)
        temporary, temporary_manifest = self._temporaries
        self.manifest = write_file_manifest(
            temporary_manifest, output=self.path, written=temporary, rows=writer.rows, **manifest
        )
        return self.manifest


class CountedOutput:
    """A data output whose summary is a table of counts, one row per source (``view = "counts"``)."""

    view = "counts"
    title = "data"
    columns: tuple[str, ...] = ()

    def count_rows(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError


@dataclass
class SplitSetResult(CountedOutput):
    """A data set folder whose manifest counts each split (``data longdoc``, ``data evidence``)."""

    path: Path
    manifest: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"output": str(self.path), **self.manifest["counts"]}

    def count_rows(self) -> dict[str, dict[str, Any]]:
        return self.manifest["counts"]


@dataclass
class PydocsResult(CountedOutput):
    path: Path
    manifest: dict[str, Any]

    title = "pydocs"
    columns = ("documents", "words")

    def summary(self) -> dict[str, Any]:
        return {"output": str(self.path), **self.manifest["counts"]}

    def count_rows(self) -> dict[str, dict[str, Any]]:
        return self.manifest["counts"].get("sources") or {"python-stdlib": self.manifest["counts"]}
