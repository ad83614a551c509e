"""Time and peak memory of `edge_scores` against a bare forward + backward (the floor).

Model: random-initialised Qwen2 architecture, 8 layers, hidden 512 (8 heads, 4 key/value heads),
MLP 1024, vocabulary 32000, tied embeddings, float32, CPU. The floor is the same model and the
same loss (sum of per-sample mean NLLs) with frozen parameters, differentiated with respect to
the embedding output, which is the least any gradient-based attribution must compute.

Each (configuration, method) runs in its own subprocess, so the allocator state of one cannot
flatter the other. Peak memory is the process's resident-set high-water mark during the first
call minus the resident set just before it (Linux: VmHWM is reset through /proc/self/clear_refs);
it counts everything the call allocates -- torch's CPU allocations included, which tracemalloc
does not see -- and nothing allocated before. Time is the median wall clock over the calls after
that first one. Usage:

    .venv/bin/python benchmarks/bench_eap.py            # full grid, writes data/benchmarks/eap.json
    .venv/bin/python benchmarks/bench_eap.py --seqs 128 --batches 1 --repeats 3 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "data" / "benchmarks" / "eap.json"
MODEL = {
    "family": "qwen2",
    "num_hidden_layers": 8,
    "hidden_size": 512,
    "num_attention_heads": 8,
    "vocab_size": 32000,
    "intermediate_size": 1024,
}
METHODS = ("floor", "edge_scores")
TARGET_TIME, TARGET_MEMORY = 1.25, 1.5


def proc_status_kib(key: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS, VmHWM)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE).group(1))


def reset_peak_rss() -> None:
    """Reset the VmHWM high-water mark to the current resident set (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def worker(method: str, seq: int, batch: int, repeats: int, threads: int) -> dict:
    """Build the model and inputs, measure one call's peak memory, then time `repeats` calls."""
    import torch

    from helpers.eap import edge_scores, per_sample_loss, position_ids_from_mask
    from helpers.tiny_models import tiny_model

    torch.set_num_threads(threads)
    config = dict(MODEL)
    model = tiny_model(config.pop("family"), seed=0, dtype=torch.float32, **config)
    g = torch.Generator().manual_seed(seq * 10 + batch)
    input_ids = torch.randint(3, MODEL["vocab_size"], (batch, seq), generator=g)
    attention_mask = torch.ones_like(input_ids)
    labels = input_ids.clone()
    labels[:, : seq // 2] = -100  # prompt unlabelled, answer labelled

    if method == "floor":
        for p in model.parameters():
            p.requires_grad_(False)
        position_ids = position_ids_from_mask(attention_mask)

        def call() -> None:
            embeds = model.get_input_embeddings()(input_ids).requires_grad_(True)
            out = model(
                inputs_embeds=embeds,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
            )
            per_sample_loss(out.logits, labels).sum().backward()

    else:

        def call() -> None:
            edge_scores(model, input_ids, attention_mask, labels)

    gc.collect()
    reset_peak_rss()
    rss_before = proc_status_kib("VmRSS")
    call()
    peak = proc_status_kib("VmHWM") - rss_before
    walls, cpus = [], []
    for _ in range(repeats):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "method": method,
        "seq": seq,
        "batch": batch,
        "peak_mib": peak / 1024,
        "wall_s": walls,
        "cpu_s": cpus,
        "median_wall_s": statistics.median(walls),
        "median_cpu_s": statistics.median(cpus),
    }


def run_worker(method: str, seq: int, batch: int, repeats: int, threads: int) -> dict:
    """One measurement in a fresh interpreter."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--seqs",
        str(seq),
        "--batches",
        str(batch),
        "--repeats",
        str(repeats),
        "--threads",
        str(threads),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {method} seq={seq} batch={batch} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` to `path` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(data, tmp, indent=2)
        tmp.write("\n")
    os.replace(tmp.name, path)


def table(rows: list[dict]) -> str:
    """Markdown table of the ratios."""
    lines = [
        "| seq | batch | floor s | edge_scores s | time x | floor MiB | edge_scores MiB | memory x |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seq']} | {r['batch']} | {r['floor_wall_s']:.3f} | {r['eap_wall_s']:.3f} | "
            f"{r['time_ratio']:.2f} | {r['floor_peak_mib']:.0f} | {r['eap_peak_mib']:.0f} | "
            f"{r['memory_ratio']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker, args.seqs[0], args.batches[0], args.repeats, args.threads)
        print(json.dumps(result))
        return
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("this benchmark reads peak memory from /proc (Linux only)")

    from tqdm import tqdm

    configs = [(s, b) for s in args.seqs for b in args.batches]
    rows, raw = [], []
    load_before = os.getloadavg()
    for seq, batch in tqdm(configs, desc="bench_eap", unit="config"):
        floor = run_worker("floor", seq, batch, args.repeats, args.threads)
        eap = run_worker("edge_scores", seq, batch, args.repeats, args.threads)
        raw += [floor, eap]
        rows.append(
            {
                "seq": seq,
                "batch": batch,
                "floor_wall_s": floor["median_wall_s"],
                "eap_wall_s": eap["median_wall_s"],
                "time_ratio": eap["median_wall_s"] / floor["median_wall_s"],
                "cpu_time_ratio": eap["median_cpu_s"] / floor["median_cpu_s"],
                "floor_peak_mib": floor["peak_mib"],
                "eap_peak_mib": eap["peak_mib"],
                "memory_ratio": eap["peak_mib"] / floor["peak_mib"],
            }
        )
    import nnsight
    import torch
    import transformers

    data = {
        "benchmark": "edge_scores vs bare forward+backward with frozen parameters",
        "model": MODEL,
        "dtype": "float32",
        "device": "cpu",
        "threads": args.threads,
        "repeats": args.repeats,
        "targets": {"time_ratio": TARGET_TIME, "memory_ratio": TARGET_MEMORY},
        "memory_measure": "VmHWM - VmRSS around the first call, fresh process per method",
        "time_measure": "median wall clock of the calls after the first",
        "rows": rows,
        "raw": raw,
        "environment": {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "nnsight": nnsight.__version__,
            "transformers": transformers.__version__,
            "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
    }
    write_json_atomic(args.out, data)
    print(table(rows))
    print(f"targets: time x <= {TARGET_TIME}, memory x <= {TARGET_MEMORY}; wrote {args.out}")


if __name__ == "__main__":
    main()
