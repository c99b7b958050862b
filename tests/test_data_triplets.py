"""`ctxext data triplets`: queries from titles and sections, hard negatives that are never the positive."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctxext.cli import app
from ctxext.data import build_triplets, python_docs_documents, split_sections, structured_document
from ctxext.data.sources import EmptySource
from ctxext.data.text import normalize
from ctxext.errors import InvalidArgument
from data_helpers import structured_record, write_jsonl

TOPICS = ["astronomy", "cooking", "football", "geology"]


def corpus_records() -> list[dict]:
    """Two documents per topic: the hard negative of each is the other one on its topic."""
    return [structured_record(topic, index, seed=10 * index + n) for n, topic in enumerate(TOPICS) for index in (1, 2)]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def topic_of(doc_id: str) -> str:
    return doc_id.split("-")[0]


def test_split_sections_reads_markdown_and_rst_headings():
    sections = split_sections("Intro text.\n\n## First\n\nBody one.\n\n### Second ##\nBody two.")
    assert [(s.heading, s.text) for s in sections] == [
        (None, "Intro text."),
        ("First", "Body one."),
        ("Second", "Body two."),
    ]
    rst = split_sections("Title words\n===========\n\nBody.\n\nPart\n----\nMore.")
    assert [(s.heading, s.text) for s in rst] == [("Title words", "Body."), ("Part", "More.")]


def test_markdown_title_is_taken_from_the_first_heading():
    document = structured_document({"text": "# My Paper\n\nAbstract here.\n\n## Method\n\nSteps."}, "x.md")
    assert document.title == "My Paper"
    assert [(s.heading, s.text) for s in document.sections] == [(None, "Abstract here."), ("Method", "Steps.")]


def test_a_record_of_title_and_sections_keeps_both():
    record = {"title": "A Paper", "sections": [{"heading": "Method", "text": "Steps."}, "Closing words."]}
    document = structured_document(record, "x.jsonl:1")
    assert document.title == "A Paper"
    assert [(s.heading, s.text) for s in document.sections] == [("Method", "Steps."), (None, "Closing words.")]


def test_bm25_triplets_pick_the_same_topic_document_and_never_the_positive(tmp_path: Path):
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    result = build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "t.jsonl", negatives_from="bm25")
    lines = read_lines(tmp_path / "t.jsonl")
    assert result.counts.triplets == len(lines) == 16  # a title and a section query per document
    assert {line["query"]["kind"] for line in lines} == {"title", "section"}
    for line in lines:
        assert line["negative"]["doc_id"] != line["positive"]["doc_id"]
        assert line["negative"]["abstract"] != line["positive"]["abstract"]
        assert topic_of(line["negative"]["doc_id"]) == topic_of(line["positive"]["doc_id"])
        haystack = normalize(f"{line['positive']['title'] or ''} {line['positive']['abstract']}")
        assert normalize(line["query"]["text"]) not in haystack
        if line["query"]["kind"] == "title":  # the title is left out of positive and negative alike
            assert line["positive"]["title"] is None and line["negative"]["title"] is None
        else:
            assert line["positive"]["title"] and line["negative"]["title"]


def test_embedding_negatives_with_a_tiny_encoder_are_never_the_positive(tmp_path: Path, tiny_models):
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "t.jsonl", encoder=str(tiny_models("bert")), negatives=3)
    lines = read_lines(tmp_path / "t.jsonl")
    assert len(lines) == 48
    assert all(line["negative"]["doc_id"] != line["positive"]["doc_id"] for line in lines)
    assert all(line["negative_method"] == "embedding" for line in lines)


@pytest.mark.slow
def test_embedding_negatives_with_minilm_are_hard(tmp_path: Path, minilm: Path):
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "t.jsonl", encoder=str(minilm), queries="section")
    lines = read_lines(tmp_path / "t.jsonl")
    assert len(lines) == 8
    assert all(topic_of(line["negative"]["doc_id"]) == topic_of(line["positive"]["doc_id"]) for line in lines)


def test_a_duplicate_of_the_positive_is_never_its_negative(tmp_path: Path):
    records = corpus_records()
    copy = dict(records[0], doc_id="astronomy-copy", title="Another title")
    write_jsonl(tmp_path / "corpus.jsonl", records + [copy])
    build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "t.jsonl", negatives_from="bm25", queries="title")
    for line in read_lines(tmp_path / "t.jsonl"):
        pair = {line["positive"]["doc_id"], line["negative"]["doc_id"]}
        assert pair != {"astronomy-1", "astronomy-copy"}


def test_verbatim_queries_are_dropped_unless_allowed(tmp_path: Path):
    records = corpus_records()
    records[0]["text"] = f"{records[0]['title']} is what this is about. " + records[0]["text"]
    write_jsonl(tmp_path / "corpus.jsonl", records)
    strict = build_triplets(
        str(tmp_path / "corpus.jsonl"), tmp_path / "a.jsonl", negatives_from="bm25", queries="title"
    )
    assert strict.counts.dropped_verbatim == 1 and strict.counts.triplets == 7
    loose = build_triplets(
        str(tmp_path / "corpus.jsonl"),
        tmp_path / "b.jsonl",
        negatives_from="bm25",
        queries="title",
        allow_verbatim=True,
    )
    assert loose.counts.dropped_verbatim == 0 and loose.counts.triplets == 8


def test_markdown_files_are_a_corpus_and_one_document_is_refused(tmp_path: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for record in corpus_records()[:4]:
        (folder / f"{record['doc_id']}.md").write_text(f"# {record['title']}\n\n{record['text']}")
    result = build_triplets(str(folder), tmp_path / "t.jsonl", negatives_from="bm25")
    assert result.counts.documents == 4 and result.counts.triplets == 8
    manifest = json.loads(result.manifest_path.read_text())
    assert len(manifest["inputs"]) == 4 and all(len(i["sha256"]) == 64 for i in manifest["inputs"])
    with pytest.raises(EmptySource, match="at least two documents"):
        build_triplets(str(folder / "astronomy-1.md"), tmp_path / "u.jsonl", negatives_from="bm25")
    assert not (tmp_path / "u.jsonl").exists()


def test_python_docs_corpus_has_titles_and_sections_and_gives_triplets(tmp_path: Path):
    documents = list(python_docs_documents(limit=4, min_words=200))
    assert len(documents) == 4
    assert all(d["title"] and d["sections"] and len(d["text"].split()) >= 200 for d in documents)
    assert [d["doc_id"] for d in documents] == sorted(d["doc_id"] for d in documents)
    assert all(d["text"].startswith("## ") for d in documents)
    write_jsonl(tmp_path / "py.jsonl", documents)
    result = build_triplets(str(tmp_path / "py.jsonl"), tmp_path / "t.jsonl", negatives_from="bm25")
    assert result.counts.triplets >= 4
    assert all(line["negative"]["doc_id"] != line["positive"]["doc_id"] for line in read_lines(tmp_path / "t.jsonl"))


def test_cli_pydocs_then_triplets(tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(app, ["data", "pydocs", "-o", str(tmp_path / "py.jsonl"), "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "py.jsonl").read_text().splitlines()) == 3
    result = runner.invoke(
        app,
        [
            "data",
            "triplets",
            str(tmp_path / "py.jsonl"),
            "-o",
            str(tmp_path / "t.jsonl"),
            "--negatives-from",
            "bm25",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["triplets"] >= 3


def test_passage_queries_are_runs_of_words_from_anywhere_in_their_whole_positive(tmp_path: Path):
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    result = build_triplets(
        str(tmp_path / "corpus.jsonl"),
        tmp_path / "t.jsonl",
        negatives_from="bm25",
        queries="passage",
        sections_per_document=3,
        passage_words=6,
    )
    lines = read_lines(tmp_path / "t.jsonl")
    assert result.counts.passage_queries == result.counts.triplets == 3 * len(TOPICS) * 2
    for line in lines:
        query, positive = line["query"], line["positive"]
        assert query["kind"] == "passage" and len(query["text"].split()) == 6
        assert normalize(query["text"]) in normalize(positive["abstract"])
        assert positive["doc_id"] != line["negative"]["doc_id"]
    by_document: dict[str, set[str]] = {}
    for line in lines:
        by_document.setdefault(line["positive"]["doc_id"], set()).add(line["query"]["text"])
    assert all(len(texts) == 3 for texts in by_document.values())


def test_passages_end_within_the_depth_limit(tmp_path: Path):
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    build_triplets(
        str(tmp_path / "corpus.jsonl"),
        tmp_path / "t.jsonl",
        negatives_from="bm25",
        queries="passage",
        sections_per_document=2,
        passage_words=5,
        max_depth_words=12,
    )
    for line in read_lines(tmp_path / "t.jsonl"):
        head = " ".join(line["positive"]["abstract"].split()[:12])
        assert normalize(line["query"]["text"]) in normalize(head)


def test_swapped_negative_is_the_positive_with_only_the_passage_replaced(tmp_path: Path):
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    result = build_triplets(
        str(tmp_path / "corpus.jsonl"),
        tmp_path / "t.jsonl",
        negatives_from="swap",
        queries="passage",
        sections_per_document=2,
        passage_words=6,
        negatives=2,
    )
    lines = read_lines(tmp_path / "t.jsonl")
    assert result.counts.triplets == len(lines) == 2 * 2 * len(TOPICS) * 2
    for line in lines:
        positive, negative = line["positive"]["abstract"], line["negative"]["abstract"]
        assert line["negative_method"] == "swap" and line["negative_score"] is None
        assert line["negative"]["title"] == line["positive"]["title"]
        assert normalize(line["query"]["text"]) not in normalize(negative)
        head = len(os.path.commonprefix([positive, negative]))
        tail = min(
            len(os.path.commonprefix([positive[::-1], negative[::-1]])), len(positive) - head, len(negative) - head
        )
        changed = positive[head : len(positive) - tail]
        assert changed.strip() and normalize(changed) in normalize(line["query"]["text"])
        assert len(negative.split()) == len(positive.split())


def test_swap_needs_passage_queries(tmp_path: Path):
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    with pytest.raises(InvalidArgument, match="--queries passage"):
        build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "t.jsonl", negatives_from="swap", queries="title")


def test_summary_queries_are_cut_out_of_their_positive_and_the_rest_stays(tmp_path: Path):
    body = "The rest of the docstring says more about it, in words that stay in the page. " * 2
    documents = [
        {
            "doc_id": f"mod{n}",
            "title": f"mod{n} — a module",
            "sections": [
                {"heading": f"frob{n}_{k}(x)", "text": f"Return the frobnicated {k} value of x{n} here.\n\n{body}"}
                for k in range(6)
            ],
        }
        for n in range(3)
    ]
    write_jsonl(tmp_path / "docs.jsonl", documents)
    result = build_triplets(
        str(tmp_path / "docs.jsonl"),
        tmp_path / "t.jsonl",
        queries="summary",
        negatives_from="bm25",
        sections_per_document=2,
        max_depth_words=60,
    )
    lines = read_lines(tmp_path / "t.jsonl")
    assert result.counts.summary_queries == len(lines) == 6
    for line in lines:
        query, positive = line["query"]["text"], line["positive"]["abstract"]
        assert query.startswith("Return the frobnicated") and normalize(query) not in normalize(positive)
        assert line["query"]["heading"] in positive and body.split(".")[0] in positive
        # the first two sections start within 60 words; deeper summaries are never chosen
        assert int(line["query"]["heading"].split("_")[1][0]) < 2


# ----------------------------------------------------------------------------- negatives from a top-k index


def exact_negatives(documents, queries, scores, negatives: int, skip_top: int) -> list[list[tuple[int, float, int]]]:
    """The reference: every document scored, a stable sort (ties by document order), the same exclusions."""
    import numpy as np

    text_key = [hash(normalize(d.body())) for d in documents]
    title_key = [normalize(d.title) if d.title else None for d in documents]
    found = []
    for query, row in zip(queries, scores, strict=True):
        positive, picked, rank = query.document, [], 0
        for candidate in np.argsort(-row, kind="stable").tolist():
            same_title = title_key[positive] is not None and title_key[candidate] == title_key[positive]
            if candidate == positive or text_key[candidate] == text_key[positive] or same_title:
                continue
            rank += 1
            if rank > skip_top:
                picked.append((candidate, float(row[candidate]), rank))
                if len(picked) == negatives:
                    break
        found.append(picked)
    return found


def tie_heavy_corpus(count: int = 120):
    """Documents with repeated titles and texts (excluded as negatives) and few distinct words (many ties)."""
    from ctxext.data.triplets import Queries, Query, Section, StructuredDocument

    words = "model position sparse block token paper title science method data".split()
    documents = [
        StructuredDocument(
            f"d{n}",
            f"topic {n % 7}" if n % 3 else None,
            [Section(None, " ".join(words[(n * j) % len(words)] for j in range(1 + n % 5)) if n % 11 else "same text")],
        )
        for n in range(count)
    ]
    queries = [
        Query(
            n % count, Queries.sections, " ".join(words[(n + j) % len(words)] for j in range(1 + n % 3)), None, None, ""
        )
        for n in range(0, 3 * count, 2)
    ]
    return documents, queries


@pytest.mark.parametrize(("negatives", "skip_top"), [(1, 0), (3, 2), (5, 10)])
def test_bm25_negatives_from_the_top_k_equal_an_exact_search_over_every_document(negatives, skip_top):
    import bm25s
    import numpy as np

    from ctxext.data.text import WORD_CHARACTERS
    from ctxext.data.triplets import bm25_scores, hard_negatives, top_k

    documents, queries = tie_heavy_corpus()
    scores_of = bm25_scores(documents)
    scores = scores_of(queries)
    index = bm25s.BM25()
    index.index(
        [WORD_CHARACTERS.findall(f"{d.title or ''} {d.body()}".casefold()) or ["\u2205"] for d in documents],
        show_progress=False,
    )
    reference = np.stack([index.get_scores(WORD_CHARACTERS.findall(q.text.casefold())) for q in queries])
    assert np.abs(scores - reference).max() < 1e-5  # bm25s's own scores
    expected = exact_negatives(documents, queries, scores, negatives, skip_top)
    got = hard_negatives(documents, queries, top_k(scores_of), negatives=negatives, skip_top=skip_top, block=16)
    assert got == expected


def test_top_k_negatives_equal_the_exact_ranking_with_ties_and_exclusions_at_the_edge():
    import numpy as np

    from ctxext.data.triplets import hard_negatives

    documents, queries = tie_heavy_corpus()
    scores = np.random.default_rng(0).integers(0, 4, (len(queries), len(documents))).astype(np.float32)
    row_of = {id(q): i for i, q in enumerate(queries)}
    asked: list[int] = []

    def search(block, k):
        asked.append(k)
        rows = scores[[row_of[id(q)] for q in block]]
        top = np.argpartition(-rows, k - 1, axis=1)[:, :k]
        return top, np.take_along_axis(rows, top, axis=1)

    got = hard_negatives(documents, queries, search, negatives=4, skip_top=3, block=32)
    assert got == exact_negatives(documents, queries, scores, 4, 3)
    assert min(asked) < max(asked) <= len(documents)  # it widened where exclusions or ties at the edge demanded


# ----------------------------------------------------------------------------- past one machine: --shard I/N, merge


def test_shards_merged_are_the_triplets_of_one_run_and_a_bad_set_of_parts_is_refused(tmp_path: Path):
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    whole = build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "whole.jsonl", negatives_from="bm25")
    runner = CliRunner()
    for index in range(3):
        shard = ["data", "triplets", str(tmp_path / "corpus.jsonl"), "--negatives-from", "bm25"]
        result = runner.invoke(app, [*shard, "--shard", f"{index}/3", "-o", str(tmp_path / f"part-{index}.jsonl")])
        assert result.exit_code == 0, result.output
    parts = [str(tmp_path / f"part-{index}.jsonl") for index in (2, 0, 1)]  # any order
    merged = runner.invoke(app, ["data", "merge", *parts, "-o", str(tmp_path / "merged.jsonl")])
    assert merged.exit_code == 0, merged.output
    by_query = lambda lines: sorted(json.dumps(line, sort_keys=True) for line in lines)  # noqa: E731
    assert by_query(read_lines(tmp_path / "merged.jsonl")) == by_query(read_lines(tmp_path / "whole.jsonl"))
    assert whole.counts.triplets == len(read_lines(tmp_path / "merged.jsonl"))
    manifest = json.loads((tmp_path / "merged.jsonl.manifest.json").read_text())
    assert [part["shard"] for part in manifest["parts"]] == ["0/3", "1/3", "2/3"]
    missing = runner.invoke(app, ["data", "merge", *parts[:2], "-o", str(tmp_path / "bad.jsonl")])
    assert missing.exit_code == 4 and "each of 0/3 .. 2/3 once" in missing.stderr
    not_a_shard = runner.invoke(
        app, ["data", "merge", str(tmp_path / "whole.jsonl"), "-o", str(tmp_path / "bad.jsonl")]
    )
    assert not_a_shard.exit_code == 4 and "not a shard" in not_a_shard.stderr
    assert not (tmp_path / "bad.jsonl").exists()
    bad = runner.invoke(app, ["data", "triplets", str(tmp_path / "corpus.jsonl"), "--shard", "3/3", "-o", "x.jsonl"])
    assert bad.exit_code == 4 and "0 <= I < N" in bad.stderr


# ----------------------------------------------------------------------------- Parquet output


def read_rows(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_parquet_triplets_hold_the_rows_of_the_jsonl_ones_written_a_row_group_at_a_time(tmp_path: Path, monkeypatch):
    import pyarrow.parquet as pq

    import ctxext.data.triplets

    monkeypatch.setattr(ctxext.data.triplets, "TRIPLET_ROWS_PER_GROUP", 5)
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    as_lines = build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "t.jsonl", negatives_from="bm25")
    as_rows = build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "t.parquet", negatives_from="bm25")
    assert read_rows(tmp_path / "t.parquet") == read_lines(tmp_path / "t.jsonl")
    assert as_rows.counts == as_lines.counts and as_rows.manifest["output"]["rows"] == 16
    assert pq.ParquetFile(tmp_path / "t.parquet").num_row_groups == 4  # 5 + 5 + 5 + 1, written as they filled


def test_parquet_shards_merge_into_the_triplets_of_one_run_in_either_format(tmp_path: Path):
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "whole.jsonl", negatives_from="bm25")
    runner = CliRunner()
    for index in range(3):
        shard = ["data", "triplets", str(tmp_path / "corpus.jsonl"), "--negatives-from", "bm25", "--shard"]
        result = runner.invoke(app, [*shard, f"{index}/3", "-o", str(tmp_path / f"part-{index}.parquet")])
        assert result.exit_code == 0, result.output
    parts = [str(tmp_path / f"part-{index}.parquet") for index in (2, 0, 1)]
    for name in ("merged.parquet", "merged.jsonl"):
        merged = runner.invoke(app, ["data", "merge", *parts, "-o", str(tmp_path / name)])
        assert merged.exit_code == 0, merged.output
    by_query = lambda rows: sorted(json.dumps(row, sort_keys=True) for row in rows)  # noqa: E731
    whole = by_query(read_lines(tmp_path / "whole.jsonl"))
    assert by_query(read_rows(tmp_path / "merged.parquet")) == whole
    assert by_query(read_lines(tmp_path / "merged.jsonl")) == whole
    build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / "lines.jsonl", negatives_from="bm25", shard="2/3")
    mixed = runner.invoke(app, ["data", "merge", *parts[1:], str(tmp_path / "lines.jsonl"), "-o", "m.jsonl"])
    assert mixed.exit_code == 4 and "mix" in mixed.stderr


def test_finetune_trains_the_same_weights_from_parquet_or_jsonl_triplets(tmp_path: Path, tiny_models):
    from ctxext.data.formats import read_triplets

    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    for name in ("t.jsonl", "t.parquet"):
        build_triplets(str(tmp_path / "corpus.jsonl"), tmp_path / name, negatives_from="bm25")
    assert read_triplets([tmp_path / "t.parquet"]) == read_triplets([tmp_path / "t.jsonl"])
    tensors = []
    for name in ("t.jsonl", "t.parquet"):
        arguments = ["finetune", str(tiny_models("bert")), "--data", str(tmp_path / name), "--max-len", "32"]
        arguments += ["--query-max-len", "16", "--steps", "2", "--batch-size", "4", "-o", str(tmp_path / f"m-{name}")]
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 0, result.output
        manifest = json.loads((tmp_path / f"m-{name}" / "manifest.json").read_text())
        assert manifest["operations"][0]["parameters"]["triplets"] == 16
        tensors.append({name: tensor["sha256"] for name, tensor in manifest["tensors"].items()})
    assert tensors[0] == tensors[1]


# ----------------------------------------------------------------------------- bad input


def test_on_error_skip_leaves_out_bad_records_and_files_and_counts_them_in_the_manifest(tmp_path: Path, monkeypatch):
    import ctxext.io.files
    from data_helpers import write_parquet

    monkeypatch.setattr(ctxext.io.files, "MAX_LINE_BYTES", 4096)  # where the line reader looks it up
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_jsonl(corpus / "good.jsonl", corpus_records())
    write_jsonl(corpus / "bad.jsonl", ["{oops", '{"id": "no text"}', "[" + "1," * 4096 + "1]", corpus_records()[0]])
    (corpus / "blob.md").write_bytes(b"# Title\n\0\0\1\2")
    write_parquet(corpus / "broken.parquet", corpus_records()[:2])
    data = bytearray((corpus / "broken.parquet").read_bytes())
    data[8:68] = b"\xab" * 60
    (corpus / "broken.parquet").write_bytes(bytes(data))
    result = build_triplets(str(corpus), tmp_path / "t.parquet", negatives_from="bm25", on_error="skip")
    manifest = json.loads((tmp_path / "t.parquet.manifest.json").read_text())
    assert result.counts.problems == manifest["counts"]["problems"] == len(manifest["problems"]) == 5
    said = "\n".join(manifest["problems"])
    for where in ("bad.jsonl:1: malformed JSON", "bad.jsonl:2: no text", "bad.jsonl:3: a line longer than"):
        assert where in said
    assert "blob.md: binary data" in said and "broken.parquet: row group 0 (rows 0-1)" in said
    assert result.counts.documents == 9  # eight good ones and the good line of bad.jsonl
    stopped = CliRunner().invoke(app, ["data", "triplets", str(corpus), "--negatives-from", "bm25", "-o", "x.jsonl"])
    assert stopped.exit_code == 6 and "bad.jsonl:1: malformed JSON" in stopped.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_an_interrupted_run_leaves_no_partial_output(tmp_path: Path, monkeypatch, suffix: str):
    import ctxext.data.triplets

    real_open_writer = ctxext.data.triplets.open_writer

    def open_writer_interrupted_after_some_rows(*arguments):
        writer = real_open_writer(arguments[0], arguments[1], arguments[2], 1)  # a row group per query
        real_write = writer.write

        def write(records):
            if writer.rows >= 4:
                raise KeyboardInterrupt
            real_write(records)

        writer.write = write
        return writer

    monkeypatch.setattr(ctxext.data.triplets, "open_writer", open_writer_interrupted_after_some_rows)
    write_jsonl(tmp_path / "corpus.jsonl", corpus_records())
    arguments = ["data", "triplets", str(tmp_path / "corpus.jsonl"), "--negatives-from", "bm25"]
    result = CliRunner().invoke(app, [*arguments, "-o", str(tmp_path / f"t{suffix}")])
    assert result.exit_code == 130
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus.jsonl"]
