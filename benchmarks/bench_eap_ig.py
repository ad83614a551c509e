"""Cost of EAP-IG (`edge_scores(method="eap-ig", m=...)`) against m x the bare forward + backward.

Model: random-initialised Llama of the organisms' size (6 layers, hidden 160, 4 heads, MLP 480,
the organisms' character vocabulary), float32, CPU, one batch of questions (prompt + answer). The
floor is one forward and one backward of the same loss with frozen parameters, differentiated
with respect to the embedding output; EAP-IG runs its clean step once and each further step once
per source node (2L + 1 = 13 rows per question), so its expected cost is (1 + (m - 1) * 13)
floors, not m. Wall and CPU (process) time are both kept, best of the repeats, calls alternating.
Usage:

    .venv/bin/python benchmarks/bench_eap_ig.py                       # -> data/benchmarks/eap_ig.json
    .venv/bin/python benchmarks/bench_eap_ig.py --steps 2 3 --repeats 2 --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "data" / "benchmarks" / "eap_ig.json"
MODEL = {"num_hidden_layers": 6, "hidden_size": 160, "num_attention_heads": 4,
         "num_key_value_heads": 4, "head_dim": 40, "intermediate_size": 480}  # fmt: skip


def build(batch: int, seq: int, threads: int) -> dict:
    """The floor and the scoring calls on one batch."""
    import torch

    from helpers.eap import edge_scores, per_sample_loss, position_ids_from_mask
    from helpers.organisms.tokenizer import build_tokenizer
    from helpers.tiny_models import tiny_model

    torch.set_num_threads(threads)
    model = tiny_model("llama", vocab_size=len(build_tokenizer()), **MODEL)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : seq // 2] = -100
    pos = position_ids_from_mask(mask)

    def floor() -> None:
        for p in model.parameters():
            p.requires_grad_(False)
        embeds = model.get_input_embeddings()(ids).requires_grad_(True)
        out = model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=False)
        per_sample_loss(out.logits, labels).sum().backward()

    def score(m: int):  # noqa: ANN202
        return lambda: edge_scores(model, ids, mask, labels, method="eap-ig", m=m)

    return {"floor": floor, "score": score, "sources": 2 * MODEL["num_hidden_layers"] + 1}


def best_time(call, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds) over `repeats` calls after one warm-up."""
    call()
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 3, 5])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    calls = build(args.batch, args.seq, args.threads)
    floor_wall, floor_cpu = best_time(calls["floor"], args.repeats)
    rows = []
    for m in args.steps:
        wall, cpu = best_time(calls["score"](m), args.repeats)
        expected = 1 + (m - 1) * calls["sources"]
        rows.append({"m": m, "wall_s": wall, "cpu_s": cpu,
                     "over_m_floors": cpu / (m * floor_cpu),
                     "over_expected_floors": cpu / (expected * floor_cpu),
                     "expected_floors": expected})  # fmt: skip
        print(f"m={m}: {cpu:.2f} s CPU = {rows[-1]['over_m_floors']:.1f} x (m x floor), "
              f"{rows[-1]['over_expected_floors']:.2f} x the expected {expected} floors", flush=True)  # fmt: skip
    record = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": platform.processor() or platform.machine(), "threads": args.threads,
              "batch": args.batch, "seq": args.seq, "model": MODEL,
              "floor_wall_s": floor_wall, "floor_cpu_s": floor_cpu, "runs": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
