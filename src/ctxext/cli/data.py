"""`ctxext data`: corpora and long-document training sets from local files."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ctxext.cli._common import JsonOpt, RevisionOpt, emit, progress_bars, reports_errors, stderr
from ctxext.data.options import DEFAULT_MODEL, InputFormat, NegativesFrom, OnError, Queries, Strategy

FileOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Output file (written atomically, with <output>.manifest.json beside it).")
]
TokenizerOpt = Annotated[
    str, typer.Option("--tokenizer", help="Checkpoint whose tokenizer counts tokens: folder, hub ID or embedded name.")
]
FormatOpt = Annotated[
    InputFormat | None, typer.Option("--format", help="Read every input as this format, whatever its suffix.")
]
OnErrorOpt = Annotated[
    OnError,
    typer.Option(
        "--on-error", help="stop: a bad file or line stops the run (nothing is written); skip: report it and go on."
    ),
]
PdfPasswordOpt = Annotated[str | None, typer.Option("--pdf-password", help="Password of encrypted PDFs.")]

ForceOpt = Annotated[bool, typer.Option("--force", help="Replace the output file if it exists.")]

SourcesArg = Annotated[
    list[str],
    typer.Argument(
        help="Files or folders (txt, md, jsonl, parquet, pdf); LABEL=PATH names a source in the `source` column."
    ),
]
ChunkOpt = Annotated[
    int | None,
    typer.Option(
        help="Most tokens per row, special tokens included; longer "
        "documents are split on paragraph / sentence boundaries."
    ),
]
OverlapOpt = Annotated[int, typer.Option(help="Fewest tokens consecutive chunks share.")]
DedupeOpt = Annotated[
    bool, typer.Option("--dedupe", help="Drop exact and near-duplicate rows (MinHash, Jaccard >= --near-threshold).")
]
NearThresholdOpt = Annotated[
    float, typer.Option(help="Word 5-gram Jaccard similarity above which two rows are near-duplicates.")
]
ExactOnlyOpt = Annotated[bool, typer.Option("--exact-only", help="With --dedupe: exact duplicates only.")]
PatternOpt = Annotated[str | None, typer.Option(help="Glob for files inside folders, e.g. '*.py' (with --format txt).")]

app = typer.Typer(
    name="data",
    help="Corpora and long-document training sets from local files.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


def register(parent: typer.Typer) -> None:
    parent.add_typer(app, name="data")


def _warn_problems(problems: list[str]) -> None:
    for message in problems[:20]:
        stderr.print(f"[yellow]skipped:[/] {message}", highlight=False, soft_wrap=True)
    if len(problems) > 20:
        stderr.print(f"[yellow]skipped:[/] ... and {len(problems) - 20} more (all listed in the manifest)")


@app.command("corpus")
@reports_errors
def corpus_command(
    sources: SourcesArg,
    out: FileOutOpt,
    chunk: ChunkOpt = None,
    overlap: OverlapOpt = 0,
    tokenizer: TokenizerOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    dedupe: DedupeOpt = False,
    near_threshold: NearThresholdOpt = 0.8,
    exact_only: ExactOnlyOpt = False,
    input_format: FormatOpt = None,
    pattern: PatternOpt = None,
    on_error: OnErrorOpt = OnError.stop,
    pdf_password: PdfPasswordOpt = None,
    shard: Annotated[
        str | None,
        typer.Option(help="I/N: only the I-th share of the documents, by id (join with `ctxext data merge`)."),
    ] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Flatten local sources into one Parquet corpus with a `source` column.

    jsonl records give their `text` (or body / abstract / content); triplet records (query / positive /
    negative, or anchor / pos / neg) give one row per field, marked in the `field` column.

    Examples:

      ctxext data corpus news.jsonl wiki/ papers/ -o corpus.parquet --chunk 512 --overlap 64 --dedupe

      ctxext data corpus msmarco=triplets.jsonl encyclopedia=articles.parquet -o corpus.parquet

      for i in 0 1 2 3; do ctxext data corpus docs/ --chunk 512 --shard $i/4 -o c-$i.parquet & done; wait
      ctxext data merge c-*.parquet -o corpus.parquet
    """
    from ctxext.commands import options_of
    from ctxext.data.corpus import CorpusOptions, build_corpus

    options = dataclasses.replace(options_of(CorpusOptions, locals()), near_duplicates=not exact_only)
    with progress_bars() as progress:
        result = build_corpus(sources, out, options, force=force, progress=progress, argv=sys.argv)
    _warn_problems(result.problems)
    emit(result, as_json)


@app.command("fit")
@reports_errors
def fit_command(
    source: Annotated[str, typer.Argument(help="File or folder of documents (jsonl, parquet, txt, md, pdf).")],
    out: FileOutOpt,
    budget: Annotated[int, typer.Option(min=2, help="Most tokens per document, special tokens included.")] = 4096,
    tokenizer: TokenizerOpt = DEFAULT_MODEL,
    strategy: Annotated[
        Strategy,
        typer.Option(
            help="extractive keeps the sentences closest to the document's embedding, in their original order."
        ),
    ] = Strategy.head,
    encoder: Annotated[str, typer.Option(help="Embedding model of the extractive strategy.")] = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    head_fraction: Annotated[float, typer.Option(help="head-tail: share of the budget given to the head.")] = 0.5,
    input_format: FormatOpt = None,
    on_error: OnErrorOpt = OnError.stop,
    pdf_password: PdfPasswordOpt = None,
    shard: Annotated[
        str | None,
        typer.Option(help="I/N: only the I-th share of the documents, by id (join with `ctxext data merge`)."),
    ] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Make every document fit a token budget; records keep their other fields.

    Examples:

      ctxext data fit papers.jsonl -o papers-4k.jsonl --budget 4096 --tokenizer ./bigbird \
        --strategy extractive

      ctxext data fit corpus.parquet -o corpus-512.parquet --budget 512 --strategy head-tail

      for i in 0 1 2 3; do ctxext data fit papers.jsonl --strategy extractive --shard $i/4 -o f-$i.jsonl & done; wait
      ctxext data merge f-0.jsonl f-1.jsonl f-2.jsonl f-3.jsonl -o papers-4k.jsonl
    """
    from ctxext.commands import options_of
    from ctxext.data.fit import FitOptions, fit_file

    options = options_of(FitOptions, locals())
    with progress_bars() as progress:
        result = fit_file(source, out, options, force=force, progress=progress, argv=sys.argv)
    _warn_problems(result.problems)
    emit(result, as_json)


@app.command("triplets")
@reports_errors
def triplets_command(  # noqa: PLR0913 (a typer command: one parameter per command-line option)
    corpus: Annotated[
        str,
        typer.Argument(
            help="Long documents with structure: jsonl / parquet records with "
            "title and text (Markdown headings) or sections, or md files."
        ),
    ],
    out: FileOutOpt,
    queries: Annotated[
        Queries,
        typer.Option(
            help="Which queries to make; passage: inverse cloze (a random run of words); summary: a section's "
            "summary line, cut out of the positive."
        ),
    ] = Queries.both,
    negatives_from: Annotated[
        NegativesFrom,
        typer.Option(
            help="Where hard negatives come from; swap (passage queries): the positive with the passage swapped out."
        ),
    ] = NegativesFrom.embedding,
    encoder: Annotated[str, typer.Option(help="Embedding model for hard negatives.")] = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    negatives: Annotated[int, typer.Option(min=1, help="Hard negatives per query (one line each).")] = 1,
    skip_top: Annotated[int, typer.Option(min=0, help="Pass over this many nearest candidates first.")] = 0,
    sections_per_document: Annotated[int, typer.Option(min=1, help="Section (or passage) queries per document.")] = 1,
    min_query_words: Annotated[int, typer.Option(min=1, help="Shortest section usable as a query.")] = 8,
    max_query_words: Annotated[int, typer.Option(min=1, help="Section queries are cut to this many words.")] = 128,
    allow_verbatim: Annotated[
        bool, typer.Option("--allow-verbatim", help="Keep queries that occur verbatim in their positive.")
    ] = False,
    passage_words: Annotated[int, typer.Option(min=1, help="Words in a passage query.")] = 32,
    max_depth_words: Annotated[
        int | None,
        typer.Option(min=1, help="Passage and summary queries lie within this many words of the body's start."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the section and passage choice.")] = 0,
    input_format: FormatOpt = None,
    on_error: OnErrorOpt = OnError.stop,
    shard: Annotated[
        str | None,
        typer.Option(help="I/N: only the queries of the I-th share of the documents (join with `ctxext data merge`)."),
    ] = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Build (query, positive, hard negative) triplets for `ctxext finetune` (schema: docs/data.md).

    Examples:

      ctxext data pydocs -o pydocs.jsonl && ctxext data triplets pydocs.jsonl -o triplets.jsonl

      ctxext data triplets papers.parquet -o triplets.jsonl --queries title --negatives-from bm25

      ctxext data triplets papers.parquet -o triplets.parquet --negatives-from bm25
    """
    from ctxext.commands import CallContext, data_triplets

    arguments = locals()
    with progress_bars() as progress:
        result = data_triplets(arguments, CallContext(progress, sys.argv))
    _warn_problems(result.problems)
    emit(result, as_json)


@app.command("pydocs")
@reports_errors
def pydocs_command(
    out: FileOutOpt,
    min_words: Annotated[int, typer.Option(min=1, help="Skip modules with fewer words of documentation.")] = 300,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many modules.")] = None,
    packages: Annotated[
        str, typer.Option(help="Comma-separated: 'stdlib' (the standard library) and installed packages.")
    ] = "stdlib",
    allow_held_out: Annotated[
        bool, typer.Option("--allow-held-out", help="Also read packages held out for evaluation (data longdoc).")
    ] = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a long-document corpus from the documentation of the standard library and installed packages
    (no download needed); the packages `data longdoc` evaluates on are refused unless --allow-held-out.

    Examples:

      ctxext data pydocs -o pydocs.jsonl --min-words 300

      ctxext data pydocs -o docs.jsonl --packages stdlib,transformers,PIL,pygments --min-words 50
    """
    from ctxext.commands import CallContext, data_pydocs

    emit(data_pydocs(locals(), CallContext(argv=sys.argv)), as_json)


@app.command("evidence")
@reports_errors
def evidence_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: train.jsonl, test.jsonl, prompt.json.")],
    posts_per_topic: Annotated[int, typer.Option(min=1, help="Posts made from each topic.")] = 8,
    sentences: Annotated[int, typer.Option(min=1, help="Sentences of a post, besides the evidence.")] = 6,
    test_share: Annotated[float, typer.Option(help="Share of the topics held out for test.")] = 0.3,
    seed: Annotated[int, typer.Option(help="Seed of the split and the posts.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a previous evidence folder.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build an evidence-extraction set (a post, a criterion, the post's evidence sentence) in the seed's
    prompt format from Python's language reference topics, split by topic (docs/data.md).

    Example:

      ctxext data evidence -o evidence && ctxext flip gemma.gguf --head qa --special-tokens evidence/prompt.json -o qa
    """
    from ctxext.data.evidence import write_evidence

    emit(
        write_evidence(
            out,
            posts_per_topic=posts_per_topic,
            sentences=sentences,
            test_share=test_share,
            seed=seed,
            force=force,
            argv=sys.argv,
        ),
        as_json,
    )


@app.command("longdoc")
@reports_errors
def longdoc_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: dev/ and test/ BEIR folders, manifest.")],
    pages: Annotated[int, typer.Option(min=1, help="Pages (one query each) per split.")] = 120,
    min_tokens: Annotated[int, typer.Option(min=16, help="Shortest page, in tokens.")] = 1024,
    max_tokens: Annotated[int, typer.Option(min=16, help="Pages are cut after the last section within this.")] = 4096,
    dev_packages: Annotated[
        str | None, typer.Option(help="Comma-separated installed packages for the dev split (default: a fixed list).")
    ] = None,
    test_packages: Annotated[
        str | None, typer.Option(help="Comma-separated installed packages for the test split (none shared with dev).")
    ] = None,
    corpus: Annotated[
        str | None,
        typer.Option(help="Your documents (file or folder) instead of packages: test/ from a held-out share."),
    ] = None,
    held_out: Annotated[float, typer.Option(help="With --corpus: share of documents held out for test/.")] = 0.2,
    tokenizer: TokenizerOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the page and definition choice.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace a previous longdoc folder.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a long-document retrieval set from installed packages' documentation (docs/data.md): a
    definition's summary line is the query, its module page without that line the target; split by package.
    With --corpus, from your own documents: test/ from a held-out share, train.jsonl the rest.

    Examples:

      ctxext data longdoc -o longdoc && ctxext evaluate minilm-4096 --task retrieval --beir longdoc/dev --lengths 4096

      ctxext data longdoc --corpus my-docs/ --held-out 0.2 --tokenizer all-MiniLM-L6-v2 -o my-longdoc
    """
    from ctxext.commands import CallContext, data_longdoc

    arguments = locals()
    with progress_bars() as progress:
        result = data_longdoc(arguments, CallContext(progress, sys.argv))
    warn_missing_packages(result)
    emit(result, as_json)


def warn_missing_packages(result: Any) -> None:
    """After ``data longdoc``: the packages that gave no page."""
    missing = [p for packages in result.manifest.get("missing_packages", {}).values() for p in packages]
    if missing:
        stderr.print(f"[yellow]no pages from:[/] {', '.join(missing)} (not installed or too little documentation)")


@app.command("links")
@reports_errors
def links_command(
    corpus: Annotated[str, typer.Argument(help="Documents with ids (file or folder: jsonl, Markdown, text...).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output BEIR folder (corpus, queries, qrels/test.tsv).")],
    links: Annotated[
        str,
        typer.Option(help="Which links relate documents: field (a 'links' list), names, markdown; comma-separated."),
    ] = "field,names,markdown",
    query_share: Annotated[
        float, typer.Option(help="Share of the documents that become whole-document queries.")
    ] = 0.2,
    force: Annotated[bool, typer.Option("--force", help="Replace a previous links folder.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a document-to-document retrieval set from a corpus's own links (docs/data.md): a share of the
    documents are queries, the documents they link to or are linked from the relevant ones.

    Example:

      ctxext data links pages.jsonl -o related && ctxext evaluate minilm-4096 --task retrieval --beir related \\
          --lengths 4096 --forms chunk-mean,whole,bm25 --symmetric
    """
    from ctxext.data.links import parse_link_kinds, write_links

    result = write_links(
        corpus, out, links=parse_link_kinds(links), query_share=query_share, force=force, argv=sys.argv
    )
    emit(result, as_json)


@app.command("merge")
@reports_errors
def merge_command(
    parts: Annotated[list[Path], typer.Argument(help="The N outputs of one run with --shard I/N (any order).")],
    out: FileOutOpt,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Join the shards of one `--shard I/N` run into the data set one process would have made.

    Example:

      for i in 0 1 2 3; do ctxext data triplets docs/ --shard $i/4 -o t-$i.jsonl & done; wait
      ctxext data merge t-*.jsonl -o triplets.jsonl

    Parts are all .jsonl or all .parquet; the output is .jsonl, or .parquet from Parquet parts.
    """
    from ctxext.data.shards import merge_shards

    with progress_bars() as progress:
        result = merge_shards(list(parts), out, force=force, progress=progress, argv=sys.argv)
    emit(result, as_json)
