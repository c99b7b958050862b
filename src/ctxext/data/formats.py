"""Every record format ctxext reads, each defined once: the keys it accepts and its reader.

The readers are built on :func:`ctxext.io.read_jsonl` (one JSON object per line, a bad line named by file
and line); training, QA and evaluation only consume them.

- **text records** (corpus lines and rows, BEIR documents, triplet documents): the text is the first of
  :data:`TEXT_FIELDS` that holds a string, else a ``sections`` list (headings and texts) as Markdown; ``title``
  stands beside it, ``doc_id`` or ``id`` names it.
- **triplets** (``ctxext-triplets/1``, docs/data.md): one key per role in :data:`TRIPLET_KEYS`
  (sentence-transformers' ``anchor``/``pos``/``neg`` and the plural ``positives``/``negatives`` too); a
  value is a string, a text record, or a list of those.
- **SQuAD-style QA**: ``{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}``.
- **BEIR folders**: ``corpus.jsonl`` (``_id`` and a text record), ``queries.jsonl`` (``_id``, ``text``),
  ``qrels/<split>.tsv`` (query-id, corpus-id, score; a header line first).
- **documents to embed** (``ctxext embed``): a ``text`` field, or SPECTER2's ``title`` / ``abstract``
  (``title [SEP] abstract``).
- **text corpora** for MLM, MNTP and distillation: read by :mod:`ctxext.data.sources` (the reader of the
  ``data`` commands too, so a folder means the same files to both).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ctxext.errors import CorruptCheckpoint, InvalidArgument, SourceNotFound
from ctxext.io import input_file, read_jsonl

# ----------------------------------------------------------------------------- text records

TEXT_FIELDS = ("text", "body", "abstract", "content")
"""Where a record keeps its text, in order of preference."""

TEXT_RECORD_FIELDS = (*TEXT_FIELDS, "sections", "title")
"""Every field :func:`record_text` reads (the columns to read of a Parquet text record)."""


def record_text(record: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(field name, text, title) of a text record: the first of :data:`TEXT_FIELDS` that holds a string, else
    its ``sections`` as Markdown (field ``sections``, :func:`sections_text`), else its title alone (field
    ``title``); (None, None, None) when it has none of them."""
    title = record.get("title")
    title = str(title) if title not in (None, "") else None
    for name in TEXT_FIELDS:
        value = record.get(name)
        if isinstance(value, str):
            return name, value, title
    flattened = sections_text(record.get("sections"))
    if flattened is not None:
        return "sections", flattened, title
    if title is not None:
        return "title", title, None
    return None, None, None


def sections_text(sections: Any) -> str | None:
    """A record's ``sections`` list (``{"heading", "text"}`` objects or strings) as one Markdown text, each
    heading a ``## heading`` line over its text (``data triplets`` splits it back into the same sections); None
    when it is not a list or holds no text."""
    if not isinstance(sections, list):
        return None
    parts = []
    for item in sections:
        if isinstance(item, dict):
            heading, text = item.get("heading") or item.get("title"), str(item.get("text") or "")
            parts.append(f"## {heading}\n\n{text}" if heading else text)
        elif isinstance(item, str):
            parts.append(item)
    flattened = "\n\n".join(part.strip() for part in parts if part.strip())
    return flattened or None


def record_id(record: dict[str, Any], where: str) -> str:
    """A record's ``doc_id`` or ``id``; ``where`` (file:line) when it has neither."""
    return str(record.get("doc_id") or record.get("id") or where)


# ----------------------------------------------------------------------------- Parquet rows


def read_parquet_rows(path: str | Path, columns: Sequence[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 0, record) of each row of a Parquet file, read a batch of rows at a time (only ``columns``,
    those present, when given: none present gives no rows). A file or a row group that cannot be read is an error
    naming the file and the rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = input_file(path)
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise InvalidArgument(f"{path}: not a readable Parquet file ({first_line(error)})") from None
    present = parquet.schema_arrow.names
    wanted = present if columns is None else [name for name in present if name in columns]
    if not wanted:
        return
    first = 0
    for group in range(parquet.num_row_groups):
        start, rows = first, parquet.metadata.row_group(group).num_rows
        try:
            for batch in parquet.iter_batches(batch_size=1024, row_groups=[group], columns=wanted):
                records = batch.to_pylist()
                yield from enumerate(records, start=first)
                first += len(records)
        except (pa.ArrowException, OSError) as error:
            raise InvalidArgument(
                f"{path}: row group {group} (rows {start}-{start + rows - 1}) is not readable Parquet "
                f"({first_line(error)})"
            ) from None


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for a one-line error."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ----------------------------------------------------------------------------- triplets


class TripletRole(str, Enum):
    query = "query"
    positive = "positive"
    negative = "negative"


TRIPLET_KEYS = {
    TripletRole.query: ("query", "anchor"),
    TripletRole.positive: ("positive", "pos", "positives"),
    TripletRole.negative: ("negative", "neg", "negatives"),
}
"""The keys of each role (ctxext and SciRepEval names, then sentence-transformers'), in order of preference."""
ROLE_OF_KEY = {key: role for role, keys in TRIPLET_KEYS.items() for key in keys}


def triplet_text(value: Any, sep_token: str, where: str) -> str:
    """A query or a document of a triplet line as one string: a string as it is, the first item of a list,
    a record's ``text``, or SciRepEval's ``title`` + ``abstract`` (or another text field) as
    ``title [SEP] abstract`` (one of the two alone when the other is missing)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        return triplet_text(value[0], sep_token, where)
    if isinstance(value, dict):
        name, text, title = record_text(value)
        if text is not None and name in ("text", "title"):
            return text
        if text and title:
            return f"{title}{sep_token}{text}"
        if text or title:
            return text or title or ""
    raise InvalidArgument(f"{where}: expected a string or an object with 'text' or 'title'/'abstract'")


def triplet_schema() -> Any:
    """The Arrow schema of ``ctxext-triplets/1`` as Parquet: one column per key of a JSON line, the documents as
    structs, so a row read back is the line's object."""
    import pyarrow as pa

    document = pa.struct([("doc_id", pa.string()), ("title", pa.string()), ("abstract", pa.string())])
    return pa.schema(
        [
            ("query", pa.struct([("text", pa.string()), ("kind", pa.string()), ("heading", pa.string())])),
            ("positive", document),
            ("negative", document),
            ("negative_method", pa.string()),
            ("negative_score", pa.float64()),
            ("negative_rank", pa.int32()),
        ]
    )


def read_triplets(paths: Sequence[str | Path], sep_token: str = "[SEP]") -> list[tuple[str, str, str]]:
    """(query, positive, negative) texts of every line of the jsonl files and every row of the Parquet files
    ``paths`` (by suffix)."""
    return [(e["query"], e["positive"], e["negative"]) for e in read_triplet_examples(paths, sep_token)]


def read_triplet_examples(paths: Sequence[str | Path], sep_token: str = "[SEP]") -> list[dict[str, Any]]:
    """Every triplet of ``paths`` (JSON lines or Parquet) as a training example: ``query``, ``positive`` and
    ``negative`` texts, and the query's section ``heading`` (None for a query without one; where the section
    starts in the positive is :func:`section_start`)."""
    if not paths:
        raise InvalidArgument("no training data: pass --data triplets.jsonl")
    examples = []
    for path in map(Path, paths):
        for where, record in _triplet_records(path):
            query, positive, negative = (_role_text(record, keys, sep_token, where) for keys in TRIPLET_KEYS.values())
            heading = record["query"].get("heading") if isinstance(record.get("query"), dict) else None
            examples.append({"query": query, "positive": positive, "negative": negative, "heading": heading})
    if not examples:
        raise InvalidArgument(f"{', '.join(map(str, paths))}: no triplets")
    return examples


def section_start(document: str, heading: Any) -> int | None:
    """Where in ``document`` a query's section starts: its heading's first place (0 for a query without a
    heading, such as a title); None when the heading is not there."""
    if not heading:
        return 0
    found = document.find(str(heading))
    return found if found >= 0 else None


def _triplet_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, record) of each triplet of a file: a Parquet row (``path:row N``) or a JSON line (``path:N``)."""
    if path.suffix.lower() == ".parquet":
        for row, record in read_parquet_rows(path):
            yield f"{path}:row {row}", record
    else:
        for number, record in read_jsonl(path):
            yield f"{path}:{number}", record


def _role_text(record: dict[str, Any], keys: tuple[str, ...], sep_token: str, where: str) -> str:
    """The text of one role of a triplet line, under the first of the role's ``keys`` the line has."""
    key = next((key for key in keys if key in record), None)
    if key is None:
        raise InvalidArgument(f"{where} has no '{keys[0]}' field")
    return triplet_text(record[key], sep_token, f"{where} field '{key}'")


# ----------------------------------------------------------------------------- SQuAD-style QA


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[str]
    answer_starts: list[int] = field(default_factory=list)


def read_squad_jsonl(path: str | Path) -> list[QAExample]:
    """One SQuAD record per line: string ``question`` and ``context``, ``answers`` with as many texts as
    starts, and every answer at its answer_start in the context. Errors name the file and line."""
    path = Path(path)
    examples = []
    for number, record in read_jsonl(input_file(path, "QA data")):
        example = _squad_example(record, f"{path}:{number}", default_id=str(number))
        _check_answer_positions(example, f"{path}:{number}")
        examples.append(example)
    if not examples:
        raise InvalidArgument(f"{path} holds no QA records")
    return examples


def _squad_example(record: dict[str, Any], where: str, default_id: str) -> QAExample:
    question, context = string_field(record, "question", where), string_field(record, "context", where)
    answers = _required(record, "answers", where)
    if not isinstance(answers, dict):
        raise InvalidArgument(
            f"{where}: 'answers' must be an object with 'text' and 'answer_start' lists, not {describe_json(answers)}"
        )
    texts = _list_field(answers, "text", f"{where}: 'answers.text'", _is_answer_text, "a non-empty string")
    starts = _list_field(answers, "answer_start", f"{where}: 'answers.answer_start'", _is_offset, "a whole number >= 0")
    if len(texts) != len(starts):
        raise InvalidArgument(
            f"{where}: 'answers.text' holds {len(texts)} answers but 'answers.answer_start' holds {len(starts)}"
        )
    example_id = label_field(record, "id", where, required=False) or default_id
    return QAExample(example_id, question or "", context or "", texts, starts)


def _check_answer_positions(example: QAExample, where: str) -> None:
    """Every answer must sit at its answer_start in the context (a record that says otherwise is corrupt)."""
    for text, start in zip(example.answers, example.answer_starts, strict=True):
        if start + len(text) > len(example.context):
            raise CorruptCheckpoint(
                f"{where}: answer {_shown(text)} at answer_start {start} runs past the end of the context "
                f"({len(example.context)} characters)"
            )
        if example.context[start : start + len(text)] != text:
            raise CorruptCheckpoint(f"{where}: answer {_shown(text)} is not at answer_start {start}")


def _is_answer_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_offset(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def write_squad_jsonl(path: str | Path, examples: Iterable[QAExample]) -> int:
    """Write examples in the format :func:`read_squad_jsonl` reads; the number written."""
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for example in examples:
            record = {
                "id": example.id,
                "question": example.question,
                "context": example.context,
                "answers": {"text": example.answers, "answer_start": example.answer_starts},
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


# ----------------------------------------------------------------------------- BEIR folders


@dataclass
class BeirFolder:
    """The judged queries of a BEIR folder, its documents as text, and each query's relevant documents
    (document index -> grade)."""

    name: str
    queries: list[str]
    documents: list[str]
    relevant: list[dict[int, float]]
    groups: list[str | None]
    """Each query's ``group`` field (for example the depth bucket of ``ctxext data longdoc``), or None."""


def read_beir(folder: str | Path, split: str = "test") -> BeirFolder:
    """A BEIR-format folder; only the queries with a judged document in the corpus are kept.

    Every record is checked (string texts, one record per id, finite scores); qrels lines that name a query
    or a document the folder does not hold are left out, as BEIR's own evaluation does (published sets such
    as ArguAna and NFCorpus have some)."""
    folder = Path(folder)
    for required in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / required).is_file():
            raise SourceNotFound(f"{folder} is not a BEIR folder: {required} is missing")
    doc_index, documents = _beir_corpus(folder / "corpus.jsonl")
    queries, groups = _beir_queries(folder / "queries.jsonl")
    judged, unknown = _beir_qrels(folder / "qrels" / f"{split}.tsv", doc_index, queries)
    if not judged:
        note = f" (qrels lines naming a query or document the folder does not hold: {unknown})" if unknown else ""
        raise InvalidArgument(f"{folder}: no query in qrels/{split}.tsv has a judged document in the corpus{note}")
    return BeirFolder(
        folder.name, [queries[q] for q in judged], documents, list(judged.values()), [groups[q] for q in judged]
    )


def beir_document_text(record: dict[str, Any], where: str) -> str:
    """``title. text`` of a corpus record (either alone when the other is missing or null)."""
    title = string_field(record, "title", where, required=False)
    name = next((name for name in TEXT_FIELDS if name in record), None)
    if name is None and title is None:
        raise InvalidArgument(f"{where}: a document needs a 'text' field (or a 'title')")
    text = string_field(record, name, where) if name else None
    return ". ".join(part for part in (title, text) if part)  # the text keeps its own final full stop


def _beir_corpus(path: Path) -> tuple[dict[str, int], list[str]]:
    """(document id -> index, document texts) of corpus.jsonl."""
    doc_index: dict[str, int] = {}
    lines: dict[str, int] = {}
    documents: list[str] = []
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        doc_index[_new_id(record, where, lines, number)] = len(documents)
        documents.append(beir_document_text(record, where))
    return doc_index, documents


def _beir_queries(path: Path) -> tuple[dict[str, str], dict[str, str | None]]:
    """(query id -> text, query id -> group) of queries.jsonl."""
    queries: dict[str, str] = {}
    groups: dict[str, str | None] = {}
    lines: dict[str, int] = {}
    for number, record in read_jsonl(path):
        where = f"{path}:{number}"
        query_id = _new_id(record, where, lines, number)
        queries[query_id] = string_field(record, "text", where) or ""
        groups[query_id] = label_field(record, "group", where, required=False)
    return queries, groups


def _new_id(record: dict[str, Any], where: str, lines: dict[str, int], number: int) -> str:
    """The record's ``_id``, which no earlier line of the file (``lines``: id -> line) may have used."""
    record_id = label_field(record, "_id", where) or ""
    if record_id in lines:
        raise InvalidArgument(f"{where}: '_id' {_shown(record_id)} was already used on line {lines[record_id]}")
    lines[record_id] = number
    return record_id


def _beir_qrels(
    path: Path, doc_index: dict[str, int], queries: dict[str, str]
) -> tuple[dict[str, dict[int, float]], int]:
    """(query id -> {document index: grade} of the positive judgements, the number of lines naming a query or a
    document the folder does not hold). A grade of 0 or below (TREC's -1 and -2 too) is judged not relevant."""
    judged: dict[str, dict[int, float]] = {}
    unknown = 0
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise InvalidArgument(f"{path}:{number}: expected query-id, corpus-id and a numeric score, tab-separated")
        query_id, doc_id, grade = fields[0], fields[1], _grade(fields[2], f"{path}:{number}")
        if query_id not in queries or doc_id not in doc_index:
            unknown += 1
        elif grade > 0:
            judged.setdefault(query_id, {})[doc_index[doc_id]] = grade
    return judged, unknown


def _grade(text: str, where: str) -> float:
    """A qrels score: a finite number (an infinite or NaN grade would make every nDCG NaN)."""
    try:
        grade = float(text)
    except ValueError:
        grade = math.nan
    if not math.isfinite(grade):
        raise InvalidArgument(f"{where}: the score {_shown(text.strip())} must be a finite number")
    return grade


# ----------------------------------------------------------------------------- record fields


def describe_json(value: Any) -> str:
    """A short name of a JSON value for an error message: ``null``, ``5``, ``a list``, ``a string``."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return json.dumps(value)


def string_field(record: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    """``record[key]``, which must be a string; an optional field may be missing or null (None)."""
    value = _required(record, key, where) if required else record.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{where}: {key!r} must be a string, not {describe_json(value)}")
    return value


def label_field(record: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    """An id or a group: a non-empty string or a whole number, as a string; an optional one may be missing or
    null (None)."""
    value = _required(record, key, where) if required else record.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        shown = "an empty string" if value == "" else describe_json(value)
        raise InvalidArgument(f"{where}: {key!r} must be a non-empty string or a whole number, not {shown}")
    return str(value)


def _list_field(container: dict[str, Any], key: str, what: str, is_item: Callable[[Any], bool], item: str) -> list:
    """``container[key]``, a list whose every item passes ``is_item``; ``what`` (file:line: 'name') names it."""
    if key not in container:
        raise InvalidArgument(f"{what} is missing")
    value = container[key]
    if not isinstance(value, list):
        raise InvalidArgument(f"{what} must be a list, not {describe_json(value)}")
    for index, entry in enumerate(value):
        if not is_item(entry):
            raise InvalidArgument(f"{what} item {index} must be {item}, not {describe_json(entry)}")
    return value


def _required(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise InvalidArgument(f"{where}: the record has no {key!r} field")
    return record[key]


def _shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ----------------------------------------------------------------------------- documents to embed


def read_embedding_inputs(path: str | Path, sep_token: str = "[SEP]") -> list[str]:
    """The text of each line of a JSONL file to embed (:func:`document_text`), in file order."""
    records = list(read_jsonl(Path(path)))
    if not records:
        raise InvalidArgument(f"{path} holds no documents")
    return [document_text(record, sep_token, where=f"{path}:{line}") for line, record in records]


def document_text(record: dict[str, Any], sep_token: str = "[SEP]", where: str = "a record") -> str:
    """The text of one input record: SPECTER2's ``title [SEP] abstract``, or a plain ``text`` field.
    ``where`` (file:line) names the record in errors."""
    fields = ("text",) if "text" in record else ("title", "abstract")
    for name in fields:
        value = record.get(name)
        if (value is None and name == "text") or (value is not None and not isinstance(value, str)):
            raise InvalidArgument(f"{where}: {name!r} must be a string, not {describe_json(value)}")
    if "text" in record:
        return record["text"]
    if "title" in record or "abstract" in record:
        return f"{record.get('title') or ''}{sep_token}{record.get('abstract') or ''}"
    raise InvalidArgument(f"{where}: a record needs a 'text' field or 'title'/'abstract' fields; got {sorted(record)}")
