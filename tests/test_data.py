"""`ctxext data corpus`: every input format, triplet flattening, chunking, dedupe, manifests, bad input."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from ctxext.cli import app
from ctxext.data import Deduplicator, MinHasher, build_corpus, jaccard, load_tokenizer
from ctxext.data.chunking import chunk_spans
from ctxext.data.formats import read_triplets
from ctxext.data.sources import EmptySource, UnreadableSource
from ctxext.errors import InvalidArgument, OutputExists
from ctxext.io import atomic_file
from data_helpers import long_text, write_jsonl, write_parquet, write_pdf


@pytest.fixture(scope="module")
def tokenizer_ref(minilm: Path) -> str:
    return str(minilm)


@pytest.fixture(scope="module")
def tok(tokenizer_ref: str):
    return load_tokenizer(tokenizer_ref)


def rows_of(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name
        for p in folder.iterdir()
        if "ctxext-tmp" in p.name or p.suffix == ".parquet" or p.name.endswith(".manifest.json")
    )


# ----------------------------------------------------------------------------- formats


def test_corpus_reads_txt_md_jsonl_parquet_and_pdf(tmp_path: Path, tokenizer_ref: str):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.txt").write_text("Plain text about telescopes.\n")
    (inputs / "guide.md").write_text("# Baking Guide\n\nKnead the dough twice.\n")
    write_jsonl(inputs / "news.jsonl", [{"text": "Striker scores late goal."}, {"title": "T", "abstract": "Abs."}])
    write_parquet(inputs / "wiki.parquet", [{"title": "Basalt", "text": "Basalt is a volcanic rock."}])
    write_pdf(inputs / "paper.pdf", "Supernova spectra reveal cosmic radiation.")
    result = build_corpus([str(inputs)], tmp_path / "corpus.parquet", tokenizer=tokenizer_ref)

    rows = rows_of(result.path)
    by_file = {Path(r["file"]).name: r for r in rows}
    assert set(by_file) == {"notes.txt", "guide.md", "news.jsonl", "wiki.parquet", "paper.pdf"}
    assert by_file["guide.md"]["title"] == "Baking Guide"
    assert by_file["wiki.parquet"]["title"] == "Basalt" and by_file["wiki.parquet"]["text"].startswith("Basalt is")
    assert "Supernova spectra reveal cosmic radiation." in by_file["paper.pdf"]["text"]
    assert [r["text"] for r in rows if r["file"].endswith("news.jsonl")] == ["Striker scores late goal.", "Abs."]
    assert {r["source"] for r in rows} == {str(inputs)}
    assert result.totals.rows == len(rows) == 6 and result.totals.files == 5


def test_source_labels_name_the_source_column(tmp_path: Path, tokenizer_ref: str):
    (tmp_path / "a.txt").write_text("First source text.")
    (tmp_path / "b.txt").write_text("Second source text.")
    result = build_corpus(
        [f"news={tmp_path / 'a.txt'}", f"wiki={tmp_path / 'b.txt'}"], tmp_path / "c.parquet", tokenizer=tokenizer_ref
    )
    assert [r["source"] for r in rows_of(result.path)] == ["news", "wiki"]
    assert set(result.sources) == {"news", "wiki"}


def test_triplet_records_are_flattened_one_row_per_field(tmp_path: Path, tokenizer_ref: str):
    write_jsonl(
        tmp_path / "triplets.jsonl",
        [
            {
                "query": "what is a comet",
                "positive": {"title": "Comets", "abstract": "A comet is icy."},
                "negative": ["Granite is a rock.", {"text": "Ovens bake bread."}],
            },
            {"anchor": "goal keeper", "pos": "The keeper saved it.", "neg": "Magma rises."},
        ],
    )
    rows = rows_of(
        build_corpus([str(tmp_path / "triplets.jsonl")], tmp_path / "c.parquet", tokenizer=tokenizer_ref).path
    )
    assert [(r["field"], r["text"]) for r in rows] == [
        ("query", "what is a comet"),
        ("positive", "A comet is icy."),
        ("negative", "Granite is a rock."),
        ("negative", "Ovens bake bread."),
        ("query", "goal keeper"),
        ("positive", "The keeper saved it."),
        ("negative", "Magma rises."),
    ]
    assert rows[1]["title"] == "Comets"
    assert len({r["doc_id"] for r in rows}) == len(rows)


def test_finetune_reads_every_triplet_key_and_text_field_the_corpus_reads(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "triplets.jsonl",
        [
            {"anchor": "what is a comet", "positives": [{"title": "Comets", "content": "Icy."}], "negatives": ["Ash."]},
            {"query": {"text": "goal"}, "pos": {"body": "A keeper."}, "neg": {"title": "Magma"}},
        ],
    )
    assert read_triplets([path], sep_token=" | ") == [
        ("what is a comet", "Comets | Icy.", "Ash."),
        ("goal", "A keeper.", "Magma"),
    ]


# ----------------------------------------------------------------------------- chunking


def test_chunks_stay_within_limit_overlap_and_cover_the_document(tmp_path: Path, tokenizer_ref: str, tok):
    document = long_text("astronomy", paragraphs=12)
    (tmp_path / "long.txt").write_text(document)
    chunk, overlap = 64, 16
    rows = rows_of(
        build_corpus(
            [str(tmp_path / "long.txt")], tmp_path / "c.parquet", tokenizer=tokenizer_ref, chunk=chunk, overlap=overlap
        ).path
    )
    texts = [r["text"] for r in rows]
    assert len(texts) > 5
    assert max(tok.count(texts)) <= chunk
    assert [r["tokens"] for r in rows] == tok.count(texts)
    assert [r["chunk"] for r in rows] == list(range(len(rows)))
    spans, cursor = [], 0
    for text in texts:  # each chunk is a slice of the document, in order
        start = document.index(text, max(0, cursor - 2000))
        spans.append((start, start + len(text)))
        cursor = start + 1
    assert spans[0][0] == 0 and spans[-1][1] == len(document.rstrip())
    for (_start, end), (next_start, next_end) in zip(spans, spans[1:], strict=False):
        assert next_start < end < next_end  # overlapping and moving forward
        shared = tok.count([document[next_start:end]])[0] - tok.special_tokens
        assert shared >= overlap
    # cut on sentence ends: this text has one every ~12 words, so every chunk but the last ends a sentence
    assert all(text.endswith(".") for text in texts)


def byte_level_bpe_folder(folder: Path, text: str) -> Path:
    """A small byte-level BPE tokenizer (GPT-2 style: the space belongs to the next word) trained here."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [("<s>", 0), ("</s>", 1)]
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=specials)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([text], trainer)
    folder.mkdir()
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_byte_level_bpe_chunks_are_recounted_and_stay_within_limit(tmp_path: Path):
    document = long_text("geology", paragraphs=10)
    folder = byte_level_bpe_folder(tmp_path / "bpe", document)
    tok = load_tokenizer(folder)
    assert not tok.stable_cuts and tok.special_tokens == 2
    (tmp_path / "long.txt").write_text(document)
    rows = rows_of(
        build_corpus(
            [str(tmp_path / "long.txt")], tmp_path / "c.parquet", tokenizer=str(folder), chunk=40, overlap=8
        ).path
    )
    assert len(rows) > 5
    assert [r["tokens"] for r in rows] == tok.count([r["text"] for r in rows])
    assert max(r["tokens"] for r in rows) <= 40


def test_wordpiece_tokenizer_allows_exact_counts_without_a_second_pass(tok):
    assert tok.stable_cuts


def test_chunk_spans_cover_every_token_within_limit_for_any_boundaries():
    generator = np.random.default_rng(0)
    for _ in range(50):
        count = int(generator.integers(1, 400))
        ranks = generator.choice([0, 0, 0, 1, 1, 2, 3], size=count + 1).astype(np.int8)
        ranks[0] = ranks[-1] = 3
        limit = int(generator.integers(8, 80))
        overlap = int(generator.integers(0, limit // 2))
        spans = chunk_spans(ranks, limit, overlap)
        assert spans[0][0] == 0 and spans[-1][1] == count
        assert all(0 < end - begin <= limit for begin, end in spans)
        for (begin, end), (next_begin, next_end) in zip(spans, spans[1:], strict=False):
            assert begin < next_begin and end < next_end
            assert end - next_begin >= overlap


def test_unchunked_rows_count_tokens_with_special_tokens(tmp_path: Path, tokenizer_ref: str, tok):
    (tmp_path / "a.txt").write_text("Hello world, this is one row.")
    row = rows_of(build_corpus([str(tmp_path / "a.txt")], tmp_path / "c.parquet", tokenizer=tokenizer_ref).path)[0]
    assert row["tokens"] == len(tok.backend.encode(row["text"]).ids)


def test_corpus_writes_row_groups_as_it_goes(tmp_path: Path, tokenizer_ref: str):
    write_jsonl(tmp_path / "many.jsonl", [{"text": f"Row number {i} of many."} for i in range(95)])
    result = build_corpus(
        [str(tmp_path / "many.jsonl")],
        tmp_path / "c.parquet",
        tokenizer=tokenizer_ref,
        rows_per_group=10,
        batch_documents=7,
    )
    parquet = pq.ParquetFile(result.path)
    assert parquet.metadata.num_rows == 95 and parquet.metadata.num_row_groups == 10


def test_corpus_shards_merged_hold_the_rows_of_one_run(tmp_path: Path, tokenizer_ref: str):
    records = [{"id": f"doc-{i}", "text": long_text(seed=i, paragraphs=2)} for i in range(12)]
    write_jsonl(tmp_path / "docs.jsonl", [*records[:6], {"text": "A record without an id."}, *records[6:]])
    whole = build_corpus([str(tmp_path / "docs.jsonl")], tmp_path / "whole.parquet", tokenizer=tokenizer_ref, chunk=48)
    runner = CliRunner()
    parts = []
    for index in range(3):
        parts.append(str(tmp_path / f"c-{index}.parquet"))
        command = ["data", "corpus", str(tmp_path / "docs.jsonl"), "--tokenizer", tokenizer_ref, "--chunk", "48"]
        result = runner.invoke(app, [*command, "--shard", f"{index}/3", "-o", parts[-1], "--json"])
        assert result.exit_code == 0, result.output
        held = json.loads(result.stdout)["sources"]["total"]
        assert 0 < held["documents"] < 13 and held["documents"] + held["other_shards"] == 13
    merged = runner.invoke(app, ["data", "merge", *reversed(parts), "-o", str(tmp_path / "merged.parquet")])
    assert merged.exit_code == 0, merged.output
    rows = lambda path: sorted(json.dumps(row, sort_keys=True) for row in pq.read_table(path).to_pylist())  # noqa: E731
    assert rows(tmp_path / "merged.parquet") == rows(tmp_path / "whole.parquet")
    assert pq.read_schema(tmp_path / "merged.parquet").equals(pq.read_schema(tmp_path / "whole.parquet"))
    assert whole.totals.rows == pq.ParquetFile(tmp_path / "merged.parquet").metadata.num_rows
    with pytest.raises(InvalidArgument, match="--dedupe"):
        build_corpus(
            [str(tmp_path / "docs.jsonl")], tmp_path / "d.parquet", tokenizer=tokenizer_ref, dedupe=True, shard="0/2"
        )


# ----------------------------------------------------------------------------- dedupe


def test_dedupe_drops_exact_and_near_duplicates_and_counts_them_per_source(tmp_path: Path, tokenizer_ref: str):
    rng = random.Random(3)
    base = " ".join(
        rng.choice(
            "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
            "pi rho sigma tau upsilon phi chi psi omega".split()
        )
        for _ in range(120)
    )
    words = base.split()
    near = " ".join(words[:60] + ["changed"] + words[61:])
    other = long_text("cooking", paragraphs=2)
    write_jsonl(
        tmp_path / "a.jsonl", [{"text": base}, {"text": "  " + base.upper() + "\n"}, {"text": near}, {"text": other}]
    )
    result = build_corpus([str(tmp_path / "a.jsonl")], tmp_path / "c.parquet", tokenizer=tokenizer_ref, dedupe=True)
    counts = result.sources[str(tmp_path / "a.jsonl")]
    assert (counts.rows, counts.exact_duplicates, counts.near_duplicates) == (2, 1, 1)
    assert [r["text"] for r in rows_of(result.path)] == [base, other]
    exact_only = build_corpus(
        [str(tmp_path / "a.jsonl")], tmp_path / "d.parquet", tokenizer=tokenizer_ref, dedupe=True, near_duplicates=False
    )
    assert (exact_only.totals.rows, exact_only.totals.exact_duplicates) == (3, 1)


def test_minhash_agreement_estimates_jaccard_similarity():
    rng = random.Random(0)
    vocabulary = [f"w{i}" for i in range(500)]
    hasher = MinHasher(num_perm=256)
    for _ in range(20):
        words = [rng.choice(vocabulary) for _ in range(200)]
        changed = list(words)
        for position in rng.sample(range(200), rng.randint(0, 60)):
            changed[position] = rng.choice(vocabulary)
        left, right = " ".join(words), " ".join(changed)
        estimate = float(np.mean(hasher.signature(left) == hasher.signature(right)))
        assert abs(estimate - jaccard(left, right)) < 0.12


def test_deduplicator_keeps_texts_below_the_threshold():
    dedupe = Deduplicator(threshold=0.8)
    rng = random.Random(1)
    texts = [" ".join(rng.choice([f"t{i}" for i in range(1000)]) for _ in range(100)) for _ in range(50)]
    assert [dedupe.check(t) for t in texts] == [None] * 50
    assert dedupe.check(texts[7]) == "exact"


# ----------------------------------------------------------------------------- manifest and outputs


def test_manifest_records_inputs_sha256_counts_options_and_output(tmp_path: Path, tokenizer_ref: str):
    source = tmp_path / "a.txt"
    source.write_text(long_text(paragraphs=3))
    result = build_corpus([str(source)], tmp_path / "c.parquet", tokenizer=tokenizer_ref, chunk=48, overlap=8)
    raw = result.manifest_path.read_text()
    manifest = json.loads(raw)
    assert list(manifest) == sorted(manifest)
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest["output"]["sha256"] == hashlib.sha256(result.path.read_bytes()).hexdigest()
    assert manifest["output"]["rows"] == pq.ParquetFile(result.path).metadata.num_rows
    assert manifest["options"]["chunk"] == 48 and manifest["options"]["overlap"] == 8
    assert manifest["counts"]["sources"][str(source)]["rows"] == manifest["output"]["rows"]
    assert "pyarrow" in manifest["libraries"] and manifest["command"] == "data corpus"


def test_existing_output_is_refused_without_force(tmp_path: Path, tokenizer_ref: str):
    (tmp_path / "a.txt").write_text("Some text.")
    build_corpus([str(tmp_path / "a.txt")], tmp_path / "c.parquet", tokenizer=tokenizer_ref)
    with pytest.raises(OutputExists):
        build_corpus([str(tmp_path / "a.txt")], tmp_path / "c.parquet", tokenizer=tokenizer_ref)
    build_corpus([str(tmp_path / "a.txt")], tmp_path / "c.parquet", tokenizer=tokenizer_ref, force=True)


def test_atomic_file_leaves_nothing_when_the_block_fails(tmp_path: Path):
    target = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_file(target) as temporary:
        temporary.write_text("whole")
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


# ----------------------------------------------------------------------------- bad input


def test_encrypted_pdf_is_refused_and_nothing_is_written(tmp_path: Path, tokenizer_ref: str):
    write_pdf(tmp_path / "locked.pdf", "Secret comet data.", user_password="s3cret")
    with pytest.raises(UnreadableSource, match=r"locked\.pdf: encrypted PDF; pass its password"):
        build_corpus([str(tmp_path / "locked.pdf")], tmp_path / "c.parquet", tokenizer=tokenizer_ref)
    assert leftovers(tmp_path) == []
    with pytest.raises(UnreadableSource, match="password given is wrong"):
        build_corpus(
            [str(tmp_path / "locked.pdf")], tmp_path / "c.parquet", tokenizer=tokenizer_ref, pdf_password="nope"
        )
    result = build_corpus(
        [str(tmp_path / "locked.pdf")], tmp_path / "c.parquet", tokenizer=tokenizer_ref, pdf_password="s3cret"
    )
    assert "Secret comet data." in rows_of(result.path)[0]["text"]


def test_unreadable_pdf_is_reported_or_skipped(tmp_path: Path, tokenizer_ref: str):
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    (tmp_path / "good.txt").write_text("Good text.")
    with pytest.raises(UnreadableSource, match=r"broken\.pdf: unreadable PDF"):
        build_corpus([str(tmp_path)], tmp_path / "c.parquet", tokenizer=tokenizer_ref)
    assert leftovers(tmp_path) == []
    result = build_corpus([str(tmp_path)], tmp_path / "c.parquet", tokenizer=tokenizer_ref, on_error="skip")
    assert [r["text"] for r in rows_of(result.path)] == ["Good text."]
    assert len(result.problems) == 1 and "broken.pdf" in result.problems[0]


def test_malformed_jsonl_line_is_reported_with_file_and_line(tmp_path: Path, tokenizer_ref: str):
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "one"}, '{"text": "two"', {"text": "three"}, '["x"]', {"other": 1}])
    with pytest.raises(UnreadableSource, match=r"bad\.jsonl:2: malformed JSON line"):
        build_corpus([str(tmp_path / "bad.jsonl")], tmp_path / "c.parquet", tokenizer=tokenizer_ref)
    assert leftovers(tmp_path) == []
    result = build_corpus(
        [str(tmp_path / "bad.jsonl")], tmp_path / "c.parquet", tokenizer=tokenizer_ref, on_error="skip"
    )
    assert [r["text"] for r in rows_of(result.path)] == ["one", "three"]
    assert [p.split(": ")[0].rsplit(":", 1)[1] for p in result.problems] == ["2", "4", "5"]
    assert json.loads(result.manifest_path.read_text())["problems"] == result.problems


def test_empty_sources_are_refused(tmp_path: Path, tokenizer_ref: str):
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(EmptySource, match=r"empty\.txt: empty source"):
        build_corpus([str(tmp_path / "empty.txt")], tmp_path / "c.parquet", tokenizer=tokenizer_ref)
    (tmp_path / "folder").mkdir()
    with pytest.raises(EmptySource, match="holds no files"):
        build_corpus([str(tmp_path / "folder")], tmp_path / "c.parquet", tokenizer=tokenizer_ref)
    with pytest.raises(EmptySource, match="no rows to write"):
        build_corpus([str(tmp_path / "empty.txt")], tmp_path / "c.parquet", tokenizer=tokenizer_ref, on_error="skip")
    assert leftovers(tmp_path) == []


def test_unknown_format_is_refused_before_reading(tmp_path: Path, tokenizer_ref: str):
    (tmp_path / "report.docx").write_bytes(b"PK\x03\x04")
    with pytest.raises(InvalidArgument, match=r"report\.docx: unknown format '\.docx'"):
        build_corpus([str(tmp_path / "report.docx")], tmp_path / "c.parquet", tokenizer=tokenizer_ref)
    (tmp_path / "code.py").write_text("print('hello')\n")
    result = build_corpus(
        [str(tmp_path)], tmp_path / "c.parquet", tokenizer=tokenizer_ref, pattern="*.py", input_format="txt"
    )
    assert [r["text"] for r in rows_of(result.path)] == ["print('hello')\n"]


def test_cli_reports_bad_input_in_one_line_and_writes_nothing(tmp_path: Path, tokenizer_ref: str):
    write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, "{nope"])
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "data",
            "corpus",
            str(tmp_path / "bad.jsonl"),
            "-o",
            str(tmp_path / "c.parquet"),
            "--tokenizer",
            tokenizer_ref,
        ],
    )
    assert result.exit_code == 6
    assert "bad.jsonl:2: malformed JSON line" in result.output and "Traceback" not in result.output
    assert leftovers(tmp_path) == []
    result = runner.invoke(
        app,
        [
            "data",
            "corpus",
            str(tmp_path / "bad.jsonl"),
            "-o",
            str(tmp_path / "c.parquet"),
            "--tokenizer",
            tokenizer_ref,
            "--on-error",
            "skip",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["sources"]["total"]["rows"] == 1 and summary["sources"]["total"]["problems"] == 1


def test_a_record_of_sections_keeps_every_section_and_triplets_read_them_back(tmp_path: Path, tokenizer_ref: str):
    from ctxext.data.triplets import read_documents as read_structured

    sections = [{"heading": f"Part {i}", "text": f"words of part {i} " * 30} for i in range(3)]
    write_jsonl(tmp_path / "docs.jsonl", [{"id": "d0", "title": "A title", "sections": sections}])
    build_corpus([str(tmp_path / "docs.jsonl")], tmp_path / "c.parquet", tokenizer=tokenizer_ref)
    row = pq.read_table(tmp_path / "c.parquet").to_pylist()[0]
    assert row["title"] == "A title" and all(f"## Part {i}\n\nwords of part {i}" in row["text"] for i in range(3))
    (document,) = read_structured(str(tmp_path / "c.parquet"))
    assert [s.heading for s in document.sections] == ["Part 0", "Part 1", "Part 2"]
    assert [s.text for s in document.sections] == [s["text"].strip() for s in sections]
