"""Extractive question answering on a (flipped) decoder: span finding, input features, metrics and
prediction (the fine-tuning stage is :mod:`ctxext.train.qa`, the prompt format :mod:`ctxext.qa_prompt`).

The input is one string built from a template with prompt-structure special tokens (default
``[INST] {question} [/INST] [POST] {context} [/POST]``, ``ctxext.qa_prompt``); answers are located in it
through the fast tokenizer's offset mapping, so every tokenizer works the same way (no pair-sequence
conventions).
torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import collections
import difflib
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ctxext.data.formats import QAExample
from ctxext.errors import InvalidArgument
from ctxext.qa_prompt import PromptConfig

DEFAULT_FUZZY_THRESHOLD = 0.85


# ----------------------------------------------------------------------------- span finding


@dataclass
class SpanMatch:
    """Where an evidence string was found in a post: characters, optionally tokens, and how."""

    status: str  # "exact", "whitespace", "fuzzy" or "not_found"
    char_start: int | None = None
    char_end: int | None = None  # exclusive
    score: float = 0.0
    token_start: int | None = None
    token_end: int | None = None  # inclusive

    @property
    def found(self) -> bool:
        return self.status != "not_found"


def _collapse_whitespace(text: str) -> tuple[str, list[int]]:
    """Text with each whitespace run turned into one space (ends stripped), and for every character of
    the result the index of the original character it came from."""
    collapsed: list[str] = []
    origin: list[int] = []
    for match in re.finditer(r"\S+", text):
        if collapsed:
            collapsed.append(" ")
            origin.append(match.start() - 1)
        collapsed.extend(match.group())
        origin.extend(range(match.start(), match.end()))
    return "".join(collapsed), origin


def find_evidence_span(post: str, evidence: str, *, threshold: float = DEFAULT_FUZZY_THRESHOLD) -> SpanMatch:
    """Find ``evidence`` in ``post``: exact match, then whitespace-normalised, then the closest run of whole
    words (difflib ratio, case-insensitive) if it scores at least ``threshold``; else ``not_found``."""
    if not evidence.strip():
        return SpanMatch("not_found")
    start = post.find(evidence)
    if start >= 0:
        return SpanMatch("exact", start, start + len(evidence), 1.0)
    post_flat, origin = _collapse_whitespace(post)
    evidence_flat, _ = _collapse_whitespace(evidence)
    start = post_flat.find(evidence_flat)
    if start >= 0:
        return SpanMatch("whitespace", origin[start], origin[start + len(evidence_flat) - 1] + 1, 1.0)
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", post)]
    length = len(evidence_flat.split(" "))
    target = evidence_flat.lower()
    best = SpanMatch("not_found")
    matcher = difflib.SequenceMatcher(autojunk=False)
    matcher.set_seq2(target)
    for first in range(len(words)):
        for count in range(max(1, length - 2), length + 3):
            last = first + count - 1
            if last >= len(words):
                break
            candidate = " ".join(post[s:e] for s, e in words[first : last + 1]).lower()
            matcher.set_seq1(candidate)
            if matcher.real_quick_ratio() <= best.score or matcher.quick_ratio() <= best.score:
                continue
            score = matcher.ratio()
            if score > best.score:
                best = SpanMatch("fuzzy", words[first][0], words[last][1], score)
    if best.score >= threshold:
        return best
    return SpanMatch("not_found", score=best.score)


def char_span_to_token_span(
    offsets: Sequence[tuple[int, int]], char_start: int, char_end: int
) -> tuple[int, int] | None:
    """First and last (inclusive) token whose characters overlap ``[char_start, char_end)``; special
    tokens (empty offsets) never count. None when no token overlaps (e.g. truncated away)."""
    overlapping = [i for i, (begin, end) in enumerate(offsets) if end > begin and begin < char_end and end > char_start]
    if not overlapping:
        return None
    return overlapping[0], overlapping[-1]


def find_evidence_token_span(
    post: str, evidence: str, tokenizer: Any, *, threshold: float = DEFAULT_FUZZY_THRESHOLD
) -> SpanMatch:
    """:func:`find_evidence_span` plus the token span in ``tokenizer(post)`` (a fast tokenizer)."""
    match = find_evidence_span(post, evidence, threshold=threshold)
    if match.found and match.char_start is not None and match.char_end is not None:
        offsets = tokenizer(post, return_offsets_mapping=True)["offset_mapping"]
        span = char_span_to_token_span(offsets, match.char_start, match.char_end)
        if span is None:
            return SpanMatch("not_found", score=match.score)
        match.token_start, match.token_end = span
    return match


# ----------------------------------------------------------------------------- metrics (SQuAD v1.1)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    predicted, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    common = collections.Counter(predicted) & collections.Counter(gold)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Sequence[str], examples: Sequence[QAExample]) -> dict[str, float]:
    """Exact match and F1 in percent, each the best over an example's gold answers."""
    if not examples:
        return {"exact_match": 0.0, "f1": 0.0, "count": 0}
    em = sum(max(exact_match(p, a) for a in ex.answers) for p, ex in zip(predictions, examples, strict=True))
    f1 = sum(max(f1_score(p, a) for a in ex.answers) for p, ex in zip(predictions, examples, strict=True))
    return {"exact_match": 100.0 * em / len(examples), "f1": 100.0 * f1 / len(examples), "count": len(examples)}


# ----------------------------------------------------------------------------- features


@dataclass
class QAFeature:
    text: str  # the rendered input the offsets point into
    input_ids: list[int]
    offsets: list[tuple[int, int]]
    context_start: int  # character range of the context in the rendered input
    context_end: int
    start_position: int | None  # token positions of the first answer; None when truncated away
    end_position: int | None


def encode_example(example: QAExample, tokenizer: Any, prompt: PromptConfig, max_length: int) -> QAFeature:
    text, context_start = prompt.render(example.question, example.context)
    encoded = tokenizer(text, return_offsets_mapping=True, truncation=True, max_length=max_length)
    offsets = [tuple(pair) for pair in encoded["offset_mapping"]]
    span = None
    if example.answers:
        begin = context_start + example.answer_starts[0]
        span = char_span_to_token_span(offsets, begin, begin + len(example.answers[0]))
    return QAFeature(
        text,
        list(encoded["input_ids"]),
        offsets,
        context_start,
        context_start + len(example.context),
        span[0] if span else None,
        span[1] if span else None,
    )


DOCUMENT_STRIDE = 128  # tokens neighbouring windows share (transformers' run_qa's doc_stride)


def encode_windows(
    example: QAExample, tokenizer: Any, prompt: PromptConfig, max_length: int, stride: int = DOCUMENT_STRIDE
) -> list[QAFeature]:
    """The example as one feature, or, when its rendered input is longer than ``max_length`` tokens, as
    overlapping windows of its context (``stride`` tokens shared by neighbours; transformers' run_qa does the
    same), each rendered with the question. A window that does not hold the whole answer has no position."""
    text, _ = prompt.render(example.question, example.context)
    rendered_length = len(tokenizer(text)["input_ids"])
    if rendered_length <= max_length:
        return [encode_example(example, tokenizer, prompt, max_length)]
    offsets = tokenizer(example.context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    overhead = rendered_length - len(offsets)
    budget = max_length - overhead - 2  # tokens may merge differently at a window's edges
    if budget <= stride:
        raise InvalidArgument(
            f"--max-length {max_length} leaves {budget} context tokens: not more than --stride {stride}"
        )
    return [
        encode_example(
            _window(example, offsets[first][0], offsets[min(first + budget, len(offsets)) - 1][1]),
            tokenizer,
            prompt,
            max_length,
        )
        for first in range(0, max(1, len(offsets) - stride), budget - stride)
    ]


def _window(example: QAExample, begin: int, end: int) -> QAExample:
    """The example with its context cut to characters ``begin:end`` (the answer kept if it lies inside)."""
    answers, starts = [], []
    for answer, start in zip(example.answers, example.answer_starts, strict=False):
        if begin <= start and start + len(answer) <= end:
            answers.append(answer)
            starts.append(start - begin)
    return QAExample(example.id, example.question, example.context[begin:end], answers, starts)


def pad_batch(features: Sequence[QAFeature], pad_token_id: int, with_labels: bool) -> dict[str, Any]:
    """Right-padded tensors for a batch of features."""
    import torch

    longest = max(len(f.input_ids) for f in features)
    input_ids = torch.full((len(features), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(features), longest), dtype=torch.long)
    for row, feature in enumerate(features):
        input_ids[row, : len(feature.input_ids)] = torch.tensor(feature.input_ids)
        attention_mask[row, : len(feature.input_ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if with_labels:
        batch["start_positions"] = torch.tensor([f.start_position for f in features], dtype=torch.long)
        batch["end_positions"] = torch.tensor([f.end_position for f in features], dtype=torch.long)
    return batch


# ----------------------------------------------------------------------------- prediction


def best_spans(start_logits: Any, end_logits: Any, allowed: Any, max_answer_tokens: int) -> Any:
    """For each row the (start, end) maximising start + end logit with start <= end, both allowed and at
    most ``max_answer_tokens`` apart. Vectorised over the batch."""
    import torch

    length = start_logits.shape[1]
    scores = start_logits[:, :, None] + end_logits[:, None, :]
    positions = torch.arange(length)
    distance = positions[None, :] - positions[:, None]
    valid = (distance >= 0) & (distance < max_answer_tokens)
    valid = valid[None] & allowed[:, :, None] & allowed[:, None, :]
    scores = scores.masked_fill(~valid, float("-inf"))
    flat = scores.reshape(scores.shape[0], -1).argmax(-1)
    return torch.stack([flat // length, flat % length], dim=-1)


def predict_answers(
    model: Any,
    tokenizer: Any,
    examples: Sequence[QAExample],
    prompt: PromptConfig,
    *,
    max_length: int = 384,
    batch_size: int = 16,
    max_answer_tokens: int = 30,
    stride: int = DOCUMENT_STRIDE,
) -> list[str]:
    """The answer text the model picks inside each context: the best-scoring span (start + end logit) over
    all of the context's windows (:func:`encode_windows`)."""
    windows = [
        (index, w)
        for index, ex in enumerate(examples)
        for w in encode_windows(ex, tokenizer, prompt, max_length, stride)
    ]
    best: dict[int, tuple[float, str]] = {}
    for first in range(0, len(windows), batch_size):
        indices, features = zip(*windows[first : first + batch_size], strict=True)
        for index, (score, answer) in zip(
            indices, _best_answers(model, tokenizer, list(features), max_answer_tokens), strict=True
        ):
            if index not in best or score > best[index][0]:
                best[index] = (score, answer)
    return [best[index][1] for index in range(len(examples))]


def _best_answers(
    model: Any, tokenizer: Any, features: list[QAFeature], max_answer_tokens: int
) -> list[tuple[float, str]]:
    """(score, answer text) of the best span inside the context of each feature."""
    import torch

    model.eval()
    batch = pad_batch(features, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0, with_labels=False)
    with torch.no_grad():
        output = model(**batch)
    allowed = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
    for row, feature in enumerate(features):
        for index, (begin, end) in enumerate(feature.offsets):
            allowed[row, index] = end > begin and begin >= feature.context_start and end <= feature.context_end
    start_logits, end_logits = output.start_logits.float(), output.end_logits.float()
    spans = best_spans(start_logits, end_logits, allowed, max_answer_tokens)
    found = []
    for row, (feature, (start, end)) in enumerate(zip(features, spans.tolist(), strict=True)):
        if not (feature.offsets[start][1] > feature.offsets[start][0]):
            found.append((float("-inf"), ""))
            continue
        score = float(start_logits[row, start] + end_logits[row, end])
        found.append((score, feature.text[feature.offsets[start][0] : feature.offsets[end][1]]))
    return found


def evaluate_qa(
    model: Any, tokenizer: Any, examples: Sequence[QAExample], prompt: PromptConfig, **kwargs: Any
) -> dict[str, float]:
    return squad_metrics(predict_answers(model, tokenizer, examples, prompt, **kwargs), examples)


# ----------------------------------------------------------------------------- training
