"""The extractive-QA prompt format: the special tokens a QA head adds to the tokenizer and the template that
places question and context in one input string. Shared by ``flip --head qa`` (which adds the tokens) and
``ctxext.qa`` (which renders the inputs), so neither imports the other."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.errors import CorruptCheckpoint, InvalidArgument
from ctxext.io import input_file

DEFAULT_SPECIAL_TOKENS = ("[INST]", "[/INST]", "[POST]", "[/POST]", "[CRITERION]", "[/CRITERION]")
DEFAULT_TEMPLATE = "[INST] {question} [/INST] [POST] {context} [/POST]"


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
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t.strip() for t in tokens):
        raise InvalidArgument(f"{path}: 'special_tokens' must be a non-empty list of strings")
    return PromptConfig(tuple(tokens), data.get("template", DEFAULT_TEMPLATE))
