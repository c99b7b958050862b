"""Benchmark `ctxext transfer` on all-MiniLM-L6-v2, side by side in one run.

1. Transfer to BigBird with 4096 positions: wall time and peak RSS of the whole operation (surgery only,
   and with the numeric checks), each in a fresh process.
2. Encoding throughput (tokens/s, median of the repeats) and peak RSS at 1024-8192 tokens, batch 1: the
   transfer's output with ctxext's block-sparse attention (`ctxext.block_sparse`) and with transformers'
   own, against the same weights in the source architecture (BERT, positions tiled by `ctxext interpolate
   --tile`) with full SDPA attention. Each measurement runs in a fresh process.

Usage: python benchmarks/transfer.py [--lengths 1024 2048 4096 8192] [--repeats 3] [--device cpu] [--json F]
Prints a table; writes nothing outside a temporary folder but the JSON it is asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

TRANSFER_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    start = time.perf_counter()
    from ctxext.transfer import transfer
    transfer("all-MiniLM-L6-v2", "bigbird", int(sys.argv[3]), sys.argv[1], check=sys.argv[2] == "1", force=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mb": peak}))
""")

INTERPOLATE_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    start = time.perf_counter()
    from ctxext.positions import Method, interpolate
    interpolate("all-MiniLM-L6-v2", int(sys.argv[2]), sys.argv[1], method=Method.tile, check=False, force=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_rss_mb": peak}))
""")

ENCODE_CHILD = textwrap.dedent("""
    import json, resource, statistics, sys, time
    import torch
    from transformers import AutoModel
    from ctxext.adapters_bigbird import attention_probe
    from ctxext.block_sparse import use_block_sparse
    folder, length, repeats, device, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    torch.manual_seed(0)
    model = AutoModel.from_pretrained(folder).to(device).eval()
    is_bigbird = model.config.model_type == "big_bird"
    if path == "ctxext":
        use_block_sparse(model)
    ids = torch.randint(1000, model.config.vocab_size, (1, length), device=device)
    mask = torch.ones_like(ids)
    def run():
        if path == "transformers":
            model.set_attention_type("block_sparse")  # a short batch would leave it in full attention
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask)
        if device == "cuda":
            torch.cuda.synchronize()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if is_bigbird:
        with attention_probe(model) as seen:
            run()
        attention = sorted(set(seen))
    else:
        run()
        attention = [model.config._attn_implementation]
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    result = {"tokens_per_s": length / median, "s_per_seq": median, "attention": attention,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "rss_after_load_mb": base_rss}
    if device == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))
""")


def child(code: str, *args: str) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TOKENIZERS_PARALLELISM": "false",
    }
    completed = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


ENCODERS = (  # (row name, folder, attention path)
    ("BigBird, ctxext block-sparse", "bigbird", "ctxext"),
    ("BigBird, transformers block-sparse", "bigbird", "transformers"),
    ("BERT tiled positions, SDPA full", "bert", "sdpa"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    import torch

    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, device {args.device}, torch {torch.__version__}"
    )
    print(f"machine: {machine}")
    longest = str(max(args.lengths))
    report: dict = {"machine": machine, "repeats": args.repeats, "transfer": {}, "encoding": []}
    with tempfile.TemporaryDirectory(prefix="ctxext-bench-") as tmp:
        folders = {"bigbird": Path(tmp) / "bigbird", "bert": Path(tmp) / "bert-tiled"}
        surgery = child(TRANSFER_CHILD, str(folders["bigbird"]), "0", longest)
        checked = child(TRANSFER_CHILD, str(folders["bigbird"]), "1", longest)
        interpolated = child(INTERPOLATE_CHILD, str(folders["bert"]), longest)
        print(f"\n1. all-MiniLM-L6-v2 -> {longest} positions (fresh process each, imports included)")
        print(f"{'operation':44} {'wall s':>8} {'peak RSS MB':>12}")
        for name, row in (
            ("transfer -> BigBird (--no-check)", surgery),
            ("transfer -> BigBird (with numeric checks)", checked),
            ("interpolate --tile (BERT, reference)", interpolated),
        ):
            report["transfer"][name] = row
            print(f"{name:44} {row['wall_s']:8.1f} {row['peak_rss_mb']:12.0f}")

        print(f"\n2. encoding one sequence, batch 1, median of {args.repeats} runs after one warm-up")
        print(
            f"{'tokens':>6} {'model':36} {'attention':22} {'tokens/s':>9} {'s/seq':>7} {'peak RSS MB':>12} "
            f"{'vs BERT':>8}"
        )
        for length in args.lengths:
            rows = {
                name: child(ENCODE_CHILD, str(folders[folder]), str(length), str(args.repeats), args.device, path)
                for name, folder, path in ENCODERS
            }
            reference = rows[ENCODERS[-1][0]]["tokens_per_s"]
            for name, row in rows.items():
                memory = f"{row['peak_rss_mb']:.0f}" + (
                    f" / {row['peak_gpu_mb']:.0f} GPU" if "peak_gpu_mb" in row else ""
                )
                row.update(tokens=length, model=name, vs_sdpa_full=row["tokens_per_s"] / reference)
                report["encoding"].append(row)
                print(
                    f"{length:6} {name:36} {','.join(row['attention']):22} {row['tokens_per_s']:9.0f} "
                    f"{row['s_per_seq']:7.2f} {memory:>12} {row['vs_sdpa_full']:7.2f}x"
                )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
