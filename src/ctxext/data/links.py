"""``ctxext data links``: document-to-document search from a corpus's own links, what SPECTER2 exists for.

A share of the documents (a stable draw per id, as ``data longdoc`` draws) become whole-document queries; the
others are the candidates. A query's relevant candidates are the documents it links to or that link to it:

- ``field``: the record's ``links`` list of document ids (citations, "see also" lists exported with the corpus);
- ``names``: qualified names in the text: ``asyncio.events.get_event_loop`` or ``numpy.linalg`` link to the
  page of the longest prefix that is a document id (a bare word never does: ``os`` or ``random`` in prose is
  not a reference, ``os.path`` is);
- ``markdown``: Markdown links ``[text](target)`` whose target's file name, without suffix, is a document id.

The folder is BEIR (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``); score it with ``ctxext evaluate
--task retrieval --beir OUT --forms ... --symmetric`` (a query document is represented as the documents are).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from ctxext.data.output import SplitSetResult
from ctxext.data.sources import Problems, UnreadableSource, expand_sources, iter_records
from ctxext.data.triplets import StructuredDocument, structured_document
from ctxext.errors import InvalidArgument, SourceNotFound
from ctxext.io import atomic_output, write_json
from ctxext.manifest import manifest_header

QUALIFIED_NAME = re.compile(r"(?<![\w.])[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


class LinkKind(str, Enum):
    field = "field"
    names = "names"
    markdown = "markdown"


@dataclass
class LinksResult(SplitSetResult):
    title = "data links"
    columns = ("queries", "documents", "links", "median_relevant")


def parse_link_kinds(text: str) -> tuple[LinkKind, ...]:
    try:
        return tuple(LinkKind(part.strip()) for part in text.split(",") if part.strip())
    except ValueError:
        raise InvalidArgument(f"--links {text!r}: choose from {', '.join(k.value for k in LinkKind)}") from None


def linked_ids(
    record: dict[str, Any], document: StructuredDocument, ids: set[str], kinds: Iterable[LinkKind]
) -> set[str]:
    """The other documents ``record`` links to, by each of ``kinds``."""
    found: set[str] = set()
    text = f"{document.title or ''}\n{document.body()}"
    for kind in kinds:
        if kind == LinkKind.field and isinstance(record.get("links"), list):
            found |= {str(target) for target in record["links"] if str(target) in ids}
        elif kind == LinkKind.names:
            for name in QUALIFIED_NAME.findall(text):
                parts = name.split(".")
                found |= next(
                    ({".".join(parts[:k])} for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in ids), set()
                )
        elif kind == LinkKind.markdown:
            found |= {
                stem for target in MARKDOWN_LINK.findall(text) if (stem := Path(target.split("#")[0]).stem) in ids
            }
    return found - {document.doc_id}


def write_links(
    corpus: str,
    out: str | Path,
    *,
    links: tuple[LinkKind, ...] = tuple(LinkKind),
    query_share: float = 0.2,
    force: bool = False,
    argv: list[str] | None = None,
) -> LinksResult:
    """Write ``OUT`` (a BEIR folder) with ``query_share`` of ``corpus``'s linked documents as queries."""
    from ctxext.data.longdoc import is_held_out

    if not 0 < query_share < 1:
        raise InvalidArgument(f"--query-share {query_share} must be between 0 and 1")
    records = [
        (where, record) for source in expand_sources([corpus]) for where, record in iter_records(source, Problems())
    ]
    documents = [structured_document(record, where) for where, record in records]
    ids = {document.doc_id for document in documents}
    if len(ids) != len(documents):
        raise UnreadableSource(f"{corpus}: document ids repeat; links need one document per id")
    related: dict[str, set[str]] = {document.doc_id: set() for document in documents}
    for (_, record), document in zip(records, documents, strict=True):
        for target in linked_ids(record, document, ids, links):
            related[document.doc_id].add(target)
            related[target].add(document.doc_id)  # linked either way: related
    queries = [d for d in documents if is_held_out(d.doc_id, query_share)]
    candidates = [d for d in documents if not is_held_out(d.doc_id, query_share)]
    candidate_ids = {d.doc_id for d in candidates}
    judged = [(query, sorted(related[query.doc_id] & candidate_ids)) for query in queries]
    judged = [(query, relevant) for query, relevant in judged if relevant]
    if len(judged) < 2:
        raise SourceNotFound(
            f"{corpus}: {len(judged)} of {len(queries)} query documents link to a candidate ({'/'.join(links)} links); "
            "need 2 or more (more documents, a larger --query-share, or other --links)"
        )
    with atomic_output(out, force=force) as staging:
        write_links_split(staging, candidates, judged)
        counts = {
            "queries": len(judged),
            "documents": len(candidates),
            "links": sum(len(relevant) for _, relevant in judged),
            "median_relevant": sorted(len(relevant) for _, relevant in judged)[len(judged) // 2],
        }
        manifest = {
            **manifest_header("data links", argv),
            "options": {"links": [kind.value for kind in links], "query_share": query_share},
            "input": str(Path(corpus).expanduser().absolute()),
            "counts": {"test": counts},
        }
        write_json(staging / "manifest.json", manifest, sort_keys=True)
    return LinksResult(Path(out).expanduser().absolute(), manifest)


def write_links_split(
    folder: Path, candidates: list[StructuredDocument], judged: list[tuple[StructuredDocument, list[str]]]
) -> None:
    """The BEIR files: candidates as the corpus, whole query documents as queries, each link a judgement."""
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as corpus:
        for document in candidates:
            record = {"_id": document.doc_id, "title": document.title or "", "text": document.body()}
            corpus.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as queries:
        for query, _ in judged:
            text = ". ".join(part for part in (query.title, query.body()) if part)  # as BEIR documents read
            queries.write(json.dumps({"_id": query.doc_id, "text": text}, ensure_ascii=False) + "\n")
    rows = "".join(f"{query.doc_id}\t{target}\t1\n" for query, relevant in judged for target in relevant)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows, encoding="utf-8")
