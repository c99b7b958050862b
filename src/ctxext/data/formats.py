"""Every record format ctxext reads, each defined once: the keys it accepts and its reader.

The readers are built on :func:`ctxext.io.read_jsonl` (one JSON object per line, a bad line named by file
and line); training, QA and evaluation only consume them.

- **text records** (corpus lines and rows, BEIR documents, triplet documents): the text is the first of
  :data:`TEXT_FIELDS` that holds a string, ``title`` stands beside it, ``doc_id`` or ``id`` names it.
- **triplets** (``ctxext-triplets/1``, docs/data.md): one key per role in :data:`TRIPLET_KEYS`
  (sentence-transformers' ``anchor``/``pos``/``neg`` and the plural ``positives``/``negatives`` too); a
  value is a string, a text record, or a list of those.
- **SQuAD-style QA**: ``{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}}``.
- **BEIR folders**: ``corpus.jsonl`` (``_id`` and a text record), ``queries.jsonl`` (``_id``, ``text``),
  ``qrels/<split>.tsv`` (query-id, corpus-id, score; a header line first).
- **documents to embed** (``ctxext embed``): a ``text`` field, or SPECTER2's ``title`` / ``abstract``
  (``title [SEP] abstract``).
- **text corpora** for MLM and distillation: ``.txt`` (blank-line separated paragraphs), ``.jsonl`` (a
  ``text`` field per line), ``.parquet`` (a ``text`` column); a folder stands for those files inside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from ctxext.errors import CorruptCheckpoint, InvalidArgument, SourceNotFound
from ctxext.io import input_file, read_jsonl

# ----------------------------------------------------------------------------- text records

TEXT_FIELDS = ("text", "body", "abstract", "content")
"""Where a record keeps its text, in order of preference."""


def record_text(record: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(field name, text, title) of a text record: the first of :data:`TEXT_FIELDS` that holds a string,
    else its title alone (field ``title``); (None, None, None) when it has neither."""
    title = record.get("title")
    title = str(title) if title not in (None, "") else None
    for name in TEXT_FIELDS:
        value = record.get(name)
        if isinstance(value, str):
            return name, value, title
    if title is not None:
        return "title", title, None
    return None, None, None


def record_id(record: dict[str, Any], where: str) -> str:
    """A record's ``doc_id`` or ``id``; ``where`` (file:line) when it has neither."""
    return str(record.get("doc_id") or record.get("id") or where)


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


def read_triplets(paths: Sequence[str | Path], sep_token: str = "[SEP]") -> list[tuple[str, str, str]]:
    """(query, positive, negative) texts of every line of the jsonl files ``paths``."""
    if not paths:
        raise InvalidArgument("no training data: pass --data triplets.jsonl")
    triplets = []
    for path in map(Path, paths):
        for number, record in read_jsonl(path):
            where = f"{path}:{number}"
            query, positive, negative = (_role_text(record, keys, sep_token, where) for keys in TRIPLET_KEYS.values())
            triplets.append((query, positive, negative))
    if not triplets:
        raise InvalidArgument(f"{', '.join(map(str, paths))}: no triplets")
    return triplets


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
    """One SQuAD record per line. Every answer must sit at its answer_start in the context."""
    path = Path(path)
    examples = []
    for number, record in read_jsonl(input_file(path, "QA data")):
        example = _squad_example(record, f"{path}:{number}", default_id=str(number))
        for text, start in zip(example.answers, example.answer_starts, strict=True):
            if example.context[start : start + len(text)] != text:
                raise CorruptCheckpoint(f"{path}:{number}: answer {text!r} is not at answer_start {start}")
        examples.append(example)
    if not examples:
        raise InvalidArgument(f"{path} holds no QA records")
    return examples


def _squad_example(record: dict[str, Any], where: str, default_id: str) -> QAExample:
    try:
        answers = record["answers"]
        return QAExample(
            str(record.get("id", default_id)),
            record["question"],
            record["context"],
            list(answers["text"]),
            [int(s) for s in answers["answer_start"]],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CorruptCheckpoint(f"{where}: not a SQuAD record ({type(error).__name__}: {error})") from None


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
    """A BEIR-format folder; only the queries with a judged document in the corpus are kept."""
    folder = Path(folder)
    for required in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / required).is_file():
            raise SourceNotFound(f"{folder} is not a BEIR folder: {required} is missing")
    doc_index, documents = _beir_corpus(folder / "corpus.jsonl")
    queries, groups = {}, {}
    for number, record in read_jsonl(folder / "queries.jsonl"):
        query_id = str(_required(record, "_id", folder / "queries.jsonl", number))
        queries[query_id] = str(_required(record, "text", folder / "queries.jsonl", number))
        groups[query_id] = None if record.get("group") is None else str(record["group"])
    judged = _beir_qrels(folder / "qrels" / f"{split}.tsv", doc_index)
    asked = [q for q in judged if q in queries]
    if not asked:
        raise InvalidArgument(f"{folder}: no query in qrels/{split}.tsv has a judged document in the corpus")
    return BeirFolder(
        folder.name, [queries[q] for q in asked], documents, [judged[q] for q in asked], [groups[q] for q in asked]
    )


def beir_document_text(record: dict[str, Any]) -> str:
    """``title. text`` of a corpus record (either alone when the other is missing)."""
    _, text, title = record_text(record)
    return f"{title or ''}. {text or ''}".strip(". ")


def _beir_corpus(path: Path) -> tuple[dict[str, int], list[str]]:
    """(document id -> index, document texts) of corpus.jsonl."""
    numbered = list(read_jsonl(path))
    doc_index = {str(_required(record, "_id", path, number)): i for i, (number, record) in enumerate(numbered)}
    return doc_index, [beir_document_text(record) for _, record in numbered]


def _beir_qrels(path: Path, doc_index: dict[str, int]) -> dict[str, dict[int, float]]:
    """query id -> {document index: grade} of the positive judgements on documents in the corpus."""
    judged: dict[str, dict[int, float]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()[1:], start=2):
        fields = line.split("\t")
        if len(fields) < 3 or not _is_number(fields[2]):
            raise InvalidArgument(f"{path}:{number}: expected query-id, corpus-id and a numeric score, tab-separated")
        query_id, doc_id, grade = fields[:3]
        if doc_id in doc_index and float(grade) > 0:
            judged.setdefault(query_id, {})[doc_index[doc_id]] = float(grade)
    return judged


def _required(record: dict[str, Any], key: str, path: Path, number: int) -> Any:
    if key not in record:
        raise InvalidArgument(f"{path}:{number}: the record has no {key!r} field")
    return record[key]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- text corpora (MLM, distillation)

CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet")
CORPUS_TEXT_FIELD = "text"
"""The one field (jsonl) or column (Parquet) a training text corpus is read from."""


def read_documents(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The texts of a training corpus (see the module docstring), in file order."""
    documents: list[str] = []
    for path in data_files(paths):
        if path.suffix == ".txt":
            documents += _txt_paragraphs(path)
        elif path.suffix == ".jsonl":
            documents += _jsonl_texts(path)
        else:
            documents += _parquet_texts(path)
    if not documents:
        raise InvalidArgument(f"the data ({', '.join(map(str, paths))}) holds no text")
    return documents


def data_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The corpus files ``paths`` name, a folder standing for the supported files inside it (sorted)."""
    if not paths:
        raise InvalidArgument("no training data: pass --data FILE (txt, jsonl or parquet)")
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(p for p in entry.rglob("*") if p.suffix in CORPUS_SUFFIXES and p.is_file())
            if not found:
                raise SourceNotFound(f"data folder {entry} holds no .txt, .jsonl or .parquet files")
            files += found
        elif entry.exists() or entry.is_symlink():
            input_file(entry, "data file")
            if entry.suffix not in CORPUS_SUFFIXES:
                raise InvalidArgument(
                    f"data file {entry}: unsupported type {entry.suffix!r}; "
                    "use .txt, .jsonl (a 'text' field) or .parquet (a 'text' column)"
                )
            files.append(entry)
        else:
            raise SourceNotFound(f"data file {entry} does not exist")
    return files


def _txt_paragraphs(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    return [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]


def _jsonl_texts(path: Path) -> list[str]:
    texts = []
    for number, record in read_jsonl(path):
        if not isinstance(record.get(CORPUS_TEXT_FIELD), str):
            raise InvalidArgument(f"{path}:{number} has no string 'text' field")
        texts.append(record[CORPUS_TEXT_FIELD])
    return texts


def _parquet_texts(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=[CORPUS_TEXT_FIELD])
    except (KeyError, ValueError) as error:
        raise InvalidArgument(f"{path} has no 'text' column ({error})") from None
    except OSError as error:
        raise InvalidArgument(f"{path} cannot be read as Parquet ({error})") from None
    texts = table.column(CORPUS_TEXT_FIELD).to_pylist()
    return [text for text in texts if isinstance(text, str) and text.strip()]


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
            raise InvalidArgument(f"{where}: {name!r} must be a string, not {json.dumps(value)}")
    if "text" in record:
        return record["text"]
    if "title" in record or "abstract" in record:
        return f"{record.get('title') or ''}{sep_token}{record.get('abstract') or ''}"
    raise InvalidArgument(f"{where}: a record needs a 'text' field or 'title'/'abstract' fields; got {sorted(record)}")
