"""`ctxext data longdoc`: a long-document retrieval set from installed packages, split by package."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from ctxext.cli import app
from ctxext.data.longdoc import DEPTH_BUCKETS, depth_bucket, write_longdoc
from ctxext.data.text import summary_line
from ctxext.errors import InvalidArgument

WORDS = "otter heron lynx ibex gecko quince lychee papaya cello oboe sitar banjo harp teal ochre amber".split()


def definition(name: str, index: int) -> str:
    """A documented function whose summary line and body are unique to (name, index)."""
    summary = f"Compute the {WORDS[index % 16]} {WORDS[(index * 3 + 1) % 16]} score of {name} number {index}."
    body = " ".join(f"{WORDS[(index + k) % 16]}{k}" for k in range(40))
    return f'def {name}_{index}(value):\n    """{summary}\n\n    {body}\n    """\n'


def fake_package(root, name: str, modules: int = 3, functions: int = 30):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text('"""A fake package."""\n')
    for module in range(modules):
        source = f'"""Module {module} of {name}."""\n\n' + "\n".join(
            definition(f"{name}_m{module}", index) for index in range(functions)
        )
        (folder / f"mod{module}.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture
def packages(tmp_path, monkeypatch):
    root = tmp_path / "site"
    for name in ("alpha_pkg", "beta_pkg", "gamma_pkg"):
        fake_package(root, name)
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in ("alpha_pkg", "beta_pkg", "gamma_pkg"):
        sys.modules.pop(name, None)


def test_summary_line_is_the_first_paragraph_with_text_after_it():
    text = "Return the   frobnicated value of x.\n\n" + "More words here " * 4
    assert summary_line(text) == ("Return the frobnicated value of x.", ("More words here " * 4).strip())
    assert summary_line("Too short.\n\n" + "rest " * 20) is None
    assert summary_line("Return the frobnicated value of x.") is None  # nothing left in the document
    assert summary_line(">>> f(1) + g(2) - h(3)\n\n" + "rest " * 20) is None


def test_splits_share_no_package_and_queries_are_cut_from_their_pages(packages, minilm, tmp_path):
    result = write_longdoc(
        tmp_path / "ld",
        tokenizer=str(minilm),
        pages=10,
        min_tokens=256,
        max_tokens=2048,
        splits={"dev": ("alpha_pkg",), "test": ("beta_pkg", "gamma_pkg")},
    )
    seen = {}
    for split in ("dev", "test"):
        folder = result.path / split
        corpus = {r["_id"]: r["text"] for r in map(json.loads, (folder / "corpus.jsonl").open())}
        queries = [json.loads(line) for line in (folder / "queries.jsonl").open()]
        qrels = [line.split("\t") for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]]
        seen[split] = {q["package"] for q in queries}
        assert len(queries) == len(corpus) == len(qrels) > 0
        for query, (query_id, doc_id, _) in zip(queries, qrels, strict=True):
            assert query["_id"] == query_id and doc_id.split(".")[0] == query["package"]
            assert query["text"] not in " ".join(corpus[doc_id].split())  # cut out, never verbatim
            assert query["group"] == depth_bucket(query["depth_tokens"])
            assert query["definition"].split("(")[0] in corpus[doc_id]  # the rest of the definition stays
    assert seen["dev"] == {"alpha_pkg"} and seen["test"] <= {"beta_pkg", "gamma_pkg"}
    assert not seen["dev"] & seen["test"]
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["counts"]["test"]["pages"] == len(list((result.path / "test" / "corpus.jsonl").open()))


def test_depth_buckets_are_balanced_when_pages_reach_them(packages, minilm, tmp_path):
    result = write_longdoc(
        tmp_path / "ld",
        tokenizer=str(minilm),
        pages=6,
        min_tokens=1024,
        max_tokens=4096,
        splits={"dev": ("alpha_pkg",), "test": ("beta_pkg", "gamma_pkg")},
    )
    counts = result.manifest["counts"]["test"]
    per_bucket = [counts[f"{a}-{b}"] for a, b in DEPTH_BUCKETS]
    assert sum(per_bucket) == counts["pages"] == 6
    assert max(per_bucket) - min(per_bucket) <= 1


def test_a_package_in_both_splits_is_refused_before_anything_is_written(tmp_path, minilm):
    with pytest.raises(InvalidArgument, match="both dev and test: numpy"):
        write_longdoc(tmp_path / "ld", tokenizer=str(minilm), splits={"dev": ("numpy",), "test": ("numpy", "torch")})
    assert not (tmp_path / "ld").exists()
    result = CliRunner().invoke(
        app, ["data", "longdoc", "-o", str(tmp_path / "ld"), "--dev-packages", "numpy", "--test-packages", "numpy"]
    )
    assert result.exit_code != 0 and "both dev and test" in result.output
    assert not (tmp_path / "ld").exists()


def test_no_installed_package_is_one_clear_error(tmp_path, minilm):
    result = CliRunner().invoke(
        app,
        ["data", "longdoc", "-o", str(tmp_path / "ld"), "--dev-packages", "no_such_pkg_a", "--test-packages", "b_x"],
    )
    assert result.exit_code != 0 and "none of no_such_pkg_a is installed" in result.output
    assert not (tmp_path / "ld").exists()


def test_a_training_corpus_never_reads_a_held_out_package(packages, tmp_path):
    from ctxext.data.pydocs import HELD_OUT_PACKAGES, write_python_docs_corpus

    held_out = HELD_OUT_PACKAGES["test"][0]
    with pytest.raises(InvalidArgument, match=f"{held_out}: held out for evaluation"):
        write_python_docs_corpus(tmp_path / "c.jsonl", packages=["stdlib", held_out])
    assert not (tmp_path / "c.jsonl").exists()
    assert not set(HELD_OUT_PACKAGES["dev"]) & set(HELD_OUT_PACKAGES["test"])
    result = write_python_docs_corpus(tmp_path / "c.jsonl", packages=["alpha_pkg", "beta_pkg"], min_words=50)
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").open()]
    assert {r["source"] for r in records} == {"alpha_pkg", "beta_pkg"}
    assert all(r["doc_id"].startswith(r["source"] + ".") for r in records)
    assert result.manifest["counts"]["sources"]["alpha_pkg"]["documents"] == 3


def test_package_docstrings_are_named_after_their_package(packages, tmp_path, monkeypatch):
    from ctxext.data.pydocs import python_docstrings
    from ctxext.errors import SourceNotFound

    monkeypatch.setenv("CTXEXT_CACHE", str(tmp_path / "cache"))
    pairs = python_docstrings(min_chars=50, package="alpha_pkg")
    assert len(pairs) == 90 and all(name.startswith("alpha_pkg.mod") for name, _ in pairs)
    assert not (tmp_path / "cache").exists()  # no version to key a cache on
    with pytest.raises(SourceNotFound, match="no_such_pkg"):
        python_docstrings(package="no_such_pkg")
