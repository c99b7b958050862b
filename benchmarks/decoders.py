"""Flip at the sizes users bring: random bf16 decoders of real shapes (TinyLlama 1.1B, Llama 3 8B), written tensor
by tensor (never held whole) as sharded safetensors, flipped with the default checks and with ``--no-check``,
beside a plain copy of the weight files (the physical limit of a flip, whose tensors are the source's bytes).
Each command runs as a fresh process; wall time and peak RSS (of the process tree) as a multiple of the weights'
bytes; the copy and the flips alternate, medians over ``--repeats``.

    python benchmarks/decoders.py --shapes tinyllama-1.1b --repeats 3
    python benchmarks/decoders.py --shapes tinyllama-1.1b,llama-3-8b --repeats 1 \
        --json benchmarks/results/flip-decoders-cpu.json
    python benchmarks/decoders.py --shapes tinyllama-1.1b --train-steps 3 \
        --json benchmarks/results/lora-stages-1b-cpu.json   # mntp / finetune-qa with LoRA on the flipped bf16 decoder
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {
    "tinyllama-1.1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
    },
    "llama-3-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
    },
}
CHUNK_VALUES = 2**24  # random values generated at a time (64 MiB of float32)


def llama_tensors(shape: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of a LlamaForCausalLM of ``shape`` (untied output head, as Llama 3 8B ships)."""
    hidden, inner, vocab = shape["hidden_size"], shape["intermediate_size"], shape["vocab_size"]
    kv = hidden // shape["num_attention_heads"] * shape["num_key_value_heads"]
    tensors = [("model.embed_tokens.weight", (vocab, hidden))]
    for layer in range(shape["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        tensors += [
            (prefix + "self_attn.q_proj.weight", (hidden, hidden)),
            (prefix + "self_attn.k_proj.weight", (kv, hidden)),
            (prefix + "self_attn.v_proj.weight", (kv, hidden)),
            (prefix + "self_attn.o_proj.weight", (hidden, hidden)),
            (prefix + "mlp.gate_proj.weight", (inner, hidden)),
            (prefix + "mlp.up_proj.weight", (inner, hidden)),
            (prefix + "mlp.down_proj.weight", (hidden, inner)),
            (prefix + "input_layernorm.weight", (hidden,)),
            (prefix + "post_attention_layernorm.weight", (hidden,)),
        ]
    return [*tensors, ("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def random_bf16(shape: tuple[int, ...], seed: int, norm: bool):
    """A producer of the tensor's bf16 bytes in chunks: N(0, 0.02) (norms: 1), the upper half of float32."""

    def produce():
        generator = np.random.default_rng(seed)
        left = int(np.prod(shape))
        while left:
            count = min(left, CHUNK_VALUES)
            values = np.ones(count, np.float32) if norm else generator.standard_normal(count, np.float32) * 0.02
            yield (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
            left -= count

    return produce


def write_random_decoder(folder: Path, name: str) -> int:
    """A random bf16 Llama of shape ``name`` in ``folder`` (5 GB shards, config, a word-level tokenizer); its
    weights' bytes."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tiny
    from ctxext.io import OutTensor, TensorInfo, write_json, write_safetensors

    shape = SHAPES[name]
    folder.mkdir(parents=True, exist_ok=True)
    tensors = [
        OutTensor(TensorInfo(tensor, "BF16", dims), random_bf16(dims, seed, tensor.endswith("norm.weight")))
        for seed, (tensor, dims) in enumerate(llama_tensors(shape))
    ]
    write_safetensors(folder, tensors, max_shard_bytes=5 * 2**30)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "torch_dtype": "bfloat16",
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": 2,
        "eos_token_id": 3,
        **shape,
    }
    write_json(folder / "config.json", config)
    words = tiny.SPECIAL + [f"w{index}" for index in range(shape["vocab_size"] - len(tiny.SPECIAL))]
    tiny.save_tokenizer(folder, shape["max_position_embeddings"], words=words)
    return sum(t.info.nbytes for t in tensors)


def measured(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS bytes of ``command`` and its children, run as a fresh process."""
    probe = "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; " + (
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-2:]}")
    return seconds, int(done.stderr.strip().splitlines()[-1]) * 1024


def run_shape(name: str, work: Path, repeats: int) -> dict:
    source = work / f"{name}-bf16"
    started = time.perf_counter()
    weight_bytes = write_random_decoder(source, name)
    print(f"{name}: wrote {weight_bytes / 2**30:.2f} GiB in {time.perf_counter() - started:.0f} s", flush=True)
    ctxext = [sys.executable, "-m", "ctxext"]
    forms = {
        "copy of the weight files": lambda out: ["cp", "-r", str(source), str(out)],
        "flip --no-check": lambda out: [*ctxext, "flip", str(source), "-o", str(out), "--no-check"],
        "flip (default checks)": lambda out: [*ctxext, "flip", str(source), "-o", str(out)],
    }
    runs: dict[str, list[tuple[float, int]]] = {form: [] for form in forms}
    for _ in range(repeats):
        for form, command in forms.items():  # alternating, on the same warm page cache
            out = work / "out"
            runs[form].append(measured(command(out)))
            print(f"  {form}: {runs[form][-1][0]:.1f} s, {runs[form][-1][1] / 2**30:.2f} GiB", flush=True)
            if form == "flip (default checks)":
                manifest = json.loads((out / "manifest.json").read_text())
            shutil.rmtree(out)
    copy_seconds = statistics.median(s for s, _ in runs["copy of the weight files"])
    rows = []
    for form, values in runs.items():
        seconds, peak = statistics.median(s for s, _ in values), max(p for _, p in values)
        rows.append(
            {
                "form": form,
                "seconds": round(seconds, 1),
                "x_copy_time": round(seconds / copy_seconds, 2),
                "peak_rss_gib": round(peak / 2**30, 2),
                "x_weight_bytes": round(peak / weight_bytes, 2),
            }
        )
    operation = manifest["operations"][0]
    shutil.rmtree(source)
    return {
        "shape": name,
        "weights_gib": round(weight_bytes / 2**30, 2),
        "rows": rows,
        "checks": {c["name"]: c["value"] for c in operation["checks"]},
        "checked_layers": operation["parameters"]["checked_layers"],
        "repeats": repeats,
    }


def run_lora_stages(name: str, work: Path, steps: int) -> dict:
    """``mntp`` and ``finetune-qa`` with LoRA (rank 8) on the flipped bf16 decoder of shape ``name``: wall time
    (loading included), peak RSS, and the dtype written."""
    import json as json_module

    from ctxext.data.formats import QAExample, write_squad_jsonl

    source = work / f"{name}-bf16"
    weight_bytes = write_random_decoder(source, name)
    flipped = work / f"{name}-qa"
    ctxext = [sys.executable, "-m", "ctxext"]
    measured([*ctxext, "flip", str(source), "--head", "qa", "--no-check", "-o", str(flipped)])
    shutil.rmtree(source)
    words = [f"w{index}" for index in range(200)]
    (work / "texts.txt").write_text("\n\n".join(" ".join(words[i:] + words[:i]) for i in range(64)))
    context = " ".join(words[:100])
    examples = [
        QAExample(str(i), f"where is {words[i]}", context, [words[i + 1]], [context.index(f" {words[i + 1]} ") + 1])
        for i in range(32)
    ]
    write_squad_jsonl(work / "train.jsonl", examples)
    shared = ["--lora-rank", "8", "--steps", str(steps), "--batch-size", "2", "--save-every", "1000"]
    stages = {
        "mntp --lora-rank 8": [*ctxext, "mntp", str(flipped), "--data", str(work / "texts.txt"), "--max-len", "128"],
        "finetune-qa --lora-rank 8": [
            *ctxext,
            "finetune-qa",
            str(flipped),
            "--train",
            str(work / "train.jsonl"),
            "--max-length",
            "128",
        ],
    }
    rows = []
    for stage, command in stages.items():
        out = work / "trained"
        seconds, peak = measured([*command, *shared, "-o", str(out)])
        dtype = json_module.loads((out / "config.json").read_text()).get("dtype") or json_module.loads(
            (out / "config.json").read_text()
        ).get("torch_dtype")
        rows.append(
            {
                "stage": stage,
                "steps": steps,
                "seconds_with_loading": round(seconds, 1),
                "peak_rss_gib": round(peak / 2**30, 2),
                "x_weight_bytes": round(peak / weight_bytes, 2),
                "written_dtype": dtype,
            }
        )
        print(f"  {stage}: {seconds:.1f} s, {peak / 2**30:.2f} GiB, written {dtype}", flush=True)
        shutil.rmtree(out)
    shutil.rmtree(flipped)
    return {"shape": name, "weights_gib": round(weight_bytes / 2**30, 2), "lora_stages": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="tinyllama-1.1b")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="Where the models go (default: a temporary folder).")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--train-steps", type=int, default=0, help="Also time LoRA mntp / finetune-qa this long.")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=arguments.work) as work:
        if arguments.train_steps:
            results = [run_lora_stages(name, Path(work), arguments.train_steps) for name in arguments.shapes.split(",")]
            print(json.dumps(results, indent=1))
            if arguments.json:
                arguments.json.write_text(json.dumps(results, indent=1) + "\n")
            return
        results = [run_shape(name, Path(work), arguments.repeats) for name in arguments.shapes.split(",")]
    print("| shape | weights | form | time | x copy | peak RSS | x weights |\n|---|---|---|---|---|---|---|")
    for result in results:
        for row in result["rows"]:
            print(
                f"| {result['shape']} | {result['weights_gib']} GiB | {row['form']} | {row['seconds']} s | "
                f"{row['x_copy_time']} | {row['peak_rss_gib']} GiB | {row['x_weight_bytes']} |"
            )
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
