"""Write a model folder the way every ctxext command does: atomically, with support files, length
settings, numeric checks run on the finished folder before it is moved into place, and a manifest."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ctxext.card import CARD_NAME, write_model_card
from ctxext.io import (
    ModelFolder,
    OutTensor,
    Source,
    TensorInfo,
    WrittenTensor,
    WrittenWeights,
    atomic_output,
    copy_support_files,
    read_json,
    update_json,
    write_json,
    write_safetensors,
)
from ctxext.manifest import Check, OperationRecord, build_manifest, write_manifest, written_summary
from ctxext.sentence_folder import SENTENCE_CONFIG, refresh_library_versions

ProgressFn = Callable[[str, int, int], None]
"""Called as ``progress(task, done, total)``; the CLI renders it, the library never prints."""


def no_progress(task: str, done: int, total: int) -> None:
    return None


@dataclass
class OutputPlan:
    """Everything a command wants written: tensors, config changes and the records of its operations.

    The folder is staged in this order: support files copied from ``support_from``, ``tokenizer`` saved over
    them, config.json, tokenizer length settings, ``extra_files``, the weights; then the checks, the manifest
    and the model card."""

    command: str
    options: dict[str, Any]
    sources: Mapping[str, tuple[Source, Mapping[str, str]]]
    tensors: list[OutTensor]
    operations: list[OperationRecord]
    config: dict[str, Any]
    model_max_length: int | None = None
    support_from: ModelFolder | None = None
    extra_files: dict[str, Any] = field(default_factory=dict)
    """JSON files to write (relative path -> content), over any copied file of that name."""
    extra_weights: dict[str, list[OutTensor]] = field(default_factory=dict)
    """Safetensors files beside the model (adapters): relative path -> tensors; hashed and verified too."""
    tokenizer: Any = None
    """A tokenizer changed in memory (new special tokens): ``save_pretrained`` into the model folder over the
    copied one; the files it wrote are listed in the first operation's ``files["tokenizer"]``."""
    protect: list[str | Path] = field(default_factory=list)
    """Inputs besides the sources (training data) that the output must never replace."""
    require_checks: bool = False
    """True: the first failed check raises :class:`~ctxext.errors.CheckFailed` and nothing is written.
    False: checks are recorded, passed or not."""


@dataclass
class OutputResult:
    """A written model folder and its manifest; its summary is what the manifest says was done."""

    path: Path
    manifest: dict[str, Any]

    view = "written"

    def summary(self) -> dict[str, Any]:
        return written_summary(self.path, self.manifest)


def write_model_folder(
    plan: OutputPlan,
    out: str | Path,
    *,
    force: bool = False,
    checks: Callable[[Path], list[Check]] | None = None,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
) -> OutputResult:
    """Write ``plan`` into ``out``; ``checks`` runs on the finished temporary folder and any failure
    leaves nothing behind."""
    protect = [source.path for source, _ in plan.sources.values()] + list(plan.protect)
    with atomic_output(out, force=force, protect=protect) as staging:
        model_dir = stage_files(plan, staging)
        weights, extra_weights = write_weights(plan, staging, model_dir, progress)
        if checks is not None:
            progress("numeric checks", 0, 1)
            record_checks(plan, checks(staging))
            progress("numeric checks", 1, 1)
        manifest = build_manifest(
            command=plan.command,
            options=plan.options,
            sources=plan.sources,
            operations=plan.operations,
            weights=weights,
            weights_dir=str(model_dir.relative_to(staging)),
            argv=argv,
            extra_weights=extra_weights,
        )
        write_manifest(staging, manifest)
        write_model_card(
            staging,
            manifest,
            name=Path(out).name,
            source_card=plan.support_from.root / CARD_NAME if plan.support_from else None,
        )
    return OutputResult(path=Path(out).expanduser().absolute(), manifest=manifest)


def stage_files(plan: OutputPlan, staging: Path) -> Path:
    """Everything but the weights, written into ``staging``; returns the model folder inside it."""
    model_dir = staging
    record = plan.operations[0]
    if plan.support_from is not None:
        copied, left_out = copy_support_files(plan.support_from, staging)
        model_dir = staging / plan.support_from.relative_model_dir
        record.files.setdefault("copied", []).extend(copied)
        record.files.setdefault("left_out", []).extend(left_out)
    model_dir.mkdir(parents=True, exist_ok=True)
    if plan.tokenizer is not None:
        saved = plan.tokenizer.save_pretrained(model_dir)
        record.files["tokenizer"] = sorted(os.path.relpath(path, staging) for path in saved if Path(path).is_file())
    write_json(model_dir / "config.json", publishable_config(plan.config))
    for relative, content in plan.extra_files.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        write_json(staging / relative, content)
    refresh_library_versions(staging)
    if plan.model_max_length is not None:
        set_tokenizer_length(staging, model_dir, plan.model_max_length, record)
    return model_dir


def write_weights(
    plan: OutputPlan, staging: Path, model_dir: Path, progress: ProgressFn
) -> tuple[WrittenWeights, dict[str, dict[str, WrittenTensor]]]:
    """The model's safetensors and the extra weight files, each tensor hashed as it is written."""
    total = len(plan.tensors)
    done = 0

    def on_tensor(info: TensorInfo) -> None:
        nonlocal done
        done += 1
        progress("writing tensors", done, total)

    weights = write_safetensors(model_dir, plan.tensors, on_tensor=on_tensor)
    extra_weights = {}
    for relative, tensors in plan.extra_weights.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        written = write_safetensors(
            (staging / relative).parent, tensors, file_name=Path(relative).name, max_shard_bytes=2**62
        )
        extra_weights[relative] = written.tensors
    return weights, extra_weights


def record_checks(plan: OutputPlan, found: list[Check]) -> None:
    """Add checks to the last operation; with ``plan.require_checks`` the first failure stops the write."""
    record = plan.operations[-1]
    for check in found:
        if plan.require_checks:
            record.require(check)
        else:
            record.checks.append(check)


def publishable_config(config: dict[str, Any]) -> dict[str, Any]:
    """The config as written: no ``_name_or_path`` (a local, often temporary, path means nothing elsewhere)."""
    return {key: value for key, value in config.items() if key != "_name_or_path"}


def set_tokenizer_length(root: Path, model_dir: Path, length: int, record: OperationRecord) -> None:
    """Tell the tokenizer and sentence-transformers the new maximum length."""
    for folder in dict.fromkeys([root, model_dir]):
        tokenizer_config = folder / "tokenizer_config.json"
        if tokenizer_config.is_file():
            old = update_json(tokenizer_config, model_max_length=length)
            if old:
                record.config_changes[f"{_relative(tokenizer_config, root)}:model_max_length"] = length
        st_config = folder / SENTENCE_CONFIG
        if st_config.is_file():
            old = update_json(st_config, max_seq_length=length)
            if old:
                record.config_changes[f"{_relative(st_config, root)}:max_seq_length"] = length


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The config keys a command set or changed, with their new values."""
    return {key: value for key, value in new.items() if old.get(key) != value}


def source_config(folder: ModelFolder) -> dict[str, Any]:
    return read_json(folder.model_dir / "config.json")


def tied_duplicates(model: Any) -> dict[str, str]:
    """State-dict entries that share storage with an earlier entry (tied decoders): name -> the name kept."""
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    tied: dict[str, str] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key in seen:
            tied[name] = seen[key]
        else:
            seen[key] = name
    return tied


def model_tensors(model: Any, extra: dict[str, Any] | None = None) -> list[OutTensor]:
    """The tensors to write for a model: its state dict without tied duplicates, plus extra tensors."""
    tied = tied_duplicates(model)
    state = model.state_dict()
    tensors = [
        OutTensor.from_tensor(name, tensor.detach().contiguous()) for name, tensor in state.items() if name not in tied
    ]
    tensors += [OutTensor.from_tensor(name, tensor.contiguous()) for name, tensor in (extra or {}).items()]
    return tensors
