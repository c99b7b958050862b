"""Training commands on the Hugging Face Trainer: `ctxext mlm` (masked-LM), `distill`, `finetune` and
`finetune-qa` (extractive QA on a `flip --head qa` folder)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ctxext.cli._common import ForceOpt, JsonOpt, OutOpt, RevisionOpt, SpecialTokensOpt, emit, reports_errors

GradAccumOpt = Annotated[
    int,
    typer.Option(
        "--grad-accum", min=1, help="Gradient accumulation steps (effective batch: batch size x this x processes)."
    ),
]
Bf16Opt = Annotated[bool, typer.Option("--bf16", help="bfloat16 mixed precision (GPUs with bf16, recent CPUs).")]
ReportToOpt = Annotated[
    list[str] | None,
    typer.Option("--report-to", help="Log to tensorboard or wandb (installed separately); repeat for both."),
]
StepsOpt = Annotated[int, typer.Option(min=1, help="Optimizer steps.")]
SaveEveryOpt = Annotated[int, typer.Option("--save-every", min=1, help="Trainer checkpoint every N steps.")]
LogEveryOpt = Annotated[int, typer.Option("--log-every", min=1, help="Log the training loss every N steps.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of data order and init.")]
WorkDirOpt = Annotated[Path | None, typer.Option("--work-dir", help="Trainer checkpoints (default: OUT.checkpoints).")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue from the latest Trainer checkpoint in the work dir.")]
KeepOpt = Annotated[bool, typer.Option(help="Keep the Trainer checkpoints after a successful run.")]
EvalBeirOpt = Annotated[
    Path | None,
    typer.Option("--eval-beir", help="BEIR folder scored (Acc@1, nDCG@10) every --eval-every steps and at the end."),
]
EvalEveryOpt = Annotated[int, typer.Option("--eval-every", min=0, help="Retrieval evaluation every N steps.")]


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ctxext app."""
    app.command("mlm")(mlm_command)
    app.command("mntp")(mntp_command)
    app.command("distill")(distill_command)
    app.command("finetune")(finetune_command)
    app.command("finetune-qa")(finetune_qa_command)


@reports_errors
def mlm_command(  # noqa: PLR0913 (a typer command: one parameter per command-line option)
    checkpoint: Annotated[
        str, typer.Argument(help="Model folder, sentence-transformers folder, hub ID or embedded name.")
    ],
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="Text: .txt, .md, .pdf, .jsonl / .parquet (text, body, abstract, content) or a folder. Repeat.",
        ),
    ],
    out: OutOpt,
    mask: Annotated[float, typer.Option(help="Share of tokens masked.")] = 0.3,
    max_len: Annotated[
        int | None, typer.Option("--max-len", min=8, help="Packed sequence length (default: the model's, at most 512).")
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per device and step.")] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (linear warmup and decay).")] = 5e-4,
    warmup: Annotated[float, typer.Option(help="Warmup, as a share of the steps.")] = 0.06,
    eval_fraction: Annotated[
        float, typer.Option("--eval-fraction", help="Documents held out for the evaluation loss (0: none).")
    ] = 0.0,
    eval_every: Annotated[int, typer.Option("--eval-every", min=0, help="Evaluate every N steps.")] = 0,
    save_every: Annotated[int, typer.Option("--save-every", min=1, help="Trainer checkpoint every N steps.")] = 500,
    seed: Annotated[int, typer.Option(help="Seed of masking, data order and init.")] = 0,
    revision: RevisionOpt = None,
    work_dir: WorkDirOpt = None,
    resume: ResumeOpt = False,
    keep_checkpoints: KeepOpt = False,
    log_every: LogEveryOpt = 10,
    grad_accum: GradAccumOpt = 1,
    bf16: Bf16Opt = False,
    report_to: ReportToOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Masked-LM training on local text, packed to --max-len, with the Hugging Face Trainer
    (`accelerate launch` and `torchrun` run it unchanged).

    Examples:

      ctxext mlm ./student --data corpus.jsonl --mask 0.3 --max-len 128 --steps 2000 -o student-mlm

      accelerate launch -m ctxext mlm ./student --data texts/ --steps 20000 -o student-mlm --resume
    """
    from ctxext.commands import CallContext, mlm

    emit(mlm(locals(), CallContext(argv=sys.argv)), as_json)


@reports_errors
def mntp_command(  # noqa: PLR0913 (a typer command: one parameter per command-line option)
    checkpoint: Annotated[str, typer.Argument(help="A folder written by `ctxext flip` (with or without --head qa).")],
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="Text: .txt, .md, .pdf, .jsonl / .parquet (text, body, abstract, content) or a folder. Repeat.",
        ),
    ],
    out: OutOpt,
    mask: Annotated[float, typer.Option(help="Share of tokens masked (LLM2Vec: 0.2).")] = 0.2,
    max_len: Annotated[int, typer.Option("--max-len", min=8, help="Packed sequence length.")] = 128,
    lora_rank: Annotated[
        int,
        typer.Option(
            "--lora-rank", min=0, help="Train LoRA adapters of this rank (peft; merged on writing); 0: every weight."
        ),
    ] = 0,
    steps: StepsOpt = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per device and step.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (linear warmup and decay).")] = 5e-5,
    warmup: Annotated[float, typer.Option(help="Warmup, as a share of the steps.")] = 0.06,
    save_every: SaveEveryOpt = 500,
    seed: SeedOpt = 0,
    revision: RevisionOpt = None,
    work_dir: WorkDirOpt = None,
    resume: ResumeOpt = False,
    keep_checkpoints: KeepOpt = False,
    log_every: LogEveryOpt = 10,
    grad_accum: GradAccumOpt = 1,
    bf16: Bf16Opt = False,
    report_to: ReportToOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Adapt a flipped decoder to its bidirectional attention before any task: masked next-token prediction
    (LLM2Vec's MNTP; the masked token at i is predicted from position i-1 through the tied embeddings).
    The output loads as the input did; a QA head is left as it was.

    Example:

      ctxext flip gemma-3-270m --head qa -o gemma-qa

      ctxext mntp gemma-qa --data texts.jsonl --steps 1000 -o gemma-qa-mntp
    """
    from ctxext.commands import CallContext, mntp

    emit(mntp(locals(), CallContext(argv=sys.argv)), as_json)


@reports_errors
def distill_command(  # noqa: PLR0913 (a typer command: one parameter per command-line option)
    student: Annotated[str, typer.Argument(help="Student: model folder, sentence-transformers folder or hub ID.")],
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher whose sentence embeddings are learned.")],
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="Texts: .txt, .md, .pdf, .jsonl / .parquet (text, body, abstract, content) or a folder. Repeat.",
        ),
    ],
    out: OutOpt,
    max_len: Annotated[int, typer.Option("--max-len", min=8, help="Tokens per text (student and teacher).")] = 128,
    pca_sample: Annotated[
        int, typer.Option("--pca-sample", min=2, help="Teacher embeddings the PCA is fitted on.")
    ] = 20000,
    steps: StepsOpt = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per device and step.")] = 32,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (linear warmup and decay).")] = 1e-4,
    warmup: Annotated[float, typer.Option(help="Warmup, as a share of the steps.")] = 0.06,
    eval_beir: EvalBeirOpt = None,
    eval_every: EvalEveryOpt = 0,
    cache: Annotated[
        str | None,
        typer.Option(
            help="Folder of cached teacher embeddings (default: ctxext's cache dir; 'none' turns the cache off)."
        ),
    ] = None,
    save_every: SaveEveryOpt = 500,
    seed: SeedOpt = 0,
    revision: RevisionOpt = None,
    teacher_revision: Annotated[
        str | None, typer.Option("--teacher-revision", help="Branch, tag or commit of a hub teacher.")
    ] = None,
    work_dir: WorkDirOpt = None,
    resume: ResumeOpt = False,
    keep_checkpoints: KeepOpt = False,
    log_every: LogEveryOpt = 10,
    grad_accum: GradAccumOpt = 1,
    bf16: Bf16Opt = False,
    report_to: ReportToOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Distil a teacher's sentence embeddings (PCA-projected to the student's width, computed once and cached)
    into a student with an MSE loss; output: a sentence-transformers folder with pca_projection.safetensors.

    Examples:

      ctxext distill student-mlm --teacher all-mpnet-base-v2 --data docstrings.jsonl --eval-beir pydocs-beir \
        --eval-every 100 --steps 2000 -o student-distilled
    """
    from ctxext.commands import CallContext, distill

    emit(distill(locals(), CallContext(argv=sys.argv)), as_json)


@reports_errors
def finetune_command(  # noqa: PLR0913 (a typer command: one parameter per command-line option)
    checkpoint: Annotated[
        str, typer.Argument(help="Model folder (a transferred BigBird, a sentence-transformers folder, ...) or hub ID.")
    ],
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="Triplets: .jsonl or .parquet (query, positive, negative; see docs/data.md). Repeat for more.",
        ),
    ],
    out: OutOpt,
    adapter: Annotated[
        str | None,
        typer.Option(
            help="Train only this adapter (CKPT/adapters/NAME if present, "
            "else a new seq_bn one); the base stays frozen."
        ),
    ] = None,
    max_len: Annotated[int, typer.Option("--max-len", min=8, help="Tokens per document.")] = 4096,
    position_span: Annotated[
        int | None,
        typer.Option(
            "--position-span",
            min=9,
            help="Spread document position ids over N positions with random skips (PoSE): "
            "train positions up to N on --max-len-token documents.",
        ),
    ] = None,
    query_max_len: Annotated[int, typer.Option("--query-max-len", min=8, help="Tokens per query.")] = 128,
    temperature: Annotated[float, typer.Option(help="InfoNCE temperature (cosine similarities).")] = 0.05,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations in the backward pass.")] = True,
    steps: StepsOpt = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Triplets per device and step.")] = 4,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (linear warmup and decay).")] = 2e-5,
    warmup: Annotated[float, typer.Option(help="Warmup, as a share of the steps.")] = 0.06,
    eval_beir: EvalBeirOpt = None,
    eval_every: EvalEveryOpt = 0,
    save_every: SaveEveryOpt = 500,
    seed: SeedOpt = 0,
    cache_chunk: Annotated[
        int | None,
        typer.Option(
            "--cache-chunk",
            min=1,
            help="Gradient caching: embed N texts at a time, so --batch-size (the candidates per query) is not "
            "bounded by memory; same gradients as the whole batch.",
        ),
    ] = None,
    positions_only: Annotated[
        bool,
        typer.Option(
            "--positions-only",
            help="Train only the position rows `interpolate` added (LongEmbed's recipe; everything else frozen).",
        ),
    ] = False,
    late_chunk: Annotated[
        int | None,
        typer.Option(
            "--late-chunk",
            min=1,
            help="Train for late chunking: each query against every N-token chunk of the batch's documents, pooled "
            "from one pass per document; its target the chunk its section starts in (docs/train.md).",
        ),
    ] = None,
    revision: RevisionOpt = None,
    work_dir: WorkDirOpt = None,
    resume: ResumeOpt = False,
    keep_checkpoints: KeepOpt = False,
    log_every: LogEveryOpt = 10,
    grad_accum: GradAccumOpt = 1,
    bf16: Bf16Opt = False,
    report_to: ReportToOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Contrastive fine-tuning on triplets (InfoNCE, in-batch + hard negatives). A transferred BigBird trains on
    long inputs in block-sparse mode, fully or one adapter only, with gradient checkpointing.

    Examples:

      ctxext finetune minilm-bigbird --data triplets.jsonl --max-len 2048 --batch-size 2 --steps 500 -o long

      ctxext finetune minilm-spline-4096 --data triplets.jsonl --max-len 2048 --position-span 4096 -o long

      ctxext finetune specter2-bigbird --adapter proximity --data triplets.jsonl --max-len 4096 -o prox-long
    """
    from ctxext.commands import CallContext, finetune

    emit(finetune(locals(), CallContext(argv=sys.argv)), as_json)


@reports_errors
def finetune_qa_command(  # noqa: PLR0913 (a typer command: one parameter per command-line option)
    model: Annotated[str, typer.Argument(help="A QA folder written by `ctxext flip --head qa`.")],
    train: Annotated[Path, typer.Option(help="SQuAD-format jsonl to train on.")],
    out: OutOpt,
    eval_file: Annotated[Path | None, typer.Option("--eval", help="SQuAD-format jsonl for exact match / F1.")] = None,
    steps: StepsOpt = 100,
    batch_size: Annotated[int, typer.Option(min=1, help="Examples per device and step.")] = 8,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate (linear warmup and decay).")] = 3e-5,
    max_length: Annotated[int, typer.Option(min=8, help="Tokens per input (question + context).")] = 384,
    stride: Annotated[int, typer.Option(min=1, help="Tokens that overlapping windows of a long context share.")] = 128,
    freeze_embeddings: Annotated[bool, typer.Option(help="Keep the token embeddings fixed (fast on CPU).")] = False,
    lora_rank: Annotated[
        int,
        typer.Option(
            "--lora-rank", min=0, help="Train LoRA adapters of this rank and the QA head (merged on writing); 0: all."
        ),
    ] = 0,
    special_tokens: SpecialTokensOpt = None,
    save_every: SaveEveryOpt = 500,
    seed: SeedOpt = 0,
    revision: RevisionOpt = None,
    work_dir: WorkDirOpt = None,
    resume: ResumeOpt = False,
    keep_checkpoints: KeepOpt = False,
    log_every: LogEveryOpt = 10,
    grad_accum: GradAccumOpt = 1,
    bf16: Bf16Opt = False,
    report_to: ReportToOpt = None,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune extractive QA (start/end spans) with the Hugging Face Trainer; report exact match and F1.

    Examples:

      ctxext finetune-qa gemma3-qa --train train.jsonl --eval dev.jsonl --steps 200 -o gemma3-qa-tuned
    """
    from ctxext.commands import CallContext, finetune_qa

    emit(finetune_qa(locals(), CallContext(argv=sys.argv)), as_json)
