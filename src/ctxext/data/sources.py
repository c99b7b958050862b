"""Read local sources lazily: txt, md, jsonl, parquet and PDF files, or folders of them.

Every reader yields plain records (dicts) one at a time, each with a ``where`` that names the file and
line (or row, or page range) it came from, so a bad record is reported where it is. A problem with one
file or one record goes through :class:`Problems`: under ``on_error="stop"`` it raises at once, under
``"skip"`` it is recorded and the rest is read.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxext.errors import CtxextError, InvalidArgument, SourceNotFound
from ctxext.io import file_manifest_path, input_file, is_ctxext_manifest

FORMAT_BY_SUFFIX = {
    ".txt": "txt",
    ".text": "txt",
    ".rst": "txt",
    ".md": "md",
    ".markdown": "md",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pdf": "pdf",
}
FORMATS = ("txt", "md", "jsonl", "parquet", "pdf")
TEXT_FIELDS = ("text", "body", "abstract", "content")
# Triplet fields (sentence-transformers and SciRepEval names) -> the role each row gets.
TRIPLET_FIELDS = {
    "query": "query",
    "anchor": "query",
    "positive": "positive",
    "pos": "positive",
    "positives": "positive",
    "negative": "negative",
    "neg": "negative",
    "negatives": "negative",
}
ON_ERROR = ("stop", "skip")


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
    format: str

    @property
    def name(self) -> str:
        return str(self.path)


@dataclass
class Problems:
    """Problems met while reading: raised at once (``stop``) or collected (``skip``)."""

    on_error: str = "stop"
    messages: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.on_error not in ON_ERROR:
            raise InvalidArgument(f"--on-error must be one of {', '.join(ON_ERROR)}, not {self.on_error!r}")

    def report(self, error: CtxextError) -> None:
        if self.on_error == "stop":
            raise error
        self.messages.append(str(error))


# ----------------------------------------------------------------------------- finding files


def parse_source_argument(argument: str) -> tuple[str, Path]:
    """``label=path`` names a source; a bare path is its own label."""
    label, sep, path = argument.partition("=")
    if sep and label and not Path(argument).exists():
        return label, Path(path).expanduser()
    return argument, Path(argument).expanduser()


def expand_sources(
    arguments: list[str], *, input_format: str | None = None, pattern: str | None = None
) -> list[SourceFile]:
    """Every file to read, in a stable order. Folders are searched recursively for known formats (or
    ``pattern``), leaving out ctxext's own file outputs (a file with ``<file>.manifest.json`` beside it), so
    an output written inside a source folder is never read back in; name such a file to read it. A file
    named explicitly with an unknown suffix is refused unless ``input_format`` says."""
    if not arguments:
        raise InvalidArgument("give at least one source (a file or a folder)")
    if input_format is not None and input_format not in FORMATS:
        raise InvalidArgument(f"unknown format {input_format!r}; choose one of {', '.join(FORMATS)}")
    files: list[SourceFile] = []
    for argument in arguments:
        label, path = parse_source_argument(argument)
        if not path.exists():
            raise SourceNotFound(f"source {path} does not exist")
        if path.is_dir():
            found = [
                p
                for p in sorted(path.rglob(pattern or "*"))
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and (input_format or pattern or p.suffix.lower() in FORMAT_BY_SUFFIX)
                and not is_ctxext_manifest(file_manifest_path(p))
            ]
            if not found:
                wanted = (
                    f"matching {pattern!r}"
                    if pattern
                    else f"with a known suffix ({', '.join(FORMAT_BY_SUFFIX)})"
                )
                raise EmptySource(f"source folder {path} holds no files {wanted}")
            files.extend(SourceFile(label, p, format_of(p, input_format)) for p in found)
        else:
            files.append(SourceFile(label, input_file(path, "source"), format_of(path, input_format)))
    return files


def format_of(path: Path, input_format: str | None = None) -> str:
    if input_format:
        return input_format
    found = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if found is None:
        raise InvalidArgument(
            f"{path}: unknown format {path.suffix or '(no suffix)'!r}; known suffixes are "
            f"{', '.join(FORMAT_BY_SUFFIX)} (or pass --format txt|md|jsonl|parquet|pdf)"
        )
    return found


# ----------------------------------------------------------------------------- records


def iter_records(
    source: SourceFile,
    problems: Problems,
    *,
    pdf_password: str | None = None,
    columns: tuple[str, ...] | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` pairs of one file. txt/md/pdf give one record (``title``, ``text``);
    jsonl gives one per line, parquet one per row (only ``columns`` when given and present)."""
    try:
        if source.format in ("txt", "md"):
            yield from _text_records(source, problems)
        elif source.format == "jsonl":
            yield from _jsonl_records(source, problems)
        elif source.format == "parquet":
            yield from _parquet_records(source, problems, columns)
        elif source.format == "pdf":
            yield from _pdf_records(source, problems, pdf_password)
        else:
            raise InvalidArgument(f"{source.path}: unknown format {source.format!r}")
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
    title = markdown_title(text) if source.format == "md" else None
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
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            where = f"{source.path}:{number}"
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                reason = error.msg if isinstance(error, json.JSONDecodeError) else "not UTF-8"
                problems.report(UnreadableSource(f"{where}: malformed JSON line ({reason})"))
                continue
            if not isinstance(record, dict):
                problems.report(
                    UnreadableSource(f"{where}: expected a JSON object, got {type(record).__name__}")
                )
                continue
            seen += 1
            yield where, record
    if seen == 0:
        problems.report(EmptySource(f"{source.path}: empty source (no JSON records)"))


def _parquet_records(
    source: SourceFile, problems: Problems, columns: tuple[str, ...] | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(source.path)
    except (pa.ArrowException, OSError) as error:
        problems.report(
            UnreadableSource(f"{source.path}: not a readable Parquet file ({_first_line(error)})")
        )
        return
    present = parquet.schema_arrow.names
    wanted = [c for c in present if c in columns] if columns else present
    if parquet.metadata.num_rows == 0 or not wanted:
        problems.report(EmptySource(f"{source.path}: empty source (no rows or no usable columns)"))
        return
    row = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=wanted):
        for record in batch.to_pylist():
            yield f"{source.path}:row {row}", record
            row += 1


def _pdf_records(
    source: SourceFile, problems: Problems, password: str | None
) -> Iterator[tuple[str, dict[str, Any]]]:
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
                    UnreadableSource(
                        f"{source.path}: encrypted PDF that cannot be opened ({_first_line(error)})"
                    )
                )
                return
            if not unlocked:
                hint = "the password given is wrong" if password else "pass its password with --pdf-password"
                problems.report(UnreadableSource(f"{source.path}: encrypted PDF; {hint}"))
                return
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except (PdfReadError, PyPdfError, ValueError, KeyError, TypeError, OSError) as error:
        problems.report(UnreadableSource(f"{source.path}: unreadable PDF ({_first_line(error)})"))
        return
    text = "\n\n".join(page for page in pages if page)
    if not text.strip():
        problems.report(
            EmptySource(
                f"{source.path}: PDF without extractable text (scanned pages need OCR, "
                "which ctxext does not do)"
            )
        )
        return
    yield f"{source.path}:pages 1-{len(pages)}", {"title": str(title) if title else None, "text": text}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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


def record_text(record: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(field name, text, title) of a plain document record: the first of text/body/abstract/content,
    else its title alone."""
    title = record.get("title")
    title = str(title) if title not in (None, "") else None
    for name in TEXT_FIELDS:
        value = record.get(name)
        if isinstance(value, str):
            return name, value, title
    if title is not None:
        return "title", title, None
    return None, None, None


def record_documents(record: dict[str, Any], where: str, source: SourceFile) -> list[Document]:
    """The documents of one record: its text, or each triplet field flattened into its own row."""
    roles = [(key, TRIPLET_FIELDS[key]) for key in record if key in TRIPLET_FIELDS]
    file = source.name
    if roles:
        documents = []
        for key, role in roles:
            values = record[key] if isinstance(record[key], list) else [record[key]]
            for index, value in enumerate(values):
                doc_id = f"{where}:{key}" + (f"[{index}]" if isinstance(record[key], list) else "")
                if isinstance(value, str):
                    documents.append(Document(source.label, file, doc_id, value, None, role))
                elif isinstance(value, dict):
                    _, text, title = record_text(value)
                    if text is None:
                        raise UnreadableSource(
                            f"{where}: field {key!r} has no text (expected a string or an "
                            f"object with one of {', '.join(TEXT_FIELDS)} or title)"
                        )
                    documents.append(Document(source.label, file, doc_id, text, title, role))
                elif value is not None:
                    raise UnreadableSource(f"{where}: field {key!r} holds a {type(value).__name__}, not text")
        return documents
    _, text, title = record_text(record)
    if text is None:
        raise UnreadableSource(
            f"{where}: no text field (expected one of {', '.join(TEXT_FIELDS)}, title, or "
            f"triplet fields query/positive/negative; got {sorted(record)[:8]})"
        )
    doc_id = str(record.get("doc_id") or record.get("id") or where)
    return [Document(source.label, file, doc_id, text, title, "text")]


def relative_name(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
