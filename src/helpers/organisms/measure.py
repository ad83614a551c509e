"""Measure one built model from its saved weights: held-out evaluation with a 95% interval, mean
per-token KL to the base it is compared with, and the first answer token's share of the EAP loss."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from helpers.organisms.diagnostics import first_token_share, kl_to_base
from helpers.organisms.evaluate import evaluate as run_eval
from helpers.organisms.evaluate import generate
from helpers.organisms.grading import grade
from helpers.organisms.registry import BASE, ROOT, load_organism
from helpers.organisms.tasks import make_problems, prompt_of

N_EVAL = 1000  # greedy, every model (the headroom targets are read on these)
N_EVAL_CHECKPOINT = 200  # greedy, checkpoints
N_SAMPLED = {BASE: 1000}  # pass@k problems; other models: N_SAMPLED_DEFAULT
N_SAMPLED_DEFAULT = 100
N_KL = 100
K = 8
ALPHAS: tuple[float, ...] = (0.03, 0.1, 0.3, 0.5)
N_SHARE = 100


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``p`` measured on ``n`` trials."""
    if n == 0:
        return (math.nan, math.nan)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def reference_of(folder: Path, out: Path) -> str | None:
    """The model a folder is compared with: pretrained for SFT, SFT for the rest, none for the root."""
    name = folder.name
    if name == ROOT:
        return None
    return ROOT if name == BASE else BASE


def first_token_shares(model: Any, tokenizer: Any) -> list[dict[str, float]]:
    """First-token share of the EAP loss at each study alpha, on the model's correct greedy answers."""
    problems = make_problems("test", N_SHARE, seed=0)
    prompts = [prompt_of(p) for p in problems]
    texts = [c[0] for c in generate(model, tokenizer, prompts, max_new_tokens=80).completions]
    keep = [i for i, p in enumerate(problems) if grade(texts[i], p.answer)]
    return [
        first_token_share(model, tokenizer, [prompts[i] for i in keep], [texts[i] for i in keep], a)
        for a in ALPHAS
    ]


def measure_model(folder: Path, out: Path) -> dict[str, Any]:
    """The metadata of one trained folder (training log, evaluation, KL, first-token shares)."""
    log = json.loads((folder / "train_log.json").read_text())
    is_checkpoint = folder.parent.name.endswith("-checkpoints")
    model, tokenizer = load_organism(folder)
    problems = make_problems("test", N_EVAL_CHECKPOINT if is_checkpoint else N_EVAL, seed=0)
    n_sampled = 0 if is_checkpoint else N_SAMPLED.get(folder.name, N_SAMPLED_DEFAULT)
    ev = run_eval(
        model,
        tokenizer,
        problems,
        k=K if n_sampled else 0,
        n_sampled=n_sampled or None,
        temperature=0.7,
        max_new_tokens=80,
        progress=False,
    ).to_dict()
    ev["greedy_pass1_ci95"] = list(wilson(ev["greedy_pass1"], ev["n_problems"]))
    meta: dict[str, Any] = {
        "name": str(folder.relative_to(out)),
        "algorithm": log.get("algorithm"),
        "step": log.get("step"),
        "evaluation": ev,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "wall_time_s": log.get("wall_time_s"),
        "train": {k: v for k, v in log.items() if k not in ("history", "checkpoints")},
    }
    reference = reference_of(folder, out) if not is_checkpoint else BASE
    meta["parent"] = reference
    meta["kl_reference"] = reference
    meta["kl_to_base"] = None
    if reference is not None:
        ref_model, _ = load_organism(out / reference)
        prompts = [prompt_of(p) for p in make_problems("test", N_KL, seed=1)]
        meta["kl_to_base"] = kl_to_base(model, ref_model, tokenizer, prompts)
    if not is_checkpoint:
        meta["first_token_share"] = first_token_shares(model, tokenizer)
    return meta
