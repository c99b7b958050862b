"""One function per command a pipeline runs: the command's option values (its parameters by name, as the typer
command receives them: ``locals()`` there, the parsed config section in ``ctxext.pipeline``) -> the library
call, and its result. The command line and the pipeline share these, so an option means one thing in both.

Each function takes ``(arguments, context)``: ``arguments`` holds every parameter of the command (its defaults
filled), ``context`` what the caller supplies besides options (a progress callback, the command line recorded
in manifests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ctxext.checkpoint import ProgressFn, no_progress
from ctxext.errors import InvalidArgument
from ctxext.positions import Method

OptionsT = TypeVar("OptionsT")


@dataclass(frozen=True)
class CallContext:
    """Besides a command's options: its progress callback and the command line its manifests record."""

    progress: ProgressFn = no_progress
    argv: list[str] | None = None


def options_of(options_class: type[OptionsT], arguments: dict[str, Any]) -> OptionsT:
    """An options dataclass from a command's arguments: each field the command has an option of the same name
    for (the others keep their defaults)."""
    names = [option.name for option in dataclasses.fields(options_class)]  # type: ignore[arg-type]
    return options_class(**{name: arguments[name] for name in names if name in arguments})


def chosen_method(*, linear: bool, spline: bool, tile: bool, default: Method) -> Method:
    """The position-filling method of the --linear / --spline / --tile flags (at most one)."""
    chosen = [m for m, flag in ((Method.linear, linear), (Method.spline, spline), (Method.tile, tile)) if flag]
    if len(chosen) > 1:
        raise InvalidArgument("choose one of --linear, --spline, --tile")
    return chosen[0] if chosen else default


# ----------------------------------------------------------------------------- surgery


def interpolate(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext interpolate``."""
    from ctxext.positions import CheckLevel
    from ctxext.positions import interpolate as interpolate_positions

    a = arguments
    method = chosen_method(linear=a["linear"], spline=a["spline"], tile=a["tile"], default=Method.spline)
    offset = a["offset"]
    if offset != "auto" and not (offset.isdigit() and offset.isascii()):
        raise InvalidArgument(f"--offset must be 'auto' or a whole number of rows (0 or more), not {offset!r}")
    return interpolate_positions(
        a["source"],
        a["target_length"],
        str(a["out"]),
        method=method,
        grid=a["grid"],
        offset=None if offset == "auto" else int(offset),
        rope_scaling=a["rope_scaling"],
        revision=a["revision"],
        force=a["force"],
        progress=context.progress,
        argv=context.argv,
        check=CheckLevel.full if a["full_check"] else CheckLevel.fast if a["check"] else CheckLevel.none,
    )


def transfer(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext transfer``."""
    from ctxext.transfer import TransferOptions, parse_named
    from ctxext.transfer import transfer as transfer_model

    a = arguments
    method = chosen_method(linear=a["linear"], spline=a["spline"], tile=a["tile"], default=Method.tile)
    options = TransferOptions(
        method=method,
        grid=a["grid"],
        block_size=a["block_size"],
        num_random_blocks=a["random_blocks"],
        global_registers=a["global_registers"],
    )
    paths = {}
    for name, ref in parse_named(a["adapter_path"] or [], "--adapter-path"):
        if name is None:
            raise InvalidArgument(f"--adapter-path {ref!r}: expected ROLE=PATH_OR_HUB_ID")
        paths[name] = ref
    return transfer_model(
        a["source"],
        a["target"],
        a["target_length"],
        str(a["out"]),
        options,
        base=a["base"],
        adapter_paths=paths,
        adapters=parse_named(a["adapter"] or [], "--adapter"),
        revision=a["revision"],
        force=a["force"],
        check=a["check"],
        progress=context.progress,
        argv=context.argv,
    )


def guide(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext guide``."""
    from ctxext.guide import StudentOptions
    from ctxext.guide import guide as guide_student

    a = arguments
    return guide_student(
        a["teacher"],
        a["out"],
        options_of(StudentOptions, a),
        revision=a["revision"],
        force=a["force"],
        check=a["check"],
        progress=context.progress,
        argv=context.argv,
    )


# ----------------------------------------------------------------------------- training

# a training command's option -> the TrainSettings field it sets
SETTINGS_OF_OPTIONS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "lr": "learning_rate",
    "warmup": "warmup_ratio",
    "seed": "seed",
    "eval_every": "eval_every",
    "save_every": "save_every",
    "log_every": "logging_every",
    "grad_accum": "gradient_accumulation",
    "bf16": "bf16",
    "report_to": "report_to",
}


def settings_fields(arguments: dict[str, Any]) -> dict[str, Any]:
    """The TrainSettings fields among a training command's arguments. With ``--json`` the Trainer draws no
    progress bar: it would write its loss logs into the JSON on stdout."""
    fields = {field: arguments[option] for option, field in SETTINGS_OF_OPTIONS.items() if option in arguments}
    return {**fields, "report_to": tuple(fields.get("report_to") or ()), "progress_bars": not arguments["as_json"]}


def training_settings(arguments: dict[str, Any]) -> Any:
    from ctxext.train import TrainSettings

    return TrainSettings(**settings_fields(arguments))


def run_options(arguments: dict[str, Any], argv: list[str] | None) -> Any:
    """The RunOptions among a training command's arguments, with the command line."""
    from ctxext.train import RunOptions

    fields = ("work_dir", "resume", "keep_checkpoints", "force")
    return RunOptions(**{field: arguments[field] for field in fields}, argv=argv)


def mlm(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext mlm``."""
    from ctxext.train.mlm import MlmOptions, train_mlm

    a = arguments
    return train_mlm(
        a["checkpoint"],
        a["data"],
        a["out"],
        options_of(MlmOptions, a),
        settings=training_settings(a),
        revision=a["revision"],
        run_options=run_options(a, context.argv),
    )


def distill(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext distill``."""
    from ctxext.train.distill import DistillOptions
    from ctxext.train.distill import distill as distill_student

    a = arguments
    return distill_student(
        a["student"],
        a["teacher"],
        a["data"],
        a["out"],
        options_of(DistillOptions, a),
        settings=training_settings(a),
        eval_beir=a["eval_beir"],
        cache=a["cache"],
        revision=a["revision"],
        teacher_revision=a["teacher_revision"],
        run_options=run_options(a, context.argv),
    )


def finetune(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext finetune``."""
    from ctxext.train.finetune import FinetuneOptions
    from ctxext.train.finetune import finetune as finetune_model

    a = arguments
    return finetune_model(
        a["checkpoint"],
        a["data"],
        a["out"],
        options_of(FinetuneOptions, a),
        settings=training_settings(a),
        eval_beir=a["eval_beir"],
        revision=a["revision"],
        run_options=run_options(a, context.argv),
    )


def mntp(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext mntp``."""
    from ctxext.train.mntp import MntpOptions, train_mntp

    a = arguments
    return train_mntp(
        a["checkpoint"],
        a["data"],
        a["out"],
        options_of(MntpOptions, a),
        settings=training_settings(a),
        revision=a["revision"],
        run_options=run_options(a, context.argv),
    )


def finetune_qa(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext finetune-qa``: the settings given over QA fine-tuning's own defaults (``qa_settings``)."""
    from ctxext.train.qa import QaOptions, qa_settings
    from ctxext.train.qa import finetune_qa as finetune_qa_model

    a = arguments
    return finetune_qa_model(
        a["model"],
        a["train"],
        a["out"],
        options_of(QaOptions, a),
        eval_path=a["eval_file"],
        settings=qa_settings(**settings_fields(a)),
        revision=a["revision"],
        run_options=run_options(a, context.argv),
    )


# ----------------------------------------------------------------------------- evaluation


def evaluate(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext evaluate``: every model scored (``--forms``: each retrieval form), plotted to ``--plot``."""
    from ctxext.evaluate import Comparison, Task
    from ctxext.evaluate import plot as plot_scores
    from ctxext.io import check_output_target, names_hub_model

    a = arguments
    try:
        lengths = [int(v) for v in a["lengths"].split(",") if v.strip()]
    except ValueError as error:
        raise InvalidArgument(f"{error}; --lengths takes whole numbers like 256,512") from None
    if a["plot"] is not None:  # refused now, not after the evaluation
        check_output_target(a["plot"], force=a["force"], is_file=True)
    hub_models = [checkpoint for checkpoint in a["checkpoints"] if names_hub_model(checkpoint)]

    def hub_revision(ref: str) -> str | None:
        # every hub model is read at --revision; with none among them it reaches the folders given, which
        # refuse it in one line
        return a["revision"] if ref in hub_models or not hub_models else None

    scored = _scores_by_form if a["forms"] is not None else _scores
    results = scored(a, lengths, hub_revision, context.progress)
    if a["plot"] is not None:
        plot_scores(results, a["plot"], "ndcg_at_10" if a["task"] == Task.retrieval else "acc_at_1", force=a["force"])
    return Comparison(results)


def _scores(a: dict[str, Any], lengths: list[int], hub_revision: Callable, progress: ProgressFn) -> list:
    from ctxext.evaluate import evaluate as evaluate_model

    return [
        evaluate_model(
            checkpoint,
            a["task"],
            lengths=lengths,
            max_length=a["truncate"],
            chunk=a["chunk"],
            beir=str(a["beir"]) if a["beir"] else None,
            documents=a["documents"],
            queries=a["queries"],
            seed=a["seed"],
            batch_size=a["batch_size"],
            adapter=a["adapter"],
            revision=hub_revision(checkpoint),
            progress=progress,
        )
        for checkpoint in a["checkpoints"]
    ]


def _scores_by_form(a: dict[str, Any], lengths: list[int], hub_revision: Callable, progress: ProgressFn) -> list:
    from ctxext.evaluate import Task, adapted_encoder, beir_sets, check_lengths
    from ctxext.retrieval import FormOptions, evaluate_forms, parse_forms

    if a["task"] != Task.retrieval or a["beir"] is None or a["truncate"] is not None:
        raise InvalidArgument("--forms scores retrieval: give --task retrieval --beir FOLDER, not --truncate")
    options = FormOptions(
        parse_forms(a["forms"]), a["chunk"] or 512, a["overlap"], a["chunk_source"], a["batch_size"], a["symmetric"]
    )
    check_lengths(lengths)  # --chunk, --overlap and --batch-size: FormOptions checks them
    checkpoints = a["checkpoints"]
    return evaluate_forms(  # the adapter runs in the models evaluated, not in --chunk-source
        checkpoints,
        beir_sets(a["beir"], lengths),
        options,
        lambda ref: adapted_encoder(ref, a["adapter"] if ref in checkpoints else None, None, hub_revision(ref)),
        progress=progress,
    )


# ----------------------------------------------------------------------------- data


def data_longdoc(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext data longdoc``."""
    from ctxext.data.longdoc import write_longdoc
    from ctxext.data.pydocs import HELD_OUT_PACKAGES

    a = arguments

    def listed(value: str | None, split: str) -> tuple[str, ...]:
        return tuple(p.strip() for p in value.split(",") if p.strip()) if value else HELD_OUT_PACKAGES[split]

    return write_longdoc(
        a["out"],
        tokenizer=a["tokenizer"],
        revision=a["revision"],
        pages=a["pages"],
        min_tokens=a["min_tokens"],
        max_tokens=a["max_tokens"],
        seed=a["seed"],
        splits={"dev": listed(a["dev_packages"], "dev"), "test": listed(a["test_packages"], "test")},
        corpus=a["corpus"],
        held_out=a["held_out"],
        force=a["force"],
        argv=context.argv,
        progress=context.progress,
    )


def data_pydocs(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext data pydocs``."""
    from ctxext.data.pydocs import write_python_docs_corpus

    a = arguments
    return write_python_docs_corpus(
        a["out"],
        min_words=a["min_words"],
        limit=a["limit"],
        packages=[p.strip() for p in a["packages"].split(",") if p.strip()],
        allow_held_out=a["allow_held_out"],
        force=a["force"],
        argv=context.argv,
    )


TRIPLETS_KEYWORDS = (
    *("negatives_from", "encoder", "revision", "negatives", "skip_top", "input_format", "on_error", "shard", "force"),
)


def data_triplets(arguments: dict[str, Any], context: CallContext) -> Any:
    """``ctxext data triplets``."""
    from ctxext.data.triplets import QueryOptions, build_triplets

    a = arguments
    keywords = {keyword: a[keyword] for keyword in TRIPLETS_KEYWORDS}
    options = options_of(QueryOptions, a)
    return build_triplets(a["corpus"], a["out"], options, **keywords, progress=context.progress, argv=context.argv)


COMMANDS: dict[str, Callable[[dict[str, Any], CallContext], Any]] = {
    "interpolate": interpolate,
    "transfer": transfer,
    "guide": guide,
    "mlm": mlm,
    "distill": distill,
    "finetune": finetune,
    "mntp": mntp,
    "finetune-qa": finetune_qa,
    "evaluate": evaluate,
    "data longdoc": data_longdoc,
    "data pydocs": data_pydocs,
    "data triplets": data_triplets,
}
"""Each command a pipeline can run, by its name on the command line."""
