"""Long-context retrieval evaluation: passkey and needle built locally as LongEmbed builds them, and
retrieval on local BEIR-format folders. Acc@1 and nDCG@10 per length.

Passkey and needle are diagnostics of whether a model reads the whole input; never train on them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.data.formats import read_beir
from ctxext.errors import InvalidArgument
from ctxext.io import atomic_files, file_manifest_path, write_json
from ctxext.manifest import manifest_header

PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_NEEDLE = "{name}'s pass key is {key}. Remember it. {key} is the pass key for {name}."
PASSKEY_QUERY = "what is the pass key for {name}?"
NEEDLE_FACT = "{name}'s favourite {thing} is {value}."
NEEDLE_QUERY = "What is {name}'s favourite {thing}?"
NEEDLE_THINGS = {
    "colour": ["teal", "crimson", "ochre", "violet", "amber"],
    "city": ["Lisbon", "Kyoto", "Nairobi", "Quito", "Tallinn"],
    "fruit": ["quince", "lychee", "papaya", "damson", "guava"],
    "instrument": ["cello", "oboe", "sitar", "banjo", "harp"],
    "animal": ["otter", "lynx", "heron", "ibex", "gecko"],
}
FIRST_NAMES = (
    "Ada Alan Alice Amir Anna Aria Ben Bianca Carlos Chen Chloe Dara Diego Elena Emil Esme Farah Felix Gita Hana "
    "Hugo Ines Ivan Jade Jonas Kai Kira Lars Leila Liam Lina Luca Maya Milo Nadia Nils Noor Omar Otto Paula Priya "
    "Quinn Rafa Rosa Sami Sara Theo Uma Vera Wen Yara Zane Zoe Arlo Beatriz Cyrus Delia Ezra Freya Gideon Hazel "
    "Idris Juno Kenji Lorna Marek Nell Orla Pavel Rhea Soren Talia Ulric Vida Wilma Xena Yusuf Zelda Abel Brynn "
    "Cato Dina Eamon Fleur Gus Hedda Ilse Jasper Kalina Leon Mira Nico Opal Piers Rowan Signe Tobias Ursa "
    "Anton Bela Clara Dario Edith Flora Greta Hector Iris Joel Karim Lotte Marta Nora Oskar Pia Ruben Stella "
    "Tariq Viggo Wanda Yvonne"
).split()
DEFAULT_LENGTHS = (256, 512, 1024, 2048, 4096)


class Task(str, Enum):
    passkey = "passkey"
    needle = "needle"
    retrieval = "retrieval"


@dataclass
class RetrievalSet:
    """Queries, candidate documents, and for each query the relevance of documents (index -> grade)."""

    name: str
    length: int | None
    queries: list[str]
    documents: list[str]
    relevant: list[dict[int, float]]
    groups: list[str | None] | None = None
    """A label per query (a depth bucket, say) to score the queries of each label apart."""


@dataclass
class Score:
    length: int | None
    acc_at_1: float
    ndcg_at_10: float
    queries: int
    documents: int
    mrr: float = 0.0
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per query label: ``mrr``, ``acc_at_1`` and ``queries``."""


@dataclass
class Evaluation:
    model: str
    task: str
    form: str
    scores: list[Score] = field(default_factory=list)
    revision: str | None = None
    """The hub revision ``model`` was read at, when one was asked for."""
    adapter: str | None = None
    """The adapter that ran (``--adapter``), if any."""

    def as_dict(self) -> dict[str, Any]:
        revision = {"revision": self.revision} if self.revision else {}
        adapter = {"adapter": self.adapter} if self.adapter else {}
        return {
            "model": self.model,
            **revision,
            **adapter,
            "task": self.task,
            "form": self.form,
            "scores": [asdict(s) for s in self.scores],
        }


@dataclass
class Comparison:
    """Several models evaluated on the same task and lengths, shown side by side."""

    evaluations: list[Evaluation]

    view = "scores"

    def summary(self) -> list[dict[str, Any]]:
        return [evaluation.as_dict() for evaluation in self.evaluations]


# ----------------------------------------------------------------------------- metrics


def accuracy_at_1(scores: np.ndarray, relevant: Sequence[dict[int, float]]) -> float:
    """Share of queries whose top document is relevant; ties at the top count as the expected value, so a
    constant model scores exactly chance."""
    total = 0.0
    for row, graded in zip(scores, relevant, strict=True):
        top = np.flatnonzero(row == row.max())
        total += sum(1 for index in top if graded.get(int(index), 0) > 0) / len(top)
    return total / len(relevant)


def ndcg_at_k(scores: np.ndarray, relevant: Sequence[dict[int, float]], k: int = 10, seed: int = 0) -> float:
    """Mean nDCG@k; ties are broken by a fixed random order, so a constant model sits near chance."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for row, graded in zip(scores, relevant, strict=True):
        shuffle = rng.permutation(len(row))
        ranked = shuffle[np.argsort(-row[shuffle], kind="stable")][:k]
        gains = np.array([graded.get(int(index), 0.0) for index in ranked])
        discounts = 1.0 / np.log2(np.arange(2, len(gains) + 2))
        ideal = np.sort(np.array(list(graded.values()), dtype=np.float64))[::-1][:k]
        ideal_dcg = float((ideal * discounts[: len(ideal)]).sum())
        total += float((gains * discounts).sum()) / ideal_dcg if ideal_dcg > 0 else 0.0
    return total / len(relevant)


def mean_reciprocal_rank(scores: np.ndarray, relevant: Sequence[dict[int, float]], seed: int = 0) -> float:
    """Mean of 1 / rank of the best-ranked relevant document; ties broken as in :func:`ndcg_at_k`."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for row, graded in zip(scores, relevant, strict=True):
        shuffle = rng.permutation(len(row))
        ranked = shuffle[np.argsort(-row[shuffle], kind="stable")]
        hits = np.flatnonzero([graded.get(int(index), 0) > 0 for index in ranked])
        total += 1.0 / (hits[0] + 1) if len(hits) else 0.0
    return total / len(relevant)


def similarity(queries: np.ndarray, documents: np.ndarray) -> np.ndarray:
    """Cosine similarity, queries x documents."""

    def unit(matrix: np.ndarray) -> np.ndarray:
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix / np.where(norms == 0, 1.0, norms)

    return unit(queries.astype(np.float64)) @ unit(documents.astype(np.float64)).T


# ----------------------------------------------------------------------------- building the sets


def _fill_to_length(
    count_tokens: Callable[[str], int], filler_units: Sequence[str], needle: str, length: int, rng: random.Random
) -> str:
    """Filler units up to ``length`` tokens (special tokens included) with the needle at a random unit boundary.
    Units are counted one by one, then the joined text is counted again and trimmed, because tokens can merge
    across the joins."""
    budget = length - 2 - count_tokens(needle)
    units: list[str] = []
    used = 0
    for unit in _cycle(filler_units):
        cost = count_tokens(unit)
        if used + cost > budget:
            break
        units.append(unit)
        used += cost
    units.insert(rng.randint(0, len(units)), needle)
    while count_tokens(" ".join(units)) + 2 > length and len(units) > 1:
        units.pop(-1 if units[-1] != needle else -2)
    return " ".join(units)


def _cycle(items: Sequence[str]):
    while True:
        yield from items


def _token_counter(tokenizer: Any) -> Callable[[str], int]:
    cache: dict[str, int] = {}

    def count(text: str) -> int:
        if text in cache:
            return cache[text]
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(text) < 1000:
            cache[text] = tokens
        return tokens

    return count


def passkey_sets(
    tokenizer: Any, lengths: Sequence[int], documents: int = 100, queries: int = 50, seed: int = 0
) -> list[RetrievalSet]:
    """LongEmbed's passkey: repeated filler, one named pass key per document, queries ask for a name's key."""
    _check_sizes(documents, queries)
    count = _token_counter(tokenizer)
    sets = []
    for length in lengths:
        rng = random.Random(f"passkey-{seed}-{length}")
        names = rng.sample(FIRST_NAMES, documents)
        needles = [PASSKEY_NEEDLE.format(name=name, key=rng.randint(10000, 99999)) for name in names]
        docs = [_fill_to_length(count, [PASSKEY_FILLER], needle, length, rng) for needle in needles]
        asked = rng.sample(range(documents), queries)
        sets.append(
            RetrievalSet(
                "passkey", length, [PASSKEY_QUERY.format(name=names[i]) for i in asked], docs, [{i: 1.0} for i in asked]
            )
        )
    return sets


def needle_sets(
    tokenizer: Any,
    lengths: Sequence[int],
    documents: int = 100,
    queries: int = 50,
    seed: int = 0,
    haystack: Sequence[str] | None = None,
) -> list[RetrievalSet]:
    """LongEmbed's needle: one short fact per document, hidden at a random depth in real prose."""
    _check_sizes(documents, queries)
    count = _token_counter(tokenizer)
    prose = list(haystack or haystack_sentences())
    sets = []
    for length in lengths:
        rng = random.Random(f"needle-{seed}-{length}")
        names = rng.sample(FIRST_NAMES, documents)
        facts = []
        for name in names:
            thing = rng.choice(sorted(NEEDLE_THINGS))
            facts.append((name, thing, rng.choice(NEEDLE_THINGS[thing])))
        docs = []
        for name, thing, value in facts:
            start = rng.randrange(len(prose))
            window = prose[start:] + prose[:start]
            docs.append(
                _fill_to_length(count, window, NEEDLE_FACT.format(name=name, thing=thing, value=value), length, rng)
            )
        asked = rng.sample(range(documents), queries)
        sets.append(
            RetrievalSet(
                "needle",
                length,
                [NEEDLE_QUERY.format(name=facts[i][0], thing=facts[i][1]) for i in asked],
                docs,
                [{i: 1.0} for i in asked],
            )
        )
    return sets


def _check_sizes(documents: int, queries: int) -> None:
    if not 1 <= queries <= documents <= len(FIRST_NAMES):
        raise InvalidArgument(f"need 1 <= queries ({queries}) <= documents ({documents}) <= {len(FIRST_NAMES)}")


HAYSTACK_MODULES = (
    "json",
    "collections",
    "functools",
    "itertools",
    "pathlib",
    "argparse",
    "logging",
    "typing",
    "subprocess",
    "textwrap",
    "string",
    "re",
    "datetime",
    "calendar",
    "decimal",
    "fractions",
    "statistics",
    "heapq",
    "bisect",
    "shutil",
    "tempfile",
    "csv",
    "difflib",
    "unittest",
    "zipfile",
    "tarfile",
    "email.message",
    "http.client",
)


def haystack_sentences() -> list[str]:
    """Prose that every Python installs: sentences of some standard-library modules' docs, in a fixed order."""
    from ctxext.data.pydocs import module_document, parsed_modules
    from ctxext.data.text import split_sentences

    sentences: list[str] = []
    for name, tree in parsed_modules(names=set(HAYSTACK_MODULES)):
        document = module_document(name, tree) or {"sections": []}
        for section in document["sections"]:
            text = " ".join(line.strip() for line in section["text"].splitlines() if line.strip() and ">>>" not in line)
            sentences += [s for s in split_sentences(text) if 30 <= len(s) <= 300]
    return list(dict.fromkeys(sentences))


def beir_set(folder: Path, split: str = "test") -> RetrievalSet:
    """A BEIR-format folder (read by :func:`ctxext.data.formats.read_beir`) as a retrieval set of no set length."""
    beir = read_beir(folder, split)
    groups = beir.groups if any(group is not None for group in beir.groups) else None
    return RetrievalSet(beir.name, None, beir.queries, beir.documents, beir.relevant, groups)


def beir_sets(folder: Path, lengths: Sequence[int]) -> list[RetrievalSet]:
    """The BEIR folder's set once per length (documents are read up to each)."""
    base = beir_set(folder)
    return [
        RetrievalSet(base.name, length, base.queries, base.documents, base.relevant, base.groups) for length in lengths
    ]


# ----------------------------------------------------------------------------- running


def score_set(
    encode_queries: Callable[[list[str]], np.ndarray],
    encode_documents: Callable[[list[str]], np.ndarray],
    retrieval_set: RetrievalSet,
) -> Score:
    scores = similarity(encode_queries(retrieval_set.queries), encode_documents(retrieval_set.documents))
    return score_matrix(scores, retrieval_set)


def score_matrix(scores: np.ndarray, retrieval_set: RetrievalSet) -> Score:
    """The set's metrics from a queries x documents matrix of scores (higher: more relevant)."""
    relevant = retrieval_set.relevant
    groups = {}
    for group in sorted({g for g in retrieval_set.groups or [] if g is not None}, key=_natural_order):
        rows = [i for i, g in enumerate(retrieval_set.groups or []) if g == group]
        subset = [relevant[i] for i in rows]
        groups[group] = {
            "mrr": mean_reciprocal_rank(scores[rows], subset),
            "acc_at_1": accuracy_at_1(scores[rows], subset),
            "queries": len(rows),
        }
    return Score(
        retrieval_set.length,
        accuracy_at_1(scores, relevant),
        ndcg_at_k(scores, relevant),
        len(retrieval_set.queries),
        len(retrieval_set.documents),
        mean_reciprocal_rank(scores, relevant),
        groups,
    )


def _natural_order(label: str) -> tuple[float, str]:
    """Labels that start with a number in numeric order (``512-1024`` after ``0-512``), then the rest."""
    number = label.split("-")[0].rstrip("+")
    return (float(number), label) if number.isdigit() else (float("inf"), label)


def chunk_mean(
    encoder: Any, texts: list[str], chunk_tokens: int, batch_size: int, progress: ProgressFn = no_progress
) -> np.ndarray:
    """The mean of embeddings of consecutive ``chunk_tokens``-token windows (the PCW / chunking baseline)."""
    embedded, owners = chunk_vectors(encoder, texts, chunk_tokens, batch_size, progress)
    return chunk_means(embedded, owners, len(texts))


def chunk_means(vectors: np.ndarray, owners: np.ndarray, texts: int) -> np.ndarray:
    """The mean of each text's rows (``owners``: the text of each row)."""
    return np.stack([vectors[owners == index].mean(0) for index in range(texts)])


def chunk_vectors(
    encoder: Any, texts: list[str], chunk_tokens: int, batch_size: int, progress: ProgressFn = no_progress
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of each text's consecutive windows of ``chunk_tokens`` tokens (special tokens included), each
    embedded on its own, and the text each row belongs to (rows of one text consecutive, every text at least one)."""
    tokenizer = encoder.tokenizer
    pieces, owners = [], []
    for index, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]  # no "longer than" warning
        step = chunk_tokens - 2
        for start in range(0, max(len(ids), 1), step):
            pieces.append(tokenizer.decode(ids[start : start + step]))
            owners.append(index)
    embedded = encoder.encode(pieces, batch_size=batch_size, max_length=chunk_tokens, progress=progress)
    return embedded, np.array(owners)


MAX_EVALUATION_LENGTH = 131_072
"""Longest document a set is built at (LongEmbed stops at 32768); past it the texts alone need gigabytes."""


def check_evaluation_options(
    lengths: Sequence[int], max_length: int | None, chunk: int | None, documents: int, queries: int, batch_size: int
) -> None:
    """Refuse, in one line, values that cannot make a meaningful evaluation, before any model loads."""
    check_lengths(lengths)
    for option, value in (("--truncate", max_length), ("--chunk", chunk)):
        if value is not None and value < 8:
            raise InvalidArgument(f"{option} {value} is too small; give at least 8 tokens")
    if chunk and max_length:
        raise InvalidArgument("choose one of --chunk and --truncate")
    if queries < 1 or documents < 2 or documents < queries:
        raise InvalidArgument(
            f"--documents {documents} / --queries {queries}: need at least 2 documents and "
            "1 query, and no more queries than documents"
        )
    if batch_size < 1:
        raise InvalidArgument(f"--batch-size {batch_size} must be at least 1")


def check_lengths(lengths: Sequence[int]) -> None:
    if not lengths:
        raise InvalidArgument("--lengths is empty; give lengths in tokens like 256,512,1024")
    for length in lengths:
        if not 16 <= length <= MAX_EVALUATION_LENGTH:
            raise InvalidArgument(
                f"--lengths: {length} is out of range; each length must be 16 to {MAX_EVALUATION_LENGTH} tokens"
            )


def adapted_encoder(ref: str, adapter: str | None, pooling: str | None, revision: str | None) -> Any:
    """The checkpoint's encoder, with ``adapter`` running when one is named (looked up as ``embed`` does)."""
    from ctxext.embed import adapter_loader, resolve_checkpoint
    from ctxext.encode import load_encoder

    if adapter is None:
        return load_encoder(ref, pooling=pooling, revision=revision)
    _, folder, adapter_source, name = resolve_checkpoint(ref, adapter, revision)
    assert adapter_source is not None and name is not None
    return load_encoder(folder.root, pooling=pooling, model_loader=adapter_loader(adapter_source.path, name))


def evaluate(
    ref: str,
    task: Task,
    *,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    max_length: int | None = None,
    chunk: int | None = None,
    beir: str | None = None,
    documents: int = 100,
    queries: int = 50,
    seed: int = 0,
    batch_size: int = 8,
    pooling: str | None = None,
    encoder: Any = None,
    adapter: str | None = None,
    revision: str | None = None,
    progress: ProgressFn = no_progress,
) -> Evaluation:
    """Score one model. ``max_length`` truncates documents (default: each set's length, capped at the
    model's positions); ``chunk`` embeds documents as the mean of ``chunk``-token windows instead; ``seed``
    draws other passkey and needle sets; ``adapter`` runs one of the model's adapters (as ``embed --adapter``)."""
    check_evaluation_options(lengths, max_length, chunk, documents, queries, batch_size)
    encoder = encoder or adapted_encoder(ref, adapter, pooling, revision)
    if task == Task.retrieval:
        if beir is None:
            raise InvalidArgument("--task retrieval needs --beir FOLDER (corpus.jsonl, queries.jsonl, qrels/)")
        sets = beir_sets(Path(beir), lengths)
    elif task == Task.passkey:
        sets = passkey_sets(encoder.tokenizer, lengths, documents, queries, seed)
    else:
        sets = needle_sets(encoder.tokenizer, lengths, documents, queries, seed)
    longest = max(lengths)
    if chunk:
        form = f"mean of {chunk}-token chunks"
    elif max_length or longest > encoder.position_limit:  # a cap is said in the label, never hidden
        form = f"truncated at {min(max_length or longest, encoder.position_limit)}"
    else:
        form = "full"
    result = Evaluation(model=ref, task=task.value, form=form, revision=revision, adapter=adapter)
    for done, retrieval_set in enumerate(sets):
        length = min(max_length or retrieval_set.length or encoder.position_limit, encoder.position_limit)

        def encode_documents(texts: list[str], length: int = length) -> np.ndarray:
            if chunk:
                return chunk_mean(encoder, texts, min(chunk, encoder.position_limit), batch_size)
            return encoder.encode(texts, batch_size=batch_size, max_length=length)

        result.scores.append(
            score_set(lambda texts: encoder.encode(texts, batch_size=batch_size), encode_documents, retrieval_set)
        )
        progress(f"{task.value} lengths", done + 1, len(sets))
    return result


def plot(evaluations: Sequence[Evaluation], path: Path, metric: str = "acc_at_1", *, force: bool = False) -> Path:
    """A PNG of score against length, one line per model and form, with the scores it shows in
    ``<png>.manifest.json`` beside it (both written atomically; ``force`` replaces a previous plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for evaluation in evaluations:
        points = [(s.length, getattr(s, metric)) for s in evaluation.scores if s.length]
        axes.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            label=f"{Path(evaluation.model).name} ({evaluation.form})",
        )
    axes.set_xscale("log", base=2)
    axes.set_xlabel("document length (tokens)")
    axes.set_ylabel(metric.replace("_at_", "@").replace("acc", "Acc").replace("ndcg", "nDCG"))
    axes.set_ylim(-0.02, 1.02)
    axes.set_title(f"{evaluations[0].task}: score vs length")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()

    try:
        with atomic_files([path, file_manifest_path(path)], force=force) as (partial, manifest):
            figure.savefig(partial, dpi=120, format="png")
            write_json(
                manifest,
                {**manifest_header("evaluate"), "metric": metric, "evaluations": [e.as_dict() for e in evaluations]},
                sort_keys=True,
            )
    finally:
        plt.close(figure)
    return Path(path).expanduser().absolute()
