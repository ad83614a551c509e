"""Time and peak memory of `edge_scores` against a bare forward + backward (the floor).

Model: random-initialised Qwen2 architecture, 8 layers, hidden 512 (8 heads, 4 key/value heads),
MLP 1024, vocabulary 32000, tied embeddings, float32, CPU. The floor is the same model and the
same loss (sum of per-sample mean NLLs) with frozen parameters, differentiated with respect to
the embedding output, which is the least any gradient-based attribution must compute.

Peak memory: each (configuration, method) runs in its own subprocess, so the allocator state of
one cannot flatter the other. After one warm-up call and a malloc_trim (so the resident set is
close to live memory), the peak is the resident-set high-water mark during the next call minus
the resident set just before it (Linux: VmHWM is reset through /proc/self/clear_refs). It counts
everything the call allocates -- torch's CPU allocations included, which tracemalloc does not
see -- and nothing allocated before; the warm-up call's figure is kept too.
Time: one subprocess per configuration alternates the two methods call by call, so load from
other processes hits both alike. On a shared machine the medians swing with other people's jobs
(two torch threads on two busy cores), so the headline ratio uses the best of the repeats, the
standard for timing on a noisy machine; the median ratios are reported beside it. A one-thread
run is far less sensitive to that contention and is kept in the same file.
A last measurement takes the fixed per-call cost of nnsight and of the EAP bookkeeping on a
model too small for compute to matter. Usage:

    .venv/bin/python benchmarks/bench_eap.py            # full grid, 2 threads -> runs["2"]
    .venv/bin/python benchmarks/bench_eap.py --threads 1   # adds runs["1"] to the same file
    .venv/bin/python benchmarks/bench_eap.py --seqs 128 --batches 1 --repeats 3 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import contextlib
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
OVERHEAD_MODEL = {
    **MODEL,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "vocab_size": 128,
    "intermediate_size": 128,
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


def build(seq: int, batch: int, threads: int, model_kwargs: dict | None = None) -> dict:
    """Model, inputs and the two calls under comparison."""
    import torch

    from helpers.eap import edge_scores, per_sample_loss, position_ids_from_mask
    from helpers.tiny_models import tiny_model

    torch.set_num_threads(threads)
    config = dict(model_kwargs or MODEL)
    model = tiny_model(config.pop("family"), seed=0, dtype=torch.float32, **config)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(seq * 10 + batch)
    input_ids = torch.randint(3, vocab, (batch, seq), generator=g)
    attention_mask = torch.ones_like(input_ids)
    labels = input_ids.clone()
    labels[:, : seq // 2] = -100  # prompt unlabelled, answer labelled
    position_ids = position_ids_from_mask(attention_mask)

    def floor() -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        embeds = model.get_input_embeddings()(input_ids).requires_grad_(True)
        out = model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
        per_sample_loss(out.logits, labels).sum().backward()

    def eap() -> None:
        edge_scores(model, input_ids, attention_mask, labels)

    return {"floor": floor, "edge_scores": eap}


def trim_heap() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so RSS ~ live memory."""
    import ctypes

    gc.collect()
    with contextlib.suppress(OSError):  # not glibc: RSS may then overstate live memory
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_call(call) -> float:
    """MiB the call adds to the resident set at its peak."""
    trim_heap()
    reset_peak_rss()
    before = proc_status_kib("VmRSS")
    call()
    return (proc_status_kib("VmHWM") - before) / 1024


def memory_worker(method: str, seq: int, batch: int, threads: int) -> dict:
    """Peak memory of the first call and of a second (steady-state) call, fresh process."""
    call = build(seq, batch, threads)[method]
    first = measure_call(call)
    steady = measure_call(call)
    return {"method": method, "seq": seq, "batch": batch, "first_mib": first, "peak_mib": steady}


def time_worker(seq: int, batch: int, repeats: int, threads: int, model_kwargs=None) -> dict:
    """Wall and CPU time of both methods, calls alternating so that load drift hits both alike."""
    calls = build(seq, batch, threads, model_kwargs)
    times: dict[str, dict[str, list[float]]] = {m: {"wall_s": [], "cpu_s": []} for m in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):
        for method, call in calls.items():
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            times[method]["wall_s"].append(time.perf_counter() - wall)
            times[method]["cpu_s"].append(time.process_time() - cpu)
    return {"seq": seq, "batch": batch, **times}


def run_worker(*args: str, threads: int) -> dict:
    """Run this script's worker mode in a fresh interpreter; parse its JSON line."""
    command = [sys.executable, __file__, "--threads", str(threads), "--worker", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_json_atomic(path: Path, data: dict) -> None:
    """Write `data` to `path` through a temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(data, tmp, indent=2)
        tmp.write("\n")
    os.replace(tmp.name, path)


def table(rows: list[dict]) -> str:
    """Markdown table: best-of-repeats wall time, the median ratios, and peak memory."""
    lines = [
        "| seq | batch | floor s | edge_scores s | time x (best) | time x (median) | CPU time x "
        "| floor MiB | edge_scores MiB | memory x |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seq']} | {r['batch']} | {r['floor_best_s']:.3f} | {r['eap_best_s']:.3f} | "
            f"{r['time_ratio']:.2f} | {r['median_time_ratio']:.2f} | {r['cpu_time_ratio']:.2f} | "
            f"{r['floor_peak_mib']:.0f} | {r['eap_peak_mib']:.0f} | {r['memory_ratio']:.2f} |"
        )
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seqs", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "memory":
            method, seq, batch = rest[0], int(rest[1]), int(rest[2])
            result = memory_worker(method, seq, batch, args.threads)
        elif kind == "time":
            result = time_worker(int(rest[0]), int(rest[1]), int(rest[2]), args.threads)
        else:  # fixed per-call overhead on a model too small for compute to matter
            result = time_worker(16, 1, int(rest[0]), 1, OVERHEAD_MODEL)
        print(json.dumps(result))
        return
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("this benchmark reads peak memory from /proc (Linux only)")

    from tqdm import tqdm

    configs = [(s, b) for s in args.seqs for b in args.batches]
    rows, raw = [], []
    load_before = os.getloadavg()
    overhead = run_worker("overhead", "30", threads=1)
    for seq, batch in tqdm(configs, desc="bench_eap", unit="config"):
        memory = {
            m: run_worker("memory", m, str(seq), str(batch), threads=args.threads) for m in METHODS
        }
        timing = run_worker("time", str(seq), str(batch), str(args.repeats), threads=args.threads)
        raw.append({"memory": memory, "time": timing})
        floor_t, eap_t = timing["floor"], timing["edge_scores"]
        rows.append(
            {
                "seq": seq,
                "batch": batch,
                "floor_best_s": min(floor_t["wall_s"]),
                "eap_best_s": min(eap_t["wall_s"]),
                "time_ratio": min(eap_t["wall_s"]) / min(floor_t["wall_s"]),
                "floor_wall_s": median(floor_t["wall_s"]),
                "eap_wall_s": median(eap_t["wall_s"]),
                "median_time_ratio": median(eap_t["wall_s"]) / median(floor_t["wall_s"]),
                "floor_cpu_s": median(floor_t["cpu_s"]),
                "eap_cpu_s": median(eap_t["cpu_s"]),
                "cpu_time_ratio": median(eap_t["cpu_s"]) / median(floor_t["cpu_s"]),
                "floor_peak_mib": memory["floor"]["peak_mib"],
                "eap_peak_mib": memory["edge_scores"]["peak_mib"],
                "memory_ratio": memory["edge_scores"]["peak_mib"] / memory["floor"]["peak_mib"],
                "first_call_memory_ratio": memory["edge_scores"]["first_mib"]
                / memory["floor"]["first_mib"],
            }
        )
    import nnsight
    import torch
    import transformers

    fixed_ms = 1e3 * (median(overhead["edge_scores"]["cpu_s"]) - median(overhead["floor"]["cpu_s"]))
    run = {
        "threads": args.threads,
        "repeats": args.repeats,
        "fixed_overhead": {
            "model": OVERHEAD_MODEL,
            "seq": 16,
            "floor_cpu_ms": 1e3 * median(overhead["floor"]["cpu_s"]),
            "edge_scores_cpu_ms": 1e3 * median(overhead["edge_scores"]["cpu_s"]),
            "overhead_ms": fixed_ms,
        },
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
    # One file, one entry per thread count: a run with other threads keeps the earlier entries.
    runs = json.loads(args.out.read_text()).get("runs", {}) if args.out.exists() else {}
    runs[str(args.threads)] = run
    data = {
        "benchmark": "edge_scores vs bare forward+backward with frozen parameters (the floor)",
        "model": MODEL,
        "dtype": "float32",
        "device": "cpu",
        "labels": "second half of each sequence labelled",
        "targets": {"time_ratio": TARGET_TIME, "memory_ratio": TARGET_MEMORY},
        "memory_measure": (
            "VmHWM - VmRSS around a call after one warm-up call and malloc_trim, one fresh "
            "process per method and configuration (first_call_memory_ratio: the warm-up call)"
        ),
        "time_measure": (
            "wall clock of calls alternating between methods; time_ratio uses the best of the "
            "repeats (least disturbed by other processes), median_time_ratio the medians, "
            "cpu_time_ratio the median CPU times"
        ),
        "runs": dict(sorted(runs.items(), reverse=True)),
    }
    write_json_atomic(args.out, data)
    print(table(rows))
    print(
        f"fixed per-call overhead (8-layer hidden-64 model, seq 16): {fixed_ms:.1f} ms CPU; "
        f"targets: time x <= {TARGET_TIME}, memory x <= {TARGET_MEMORY}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
