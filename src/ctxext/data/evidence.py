"""An evidence-extraction set in the seed's prompt format (``ctxext data evidence``), from text every Python
install has and no other ctxext stage reads: the language reference topics of ``pydoc_data``.

Each example is a post, a criterion and the post's one sentence that is evidence for it. The post is a run of
consecutive prose sentences from one topic (say, the ``with`` statement); one sentence from the opening of
another topic (say, the ``assert`` statement) is put at a random place in it; the criterion is that other
topic's title, and that sentence is the answer span. So the model has to find the sentence about the
criterion among sentences about something else: natural text, and the criterion never repeats the answer.
Topics are split into train and test (no topic on both sides, as post or as criterion), deterministically
for one Python version, which the manifest records. The prompt, written beside the data as ``prompt.json``
for ``flip --head qa --special-tokens``, is the seed's: ``[INST] ... [/INST] [POST] ... [/POST]
[CRITERION] ... [/CRITERION]``.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ctxext.data.formats import QAExample, write_squad_jsonl
from ctxext.data.output import SplitSetResult
from ctxext.data.text import split_sentences
from ctxext.errors import InvalidArgument
from ctxext.io import atomic_output, write_json
from ctxext.manifest import manifest_header
from ctxext.qa_prompt import DEFAULT_SPECIAL_TOKENS

EVIDENCE_TEMPLATE = (
    "[INST] Copy the sentence of the post that is evidence for the criterion. [/INST] "
    "[POST] {context} [/POST] [CRITERION] {question} [/CRITERION]"
)
OPENING_SENTENCES = 4
"""The evidence sentence comes from the first sentences of its topic, which say what the topic is (those of
at least ``EVIDENCE_WORDS`` words: shorter ones lean on the sentence before them)."""
EVIDENCE_WORDS = 10

UNDERLINE = re.compile(r"^\s*[*=\-~^]{3,}\s*$")


@dataclass(frozen=True)
class Topic:
    key: str
    title: str
    sentences: tuple[str, ...]


class EvidenceResult(SplitSetResult):
    title = "evidence"
    columns = ("topics", "examples")


def reference_topics(min_sentences: int = 6) -> list[Topic]:
    """The language reference topics of ``pydoc_data`` with their prose sentences (grammar rules, code
    examples and headings left out), those with at least ``min_sentences``."""
    from pydoc_data.topics import topics

    found = []
    for key in sorted(topics):
        lines = topics[key].strip("\n").splitlines()
        sentences = tuple(s for s in split_sentences(_prose(lines[2:])) if _is_prose_sentence(s))
        if len(sentences) >= min_sentences:
            found.append(Topic(key, lines[0].strip(), sentences))
    return found


def _prose(lines: Sequence[str]) -> str:
    """Unindented paragraphs, each joined to one line, blank-line separated; headings dropped."""
    paragraphs: list[str] = []
    current: list[str] = []
    for index, line in enumerate(lines):
        heading = index + 1 < len(lines) and UNDERLINE.match(lines[index + 1])
        if not line.strip() or heading or UNDERLINE.match(line) or line.startswith((" ", "\t")):
            if current:
                paragraphs.append(" ".join(current))
            current = []
            continue
        current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    return "\n\n".join(paragraphs)


def _is_prose_sentence(sentence: str) -> bool:
    words = len(sentence.split())
    return 6 <= words <= 60 and sentence.endswith(".") and "::=" not in sentence and not sentence.endswith("::")


def openings(topic: Topic) -> list[str]:
    """The sentences that may stand as evidence for ``topic`` (its first, whatever its length, at least)."""
    opening = topic.sentences[:OPENING_SENTENCES]
    return [s for s in opening if len(s.split()) >= EVIDENCE_WORDS] or [opening[0]]


def split_topics(topics: Sequence[Topic], test_share: float, seed: int) -> dict[str, list[Topic]]:
    shuffled = list(topics)
    random.Random(seed).shuffle(shuffled)
    test = max(2, round(len(shuffled) * test_share))
    return {"train": sorted(shuffled[test:], key=lambda t: t.key), "test": sorted(shuffled[:test], key=lambda t: t.key)}


def evidence_examples(
    topics: Sequence[Topic], *, posts_per_topic: int, sentences: int, rng: random.Random, prefix: str
) -> list[QAExample]:
    """For each topic, ``posts_per_topic`` posts of ``sentences`` of its sentences with one opening sentence of
    another topic of the same split put in; that topic's title is the criterion."""
    examples = []
    for topic in topics:
        others = [other for other in topics if other.key != topic.key]
        for number in range(posts_per_topic):
            start = rng.randrange(max(1, len(topic.sentences) - sentences + 1))
            post = list(topic.sentences[start : start + sentences])
            criterion = rng.choice(others)
            evidence = rng.choice(openings(criterion))
            place = rng.randrange(len(post) + 1)
            before = " ".join(post[:place])
            context = " ".join([*post[:place], evidence, *post[place:]])
            answer_start = len(before) + (1 if before else 0)
            examples.append(
                QAExample(f"{prefix}-{topic.key}-{number}", criterion.title, context, [evidence], [answer_start])
            )
    return examples


def write_evidence(
    out: str | Path,
    *,
    posts_per_topic: int = 8,
    sentences: int = 6,
    test_share: float = 0.3,
    seed: int = 0,
    force: bool = False,
    argv: list[str] | None = None,
) -> EvidenceResult:
    """Write ``OUT/train.jsonl`` and ``OUT/test.jsonl`` (SQuAD records), ``OUT/prompt.json`` and a manifest."""
    if posts_per_topic < 1 or sentences < 1:
        raise InvalidArgument("--posts-per-topic and --sentences must be at least 1")
    if not 0.0 < test_share < 1.0:
        raise InvalidArgument(f"--test-share {test_share} must be between 0 and 1")
    splits = split_topics(reference_topics(), test_share, seed)
    rng = random.Random(seed)
    built = {
        name: evidence_examples(topics, posts_per_topic=posts_per_topic, sentences=sentences, rng=rng, prefix=name)
        for name, topics in splits.items()
    }
    with atomic_output(out, force=force) as staging:
        for name, examples in built.items():
            write_squad_jsonl(staging / f"{name}.jsonl", examples)
        write_json(
            staging / "prompt.json", {"special_tokens": list(DEFAULT_SPECIAL_TOKENS), "template": EVIDENCE_TEMPLATE}
        )
        manifest = {
            **manifest_header("data evidence", argv),
            "source": f"pydoc_data.topics of Python {sys.version.split()[0]}",
            "options": {
                "posts_per_topic": posts_per_topic,
                "sentences": sentences,
                "test_share": test_share,
                "seed": seed,
            },
            "topics": {name: [topic.key for topic in topics] for name, topics in splits.items()},
            "counts": {
                name: {"topics": len(splits[name]), "examples": len(examples)} for name, examples in built.items()
            },
        }
        write_json(staging / "manifest.json", manifest, sort_keys=True)
    return EvidenceResult(Path(out).expanduser().absolute(), manifest)
