"""The model card every model output carries: ``README.md`` with Hub front matter, written from the manifest.

The source's own card is never copied (its figures describe another model); its license is carried over when
its front matter names one. ``huggingface_hub.ModelCard.load(OUT)`` parses the result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ctxext.sentence_folder import MODULES_FILE

CARD_NAME = "README.md"

# Commands whose outputs are flipped decoders, which may load through ctxext's registered classes (see
# _needs_registration).
FLIP_COMMANDS = frozenset({"flip", "mntp", "finetune-qa", "finetune_qa"})
REGISTRATION = "import ctxext.flip\n\nctxext.flip.register()  # ctxext's encoder classes, no remote code\n"
# What a reader of the Hub does with each kind of output.
PIPELINE_BY_ARCHITECTURE_SUFFIX = {
    "ForQuestionAnswering": "question-answering",
    "ForMaskedLM": "fill-mask",
    "ForPreTraining": "fill-mask",
}


def write_model_card(folder: Path, manifest: dict[str, Any], *, name: str, source_card: Path | None = None) -> Path:
    """Write ``folder/README.md`` for the output ``name`` that ``manifest`` describes (``folder`` may still be
    the temporary folder it is built in); ``source_card`` is the source's README, read for its license."""
    from huggingface_hub import ModelCard, ModelCardData

    sentence_transformers = (folder / MODULES_FILE).is_file()
    architecture = _architecture(folder, manifest)
    data = ModelCardData(
        base_model=_base_model(manifest),
        library_name="sentence-transformers" if sentence_transformers else "transformers",
        pipeline_tag=_pipeline_tag(architecture, sentence_transformers),
        tags=[
            "ctxext",
            f"ctxext-{manifest['command']}",
            *(["sentence-transformers", "sentence-similarity"] if sentence_transformers else []),
        ],
        license=_source_license(source_card),
    )
    body = "\n\n".join(
        part
        for part in [
            f"# {name}",
            _summary(manifest, architecture),
            _operations(manifest),
            _held_out_evaluation(manifest),
            _checks(manifest),
            _how_to_load_bigbird(folder, sentence_transformers)
            if "BigBird" in architecture
            else _how_to_load(sentence_transformers, architecture, _needs_registration(folder, manifest, architecture)),
        ]
        if part
    )
    path = folder / CARD_NAME
    path.write_text(str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}\n")), encoding="utf-8")
    return path


def _architecture(folder: Path, manifest: dict[str, Any]) -> str:
    config = folder / manifest.get("weights", {}).get("dir", ".") / "config.json"
    try:
        return (json.loads(config.read_text(encoding="utf-8")).get("architectures") or [""])[0]
    except (OSError, ValueError, AttributeError):
        return ""


def _base_model(manifest: dict[str, Any]) -> str | None:
    """The hub ID of the first source that has one (``None`` for local folders: nothing to link to)."""
    return next((source["hub_id"] for source in manifest.get("sources", {}).values() if source.get("hub_id")), None)


def _pipeline_tag(architecture: str, sentence_transformers: bool) -> str:
    if sentence_transformers:
        return "sentence-similarity"
    for suffix, tag in PIPELINE_BY_ARCHITECTURE_SUFFIX.items():
        if architecture.endswith(suffix):
            return tag
    return "feature-extraction"


def _source_license(source_card: Path | None) -> str | None:
    if source_card is None or not source_card.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(source_card).data.license
    except Exception:  # noqa: BLE001 - a card we cannot parse has no license we can carry
        return None


def _summary(manifest: dict[str, Any], architecture: str) -> str:
    sources = ", ".join(
        f"{role}: `{source.get('hub_id') or source.get('ref')}`" for role, source in manifest.get("sources", {}).items()
    )
    return (
        f"Written by [ctxext](https://pypi.org/project/ctxext/) {manifest.get('ctxext_version', '')} with "
        f"`ctxext {manifest['command']}` from {sources or 'no source'}"
        f"{f'; architecture `{architecture}`' if architecture else ''}. Every tensor's sha256 and every check "
        "below are in `manifest.json`; `ctxext verify` re-hashes the weights against it."
    )


def _operations(manifest: dict[str, Any]) -> str:
    lines = [
        "## What was done",
        "",
        "| operation | parameters | copied | modified | created | dropped |",
        "|---|---|---|---|---|---|",
    ]
    for operation in manifest.get("operations", []):
        parameters = ", ".join(
            f"{key}={json.dumps(value)}"
            for key, value in operation.get("parameters", {}).items()
            if key not in {"loss_history"} and not isinstance(value, (dict, list))
        )
        counts = [str(len(operation.get(key, []))) for key in ("copied", "modified", "created", "dropped")]
        lines.append(f"| {operation['name']} | {parameters} | {' | '.join(counts)} |")
    options = ", ".join(
        f"{key}={json.dumps(value)}"
        for key, value in manifest.get("options", {}).items()
        if not isinstance(value, (dict, list))
    )
    notes = [note for operation in manifest.get("operations", []) for note in operation.get("notes", [])]
    return "\n".join(lines + ["", f"Options: {options}."] + [f"- {note}" for note in notes])


def _held_out_evaluation(manifest: dict[str, Any]) -> str:
    """``ctxext extend``'s comparison of every retrieval form, on documents held out of training."""
    found = manifest.get("held_out_evaluation")
    if not found:
        return ""
    lines = [
        "## Held-out documents",
        "",
        f"{found['queries']} queries over {found['documents']} documents held out of training "
        f"(`{found['set']}` in the work folder), whole documents up to {found['length']} tokens. "
        f"The source's chunk forms are the {found['chunk_mean']['form']}; late chunking pools this model's token "
        "states per chunk from one pass over the whole document (`ctxext embed --late-chunk`); hybrid is "
        "reciprocal-rank fusion (k = 60) with BM25:",
        "",
        "| form | model | MRR | Acc@1 | nDCG@10 |",
        "|---|---|---|---|---|",
    ]
    for row in held_out_rows(found):
        lines.append(
            f"| {row['form']} | {row['model']} | {row['mrr']:.3f} | {row['acc_at_1']:.3f} | {row['ndcg_at_10']:.3f} |"
        )
    return "\n".join(lines)


def held_out_rows(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a held-out evaluation, models named by role (``this model``, ``source``, ``BM25``)."""
    rows = found.get("forms") or [  # written before every form was scored: the chunk mean and the model
        {**found["chunk_mean"], "model": "source"},
        {**found["extended"], "model": "extended"},
    ]
    names = {"extended": "this model", "bm25": "BM25"}
    return [{**row, "model": " + ".join(names.get(part, part) for part in row["model"].split(" + "))} for row in rows]


def _checks(manifest: dict[str, Any]) -> str:
    rows = [check for operation in manifest.get("operations", []) for check in operation.get("checks", [])]
    if not rows:
        return "## Checks\n\nNo numeric check was run (`--no-check`)."
    lines = ["## Checks", "", "| check | value | bound | result |", "|---|---|---|---|"]
    for check in rows:
        bound = "" if check.get("threshold") is None else f"{check['threshold']:.3g}"
        lines.append(
            f"| {check['name']} | {check['value']:.4g} | {bound} | "
            f"{'passed' if check.get('passed', True) else 'FAILED'} |"
        )
    return "\n".join(lines)


def _needs_registration(folder: Path, manifest: dict[str, Any], architecture: str) -> bool:
    """A flipped folder loads with plain transformers when written as the family's own model (``is_causal:
    false``, transformers >= 5.2) or as Gemma 3 with its bidirectional flag; ctxext's classes otherwise."""
    if manifest["command"] not in FLIP_COMMANDS:
        return False
    config = folder / manifest.get("weights", {}).get("dir", ".") / "config.json"
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type", "") if config.is_file() else ""
    return model_type.startswith("ctxext_") or architecture.endswith("ForQuestionAnswering")


def _how_to_load(sentence_transformers: bool, architecture: str, registered: bool) -> str:
    register = REGISTRATION if registered else ""
    if sentence_transformers:
        code = (
            f"from sentence_transformers import SentenceTransformer\n{register}\n"
            'model = SentenceTransformer("path/to/this/folder")\n'
            'embeddings = model.encode(["a long document ..."])'
        )
    else:
        head = next(
            (f"AutoModel{suffix}" for suffix in PIPELINE_BY_ARCHITECTURE_SUFFIX if architecture.endswith(suffix)),
            "AutoModel",
        )
        code = (
            f"from transformers import {head}, AutoTokenizer\n{register}\n"
            f'model = {head}.from_pretrained("path/to/this/folder")\n'
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")'
        )
    return f"## Load it\n\n```python\n{code}\n```"


def _how_to_load_bigbird(folder: Path, sentence_transformers: bool) -> str:
    """BigBird loads with ctxext's fixed-pattern block-sparse attention, the attention it was checked and evaluated
    with (plain transformers runs its own block-sparse code: other vectors), and its first adapter running."""
    adapters = (
        sorted(p.name for p in (folder / "adapters").iterdir() if p.is_dir()) if (folder / "adapters").is_dir() else []
    )
    if sentence_transformers:
        adapter = f', "{adapters[0]}"' if adapters else ""
        code = (
            "from ctxext.bottleneck import load_sentence_transformer\n\n"
            f'model = load_sentence_transformer("path/to/this/folder"{adapter})\n'
            'embeddings = model.encode(["a long document ..."])'
        )
    else:
        adapter = f', ["{adapters[0]}"]' if adapters else ""
        code = (
            "from transformers import AutoTokenizer\n\n"
            "from ctxext.block_sparse import use_block_sparse\n"
            "from ctxext.bottleneck import load_model_with_adapters\n\n"
            f'model = use_block_sparse(load_model_with_adapters("path/to/this/folder"{adapter}))\n'
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")'
        )
    others = f" Other adapters: {', '.join(adapters[1:])}." if len(adapters) > 1 else ""
    return (
        f"## Load it\n\n```python\n{code}\n```\n\nThis runs ctxext's fixed-pattern block-sparse attention, the one "
        "the checks and evaluations used, with no remote code; plain `SentenceTransformer` or `BigBirdModel` would "
        f"run transformers' own block-sparse code, which gives other vectors.{others}"
    )
