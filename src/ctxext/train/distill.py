"""Embedding distillation: a student learns a teacher's sentence embeddings, projected to its width by PCA.

The teacher encodes every training text once; the embeddings are cached on disk under a key made of the
sha256 of the teacher's weight files, the sha256 of the data files and the encoding settings, so a second
run (or a resumed one) does not encode again. A PCA fitted on a sample of them maps the teacher's width onto
the student's (``pca_projection.safetensors`` beside the output: ``components`` teacher x student, ``mean``);
targets are ``(teacher - mean) @ components``, L2-normalised when the student normalises its output. Loss:
mean squared error between the student's pooled embedding and its target. Output: a sentence-transformers
folder (``SentenceTransformer(OUT)`` loads it).

It trains on ctxext's shared runner, not sentence-transformers' trainer with ``MSELoss``: on the same targets
the two give the same losses at the same speed (``benchmarks/distill_loop.py``: 2.05 against 2.13 s per step),
and the runner is the one every stage shares (resume, rank-0 writes, the manifest) without needing ``datasets``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.data.sources import data_files, read_documents
from ctxext.errors import CtxextError, InvalidArgument
from ctxext.io import CheckpointReader, OutTensor, file_sha256, open_model, write_safetensors
from ctxext.manifest import Check, OperationRecord, read_manifest
from ctxext.options import with_fields
from ctxext.train.embedding import (
    EmbeddingModel,
    check_max_len,
    load_backbone,
    relative_to_model_dir,
    retrieval_callbacks,
    sentence_transformers_files,
)
from ctxext.train.runner import (
    ListDataset,
    RunOptions,
    TrainingResult,
    TrainingRun,
    TrainSettings,
    is_main_process,
    last_retrieval_check,
    main_process_first,
    write_trained_model,
)

PROJECTION_FILE = "pca_projection.safetensors"
CACHE_VERSION = "1"


# ----------------------------------------------------------------------------- teacher embeddings


def teacher_embeddings(
    teacher: str | Path,
    texts: Sequence[str],
    key_parts: dict[str, Any],
    *,
    teacher_sha256: dict[str, str],
    max_len: int,
    cache: Path | None,
    batch_size: int = 32,
) -> tuple[np.ndarray, Path | None, bool]:
    """The teacher's embeddings of ``texts`` (its own pooling and normalisation), from the cache when the key
    (``teacher_sha256``, its weight files' hashes + data sha256 + settings) matches; returns (embeddings, cache
    file, was cached)."""
    from ctxext.encode import load_encoder

    key_source = {
        "version": CACHE_VERSION,
        "teacher_weights_sha256": teacher_sha256,
        "max_len": max_len,
        "texts": len(texts),
        **key_parts,
    }
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()
    path = cache / f"teacher-{key[:32]}.npy" if cache else None
    if path is not None and path.is_file():
        embeddings = np.load(path, allow_pickle=False)
        if embeddings.shape[0] == len(texts):
            return embeddings, path, True
    encoder = load_encoder(teacher, max_length=max_len)
    embeddings = encoder.encode(list(texts), batch_size=batch_size, max_length=max_len).astype(np.float32)
    if path is not None and is_main_process():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.npy")
        np.save(temporary, embeddings, allow_pickle=False)
        temporary.replace(path)
        path.with_suffix(".json").write_text(json.dumps(key_source, sort_keys=True, indent=1))
    return embeddings, path, False


@dataclass
class Projection:
    components: np.ndarray  # teacher width x student width
    mean: np.ndarray
    explained_variance_ratio: float
    sample: int

    def apply(self, embeddings: np.ndarray) -> np.ndarray:
        return ((embeddings - self.mean) @ self.components).astype(np.float32)

    def save(self, path: Path) -> None:
        """Through ctxext's safetensors writer, whose header keeps its order (the same run writes the same bytes,
        so the manifest's sha256 of the file repeats)."""
        tensors = [
            OutTensor.from_array("components", self.components.astype(np.float32)),
            OutTensor.from_array("mean", self.mean.astype(np.float32)),
        ]
        metadata = {
            "explained_variance_ratio": f"{self.explained_variance_ratio}",
            "sample": str(self.sample),
            "usage": "(teacher - mean) @ components",
        }
        write_safetensors(path.parent, tensors, metadata=metadata, file_name=path.name)

    @classmethod
    def load(cls, path: Path) -> Projection:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as handle:
            metadata = handle.metadata() or {}
            components, mean = handle.get_tensor("components"), handle.get_tensor("mean")
        return cls(
            components, mean, float(metadata.get("explained_variance_ratio", "nan")), int(metadata.get("sample", 0))
        )


def fit_projection(embeddings: np.ndarray, dim: int, sample: int, seed: int = 0) -> Projection:
    """PCA of (up to) ``sample`` rows chosen with ``seed``; the student's width ``dim`` components."""
    from ctxext.guide import pca_projection

    rows = np.random.default_rng(seed).permutation(len(embeddings))[:sample]
    table = embeddings[np.sort(rows)].astype(np.float64)
    if len(table) < 2:
        raise InvalidArgument("distillation needs at least 2 texts to fit the PCA projection")
    projection = pca_projection(table, dim)
    return Projection(projection.matrix, table.mean(axis=0), projection.explained_variance_ratio, len(table))


# ----------------------------------------------------------------------------- training


class DistillModel(EmbeddingModel):
    """The student's pooled embedding (normalised if the student normalises) against its target: MSE."""

    def forward(self, input_ids: Any, attention_mask: Any, targets: Any) -> dict[str, Any]:
        import torch

        pooled = self.embed(input_ids, attention_mask, record=True)
        return {"loss": torch.nn.functional.mse_loss(pooled, targets)}


@dataclass
class TextTargetCollator:
    tokenizer: Any
    max_len: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = self.tokenizer(
            [e["text"] for e in examples], truncation=True, max_length=self.max_len, padding=True, return_tensors="pt"
        )
        return {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "targets": torch.as_tensor(np.stack([e["target"] for e in examples])),
        }


@dataclass
class DistillResult(TrainingResult):
    teacher_caches: list[Path]  # one per data file
    cached: bool  # every data file's embeddings came from the cache

    title = "distill"

    def stage_summary(self) -> dict[str, Any]:
        parameters = self.parameters
        caches = ", ".join(parameters.get("teacher_cache") or [])
        return {
            "texts": parameters.get("texts"),
            "teacher_cache": f"{caches} ({'hit' if self.cached else 'written'})",
            "pca_explained_variance": round(parameters.get("pca_explained_variance_ratio", 0.0), 4),
        }


@dataclass
class DistillTargets:
    """The teacher's embeddings of the training texts, projected onto the student's width."""

    texts: list[str]
    targets: np.ndarray
    teacher_dim: int
    projection: Projection
    cache_files: list[Path]
    cached: bool
    kept: bool  # the projection is the student's own, not fitted here
    teacher_sha256: dict[str, str]  # the teacher's weight files


def distill_targets(
    teacher: str | Path,
    files: Sequence[Path],
    dim: int,
    normalize: bool,
    max_len: int,
    pca_sample: int,
    seed: int,
    cache: Path | None,
    batch_size: int,
    student_folder: Any = None,
) -> DistillTargets:
    """The teacher's embeddings of the texts in ``files``, projected to the student's width: by the projection
    the student (``student_folder``) was distilled against from this teacher, or else by a PCA fitted on a
    sample of them. The teacher's weights are hashed once, for the cache keys, that check and the manifest."""
    teacher_sha256 = CheckpointReader(open_model(teacher)[1]).sha256_of_files()
    kept = kept_projection(student_folder, teacher_sha256) if student_folder is not None else None
    texts: list[str] = []
    tables, cache_files, hits = [], [], []
    for path in files:  # cached file by file, so that adding a file encodes only that file
        file_texts = read_documents([path])
        table, cache_file, cached = teacher_embeddings(
            teacher,
            file_texts,
            {"data_sha256": [file_sha256(path)]},
            teacher_sha256=teacher_sha256,
            max_len=max_len,
            cache=cache,
            batch_size=batch_size,
        )
        texts += file_texts
        tables.append(table)
        cache_files += [cache_file] if cache_file else []
        hits.append(cached)
    if len(texts) < 2:
        raise InvalidArgument("the data holds fewer than 2 texts: nothing to distil")
    embeddings = np.concatenate(tables)
    if embeddings.shape[1] < dim:
        raise InvalidArgument(
            f"the teacher's embeddings ({embeddings.shape[1]}) are narrower than the student "
            f"({dim}); PCA cannot widen them"
        )
    if kept is not None and kept.components.shape != (embeddings.shape[1], dim):
        raise InvalidArgument(
            f"the student's {PROJECTION_FILE} maps {kept.components.shape[0]} -> {kept.components.shape[1]}, "
            f"but this teacher is {embeddings.shape[1]} wide and the student {dim}"
        )
    projection = kept or fit_projection(embeddings, dim, pca_sample, seed)
    targets = projection.apply(embeddings)
    if normalize:
        targets /= np.maximum(np.linalg.norm(targets, axis=1, keepdims=True), 1e-12)
    return DistillTargets(
        texts, targets, int(embeddings.shape[1]), projection, cache_files, all(hits), kept is not None, teacher_sha256
    )


def kept_projection(folder: Any, teacher_sha256: dict[str, str]) -> Projection | None:
    """The projection a student distilled from this same teacher was trained against: distilling it further
    (more steps, other texts) keeps that basis, since a PCA refitted on other texts would rotate the targets
    away from its outputs. None for any other student (or teacher)."""
    path = Path(folder.root) / PROJECTION_FILE
    if not path.is_file():
        return None
    try:
        recorded = read_manifest(folder.root)["sources"]["teacher"]["weight_files_sha256"]
    except (CtxextError, KeyError, TypeError):  # no manifest, an unreadable one, or no teacher in it
        return None
    return Projection.load(path) if recorded == teacher_sha256 else None


@dataclass(frozen=True)
class DistillOptions:
    """How the teacher's embeddings become the student's targets (the CLI builds it from its options)."""

    max_len: int = 128
    """Tokens per text, for the student and the teacher."""
    pca_sample: int = 20000
    """Teacher embeddings the PCA is fitted on."""
    teacher_batch_size: int = 32
    """Texts the teacher encodes at a time."""

    def check(self) -> None:
        if self.pca_sample < 2:
            raise InvalidArgument(f"--pca-sample {self.pca_sample} must be at least 2")


# the options of a run the manifest records, beside the inputs, the data, the evaluation set, the teacher cache
# and the settings
RECORDED_OPTIONS = ("max_len", "pca_sample")


def distill(
    student: str | Path,
    teacher: str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    options: DistillOptions | None = None,
    *,
    settings: TrainSettings | None = None,
    eval_beir: str | Path | None = None,
    cache: str | Path | None = None,
    revision: str | None = None,
    teacher_revision: str | None = None,
    run_options: RunOptions | None = None,
    **fields: Any,
) -> DistillResult:
    """Distil ``teacher``'s sentence embeddings of the texts in ``data`` into ``student``; see the module doc.
    ``options`` (:class:`DistillOptions`): the texts' length, the PCA's sample, the teacher's batch; ``fields``: its
    fields as keywords (over ``options``). ``cache`` holds the teacher's embeddings (default: ctxext's cache dir;
    the string "none": off)."""
    from ctxext.encode import sentence_transformers_settings
    from ctxext.presets import cache_dir

    options = with_fields(DistillOptions, options, fields, "distill")
    options.check()
    settings = settings or TrainSettings(learning_rate=1e-4)
    cache_path = None if str(cache) == "none" else Path(cache) if cache else cache_dir() / "distill"

    source, folder = open_model(student, revision=revision)
    teacher_source, _ = open_model(teacher, revision=teacher_revision)
    inputs = [source.path, teacher_source.path, *data]
    run = TrainingRun(out, run_options, protect=inputs)
    backbone, tokenizer = load_backbone(folder)
    max_len = options.max_len
    check_max_len(folder, tokenizer, max_len, "student")
    pooling, normalize, _ = sentence_transformers_settings(folder)
    pooling = pooling or "mean"
    files = data_files(data)
    dim = backbone.config.hidden_size
    with main_process_first(settings):  # the main process encodes and caches; the others read its cache
        goal = distill_targets(  # the teacher's resolved folder: a hub teacher stays at the revision read above
            teacher_source.path,
            files,
            dim,
            normalize,
            max_len,
            options.pca_sample,
            settings.seed,
            cache_path,
            options.teacher_batch_size,
            folder,
        )
    model = DistillModel(backbone, pooling, normalize)
    model.train()
    callbacks = retrieval_callbacks(model, tokenizer, eval_beir, settings.eval_every, max_len, max_len)
    dataset = ListDataset(
        [{"text": text, "target": target} for text, target in zip(goal.texts, goal.targets, strict=True)]
    )
    run.train(model, tokenizer, TextTargetCollator(tokenizer, max_len), dataset, settings, callbacks=callbacks)
    history = run.history(retrieval=True)
    model.finish_training()
    record = _distill_record(run, settings, history, goal, model, files, max_len, eval_beir)
    recorded = {
        "student": str(student),
        "teacher": str(teacher),
        "data": [str(p) for p in files],
        **{key: getattr(options, key) for key in RECORDED_OPTIONS},
        "eval_beir": str(eval_beir) if eval_beir else None,
        "cache": str(cache_path) if cache_path else None,
        **vars(settings),
    }
    sources = {"model": source, "teacher": (teacher_source, goal.teacher_sha256)}
    path, manifest = run.write(
        lambda: _write_student(model, folder, run.out, record, goal, sources, recorded, run.options)
    )
    return DistillResult(path, manifest, history, run.global_step, goal.cache_files, goal.cached)


def _distill_record(
    run: TrainingRun,
    settings: TrainSettings,
    history: dict[str, Any],
    goal: DistillTargets,
    model: DistillModel,
    files: Sequence[Path],
    max_len: int,
    eval_beir: str | Path | None,
) -> OperationRecord:
    return OperationRecord(
        "distill",
        parameters={
            "loss": "MSE to PCA-projected teacher embeddings",
            "max_len": max_len,
            "pooling": model.pooling,
            "normalize": model.normalize,
            "texts": len(goal.texts),
            "teacher_dim": goal.teacher_dim,
            "student_dim": model.backbone.config.hidden_size,
            "pca_sample": goal.projection.sample,
            "pca_projection_kept_from_student": goal.kept,
            "pca_explained_variance_ratio": goal.projection.explained_variance_ratio,
            "teacher_cache": [str(path) for path in goal.cache_files],
            "teacher_cache_hit": goal.cached,
            **run.parameters(settings, history),
            "data_files_sha256": {str(p): file_sha256(p) for p in files},
            "attention_runs": dict(model.attention_runs),
        },
        checks=last_retrieval_check(history, eval_beir),
    )


def _write_student(
    model: DistillModel,
    folder: Any,
    out: Path,
    record: OperationRecord,
    goal: DistillTargets,
    sources: dict[str, Any],
    options: dict[str, Any],
    run_options: RunOptions,
) -> Any:
    """The student as a sentence-transformers folder (its pooling and normalisation), the PCA projection
    beside it, the teacher among the manifest's sources."""
    teacher_source, teacher_sha = sources["teacher"]
    dim = model.backbone.config.hidden_size
    max_len = options["max_len"]
    extra_files = (
        {}
        if folder.sentence_transformers
        else relative_to_model_dir(folder, sentence_transformers_files(model.pooling, dim, max_len))
    )
    return write_trained_model(
        model.backbone,
        folder,
        out,
        sources["model"],
        record,
        carry=False,
        command="distill",
        options=options,
        run_options=run_options,
        extra_files=extra_files,
        finish=_projection_writer(goal.projection, record),
        sources={"teacher": (teacher_source, teacher_sha)},
    )


def _projection_writer(projection: Projection, record: OperationRecord) -> Callable[[Path], list[Check]]:
    """Writes the PCA projection beside the model (``pca_projection.safetensors``) and records it."""

    def finish(staging: Path) -> list[Check]:
        target = staging / PROJECTION_FILE
        projection.save(target)
        record.files["pca_projection"] = [PROJECTION_FILE]
        record.parameters["pca_projection_sha256"] = file_sha256(target)
        return []

    return finish
