"""Training commands on the Hugging Face Trainer: `ctxext mlm` (masked-LM)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ctxext.cli._common import ForceOpt, JsonOpt, OutOpt, emit, key_value_table, reports_errors


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ctxext app."""
    app.command("mlm")(mlm_command)


@reports_errors
def mlm_command(
    checkpoint: Annotated[
        str, typer.Argument(help="Model folder, sentence-transformers folder, hub ID or embedded name.")
    ],
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="Text: .txt, .jsonl ('text' field), .parquet ('text' "
            "column), or a folder of them. Repeat for more.",
        ),
    ],
    out: OutOpt,
    mask: Annotated[float, typer.Option(help="Share of tokens masked.")] = 0.3,
    max_len: Annotated[
        int | None,
        typer.Option("--max-len", min=8, help="Packed sequence length (default: the model's, at most 512)."),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 1000,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Sequences per device and step.")
    ] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (linear warmup and decay).")] = 5e-4,
    warmup: Annotated[float, typer.Option(help="Warmup, as a share of the steps.")] = 0.06,
    eval_fraction: Annotated[
        float, typer.Option("--eval-fraction", help="Documents held out for the evaluation loss (0: none).")
    ] = 0.0,
    eval_every: Annotated[int, typer.Option("--eval-every", min=0, help="Evaluate every N steps.")] = 0,
    save_every: Annotated[
        int, typer.Option("--save-every", min=1, help="Trainer checkpoint every N steps.")
    ] = 500,
    seed: Annotated[int, typer.Option(help="Seed of masking, data order and init.")] = 0,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Trainer checkpoints (default: OUT.checkpoints).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the latest Trainer checkpoint in the work dir.")
    ] = False,
    keep_checkpoints: Annotated[
        bool, typer.Option(help="Keep the Trainer checkpoints after a successful run.")
    ] = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Masked-LM training on local text, packed to --max-len, with the Hugging Face Trainer
    (`accelerate launch` and `torchrun` run it unchanged).

    Examples:

      ctxext mlm ./student --data corpus.jsonl --mask 0.3 --max-len 128 --steps 2000 -o student-mlm

      accelerate launch -m ctxext mlm ./student --data texts/ --steps 20000 -o student-mlm --resume
    """
    from ctxext.train import TrainSettings, train_mlm

    settings = TrainSettings(
        steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        warmup_ratio=warmup,
        seed=seed,
        eval_every=eval_every,
        save_every=save_every,
    )
    result = train_mlm(
        checkpoint,
        data,
        out,
        mask=mask,
        max_len=max_len,
        settings=settings,
        eval_fraction=eval_fraction,
        work_dir=work_dir,
        resume=resume,
        keep_checkpoints=keep_checkpoints,
        force=force,
        argv=sys.argv,
    )
    if result.manifest is None:  # not the main process of a distributed run
        return
    parameters = result.manifest["operations"][0]["parameters"]
    history = result.history
    summary = {
        "output": str(result.path),
        "steps": result.global_step,
        "train_sequences": parameters["train_sequences"],
        "first_train_loss": history["train"][0][1] if history["train"] else None,
        "last_train_loss": history["train"][-1][1] if history["train"] else None,
        "held_out_loss": history["eval"][-1][1] if history["eval"] else None,
    }
    emit(summary, as_json, lambda data: key_value_table("mlm", data))
