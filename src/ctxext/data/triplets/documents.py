"""Documents as a title plus sections: headings parsed from Markdown or reStructuredText, or a record's own
``sections``; a corpus read into them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.formats import record_id, record_text
from ctxext.data.options import OnError
from ctxext.data.output import InputRecord
from ctxext.data.sources import Problems, SourceFile, UnreadableSource, expand_sources, iter_records, markdown_title
from ctxext.data.text import normalize

MARKDOWN_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
RST_HEADING = re.compile(r"^([^\n]+)\n([=\-~^\"'`#*+]{3,})[ \t]*$", re.MULTILINE)
NON_SPACE = re.compile(r"\S+")


@dataclass
class Section:
    heading: str | None
    text: str


@dataclass
class StructuredDocument:
    """A document as title plus sections; ``body`` joins the sections back with their headings."""

    doc_id: str
    title: str | None
    sections: list[Section]
    source: str = ""

    def body(self, without: int | None = None) -> str:
        parts = []
        for index, section in enumerate(self.sections):
            if index == without:
                continue
            parts.append(f"{section.heading}\n\n{section.text}" if section.heading else section.text)
        return "\n\n".join(part for part in parts if part.strip())


def split_sections(text: str) -> list[Section]:
    """Sections under Markdown (``## Heading``) or reStructuredText (underlined) headings; text before the
    first heading is a section without one."""
    marks = [(m.start(), m.end(), m.group(2).strip()) for m in MARKDOWN_HEADING.finditer(text)]
    if not marks:
        marks = [
            (m.start(), m.end(), m.group(1).strip())
            for m in RST_HEADING.finditer(text)
            if len(m.group(2)) >= len(m.group(1).strip()) and m.group(1).strip()
        ]
    sections = []
    previous_end, heading = 0, None
    for start, end, name in marks:
        chunk = text[previous_end:start].strip()
        if chunk or heading:
            sections.append(Section(heading, chunk))
        previous_end, heading = end, name
    sections.append(Section(heading, text[previous_end:].strip()))
    return [s for s in sections if s.text or s.heading]


def structured_document(record: dict[str, Any], where: str, default_title: str | None = None) -> StructuredDocument:
    """A record's title and sections: a ``sections`` list when given, else headings parsed from its text."""
    field, text, title = record_text(record)
    text = None if field == "sections" else text  # the list itself is read below
    raw_sections = record.get("sections")
    if isinstance(raw_sections, list) and raw_sections:
        sections = []
        for item in raw_sections:
            if isinstance(item, dict):
                sections.append(Section(item.get("heading") or item.get("title"), str(item.get("text") or "")))
            elif isinstance(item, str):
                sections.append(Section(None, item))
    elif text is not None:
        sections = split_sections(text)
    else:
        raise UnreadableSource(f"{where}: no text field and no sections")
    title = title or default_title
    if title is None and sections and sections[0].heading and text is not None and markdown_title(text):
        title = sections[0].heading
        sections[0] = Section(None, sections[0].text)
    elif title and sections and sections[0].heading and normalize(sections[0].heading) == normalize(title):
        sections[0] = Section(None, sections[0].text)
    sections = [s for s in sections if s.text.strip() or s.heading]
    return StructuredDocument(record_id(record, where), title, sections, where)


def read_documents(corpus: str, inputs: list[InputRecord] | None = None) -> list[StructuredDocument]:
    """Every document of ``corpus`` (file or folder, any ``corpus`` format) as title plus sections; an
    unreadable record stops the reading. Each file read is appended to ``inputs`` (path, size, sha256)."""
    return _read_corpus(
        expand_sources([corpus]), Problems(OnError.stop), [] if inputs is None else inputs, None, no_progress
    )


def _read_corpus(
    files: list[SourceFile],
    problems: Problems,
    inputs: list[InputRecord],
    pdf_password: str | None,
    progress: ProgressFn,
) -> list[StructuredDocument]:
    """Every readable record of ``files`` as a structured document; the others are problems."""
    documents: list[StructuredDocument] = []
    for number, source_file in enumerate(files, start=1):
        inputs.append(InputRecord.of(source_file))
        before = len(documents)
        for where, record in iter_records(source_file, problems, pdf_password=pdf_password):
            try:
                documents.append(structured_document(record, where))
            except UnreadableSource as error:
                problems.report(error)
        inputs[-1].counts = {"documents": len(documents) - before}
        progress("reading corpus", number, len(files))
    return documents
