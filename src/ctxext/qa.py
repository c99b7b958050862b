"""Extractive question answering on a (flipped) decoder: prompts, span finding, SQuAD data, metrics and
fine-tuning on the Hugging Face Trainer.

The input is one string built from a template with prompt-structure special tokens (default
``[INST] {question} [/INST] [POST] {context} [/POST]``); answers are located in it through the fast
tokenizer's offset mapping, so every tokenizer works the same way (no pair-sequence conventions).
torch and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import collections
import difflib
import json
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxext.errors import CorruptCheckpoint, InvalidArgument
from ctxext.io import input_file, read_jsonl
from ctxext.train.mlm import TrainSettings

DEFAULT_SPECIAL_TOKENS = ("[INST]", "[/INST]", "[POST]", "[/POST]", "[CRITERION]", "[/CRITERION]")
DEFAULT_TEMPLATE = "[INST] {question} [/INST] [POST] {context} [/POST]"
DEFAULT_FUZZY_THRESHOLD = 0.85


# ----------------------------------------------------------------------------- prompt structure


@dataclass(frozen=True)
class PromptConfig:
    """Special tokens added to the tokenizer and the template that places question and context."""

    special_tokens: tuple[str, ...] = DEFAULT_SPECIAL_TOKENS
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        if self.template.count("{context}") != 1 or self.template.count("{question}") > 1:
            raise InvalidArgument("the QA template needs {context} exactly once and {question} at most once")

    def render(self, question: str, context: str) -> tuple[str, int]:
        """The model input and the character offset at which the context starts in it."""
        before, after = self.template.split("{context}")
        prefix = before.replace("{question}", question)
        return prefix + context + after.replace("{question}", question), len(prefix)

    def describe(self) -> dict[str, Any]:
        return {"special_tokens": list(self.special_tokens), "template": self.template}


def load_prompt_config(path: str | Path | None) -> PromptConfig:
    """Read a JSON file ``{"special_tokens": [...], "template": "..."}``; None gives the defaults."""
    if path is None:
        return PromptConfig()
    path = input_file(path, "special-tokens config")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptCheckpoint(f"{path} is not valid JSON ({error})") from None
    tokens = data.get("special_tokens") if isinstance(data, dict) else None
    if (
        not isinstance(tokens, list)
        or not tokens
        or not all(isinstance(t, str) and t.strip() for t in tokens)
    ):
        raise InvalidArgument(f"{path}: 'special_tokens' must be a non-empty list of strings")
    return PromptConfig(tuple(tokens), data.get("template", DEFAULT_TEMPLATE))


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
    overlapping = [
        i for i, (begin, end) in enumerate(offsets) if end > begin and begin < char_end and end > char_start
    ]
    if not overlapping:
        return None
    return overlapping[0], overlapping[-1]


def find_evidence_token_span(
    post: str, evidence: str, tokenizer: Any, *, threshold: float = DEFAULT_FUZZY_THRESHOLD
) -> SpanMatch:
    """:func:`find_evidence_span` plus the token span in ``tokenizer(post)`` (a fast tokenizer)."""
    match = find_evidence_span(post, evidence, threshold=threshold)
    if match.found:
        offsets = tokenizer(post, return_offsets_mapping=True)["offset_mapping"]
        span = char_span_to_token_span(offsets, match.char_start, match.char_end)
        if span is None:
            return SpanMatch("not_found", score=match.score)
        match.token_start, match.token_end = span
    return match


# ----------------------------------------------------------------------------- SQuAD-format data


@dataclass
class QAExample:
    id: str
    question: str
    context: str
    answers: list[str]
    answer_starts: list[int] = field(default_factory=list)


def read_squad_jsonl(path: str | Path) -> list[QAExample]:
    """One SQuAD record per line: ``{"id", "question", "context", "answers": {"text": [...],
    "answer_start": [...]}}``. Every answer must sit at its answer_start in the context."""
    path = Path(path)
    examples = []
    for number, record in read_jsonl(input_file(path, "QA data")):
        try:
            answers = record["answers"]
            example = QAExample(
                str(record.get("id", number)),
                record["question"],
                record["context"],
                list(answers["text"]),
                [int(s) for s in answers["answer_start"]],
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptCheckpoint(
                f"{path}:{number}: not a SQuAD record ({type(error).__name__}: {error})"
            ) from None
        for text, start in zip(example.answers, example.answer_starts, strict=True):
            if example.context[start : start + len(text)] != text:
                raise CorruptCheckpoint(f"{path}:{number}: answer {text!r} is not at answer_start {start}")
        examples.append(example)
    if not examples:
        raise InvalidArgument(f"{path} holds no QA records")
    return examples


def write_squad_jsonl(path: str | Path, examples: Iterable[QAExample]) -> int:
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
    return {
        "exact_match": 100.0 * em / len(examples),
        "f1": 100.0 * f1 / len(examples),
        "count": len(examples),
    }


# ----------------------------------------------------------------------------- features


@dataclass
class QAFeature:
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
        list(encoded["input_ids"]),
        offsets,
        context_start,
        context_start + len(example.context),
        span[0] if span else None,
        span[1] if span else None,
    )


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
) -> list[str]:
    """The answer text the model picks inside each context."""
    import torch

    model.eval()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    answers: list[str] = []
    for first in range(0, len(examples), batch_size):
        chunk = examples[first : first + batch_size]
        features = [encode_example(ex, tokenizer, prompt, max_length) for ex in chunk]
        batch = pad_batch(features, pad_id, with_labels=False)
        with torch.no_grad():
            output = model(**batch)
        allowed = torch.zeros_like(batch["attention_mask"], dtype=torch.bool)
        for row, feature in enumerate(features):
            for index, (begin, end) in enumerate(feature.offsets):
                allowed[row, index] = (
                    end > begin and begin >= feature.context_start and end <= feature.context_end
                )
        spans = best_spans(output.start_logits.float(), output.end_logits.float(), allowed, max_answer_tokens)
        for example, feature, (start, end) in zip(chunk, features, spans.tolist(), strict=True):
            if not (feature.offsets[start][1] > feature.offsets[start][0]):
                answers.append("")
                continue
            text, _ = prompt.render(example.question, example.context)
            answers.append(text[feature.offsets[start][0] : feature.offsets[end][1]])
    return answers


def evaluate_qa(
    model: Any, tokenizer: Any, examples: Sequence[QAExample], prompt: PromptConfig, **kwargs: Any
) -> dict[str, float]:
    return squad_metrics(predict_answers(model, tokenizer, examples, prompt, **kwargs), examples)


# ----------------------------------------------------------------------------- training


@dataclass
class QATrainingSettings(TrainSettings):
    """The training stages' settings, with QA's defaults, plus its input length and whether the token
    embeddings stay fixed."""

    steps: int = 100
    batch_size: int = 8
    learning_rate: float = 3e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    progress_bars: bool = False
    max_length: int = 384
    freeze_embeddings: bool = False

    def describe(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class QATrainingResult:
    train_examples: int
    skipped_examples: int  # answers truncated away: not trainable
    final_loss: float | None
    losses: list[float]
    metrics: dict[str, float] | None


def train_qa(
    model: Any,
    tokenizer: Any,
    train_examples: Sequence[QAExample],
    prompt: PromptConfig,
    settings: QATrainingSettings,
    *,
    eval_examples: Sequence[QAExample] | None = None,
    work_dir: str | Path,
) -> QATrainingResult:
    """Fine-tune ``model`` (a ...ForQuestionAnswering) in place with the HF Trainer, then evaluate."""
    from transformers import PrinterCallback, set_seed

    from ctxext.train.mlm import ListDataset, build_trainer, training_arguments

    set_seed(settings.seed)
    features = [encode_example(ex, tokenizer, prompt, settings.max_length) for ex in train_examples]
    usable = [f for f in features if f.start_position is not None]
    if not usable:
        raise InvalidArgument("no training example keeps its answer within --max-length tokens")
    if settings.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainer = build_trainer(model, None, lambda batch: pad_batch(batch, pad_id, with_labels=True),
                            ListDataset(usable), None, training_arguments(Path(work_dir), settings, save=False))
    trainer.remove_callback(PrinterCallback)  # the library never prints; losses stay in the log history
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = None
    if eval_examples:
        metrics = evaluate_qa(model, tokenizer, eval_examples, prompt, max_length=settings.max_length)
    return QATrainingResult(
        len(usable), len(features) - len(usable), losses[-1] if losses else None, losses, metrics
    )


# ----------------------------------------------------------------------------- the finetune-qa operation


def finetune_qa(
    ref: str,
    train_path: str | Path,
    out: str | Path,
    *,
    eval_path: str | Path | None = None,
    settings: QATrainingSettings | None = None,
    special_tokens: str | Path | None = None,
    force: bool = False,
    argv: list[str] | None = None,
):
    """Fine-tune a QA model folder (``ctxext flip --head qa``) on SQuAD-format jsonl and write the result
    (atomically, with a manifest holding exact match and F1 on ``eval_path``)."""
    import tempfile

    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from ctxext.card import CARD_NAME, write_model_card
    from ctxext.checkpoint import OutputResult
    from ctxext.errors import CheckFailed
    from ctxext.flip import config_for_saving, register
    from ctxext.io import (
        CheckpointReader,
        OutTensor,
        atomic_output,
        check_output_target,
        copy_support_files,
        open_model,
        write_json,
    )
    from ctxext.io import write_safetensors as write_weights
    from ctxext.manifest import Check, OperationRecord, build_manifest, write_manifest

    settings = settings or QATrainingSettings()
    source, folder = open_model(ref)
    inputs = [source.path, train_path, *([eval_path] if eval_path else [])]
    out = check_output_target(out, force=force, protect=inputs)  # before training; atomic_output checks again
    prompt = load_prompt_config(special_tokens)
    train_examples = read_squad_jsonl(train_path)
    eval_examples = read_squad_jsonl(eval_path) if eval_path else None
    register()
    model, info = AutoModelForQuestionAnswering.from_pretrained(
        folder.model_dir, dtype=torch.float32, output_loading_info=True, trust_remote_code=False
    )
    problems = [k for k in info["missing_keys"] if not k.startswith("qa_outputs.")] + info["unexpected_keys"]
    if problems or info["mismatched_keys"]:
        raise CheckFailed(
            f"{folder.model_dir} does not load as a QA model: {problems[:3] or info['mismatched_keys']}"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder.model_dir, trust_remote_code=False)
    unknown = [t for t in prompt.special_tokens if t not in tokenizer.get_vocab()]
    if unknown:
        raise InvalidArgument(
            f"the tokenizer lacks the prompt tokens {unknown}: flip with --head qa and the same "
            "--special-tokens file first"
        )
    record = OperationRecord(
        "finetune_qa",
        parameters={
            **settings.describe(),
            "prompt": prompt.describe(),
            "train": str(train_path),
            "eval": str(eval_path),
        },
    )
    if info["missing_keys"]:
        record.notes.append("the folder had no QA head: qa_outputs started from transformers' default init")
    with tempfile.TemporaryDirectory(prefix="ctxext-qa-") as work_dir:
        result = train_qa(
            model, tokenizer, train_examples, prompt, settings, eval_examples=eval_examples, work_dir=work_dir
        )
    model = model.cpu().eval()
    record.parameters.update(train_examples=result.train_examples, skipped_examples=result.skipped_examples)
    record.checks.append(
        Check(
            "final training loss",
            float(result.final_loss or 0.0),
            detail=f"losses logged: {[round(x, 4) for x in result.losses]}",
        )
    )
    if result.metrics:
        record.checks.append(
            Check(
                "eval exact match (%)",
                result.metrics["exact_match"],
                detail=f"{result.metrics['count']} examples",
            )
        )
        record.checks.append(
            Check("eval F1 (%)", result.metrics["f1"], detail=f"{result.metrics['count']} examples")
        )
    state = model.state_dict()
    reader_names = set(CheckpointReader(folder).names)
    for name in state:
        (record.modified if name in reader_names else record.created).append(name)
    config = config_for_saving(model.config, type(model).__name__, "float32")
    with atomic_output(out, force=force, protect=inputs) as staging:
        copied, left_out = copy_support_files(folder, staging)
        record.files.update(copied=copied, left_out=left_out)
        tokenizer.save_pretrained(staging / folder.relative_model_dir)
        write_json(staging / folder.relative_model_dir / "config.json", config)
        weights = write_weights(
            staging / folder.relative_model_dir,
            [OutTensor.from_tensor(n, t.detach().contiguous()) for n, t in state.items()],
        )
        reloaded = AutoModelForQuestionAnswering.from_pretrained(
            staging / folder.relative_model_dir, trust_remote_code=False
        ).eval()
        features = [
            encode_example(ex, tokenizer, prompt, settings.max_length)
            for ex in (eval_examples or train_examples)[:4]
        ]
        batch = pad_batch(features, tokenizer.pad_token_id or 0, with_labels=False)
        with torch.no_grad():
            before, after = model(**batch), reloaded(**batch)
        real = batch["attention_mask"].bool()
        difference = float((before.start_logits - after.start_logits)[real].abs().max())
        record.require(
            Check("reloaded equals trained: QA start logits", difference, 0.0, passed=difference == 0.0)
        )
        manifest = build_manifest(
            command="finetune-qa",
            options={"ref": ref, **settings.describe()},
            sources={"model": (source, CheckpointReader(folder).sha256_of_files())},
            operations=[record],
            weights=weights,
            weights_dir=folder.relative_model_dir,
            argv=argv,
        )
        write_manifest(staging, manifest)
        write_model_card(staging, manifest, name=out.name, source_card=folder.root / CARD_NAME)
    return OutputResult(path=out, manifest=manifest), result
