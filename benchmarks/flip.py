"""Flipped (bidirectional) against causal Gemma 3 270M on short extractive fine-tunes, side by side.

Both models start from the same GGUF weights (loaded once), get the same prompt special tokens, the same
QA head initialisation, the same data, steps and seed; the only difference is the attention mask. With
``--adapt-steps`` a third model is flipped and adapted by MNTP (``ctxext mntp``, optionally through LoRA)
before the same fine-tuning budget. Each runs once per task and seed.

Tasks: ``qa`` (below) and ``evidence``, the seed's task (``ctxext data evidence``: a post, a criterion, the
post's evidence sentence, in the ``[INST] ... [/POST] [CRITERION] ... [/CRITERION]`` prompt; split by topic).

Data: a SQuAD-format set built from standard-library docstrings (text every Python install has), see
``build_docstring_squad``: for each public function whose docstring says "Return(s) X.", the question is
"What does <module>.<function> return?" and the answer is X, located inside the docstring's first
paragraph; the context puts that entry ("name: paragraph") among two other entries of the same module, so
the model has to find the function named in the question. Train and eval come from disjoint modules. The set
is written to --data as jsonl.

    python benchmarks/flip.py                      # defaults below; prints a table and JSON
    python benchmarks/flip.py --steps 40 --train-size 160 --eval-size 80
    python benchmarks/flip.py --adapt-steps 1000   # adds flipped + MNTP (`ctxext mntp`) before the same QA budget
    python benchmarks/flip.py --tasks qa,evidence --seeds 0,1 --adapt-steps 1000 --adapt-lora-rank 16
    python benchmarks/flip.py --tasks qa,evidence --adapt-steps 10,40,120 --adapt-lora-rank 16   # F1 against MNTP steps
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TRAIN_MODULES = (
    "os",
    "os.path",
    "shutil",
    "json",
    "re",
    "string",
    "textwrap",
    "collections",
    "itertools",
    "functools",
    "operator",
    "math",
    "statistics",
    "random",
    "datetime",
    "calendar",
    "heapq",
    "bisect",
    "copy",
    "pathlib",
    "glob",
    "fnmatch",
    "tempfile",
    "zipfile",
    "tarfile",
    "csv",
    "configparser",
    "logging",
    "argparse",
    "base64",
)
EVAL_MODULES = (
    "inspect",
    "ast",
    "tokenize",
    "urllib.parse",
    "http.cookies",
    "email.utils",
    "html",
    "difflib",
    "locale",
    "gettext",
    "codecs",
    "unicodedata",
    "pickle",
    "struct",
    "socket",
    "select",
    "subprocess",
    "threading",
    "queue",
    "sysconfig",
    "platform",
    "pprint",
    "reprlib",
    "enum",
    "numbers",
    "decimal",
    "fractions",
)
RETURN_SENTENCE = re.compile(r"(?:^|(?<=[.!?]\s))Returns? (?P<answer>[^.;:]{4,90}?)[.;:](?=\s|$)")


def build_docstring_squad(modules: tuple[str, ...], limit: int, prefix: str, distractors: int = 2) -> list:
    """SQuAD examples from "Return(s) X." sentences in the docstrings of public functions of ``modules``.

    Each context holds the target entry ``name: first paragraph of its docstring`` among ``distractors``
    other entries of the same module (fixed-seed order), so the question's function name must be found.
    """
    import random

    from ctxext.data.formats import QAExample

    entries: list[tuple[str, str, str, int]] = []  # module, "name: doc", answer, answer offset in the entry
    seen: set[str] = set()
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name, member in sorted(vars(module).items()):
            if name.startswith("_") or not callable(member) or not inspect.getdoc(member):
                continue
            paragraph = " ".join(inspect.getdoc(member).split("\n\n")[0].split())
            match = RETURN_SENTENCE.search(paragraph)
            if not match or len(paragraph) > 400 or paragraph in seen:
                continue
            seen.add(paragraph)
            entry = f"{name}: {paragraph}"
            entries.append((module_name, entry, match.group("answer").strip(), len(name) + 2 + match.start("answer")))
    chooser = random.Random(0)
    examples: list[QAExample] = []
    for index, (module_name, entry, answer, offset) in enumerate(entries):
        same_module = [e[1] for j, e in enumerate(entries) if e[0] == module_name and j != index]
        others = [e[1] for j, e in enumerate(entries) if j != index]
        pool = same_module if len(same_module) >= distractors else others
        parts = chooser.sample(pool, distractors) + [entry]
        chooser.shuffle(parts)
        context = " ".join(parts)
        start = context.index(entry) + offset
        name = entry.split(":", 1)[0]
        examples.append(
            QAExample(f"{prefix}-{index}", f"What does {module_name}.{name} return?", context, [answer], [start])
        )
        if len(examples) == limit:
            break
    return examples


def train_in_memory(built, train, evaluation, prompt, settings, max_length: int) -> dict:
    """QA fine-tuning of an in-memory model (token embeddings fixed), then exact match and F1:
    ``ctxext.train.qa.train_qa_in_memory``, the core of ``ctxext finetune-qa``, with no output folder."""
    from ctxext.train.qa import train_qa_in_memory

    trained = train_qa_in_memory(
        built.model,
        built.tokenizer,
        train,
        prompt,
        settings,
        max_length=max_length,
        freeze_embeddings=True,
        eval_examples=evaluation,
    )
    losses = trained.history["train"]
    return {"metrics": trained.metrics, "final_loss": losses[-1][1] if losses else float("nan")}


def adapt_in_memory(built, steps: int, batch_size: int, max_len: int, lr: float, lora_rank: int = 0) -> dict:
    """MNTP (``ctxext.train.mntp.train_mntp_in_memory``, the core of ``ctxext mntp``) of an in-memory flipped
    model on standard-library docstrings of modules the QA sets do not use (LoRA adapters of ``lora_rank``,
    merged afterwards, when it is set); returns its cost. The model's parameters train afterwards as before."""
    from ctxext.data.pydocs import python_docstrings
    from ctxext.train.mntp import train_mntp_in_memory
    from ctxext.train.runner import TrainSettings

    used = set(TRAIN_MODULES) | set(EVAL_MODULES)
    texts = [text for name, text in python_docstrings() if name.rsplit(".", 1)[0] not in used]
    settings = TrainSettings(
        steps=steps,
        batch_size=batch_size,
        learning_rate=lr,
        warmup_ratio=0.1,
        logging_every=max(1, steps // 50),
        progress_bars=False,
    )
    started = time.perf_counter()
    adapted = train_mntp_in_memory(built.model, built.tokenizer, texts, settings, max_len=max_len, lora_rank=lora_rank)
    built.model = adapted.model  # the same model: LoRA adapters are merged into its projections in place
    losses = [loss for _, loss in adapted.history["train"]]
    return {
        "steps": steps,
        "lora_rank": lora_rank,
        "seconds": round(time.perf_counter() - started, 1),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
    }


def task_data(task: str, args: argparse.Namespace, data_dir: Path) -> tuple[list, list, Any, int]:
    """(train, evaluation, prompt, max length) of a task; the sets are written to ``data_dir/task``."""
    from ctxext.data.formats import read_squad_jsonl, write_squad_jsonl
    from ctxext.qa_prompt import PromptConfig, load_prompt_config

    folder = data_dir / task
    if task == "evidence":
        from ctxext.data.evidence import write_evidence

        write_evidence(folder, force=True)
        train, evaluation = (read_squad_jsonl(folder / f"{name}.jsonl") for name in ("train", "test"))
        prompt, max_length = load_prompt_config(folder / "prompt.json"), args.evidence_max_length
    else:
        train = build_docstring_squad(TRAIN_MODULES, args.train_size, "train")
        evaluation = build_docstring_squad(EVAL_MODULES, args.eval_size, "eval")
        folder.mkdir(parents=True, exist_ok=True)
        write_squad_jsonl(folder / "train.jsonl", train)
        write_squad_jsonl(folder / "test.jsonl", evaluation)
        prompt, max_length = PromptConfig(), args.max_length
    train, evaluation = train[: args.train_size], evaluation[: args.eval_size]
    print(f"{task}: {len(train)} train / {len(evaluation)} eval examples in {folder}", file=sys.stderr)
    return train, evaluation, prompt, max_length


def run_model(loaded, label: str, adapt_steps: int, bidirectional: bool, task, seed: int, args, adapted: dict) -> dict:  # noqa: ANN001
    """Build (and adapt), fine-tune and evaluate one model on one task with one seed. The adapted weights of a
    seed are kept in ``adapted`` and reused by the next task (both add the same special tokens, and MNTP
    leaves the seed's QA head as it was), so each seed is adapted once."""
    from ctxext.flip import Head, build_model, last_token_effect
    from ctxext.qa import evaluate_qa
    from ctxext.train.qa import qa_settings

    train, evaluation, prompt, max_length = task
    built = build_model(loaded, head=Head.qa, bidirectional=bidirectional, prompt=prompt, seed=seed)
    adaptation = None
    if adapt_steps and seed in adapted:
        built.model.load_state_dict(adapted[seed]["weights"])
        adaptation = adapted[seed]["cost"]
    elif adapt_steps:
        print(f"{label}: MNTP {adapt_steps} steps", file=sys.stderr)
        adaptation = adapt_in_memory(
            built, adapt_steps, args.adapt_batch_size, args.adapt_max_len, args.adapt_lr, args.adapt_lora_rank
        )
        weights = {name: tensor.detach().clone() for name, tensor in built.model.state_dict().items()}
        adapted[seed] = {"weights": weights, "cost": adaptation}
    vocab_size = built.backbone.get_input_embeddings().weight.shape[0]
    before = evaluate_qa(built.model, built.tokenizer, evaluation, prompt, max_length=max_length)
    settings = qa_settings(steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, seed=seed)
    started = time.perf_counter()
    outcome = train_in_memory(built, train, evaluation, prompt, settings, max_length)
    return {
        "position0_change_from_last_token": last_token_effect(built.backbone, vocab_size),
        "f1_before": round(before["f1"], 2),
        "em_before": round(before["exact_match"], 2),
        "f1": round(outcome["metrics"]["f1"], 2),
        "em": round(outcome["metrics"]["exact_match"], 2),
        "final_loss": round(outcome["final_loss"], 4),
        "train_and_eval_s": round(time.perf_counter() - started, 1),
        "adaptation": adaptation,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="qa", help="Comma-separated: qa, evidence.")
    parser.add_argument("--seeds", default="0", help="Comma-separated seeds (head init and data order).")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=160)
    parser.add_argument("--evidence-max-length", type=int, default=320)
    parser.add_argument("--train-size", type=int, default=160)
    parser.add_argument("--eval-size", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=None, help="Folder to write the jsonl sets into.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    parser.add_argument(
        "--adapt-steps", default="", help="Also flipped + MNTP for N steps; comma-separated for a curve (10,40,120)."
    )
    parser.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="Only the adapted models (for a curve beside an earlier run's flipped and causal rows, same options).",
    )
    parser.add_argument("--adapt-batch-size", type=int, default=8)
    parser.add_argument("--adapt-max-len", type=int, default=128)
    parser.add_argument("--adapt-lr", type=float, default=5e-5)
    parser.add_argument("--adapt-lora-rank", type=int, default=0, help="MNTP through LoRA of this rank (0: all).")
    args = parser.parse_args(argv)

    import torch

    from ctxext.flip import load_source

    torch.set_num_threads(args.threads)
    data_dir = args.data or Path(tempfile.mkdtemp(prefix="ctxext-flip-bench-"))
    tasks = {name: task_data(name, args, data_dir) for name in args.tasks.split(",")}
    seeds = [int(seed) for seed in args.seeds.split(",")]
    started = time.perf_counter()
    loaded = load_source("gemma-3-270m")
    load_seconds = time.perf_counter() - started
    print(f"GGUF loaded in {load_seconds:.0f} s", file=sys.stderr)
    runs = [("flipped (bidirectional)", True, 0), ("causal (unflipped)", False, 0)] if args.baselines else []
    lora = f" LoRA r{args.adapt_lora_rank}" if args.adapt_lora_rank else ""
    for steps in [int(n) for n in args.adapt_steps.split(",") if n.strip()]:
        runs.append((f"flipped + MNTP {steps}{lora}", True, steps))
    results: dict[str, Any] = {"load_gguf_s": round(load_seconds, 1), "options": vars(args) | {"data": str(data_dir)}}
    results["tasks"] = {name: {"train": len(t[0]), "eval": len(t[1])} for name, t in tasks.items()}
    results["models"] = {label: {} for label, _, _ in runs}
    for label, bidirectional, adapt_steps in runs:
        adapted: dict = {}
        for name, task in tasks.items():
            rows = [run_model(loaded, label, adapt_steps, bidirectional, task, seed, args, adapted) for seed in seeds]
            results["models"][label][name] = {"seeds": rows, **_means(rows)}
            print(label, name, results["models"][label][name], file=sys.stderr)
    print_table(results, args, seeds)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return results


def _means(rows: list[dict]) -> dict:
    return {key: round(sum(row[key] for row in rows) / len(rows), 2) for key in ("f1", "em", "f1_before")}


def print_table(results: dict, args: argparse.Namespace, seeds: list[int]) -> None:
    tasks = list(results["tasks"])
    print(
        f"\nGemma 3 270M (GGUF), {args.steps} fine-tuning steps x {args.batch_size}, lr {args.lr}, "
        f"mean of seeds {seeds}; "
        + ", ".join(f"{t}: {n['train']} train / {n['eval']} eval" for t, n in results["tasks"].items())
    )
    print(f"{'model':<30}" + "".join(f"{t + ' EM':>14}{t + ' F1':>14}" for t in tasks) + f"{'adaptation s':>14}")
    for label, by_task in results["models"].items():
        cost = next(
            (row["adaptation"] for task in by_task.values() for row in task["seeds"] if row["adaptation"]), None
        )
        print(
            f"{label:<30}"
            + "".join(f"{by_task[t]['em']:>14.1f}{by_task[t]['f1']:>14.1f}" for t in tasks)
            + (f"{cost['seconds']:>14.0f}" if cost else f"{'':>14}")
        )


if __name__ == "__main__":
    main()
