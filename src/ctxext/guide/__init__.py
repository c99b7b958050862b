"""GUIDE: a deep and narrow student initialised from a wide teacher.

The teacher's token-embedding table is centred and decomposed (float64 PCA); its top ``dim`` principal
directions form ``M`` (teacher width x student width, orthonormal columns). Every tensor that lives on the
residual stream goes through ``M``:

- tables (token, position, token type):            ``T_s = T @ M``
- linear layers reading the stream (q, k, v, FFN in): ``W_s = W[rows] @ M``, bias ``b[rows]``
- linear layers writing the stream (attn out, FFN out): ``W_s = M^T @ W[:, cols]``, bias ``M^T b``
- residual-to-residual layers (pooler, MLM transform): ``W_s = M^T W M``, bias ``M^T b``
- LayerNorm scale ``gamma``: ``diag(M^T diag(gamma) M) = (M*M)^T gamma`` (a weighted mean of the teacher's
  scales, weights summing to 1); LayerNorm bias: ``M^T beta``.

``rows`` / ``cols`` are the selected attention heads (whole heads, and dimensions within a head when the
student's heads are narrower) and feed-forward units. ``select="norm"`` keeps those with the largest norm
*after projection* (how much of them survives in the student's subspace); ``select="even"`` keeps evenly
spaced indices (weight selection, Xu et al. 2024). ``projection="even"`` replaces the PCA by evenly spaced
coordinates of the residual stream, which with ``select="even"`` is plain weight selection.

``init="first"`` (GUIDE's recipe) fills only student block 0 from teacher block 0; ``init="uniform"`` maps
teacher blocks evenly onto all student blocks; ``init="none"`` is the random baseline. Everything not taken
from the teacher keeps the family's own random init, and the manifest says, tensor by tensor, where each
came from. LayerNorm does not commute with the projection, so the student does not reproduce the teacher
at step 0; the benefit shows after training.

The package: :mod:`.rules` (the options, the rule per tensor role, the families), :mod:`.projection` (PCA,
selection, projecting tensors), :mod:`.assembly` (filling the student from the teacher, the record of each
tensor's origin) and :mod:`.student` (the student model in memory); ``guide`` itself, which writes and
checks it, lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxext.checkpoint import OutputPlan, ProgressFn, model_tensors, no_progress, write_model_folder
from ctxext.compat import loading_info, transformers_warnings_off
from ctxext.errors import CheckFailed, UnsupportedArchitecture
from ctxext.guide.assembly import Assembly, StudentShape, student_record
from ctxext.guide.projection import (
    BlockSelection,
    StreamProjection,
    block_selection,
    block_sources,
    choose,
    even_projection,
    evenly_spaced,
    pca_projection,
    project,
    top_by_score,
)
from ctxext.guide.rules import (
    FAMILIES,
    ROLE_RULES,
    TIED_ROLES,
    Family,
    Init,
    Projection,
    Rule,
    RuleKind,
    Select,
    StudentOptions,
)
from ctxext.guide.student import Student, build_student, family_of, student_options, student_shape
from ctxext.io import ModelFolder, check_output_target, read_json
from ctxext.manifest import Check, check_verdicts, require_passed
from ctxext.sentence_folder import CLASSIC_MODE_KEYS, Pooling, read_modules, sentence_transformers_files

__all__ = [
    "Assembly",
    "BlockSelection",
    "FAMILIES",
    "Family",
    "GuideResult",
    "Init",
    "Projection",
    "ROLE_RULES",
    "Rule",
    "RuleKind",
    "ST_MODULES",
    "Select",
    "StreamProjection",
    "Student",
    "StudentOptions",
    "StudentShape",
    "TIED_ROLES",
    "block_selection",
    "block_sources",
    "build_student",
    "choose",
    "even_projection",
    "evenly_spaced",
    "family_of",
    "guide",
    "head_prefixes",
    "load_student",
    "pca_projection",
    "project",
    "student_checks",
    "student_options",
    "student_record",
    "student_sentence_files",
    "student_shape",
    "top_by_score",
]


# ----------------------------------------------------------------------------- writing


ST_MODULES = ("Transformer", "Pooling", "Normalize")


def student_sentence_files(folder: ModelFolder, dim: int, family: Family) -> dict[str, Any]:
    """The sentence-transformers files to write or rewrite: the teacher's pooling at the student's width.

    A teacher that is not a sentence-transformers folder gets mean pooling. A tokenizer that returns inputs
    the family's model does not take (token_type_ids for ModernBERT) is told which inputs to return."""
    tokenizer_files: dict[str, Any] = {}
    tokenizer_config = folder.model_dir / "tokenizer_config.json"
    if family.input_names and tokenizer_config.is_file():
        settings = read_json(tokenizer_config)
        if tuple(settings.get("model_input_names") or ()) != family.input_names:
            relative = tokenizer_config.relative_to(folder.root).as_posix()
            tokenizer_files[relative] = {**settings, "model_input_names": list(family.input_names)}
    if not folder.sentence_transformers:
        student = sentence_transformers_files(Pooling.mean, dim, 512, mode_keys=CLASSIC_MODE_KEYS, library_config=False)
        return {**tokenizer_files, **student}
    files: dict[str, Any] = dict(tokenizer_files)
    for module in read_modules(folder.root):
        if module.kind not in ST_MODULES:
            raise UnsupportedArchitecture(
                f"teacher's sentence-transformers pipeline has a {module.kind} module "
                f"({module.entry.get('path')}); guide handles {', '.join(ST_MODULES)} only"
            )
        if module.kind == "Pooling":
            pooling_config = read_json(folder.root / module.path / "config.json")
            files[f"{module.path}/config.json"] = {**pooling_config, "word_embedding_dimension": dim}
    return files


@dataclass
class GuideResult:
    path: Path
    manifest: dict[str, Any]
    student: Student

    title = "guide"

    def summary(self) -> dict[str, Any]:
        """The student's shape, how much of it came from the teacher, the checks."""
        operation = self.manifest["operations"][0]
        parameters = operation["parameters"]
        from_teacher = sum(1 for source in parameters["block_sources"].values() if source != "random init")
        return {
            "output": str(self.path),
            "student": f"{parameters['dim']} wide x {parameters['layers']} deep, {parameters['heads']} heads, "
            f"{parameters['intermediate']} units",
            "explained_variance": round(parameters["explained_variance_ratio"], 4),
            "blocks_from_teacher": f"{from_teacher} of {parameters['layers']}",
            "mlm_head": parameters["mlm_head"],
            "checks": check_verdicts(operation["checks"]),
        }


def guide(
    teacher: str | Path,
    out: str | Path,
    options: StudentOptions | None = None,
    *,
    revision: str | None = None,
    force: bool = False,
    check: bool = True,
    progress: ProgressFn = no_progress,
    argv: list[str] | None = None,
    **fields: Any,
) -> GuideResult:
    """Build a GUIDE student of ``teacher`` and write it to ``out`` (loads with AutoModel,
    AutoModelForMaskedLM and sentence-transformers); the manifest records every tensor's origin.
    ``fields``: :class:`StudentOptions` fields given as keywords (over ``options``)."""
    options = student_options(options, fields, "guide")
    check_output_target(out, force=force)  # refuse before any work; atomic_output checks again, sources too
    student = build_student(teacher, options, revision=revision, progress=progress)
    config = student.model.config.to_dict()
    plan = OutputPlan(
        "guide",
        {"teacher": str(teacher), **_recorded_options(options, student.shape), "check": check},
        {"teacher": (student.source, student.source_hashes)},
        model_tensors(student.model, student.extra_tensors),
        [student.record],
        config,
        support_from=student.folder,
        extra_files=student_sentence_files(student.folder, student.shape.dim, student.family),
    )
    checks = (lambda staging: student_checks(student, ModelFolder.open(staging))) if check else None
    result = write_model_folder(plan, out, force=force, checks=checks, progress=progress, argv=argv)
    return GuideResult(result.path, result.manifest, student)


def _recorded_options(options: StudentOptions, shape: StudentShape) -> dict[str, Any]:
    """What the manifest records of the options: the shape the student has (defaults filled from the teacher)."""
    return {
        "dim": options.dim,
        "layers": shape.layers,
        "heads": shape.heads,
        "intermediate": shape.intermediate,
        "init": options.init.value,
        "select": options.select.value,
        "projection": options.projection.value,
        "seed": options.seed,
    }


def load_student(model_dir: Path, model_class: Any, allowed_unexpected: tuple[str, ...] = ()) -> Any:
    """Load with transformers: nothing missing, and nothing unexpected except names starting with
    ``allowed_unexpected`` (the MLM head for AutoModel, the pooler for the masked-LM class)."""
    with transformers_warnings_off():  # the unused pooler/head is expected; the check below decides
        model, info = model_class.from_pretrained(model_dir, output_loading_info=True, trust_remote_code=False)
    info = loading_info(info)
    unexpected = [name for name in info["unexpected_keys"] if not name.startswith(allowed_unexpected)]
    if info["missing_keys"] or unexpected or info.get("mismatched_keys") or info.get("error_msgs"):
        raise CheckFailed(
            f"{model_dir} does not load cleanly with {model_class.__name__}: missing "
            f"{info['missing_keys']}, unexpected {unexpected}, mismatched {info.get('mismatched_keys')}"
        )
    return model.eval()


def head_prefixes(family: Family) -> tuple[str, ...]:
    return tuple(sorted({name.split(".")[0] + "." for name in family.head_rules}))


def student_checks(student: Student, written: ModelFolder) -> list[Check]:
    """Load the written folder with AutoModel, AutoModelForMaskedLM and sentence-transformers; the loaded
    masked-LM model must reproduce the in-memory student exactly."""
    import torch
    from transformers import AutoModel, AutoModelForMaskedLM

    from ctxext.checks import random_batch

    family = student.family
    mlm = load_student(written.model_dir, AutoModelForMaskedLM, (f"{family.prefix}.pooler.",))
    base = load_student(written.model_dir, AutoModel, head_prefixes(family))
    vocab = student.model.config.vocab_size
    input_ids, attention_mask = random_batch(vocab, [12, 7], low=min(5, vocab - 1))
    with torch.no_grad():
        expected = student.model(input_ids=input_ids, attention_mask=attention_mask).logits
        loaded = mlm(input_ids=input_ids, attention_mask=attention_mask).logits
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    difference = float((expected - loaded).abs().max())
    checks = [
        Check(
            "written_student_matches_built",
            difference,
            1e-5,
            difference <= 1e-5,
            "max abs diff of MLM logits, AutoModelForMaskedLM on the written folder vs the built model",
        ),
        Check(
            "explained_variance_ratio",
            student.projection.explained_variance_ratio,
            detail=f"share of the centred token-embedding variance kept by M ({student.projection.method})",
        ),
    ]
    finite = bool(torch.isfinite(hidden).all())
    checks.append(
        Check(
            "automodel_outputs_finite",
            float(hidden.shape[-1]),
            passed=finite,
            detail="AutoModel last_hidden_state finite, width = --dim",
        )
    )
    from sentence_transformers import SentenceTransformer

    embeddings = SentenceTransformer(str(written.root), device="cpu").encode(["a sentence", "another one"])
    ok = embeddings.shape == (2, student.shape.dim) and bool(np.isfinite(embeddings).all())
    checks.append(
        Check(
            "sentence_transformers_loads",
            float(embeddings.shape[1]),
            passed=ok,
            detail="SentenceTransformer(out).encode gives finite vectors of width --dim",
        )
    )
    require_passed(checks, bound=False)
    return checks
