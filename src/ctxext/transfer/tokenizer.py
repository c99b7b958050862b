"""The tokenizer side of a transfer: the [SEP] id a config may lack, and global registers (reserved tokens that
fill BigBird's global blocks)."""

from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ctxext.errors import SourceNotFound, UnsupportedArchitecture
from ctxext.io import ModelFolder, read_json
from ctxext.manifest import OperationRecord


def tokenizer_sep_id(folder: ModelFolder) -> int | None:
    """The [SEP] id from the tokenizer files (tokenizer.json through the ``tokenizers`` library, else
    vocab.txt), for configs that do not name it (BigBird's default is 66). A transformers tokenizer class
    would import transformers, which costs seconds."""
    from tokenizers import Tokenizer

    for directory in dict.fromkeys([folder.model_dir, folder.root]):
        sep = _sep_token(directory)
        tokenizer_json, vocab = directory / "tokenizer.json", directory / "vocab.txt"
        if tokenizer_json.is_file():
            with contextlib.suppress(Exception):  # tokenizers raises a bare Exception on a file it cannot read
                found = Tokenizer.from_file(str(tokenizer_json)).token_to_id(sep)
                if found is not None:
                    return found
        if vocab.is_file():
            tokens = vocab.read_text(encoding="utf-8", errors="replace").splitlines()
            if sep in tokens:
                return tokens.index(sep)
    return None


def _sep_token(directory: Path) -> str:
    """The separator the tokenizer names (special_tokens_map.json or tokenizer_config.json), else [SEP]."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = directory / name
        token = read_json(path).get("sep_token") if path.is_file() else None
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str):
            return token
    return "[SEP]"


def register_tokenizer_files(folder: ModelFolder, block_size: int, record: OperationRecord) -> dict[str, Any]:
    """The tokenizer.json with global registers (``reserve_global_blocks``), noted in ``record``."""
    tokenizer_path, registers = _registered_tokenizer(folder, block_size)
    record.notes.append(
        f"global registers: the tokenizer puts {len(registers.head)} reserved tokens after [CLS] "
        f"({registers.head[0]}..{registers.head[-1]}) and {len(registers.tail)} before the last [SEP] "
        f"({registers.tail[0]}..{registers.tail[-1]}), so no text lands in BigBird's global blocks"
    )
    config_path = str(Path(tokenizer_path).with_name("tokenizer_config.json"))
    return {tokenizer_path: registers.tokenizer, config_path: registered_tokenizer_config(folder.root / config_path)}


def registered_tokenizer_config(path: Path) -> dict[str, Any]:
    """The tokenizer_config.json beside a registered tokenizer.json: loaded as ``PreTrainedTokenizerFast``,
    which takes tokenizer.json as it is. transformers 5 builds a ``BertTokenizer`` from a BERT config and
    replaces the stored post-processor, which would drop the registers without a word."""
    config = read_json(path) if path.is_file() else {}
    return {**config, "tokenizer_class": "PreTrainedTokenizerFast"}


@dataclass
class GlobalRegisters:
    tokenizer: dict[str, Any]
    head: list[str]
    tail: list[str]


def reserve_global_blocks(tokenizer: dict[str, Any], block_size: int) -> GlobalRegisters:
    """A copy of a BERT-style ``tokenizer.json`` whose template puts ``block_size - 1`` reserved tokens
    (``[unusedN]``) after [CLS] and as many before the last [SEP].

    BigBird's global tokens are the first and last block of the input: every token attends to them. Text
    there reaches the whole sequence while text anywhere else reaches a few blocks, so a document whose
    key sentence lands in a global block outweighs every other (passkey: all wrong answers go to them).
    With registers, the global blocks hold the same tokens for every input and gather the whole document
    evenly, as BigBird-ETC's extra global tokens do; any tokenizer built from the file adds them."""
    processor = tokenizer.get("post_processor") or {}
    vocabulary = (tokenizer.get("model") or {}).get("vocab") or {}
    if processor.get("type") != "TemplateProcessing" or len(processor.get("single", [])) != 3:
        raise UnsupportedArchitecture("--global-registers needs a BERT-style tokenizer.json ([CLS] $A [SEP])")
    reserved = sorted(
        (name for name in vocabulary if re.fullmatch(r"\[unused\d+\]", name)), key=lambda name: int(name[7:-1])
    )
    count = block_size - 1
    if len(reserved) < 2 * count:
        raise UnsupportedArchitecture(
            f"--global-registers needs {2 * count} [unusedN] tokens in the vocabulary; it has {len(reserved)}"
        )
    head, tail = reserved[:count], reserved[count : 2 * count]
    result = copy.deepcopy(tokenizer)
    template = result["post_processor"]
    for name, tokens in (("[GLOBAL_HEAD]", head), ("[GLOBAL_TAIL]", tail)):
        template["special_tokens"][name] = {"id": name, "ids": [vocabulary[t] for t in tokens], "tokens": tokens}

    def register(name: str, type_id: int) -> dict[str, Any]:
        return {"SpecialToken": {"id": name, "type_id": type_id}}

    first, text, last = template["single"]
    template["single"] = [first, register("[GLOBAL_HEAD]", 0), text, register("[GLOBAL_TAIL]", 0), last]
    if len(template.get("pair", [])) == 5:
        first, a, middle, b, last = template["pair"]
        template["pair"] = [first, register("[GLOBAL_HEAD]", 0), a, middle, b, register("[GLOBAL_TAIL]", 1), last]
    return GlobalRegisters(result, head, tail)


def _registered_tokenizer(folder: ModelFolder, block_size: int) -> tuple[str, GlobalRegisters]:
    """(path of tokenizer.json relative to the output root, its registered version)."""
    for directory in dict.fromkeys([folder.model_dir, folder.root]):
        path = directory / "tokenizer.json"
        if path.is_file():
            return path.relative_to(folder.root).as_posix(), reserve_global_blocks(read_json(path), block_size)
    raise SourceNotFound(f"--global-registers: no tokenizer.json in {folder.root}")
