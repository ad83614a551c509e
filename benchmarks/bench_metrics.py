"""Time the edge metrics and the paired bootstrap on one core; write data/benchmarks/metrics.json.

Workload of the issue: 100 questions, a 30-layer merged residual graph (61 x 61 matrix, 1,891 real
edges), 2,000 bootstrap resamples. Scores are synthetic heavy-tailed float32 torch tensors, as
``helpers.eap.edge_scores`` returns. Run: ``.venv/bin/python benchmarks/bench_metrics.py``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, set before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers import metrics as M  # noqa: E402
from helpers import stats as S  # noqa: E402

torch.set_num_threads(1)
OUT = Path(__file__).resolve().parents[1] / "data" / "benchmarks" / "metrics.json"


def residual_mask(n_layers: int) -> torch.Tensor:
    """Merged residual-graph mask: source strictly before target in serial order."""
    sources, targets = M.default_node_names(n_layers)
    order = {n: i for i, n in enumerate(("emb", *sources[1:], "logits"))}
    return torch.tensor([[order[s] < order[t] for t in targets] for s in sources])


def synthetic_pair(
    n: int, n_layers: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Heavy-tailed base scores and a tuned model with 10% more intensity, on the same questions."""
    g = np.random.default_rng(seed)
    mask = residual_mask(n_layers)
    shape = (n, *mask.shape)
    base = torch.from_numpy(g.standard_t(3, size=shape).astype(np.float32)) * mask
    tuned = torch.from_numpy((1.1 * g.standard_t(4, size=shape)).astype(np.float32)) * mask
    return base, tuned, mask


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def atomic_write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(f.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100)
    parser.add_argument("--n-layers", type=int, default=30)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    base, tuned, mask = synthetic_pair(args.n_samples, args.n_layers, seed=0)
    ss = M.as_score_set(base, mask)
    cases: dict[str, Callable[[], object]] = {
        "as_score_set (torch -> float64)": lambda: M.as_score_set(base, mask),
        "intensity": lambda: M.intensity(ss),
        "information_complexity": lambda: M.information_complexity(ss),
        "edge_entropy (bin-free)": lambda: M.edge_entropy(ss),
        "kurtosis": lambda: M.kurtosis(ss),
        "diversity": lambda: M.diversity(ss),
        "node_entropy": lambda: M.node_entropy(ss),
        "intensity_profile (source_layer)": lambda: M.intensity_profile(ss),
        "relative_change": lambda: M.relative_change(base, tuned, mask),
        f"compare (real edges, n_boot={args.n_boot})": lambda: S.compare(
            base, tuned, mask=mask, n_boot=args.n_boot
        ),
        f"compare (dense cells, n_boot={args.n_boot})": lambda: S.compare(
            base, tuned, mask=mask, n_boot=args.n_boot, edges="dense"
        ),
    }
    rows = [{"case": name, "seconds": best_of(fn, args.repeats)} for name, fn in cases.items()]

    width = max(len(r["case"]) for r in rows)
    print(
        f"{args.n_samples} samples, {args.n_layers} layers "
        f"({tuple(mask.shape)} matrix, {int(mask.sum())} real edges), best of {args.repeats}"
    )
    print(f"{'case':<{width}}  {'ms':>9}")
    for r in rows:
        print(f"{r['case']:<{width}}  {1e3 * r['seconds']:9.2f}")
    compare_s = rows[-2]["seconds"]
    print(f"compare within 2 s budget: {compare_s < 2.0} ({compare_s:.3f} s)")

    atomic_write_json(
        args.out,
        {
            "what": "helpers.metrics / helpers.stats timings on one core (best of repeats)",
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "n_samples": args.n_samples,
            "n_layers": args.n_layers,
            "matrix": list(mask.shape),
            "n_edges": int(mask.sum()),
            "n_boot": args.n_boot,
            "repeats": args.repeats,
            "threads": {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": "1"},
            "machine": {
                "python": platform.python_version(),
                "numpy": np.__version__,
                "processor": platform.processor() or platform.machine(),
            },
            "results": rows,
            "compare_under_2s": compare_s < 2.0,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
