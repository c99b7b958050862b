"""A long-document retrieval set from the documentation of installed packages (``ctxext data longdoc``).

Each page is one module's documentation (module docstring, then each public class, function and method
under a heading with its signature, as ``ctxext data pydocs`` renders the standard library), cut to
``max_tokens``. One definition per page is chosen; its summary line (the first paragraph of its docstring) is
the query and is removed from the page, which stays the target with the rest of that definition's docstring.
So the query is natural text about the page, never a substring of it, and its answer lies at a known depth
(``depth_tokens``, bucketed by :data:`DEPTH_BUCKETS`; the choice balances the buckets).

The packages are split into a dev set (for choices) and a test set (looked at once) that share none; no
training stage of ctxext reads them (the training corpora come from the standard library). Deterministic for
one set of package versions, which the manifest records.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.output import InputRecord, SplitSetResult
from ctxext.data.pydocs import HELD_OUT_PACKAGES, module_document, package_folder, package_version, parsed_modules
from ctxext.data.text import Tokenizer, load_tokenizer, summary_line
from ctxext.data.triplets import StructuredDocument, read_documents
from ctxext.errors import InvalidArgument, SourceNotFound
from ctxext.io import atomic_output, write_json
from ctxext.manifest import manifest_header

DEPTH_BUCKETS = ((0, 512), (512, 1024), (1024, 2048), (2048, 4096))
"""Where a query's answer starts in its page, in tokens: the first fits any 512-token model, the last only a
model that reads past 2048."""


@dataclass
class Page:
    package: str
    module: str
    sections: list[dict[str, str]]
    offsets: list[int]
    """Token offset at which each section starts."""
    tokens: int


@dataclass
class Cut:
    """One definition's summary line taken out of its page: the query, and the page without it."""

    page: Page
    section: int
    query: str
    text: str
    depth_tokens: int

    @property
    def bucket(self) -> str:
        return depth_bucket(self.depth_tokens)


class LongdocResult(SplitSetResult):
    title = "longdoc"
    columns = ("pages", "packages", "median_tokens", "over_2048", *(f"{a}-{b}" for a, b in DEPTH_BUCKETS))


def depth_bucket(depth_tokens: int) -> str:
    for start, end in DEPTH_BUCKETS:
        if start <= depth_tokens < end:
            return f"{start}-{end}"
    return f"{DEPTH_BUCKETS[-1][1]}+"


def package_pages(package: str, tokenizer: Tokenizer, *, min_tokens: int, max_tokens: int) -> list[Page]:
    """The package's module pages of at least ``min_tokens``, each cut after the last section that ends
    within ``max_tokens``."""
    folder = package_folder(package)
    if folder is None:
        return []
    pages = []
    for name, tree in parsed_modules(folder):
        document = module_document(f"{package}.{name}", tree)
        if document is not None:
            page = cut_page(package, document["doc_id"], document["sections"], tokenizer, min_tokens, max_tokens)
            pages += [page] if page else []
    return pages


def corpus_pages(
    documents: Sequence[StructuredDocument], tokenizer: Tokenizer, *, min_tokens: int, max_tokens: int
) -> list[Page]:
    """A user's documents as pages (each its own group); text before the first heading is the overview."""
    pages = []
    for document in documents:
        sections = [{"heading": s.heading or "Overview", "text": s.text} for s in document.sections]
        page = cut_page(document.doc_id, document.doc_id, sections, tokenizer, min_tokens, max_tokens)
        pages += [page] if page else []
    return pages


def cut_page(
    package: str, module: str, sections: list[dict[str, str]], tokenizer: Tokenizer, min_tokens: int, max_tokens: int
) -> Page | None:
    """The page cut after the last section that ends within ``max_tokens``; None when under ``min_tokens``."""
    lengths = tokenizer.count([page_text([section]) for section in sections])
    offsets, total = [], tokenizer.count([module])[0]
    for length in lengths:
        if total + length > max_tokens:
            break
        offsets.append(total)
        total += length
    if total < min_tokens:
        return None
    return Page(package, module, sections[: len(offsets)], offsets, total)


def is_held_out(doc_id: str, share: float) -> bool:
    """A stable draw per document id, so a document stays on its side when the corpus grows."""
    return int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share


def page_text(sections: Sequence[dict[str, str]]) -> str:
    return "\n\n".join(f"## {s['heading']}\n\n{s['text']}" for s in sections)


def summary_cuts(page: Page, tokenizer: Tokenizer) -> list[Cut]:
    """Every definition of the page whose summary line (:func:`~ctxext.data.text.summary_line`) can be a
    query: not found verbatim elsewhere in the page."""
    cuts = []
    for index, section in enumerate(page.sections):
        if section["heading"] == "Overview":
            continue
        found = summary_line(section["text"])
        if found is None:
            continue
        summary, rest = found
        sections = [*page.sections[:index], {**section, "text": rest}, *page.sections[index + 1 :]]
        text = page_text(sections)
        if summary in " ".join(text.split()):
            continue
        heading_tokens = tokenizer.count([f"## {section['heading']}"])[0] - tokenizer.special_tokens
        cuts.append(Cut(page, index, summary, text, page.offsets[index] + heading_tokens))
    return cuts


def choose_cuts(pages: list[Page], tokenizer: Tokenizer, *, count: int, seed: int) -> list[Cut]:
    """One cut per page for up to ``count`` pages, taken round-robin over packages in a seeded order; each
    page's cut falls in the depth bucket with the fewest queries so far that the page can reach."""
    rng = random.Random(seed)
    by_package: dict[str, list[Page]] = {}
    for page in pages:
        by_package.setdefault(page.package, []).append(page)
    for package_pages_ in by_package.values():
        rng.shuffle(package_pages_)
    order = [p for group in _round_robin(list(by_package.values())) for p in group]
    chosen: list[Cut] = []
    per_bucket = {depth_bucket(start): 0 for start, _ in DEPTH_BUCKETS}
    seen_queries: set[str] = set()
    for page in order:
        if len(chosen) >= count:
            break
        cuts = [cut for cut in summary_cuts(page, tokenizer) if cut.query not in seen_queries]
        reachable = sorted({cut.bucket for cut in cuts if cut.bucket in per_bucket}, key=lambda b: per_bucket[b])
        if not reachable:
            continue
        cut = rng.choice([c for c in cuts if c.bucket == reachable[0]])
        per_bucket[cut.bucket] += 1
        seen_queries.add(cut.query)
        chosen.append(cut)
    return chosen


def _round_robin(groups: list[list[Page]]) -> list[list[Page]]:
    """Pages in rounds: the first of every group, then the second of every group, and so on."""
    longest = max((len(group) for group in groups), default=0)
    return [[group[i] for group in groups if i < len(group)] for i in range(longest)]


def split_set(
    packages: Sequence[str], tokenizer: Tokenizer, *, pages: int, min_tokens: int, max_tokens: int, seed: int
) -> tuple[list[Cut], list[str]]:
    """The cuts of one split and the packages that gave no page (not installed or too little documentation)."""
    found, missing = [], []
    for package in packages:
        package_found = package_pages(package, tokenizer, min_tokens=min_tokens, max_tokens=max_tokens)
        found += package_found
        if not package_found:
            missing.append(package)
    return unambiguous_cuts(found, tokenizer, pages=pages, seed=seed), missing


def unambiguous_cuts(found: list[Page], tokenizer: Tokenizer, *, pages: int, seed: int) -> list[Cut]:
    """:func:`choose_cuts`, less any cut whose summary is found verbatim in another page (which would make
    that page relevant too)."""
    cuts = choose_cuts(found, tokenizer, count=pages, seed=seed)
    flattened = [" ".join(cut.text.split()) for cut in cuts]
    return [
        cut
        for index, cut in enumerate(cuts)
        if not any(cut.query in other for j, other in enumerate(flattened) if j != index)
    ]


def write_split(folder: Path, cuts: Sequence[Cut]) -> None:
    """One BEIR folder: the pages (ids ``module``), the queries with their depth, qrels/test.tsv."""
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as corpus:
        for cut in cuts:
            record = {"_id": cut.page.module, "title": cut.page.module, "text": cut.text}
            corpus.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as queries:
        for index, cut in enumerate(cuts):
            query: dict[str, Any] = {
                "_id": f"q{index}",
                "text": cut.query,
                "depth_tokens": cut.depth_tokens,
                "group": cut.bucket,
                "package": cut.page.package,
                "definition": cut.page.sections[cut.section]["heading"],
            }
            queries.write(json.dumps(query, ensure_ascii=False) + "\n")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{cut.page.module}\t1\n" for i, cut in enumerate(cuts)),
        encoding="utf-8",
    )


def split_counts(cuts: Sequence[Cut]) -> dict[str, Any]:
    lengths = sorted(cut.page.tokens for cut in cuts)
    counts: dict[str, Any] = {
        "pages": len(cuts),
        "packages": len({cut.page.package for cut in cuts}),
        "median_tokens": lengths[len(lengths) // 2] if lengths else 0,
        "over_2048": sum(length > 2048 for length in lengths),
    }
    for start, end in DEPTH_BUCKETS:
        counts[f"{start}-{end}"] = sum(cut.bucket == f"{start}-{end}" for cut in cuts)
    return counts


def write_longdoc(
    out: str | Path,
    *,
    tokenizer: str,
    revision: str | None = None,
    pages: int = 120,
    min_tokens: int = 1024,
    max_tokens: int = 4096,
    seed: int = 0,
    splits: Mapping[str, Sequence[str]] | None = None,
    corpus: str | None = None,
    held_out: float = 0.2,
    force: bool = False,
    argv: list[str] | None = None,
    progress: ProgressFn = no_progress,
) -> LongdocResult:
    """Write ``OUT/dev`` and ``OUT/test`` (BEIR folders, see the module docstring) and ``OUT/manifest.json``.
    With ``corpus`` (the user's documents), ``OUT/test`` is made from a ``held_out`` share of its documents
    and ``OUT/train.jsonl`` holds the others, for training."""
    if min_tokens > max_tokens:
        raise InvalidArgument(f"--min-tokens {min_tokens} is above --max-tokens {max_tokens}")
    counter = load_tokenizer(tokenizer, revision)
    sizes = {"pages": pages, "min_tokens": min_tokens, "max_tokens": max_tokens, "seed": seed}
    if corpus is None:
        built, described = _package_splits(dict(splits or HELD_OUT_PACKAGES), counter, sizes, progress)
        train: list[StructuredDocument] = []
    else:
        built, described, train = _corpus_split(corpus, held_out, counter, sizes)
    with atomic_output(out, force=force) as staging:
        for name, cuts in built.items():
            write_split(staging / name, cuts)
        if corpus is not None:
            write_documents(staging / "train.jsonl", train)
        manifest = {
            **manifest_header("data longdoc", argv),
            "options": sizes,
            "tokenizer": counter.describe(),
            **described,
            "depth_buckets": [list(bucket) for bucket in DEPTH_BUCKETS],
            "counts": {name: split_counts(cuts) for name, cuts in built.items()},
        }
        write_json(staging / "manifest.json", manifest, sort_keys=True)
    return LongdocResult(Path(out).expanduser().absolute(), manifest)


def _package_splits(
    splits: dict[str, Sequence[str]], counter: Tokenizer, sizes: dict[str, int], progress: ProgressFn
) -> tuple[dict[str, list[Cut]], dict[str, Any]]:
    _check_splits(splits)
    built, missing = {}, {}
    for done, (name, packages) in enumerate(splits.items()):
        built[name], missing[name] = split_set(packages, counter, **sizes)
        if not built[name]:
            raise SourceNotFound(
                f"longdoc {name}: none of {', '.join(packages)} is installed with pages of "
                f"{sizes['min_tokens']}+ tokens"
            )
        progress("longdoc splits", done + 1, len(splits))
    versions = {p: package_version(p) for names in splits.values() for p in names}
    return built, {"packages": versions, "missing_packages": missing}


def _corpus_split(
    corpus: str, held_out: float, counter: Tokenizer, sizes: dict[str, int]
) -> tuple[dict[str, list[Cut]], dict[str, Any], list[StructuredDocument]]:
    """The test split from the held-out documents of ``corpus``; the other documents, for training."""
    if not 0 < held_out < 1:
        raise InvalidArgument(f"--held-out {held_out} must be between 0 and 1 (the share of documents kept out)")
    inputs: list[InputRecord] = []
    documents = read_documents(corpus, inputs)
    kept_out: list[StructuredDocument] = []
    train: list[StructuredDocument] = []
    for document in documents:
        (kept_out if is_held_out(document.doc_id, held_out) else train).append(document)
    found = corpus_pages(kept_out, counter, min_tokens=sizes["min_tokens"], max_tokens=sizes["max_tokens"])
    cuts = unambiguous_cuts(found, counter, pages=sizes["pages"], seed=sizes["seed"])
    if len(cuts) < 2 or not train:
        raise SourceNotFound(
            f"{corpus}: {len(documents)} documents, {len(kept_out)} held out, of which {len(cuts)} gave a "
            f"query from a page of {sizes['min_tokens']}+ tokens; a held-out test needs 2 or more and training "
            "needs the rest (more documents, --held-out, or --min-tokens)"
        )
    described = {
        "corpus": corpus,
        "inputs": [vars(record) for record in inputs],
        "held_out": held_out,
        "documents": {"train": len(train), "held_out": len(kept_out)},
    }
    return {"test": cuts}, described, train


def write_documents(path: Path, documents: Sequence[StructuredDocument]) -> None:
    """Documents as JSON lines of id, title and sections, the form ``data triplets`` reads back."""
    with open(path, "w", encoding="utf-8") as file:
        for document in documents:
            sections = [{"heading": s.heading, "text": s.text} for s in document.sections]
            record = {"id": document.doc_id, "title": document.title, "sections": sections}
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


def _check_splits(splits: Mapping[str, Sequence[str]]) -> None:
    shared = set(splits.get("dev", ())) & set(splits.get("test", ()))
    if shared:
        raise InvalidArgument(f"packages in both dev and test: {', '.join(sorted(shared))}; each split needs its own")
    if not all(splits.values()):
        raise InvalidArgument("each split needs at least one package")
