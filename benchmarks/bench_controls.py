"""Cost of each confidence control relative to one `edge_scores` call on the same batch.

Models: the committed SFT base organism (when present) and a random-initialised Llama of 4 layers,
hidden 256, vocabulary 8000; float32, CPU, one torch thread. Batch: 16 questions of 40 prompt
tokens and T_cut = 8 answer tokens. Each method is timed by alternating calls with the
reference (round-robin over repeats), and the ratio uses the best of the repeats, the standard
for a shared machine; medians are kept beside it.

* ``window``: the loss over answer tokens [1, T_cut) (the no-first-token control), one call;
* ``margin``: the logit-margin objective through the same engine, one call;
* ``same_text``: a model scored on the other model's answer, one ordinary call (new text only);
* ``token_decomposition``: every answer token on its own, batched (T_cut rows per question), and
  per token (the total divided by T_cut);
* ``normalise``: the three per-sample divisions together (no EAP call);
* ``regression``: the equal-loss regression with its bootstrap (2000 draws) on the batch;
* ``compare``: one control's paired metric table with its 2000-draw bootstrap.

    nice -n 10 .venv/bin/python benchmarks/bench_controls.py            # -> data/benchmarks/controls.json
    nice -n 10 .venv/bin/python benchmarks/bench_controls.py --repeats 3 --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "data" / "benchmarks" / "controls.json"
MEDIUM = {"family": "llama", "num_hidden_layers": 4, "hidden_size": 256, "vocab_size": 8000}
BATCH, PROMPT, T_CUT = 16, 40, 8


def models() -> dict[str, torch.nn.Module]:
    """The models measured: the base organism if committed, and a medium random Llama."""
    from helpers.tiny_models import tiny_model

    out: dict[str, torch.nn.Module] = {}
    organism = REPO / "data" / "organisms" / "sft"
    if (organism / "config.json").is_file():
        from helpers.organisms.registry import load_organism

        out["organism base"] = load_organism("sft")[0]
    family = MEDIUM["family"]
    out["llama 4x256"] = tiny_model(family, **{k: v for k, v in MEDIUM.items() if k != "family"})
    return out


def inputs(vocab: int, seed: int = 0):
    """A right-padded batch of prompt + answer[:T_CUT] with labels on the answer."""
    from helpers.evaluation.selection import truncation_batch

    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (PROMPT,), generator=g).tolist() for _ in range(BATCH)]
    answers = [torch.randint(3, vocab, (T_CUT,), generator=g).tolist() for _ in range(BATCH)]
    return truncation_batch(prompts, answers, T_CUT, 0)


def methods(model: torch.nn.Module) -> dict[str, Callable[[], object]]:
    """Zero-argument calls: the reference edge_scores and every control."""
    from helpers import controls as C
    from helpers.eap import edge_scores
    from helpers.stats import compare
    from helpers.windows import token_decomposition

    vocab = model.get_input_embeddings().num_embeddings
    batch, other = inputs(vocab, 0), inputs(vocab, 1)
    args = (batch.input_ids, batch.attention_mask, batch.labels)
    raw = edge_scores(model, *args)
    window = C.without_first_token(batch)
    return {
        "edge_scores": lambda: edge_scores(model, *args),
        "window": lambda: edge_scores(model, *args[:2], window.labels),
        "margin": lambda: edge_scores(model, *args, objective=C.margin_objective),
        "same_text": lambda: edge_scores(
            model, other.input_ids, other.attention_mask, other.labels
        ),
        "token_decomposition": lambda: token_decomposition(model, *args, chunk=BATCH * T_CUT),
        "normalise": lambda: [C.normalise(raw, by) for by in C.NORMALISERS.values()],
        "regression": lambda: C.regression_table([(raw, raw)], n_boot=2000),
        "compare": lambda: compare(raw, raw, n_boot=2000),
    }


def measure(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Best and median seconds of each call, alternating with the reference every round."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
            if name != "edge_scores":
                start = time.perf_counter()
                calls["edge_scores"]()
                times["edge_scores"].append(time.perf_counter() - start)
    ref_best = min(times["edge_scores"])
    ref_median = statistics.median(times["edge_scores"])
    out = {}
    for name, ts in times.items():
        out[name] = {
            "best_s": min(ts),
            "median_s": statistics.median(ts),
            "ratio": min(ts) / ref_best,
            "median_ratio": statistics.median(ts) / ref_median,
        }
    decomposition = out["token_decomposition"]
    out["token_decomposition_per_token"] = {
        k: (v / T_CUT if "ratio" in k or k.endswith("_s") else v) for k, v in decomposition.items()
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = {
        "benchmark": "cost of each confidence control relative to one edge_scores call",
        "batch": {"questions": BATCH, "prompt_tokens": PROMPT, "t_cut": T_CUT},
        "medium_model": MEDIUM,
        "dtype": "float32",
        "device": "cpu",
        "threads": 1,
        "repeats": args.repeats,
        "time_measure": "wall clock, calls alternating with the reference; ratio = best / best",
        "machine": platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "models": {},
    }
    for name, model in models().items():
        print(f"{name}: timing {args.repeats} rounds", flush=True)
        result["models"][name] = measure(methods(model), args.repeats)
        for method, row in result["models"][name].items():
            print(
                f"  {method:32s} x{row['ratio']:.2f}  ({1000 * row['best_s']:.1f} ms)", flush=True
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
