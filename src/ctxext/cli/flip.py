"""`ctxext flip` (decoder -> bidirectional encoder) and `ctxext finetune-qa` (extractive QA fine-tuning)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ctxext.cli._common import ForceOpt, JsonOpt, OutOpt, emit, key_value_table, progress_bars, reports_errors

SpecialTokensOpt = Annotated[
    Path | None,
    typer.Option(
        "--special-tokens",
        help="JSON file with 'special_tokens' and a 'template' "
        "(default: configs/qa_special_tokens.json's content).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ctxext app."""
    app.command("flip")(flip_command)
    app.command("finetune-qa")(finetune_qa_command)


@reports_errors
def flip_command(
    source: Annotated[
        str,
        typer.Argument(
            help="Causal decoder: folder, hub ID, the folder holding --gguf, or "
            "'gemma-3-270m' (the GGUF from the package index)."
        ),
    ],
    out: OutOpt,
    gguf: Annotated[str | None, typer.Option("--gguf", help="GGUF file name inside SOURCE.")] = None,
    pooling: Annotated[
        str | None, typer.Option(help="Also save as sentence-transformers: mean, last or cls.")
    ] = None,
    head: Annotated[
        str, typer.Option(help="none, or qa (start/end span logits + prompt special tokens).")
    ] = "none",
    special_tokens: SpecialTokensOpt = None,
    sliding_window: Annotated[
        int | None,
        typer.Option(
            "--sliding-window",
            help="Half-width w of the symmetric window of sliding layers (|q-k| < w); "
            "default: causal window // 2 + 1.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the QA head's initialisation.")] = 0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn a causal decoder (Gemma 3, Gemma 2, Llama, Mistral, Qwen2) into a bidirectional encoder.

    Checks run before anything is written: the source is causal, the output at position 0 now depends on
    the last token, left and right padding agree, and the written folder reloads equal to the in-memory
    model (with Gemma 3's sliding window intact). Non-Gemma-3 outputs load after `ctxext.flip.register()`.

    Examples:

      ctxext flip gemma-3-270m --pooling mean -o gemma3-encoder

      ctxext flip ./models --gguf gemma-3-270m-q4_k_m.gguf --head qa -o gemma3-qa

      ctxext flip ./qwen2-0.5b --head qa --special-tokens configs/qa_special_tokens.json -o qwen2-qa
    """
    from ctxext.errors import InvalidArgument
    from ctxext.flip import Head, Pooling, describe_result, flip

    try:
        pooling_choice = Pooling(pooling) if pooling else None
        head_choice = Head(head)
    except ValueError as error:
        raise InvalidArgument(f"{error}; --pooling takes mean, last or cls and --head none or qa") from None
    with progress_bars() as progress:
        result = flip(
            source,
            out,
            gguf_file=gguf,
            pooling=pooling_choice,
            head=head_choice,
            special_tokens=special_tokens,
            sliding_window=sliding_window,
            seed=seed,
            force=force,
            progress=progress,
            argv=sys.argv,
        )
    emit(describe_result(result), as_json, lambda data: key_value_table("flip", data))


@reports_errors
def finetune_qa_command(
    model: Annotated[str, typer.Argument(help="A QA folder written by `ctxext flip --head qa`.")],
    train: Annotated[Path, typer.Option(help="SQuAD-format jsonl to train on.")],
    out: OutOpt,
    eval_file: Annotated[
        Path | None, typer.Option("--eval", help="SQuAD-format jsonl for exact match / F1.")
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 100,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    learning_rate: Annotated[float, typer.Option("--lr")] = 3e-5,
    max_length: Annotated[int, typer.Option(min=8, help="Tokens per input (question + context).")] = 384,
    freeze_embeddings: Annotated[
        bool, typer.Option(help="Keep the token embeddings fixed (fast on CPU).")
    ] = False,
    special_tokens: SpecialTokensOpt = None,
    seed: Annotated[int, typer.Option()] = 0,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune extractive QA (start/end spans) with the Hugging Face Trainer; report exact match and F1.

    Examples:

      ctxext finetune-qa gemma3-qa --train train.jsonl --eval dev.jsonl --steps 200 -o gemma3-qa-tuned
    """
    from ctxext.qa import QATrainingSettings, finetune_qa

    settings = QATrainingSettings(
        steps=steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        freeze_embeddings=freeze_embeddings,
        seed=seed,
    )
    output, result = finetune_qa(
        model,
        train,
        out,
        eval_path=eval_file,
        settings=settings,
        special_tokens=special_tokens,
        force=force,
        argv=sys.argv,
    )
    summary = {
        "output": str(output.path),
        "train_examples": result.train_examples,
        "skipped_examples": result.skipped_examples,
        "final_loss": result.final_loss,
        **({f"eval_{k}": v for k, v in result.metrics.items()} if result.metrics else {}),
    }
    emit(summary, as_json, lambda data: key_value_table("finetune-qa", data))
