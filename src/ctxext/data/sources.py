"""Read local sources lazily: txt, md, jsonl, parquet and PDF files, or folders of them.

Every reader yields plain records (dicts) one at a time, each with a ``where`` that names the file and
line (or row, or page range) it came from, so a bad record is reported where it is. A problem with one
file or one record goes through :class:`Problems`: under ``on_error="stop"`` it raises at once, under
``"skip"`` it is recorded and the rest is read.

The ``data`` commands and the training commands (``mlm``, ``mntp``, ``distill``: :func:`read_documents`) find
files and read records here alike, so ``mlm --data docs/`` and ``data corpus docs/`` read the same files. What a
training corpus takes of a record: the blank-line separated paragraphs of a text file (txt, md, PDF); of a JSON
line or a Parquet row, the text ``data corpus`` takes (``formats.record_text``: ``text``, ``body``, ``abstract`` or
``content``, else the title).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.data.formats import (
    ROLE_OF_KEY,
    TEXT_FIELDS,
    TEXT_RECORD_FIELDS,
    first_line,
    read_parquet_rows,
    record_id,
    record_text,
)
from ctxext.data.options import InputFormat, OnError, parse_choice
from ctxext.errors import CtxextError, InvalidArgument, SourceNotFound
from ctxext.io import bounded_lines, file_manifest_path, input_file, is_ctxext_manifest, line_too_long, register_input

FORMAT_BY_SUFFIX = {
    ".txt": InputFormat.txt,
    ".text": InputFormat.txt,
    ".rst": InputFormat.txt,
    ".md": InputFormat.md,
    ".markdown": InputFormat.md,
    ".jsonl": InputFormat.jsonl,
    ".ndjson": InputFormat.jsonl,
    ".parquet": InputFormat.parquet,
    ".pdf": InputFormat.pdf,
}


class UnreadableSource(CtxextError):
    """A file or record that cannot be read as what its name says (bad PDF, bad JSON line...)."""

    exit_code = 6


class EmptySource(CtxextError):
    """A source (file, folder, or the whole input) that holds no text."""

    exit_code = 4


@dataclass(frozen=True)
class SourceFile:
    """One file to read: the source label it belongs to (the argument given), its path and format."""

    label: str
    path: Path
    format: InputFormat

    @property
    def name(self) -> str:
        return str(self.path)


class Problems:
    """Problems met while reading: raised at once (``stop``) or collected (``skip``)."""

    def __init__(self, on_error: OnError | str = OnError.stop):
        self.on_error = parse_choice(OnError, on_error, "--on-error must be one of {choices}, not {value!r}")
        self.messages: list[str] = []

    def report(self, error: CtxextError) -> None:
        if self.on_error == OnError.stop:
            raise error
        self.messages.append(str(error))

    def since(self, before: int) -> int:
        """Problems reported after the first ``before``."""
        return len(self.messages) - before

    def count_note(self, prefix: str = " ") -> str:
        """`` (N problems)`` when there were any, for the end of a message; else nothing."""
        return f"{prefix}({len(self.messages)} problems)" if self.messages else ""


# ----------------------------------------------------------------------------- finding files


def parse_source_argument(argument: str) -> tuple[str, Path]:
    """``label=path`` names a source; a bare path is its own label."""
    label, sep, path = argument.partition("=")
    if sep and label and not Path(argument).exists():
        return label, Path(path).expanduser()
    return argument, Path(argument).expanduser()


def expand_sources(
    arguments: list[str], *, input_format: InputFormat | str | None = None, pattern: str | None = None
) -> list[SourceFile]:
    """Every file to read, in a stable order. Folders are searched recursively for known formats (or
    ``pattern``), leaving out ctxext's own file outputs (a file with ``<file>.manifest.json`` beside it), so
    an output written inside a source folder is never read back in; name such a file to read it. A file
    named explicitly with an unknown suffix is refused unless ``input_format`` says."""
    if not arguments:
        raise InvalidArgument("give at least one source (a file or a folder)")
    if input_format is not None:
        input_format = parse_choice(InputFormat, input_format, "unknown format {value!r}; choose one of {choices}")
    files: list[SourceFile] = []
    for argument in arguments:
        label, path = parse_source_argument(argument)
        if not path.exists():
            raise SourceNotFound(f"source {path} does not exist")
        if path.is_dir():
            register_input(path, whole=False)
            found = [
                p
                for p in sorted(path.rglob(pattern or "*"))
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and (input_format or pattern or p.suffix.lower() in FORMAT_BY_SUFFIX)
                and not is_ctxext_manifest(file_manifest_path(p))
            ]
            if not found:
                wanted = f"matching {pattern!r}" if pattern else f"with a known suffix ({', '.join(FORMAT_BY_SUFFIX)})"
                raise EmptySource(f"source folder {path} holds no files {wanted}")
            files.extend(SourceFile(label, p, format_of(p, input_format)) for p in found)
        else:
            files.append(SourceFile(label, input_file(path, "source"), format_of(path, input_format)))
    return files


def format_of(path: Path, input_format: InputFormat | None = None) -> InputFormat:
    if input_format:
        return input_format
    found = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if found is None:
        raise InvalidArgument(
            f"{path}: unknown format {path.suffix or '(no suffix)'!r}; known suffixes are "
            f"{', '.join(FORMAT_BY_SUFFIX)} (or pass --format {'|'.join(f.value for f in InputFormat)})"
        )
    return found


# ----------------------------------------------------------------------------- records


def iter_records(
    source: SourceFile, problems: Problems, *, pdf_password: str | None = None, columns: tuple[str, ...] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` pairs of one file. txt/md/pdf give one record (``title``, ``text``);
    jsonl gives one per line, parquet one per row (only ``columns`` when given and present)."""
    try:
        if source.format in (InputFormat.txt, InputFormat.md):
            yield from _text_records(source, problems)
        elif source.format == InputFormat.jsonl:
            yield from _jsonl_records(source, problems)
        elif source.format == InputFormat.parquet:
            yield from _parquet_records(source, problems, columns)
        else:
            yield from _pdf_records(source, problems, pdf_password)
    except (PermissionError, IsADirectoryError) as error:
        problems.report(UnreadableSource(f"{source.path}: cannot be read ({error.strerror})"))


def _decode(source: SourceFile, raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UnreadableSource(f"{source.path}: not UTF-8 text (bad byte at offset {error.start})") from None


def _text_records(source: SourceFile, problems: Problems) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        text = _decode(source, source.path.read_bytes())
    except UnreadableSource as error:
        problems.report(error)
        return
    if not text or not text.strip():
        problems.report(EmptySource(f"{source.path}: empty source (no text)"))
        return
    if "\0" in text:
        offset = text.index("\0")
        problems.report(UnreadableSource(f"{source.path}: binary data (a NUL byte at character {offset}), not text"))
        return
    title = markdown_title(text) if source.format == InputFormat.md else None
    yield str(source.path), {"title": title, "text": text}


def markdown_title(text: str) -> str | None:
    """The first level-1 heading (``# Title``) in the first lines of a Markdown text."""
    for line in text.lstrip().splitlines()[:20]:
        if line.startswith("# "):
            return line[2:].strip() or None
    return None


def _jsonl_records(source: SourceFile, problems: Problems) -> Iterator[tuple[str, dict[str, Any]]]:
    seen = 0
    with open(source.path, "rb") as handle:
        for number, raw in bounded_lines(handle):
            where = f"{source.path}:{number}"
            if raw is None:
                problems.report(UnreadableSource(line_too_long(where)))
                continue
            if b"\0" in raw:  # never in JSON text (a string escapes it): the rest is binary too
                problems.report(UnreadableSource(f"{where}: binary data (NUL bytes), not UTF-8 JSON lines"))
                return
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
                problems.report(UnreadableSource(f"{where}: malformed JSON line ({reason})"))
                continue
            if not isinstance(record, dict):
                problems.report(UnreadableSource(f"{where}: expected a JSON object, got {type(record).__name__}"))
                continue
            seen += 1
            yield where, record
    if seen == 0:
        problems.report(EmptySource(f"{source.path}: empty source (no JSON records)"))


def _parquet_records(
    source: SourceFile, problems: Problems, columns: tuple[str, ...] | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each row (only ``columns`` when given); a file or row group that cannot be read is a problem, and the
    rest of that file is skipped."""
    seen = 0
    try:
        for row, record in read_parquet_rows(source.path, columns):
            seen += 1
            yield f"{source.path}:row {row}", record
    except InvalidArgument as error:
        problems.report(UnreadableSource(str(error)))
        return
    if seen == 0:
        problems.report(EmptySource(f"{source.path}: empty source (no rows or no usable columns)"))


def _pdf_records(source: SourceFile, problems: Problems, password: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(source.path)
        if reader.is_encrypted:
            try:
                unlocked = reader.decrypt(password or "")
            except (PyPdfError, NotImplementedError) as error:
                problems.report(
                    UnreadableSource(f"{source.path}: encrypted PDF that cannot be opened ({first_line(error)})")
                )
                return
            if not unlocked:
                hint = "the password given is wrong" if password else "pass its password with --pdf-password"
                problems.report(UnreadableSource(f"{source.path}: encrypted PDF; {hint}"))
                return
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, OSError) as error:
        problems.report(UnreadableSource(f"{source.path}: unreadable PDF ({first_line(error)})"))
        return
    text = "\n\n".join(page for page in pages if page)
    if not text.strip():
        problems.report(
            EmptySource(
                f"{source.path}: PDF without extractable text (scanned pages need OCR, which ctxext does not do)"
            )
        )
        return
    yield f"{source.path}:pages 1-{len(pages)}", {"title": str(title) if title else None, "text": text}


# ----------------------------------------------------------------------------- documents


@dataclass
class Document:
    """One text to write as (one or more) corpus rows."""

    source: str
    file: str
    doc_id: str
    text: str
    title: str | None = None
    field: str = "text"
    chunked: bool = False


def record_documents(record: dict[str, Any], where: str, source: SourceFile) -> list[Document]:
    """The documents of one record: its text, or each triplet field flattened into its own row."""
    if any(key in ROLE_OF_KEY for key in record):
        return _triplet_documents(record, where, source)
    _, text, title = record_text(record)
    if text is None:
        raise UnreadableSource(
            f"{where}: no text field (expected one of {', '.join(TEXT_FIELDS)}, title, or "
            f"triplet fields query/positive/negative; got {sorted(record)[:8]})"
        )
    return [Document(source.label, source.name, record_id(record, where), text, title, "text")]


def _triplet_documents(record: dict[str, Any], where: str, source: SourceFile) -> list[Document]:
    """One document per value of each triplet field, in the record's order; ``field`` is the role."""
    documents = []
    for key in (key for key in record if key in ROLE_OF_KEY):
        role = ROLE_OF_KEY[key].value
        listed = isinstance(record[key], list)
        for index, value in enumerate(record[key] if listed else [record[key]]):
            doc_id = f"{where}:{key}" + (f"[{index}]" if listed else "")
            if isinstance(value, str):
                documents.append(Document(source.label, source.name, doc_id, value, None, role))
            elif isinstance(value, dict):
                _, text, title = record_text(value)
                if text is None:
                    raise UnreadableSource(
                        f"{where}: field {key!r} has no text (expected a string or an "
                        f"object with one of {', '.join(TEXT_FIELDS)} or title)"
                    )
                documents.append(Document(source.label, source.name, doc_id, text, title, role))
            elif value is not None:
                raise UnreadableSource(f"{where}: field {key!r} holds a {type(value).__name__}, not text")
    return documents


# ----------------------------------------------------------------------------- training text (mlm, mntp, distill)


def training_sources(paths: Sequence[str | os.PathLike[str]]) -> list[SourceFile]:
    """The files of a training corpus, found as :func:`expand_sources` finds them (a folder: its files with a known
    suffix, hidden ones and ctxext's own outputs left out); a file named with an unknown suffix is refused."""
    if not paths:
        raise InvalidArgument("no training data: pass --data FILE (txt, md, jsonl, parquet or pdf) or a folder")
    for entry in map(Path, paths):
        if not entry.is_dir() and (entry.exists() or entry.is_symlink()):
            input_file(entry, "data file")
            if entry.suffix.lower() not in FORMAT_BY_SUFFIX:
                raise InvalidArgument(
                    f"data file {entry}: unsupported type {entry.suffix!r}; use {', '.join(FORMAT_BY_SUFFIX)} "
                    f"(.jsonl and .parquet records with a {'/'.join(TEXT_FIELDS)} field)"
                )
    return expand_sources([str(entry) for entry in paths])


def data_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The paths of :func:`training_sources`."""
    return [source.path for source in training_sources(paths)]


def read_documents(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The texts of a training corpus (see the module docstring), in file order."""
    documents: list[str] = []
    for source in training_sources(paths):
        documents += training_texts(source)
    if not documents:
        raise InvalidArgument(f"the data ({', '.join(map(str, paths))}) holds no text")
    return documents


def training_texts(source: SourceFile) -> list[str]:
    """The training texts of one file, read by :func:`iter_records` as the ``data`` commands read it: a text
    file's paragraphs, each JSON line's or Parquet row's text (:func:`record_text`: the first of
    :data:`TEXT_FIELDS` holding a string, else its title; a JSON line with none raises, empty Parquet rows are left
    out). An empty file gives none (a corpus with no text at all is refused by :func:`read_documents`); any other
    problem raises."""
    if source.format == InputFormat.parquet:
        _require_text_column(source.path)
    texts: list[str] = []
    try:
        for where, record in iter_records(source, Problems(OnError.stop), columns=TEXT_RECORD_FIELDS):
            if source.format in (InputFormat.txt, InputFormat.md, InputFormat.pdf):  # one record, the whole text
                texts += paragraphs(record["text"])
                continue
            _, text, _ = record_text(record)
            if source.format == InputFormat.jsonl and text is None:
                raise InvalidArgument(f"{where} has no text (a string {', '.join(TEXT_FIELDS)} or title field)")
            texts += [text] if text and text.strip() else []
    except EmptySource:
        pass  # reported at the end of the file (or before any record): what it gave is kept
    return texts


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, stripped."""
    return [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


def _require_text_column(path: Path) -> None:
    """A Parquet training file must have a text column (one of :data:`TEXT_FIELDS`, or ``title``); a file Parquet
    cannot read is the reader's to report."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError):
        return
    if not set(names) & set(TEXT_RECORD_FIELDS):
        raise InvalidArgument(
            f"{path} has no text column ({', '.join(TEXT_FIELDS)}, sections or title; it has {', '.join(names[:8])})"
        )
