"""The causal page's experiments over one pair's models: which model answers which questions,
which scores rank the edges, and how edges are removed, decided here once so the page only
calls and shows (`helpers.causal` holds the measurements themselves).

The base is scored on the first tuned seed's selection; each further seed has its own
selection and its own tuned scores. Faithfulness runs on the first seed unless asked for all.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from helpers.ablation import source_means
from helpers.causal import (
    Faithfulness,
    Knockouts,
    Removal,
    attribution,
    faithfulness,
    grown_edges,
    k_grid,
    knockout_sets,
    run_knockouts,
    score_methods,
)
from helpers.eap import EdgeScores, Method
from helpers.evaluation import ModelBatch, Selection
from helpers.organisms.tasks import Problem

Baseline = Literal["zero", "mean"]


@dataclass
class PairModels:
    """A pair's base and tuned seeds (model, tokenizer), and each seed's selection per alpha."""

    base_ref: str
    tuned_ref: str  # the first seed: faithfulness and the base's questions come from it
    base: tuple[Any, Any]
    tuned: dict[str, tuple[Any, Any]]  # every seed, the first one first
    selections: dict[tuple[str, float], Selection]

    def batch(self, role: str, ref: str, alpha: float) -> ModelBatch:
        """The answers `role` ("base" or "tuned") is scored on, for seed `ref` at `alpha`."""
        return self.selections[(ref, alpha)].batches[role]

    def model(self, role: str, ref: str) -> tuple[Any, Any]:
        """(model, tokenizer) of the base or of tuned seed `ref`."""
        return self.base if role == "base" else self.tuned[ref]

    def roles(self, ref: str) -> list[str]:
        """The models measured with seed `ref`: the base only with the first seed."""
        return ["base", "tuned"] if ref == self.tuned_ref else ["tuned"]


def faithfulness_runs(
    pm: PairModels, *, alphas: Sequence[float], m: int, all_seeds: bool
) -> list[Faithfulness]:
    """EAP, EAP-IG and exact ablation for the base and the tuned seeds (the first, or all)."""
    out = []
    for ref in pm.tuned if all_seeds else [pm.tuned_ref]:
        for alpha in alphas:
            for role in pm.roles(ref):
                name = pm.base_ref if role == "base" else ref
                model = pm.model(role, ref)[0]
                out.append(
                    faithfulness(model, pm.batch(role, ref, alpha), name=name, alpha=alpha, m=m)
                )
    return out


def method_scores(
    pm: PairModels, faith: Sequence[Faithfulness]
) -> dict[tuple[float, str], tuple[EdgeScores, EdgeScores]]:
    """(alpha, method) -> (base, first tuned seed) scores of the same questions, for
    `method_metrics.method_table`."""
    found = {(f.model, f.alpha): f for f in faith}
    out = {}
    for (name, alpha), base in found.items():
        tuned = found.get((pm.tuned_ref, alpha))
        if name == pm.base_ref and tuned is not None:
            for method, scores in base.scores.items():
                out[(alpha, method)] = (scores, tuned.scores[method])
    return out


def removal_for(model: Any, batch: ModelBatch, baseline: Baseline, scale: float) -> Removal:
    """The `Removal` a knock-out applies: towards zero, or towards each source's mean output on
    the model's own answers (`batch`)."""
    if baseline not in ("zero", "mean"):
        raise ValueError(f"ablation baseline must be 'zero' or 'mean', not {baseline!r}")
    means = (
        source_means(model, batch.input_ids, batch.attention_mask) if baseline == "mean" else None
    )
    return Removal(scale, means)


def _fixed(edges: np.ndarray, _k: int) -> np.ndarray:
    """A `knockout_sets` picker that returns the same edges whatever k."""
    return edges


@dataclass
class KnockoutStudy:
    """Every model's knock-out runs and the scores that ranked its edges."""

    runs: dict[str, list[Knockouts]]  # "base" / "tuned" -> one run per seed
    scores: dict[tuple[str, str], EdgeScores] = field(default_factory=dict)  # (role, seed ref)
    ks: list[int] = field(default_factory=list)


def ranking_scores(
    pm: PairModels,
    faith: Sequence[Faithfulness],
    role: str,
    ref: str,
    *,
    alpha: float,
    method: Method,
    m: int,
) -> EdgeScores:
    """The scores that rank a model's edges: the faithfulness check's when it ran on these
    answers, else a fresh scoring of them with `method`."""
    name = pm.base_ref if role == "base" else ref
    for f in faith:
        if f.model == name and f.alpha == alpha and (role == "tuned" or ref == pm.tuned_ref):
            return f.scores[method]
    model = pm.model(role, ref)[0]
    return score_methods(model, pm.batch(role, ref, alpha), m=m, methods=[method])[0][method]


def knockout_runs(
    pm: PairModels,
    faith: Sequence[Faithfulness],
    problems: Sequence[Problem],
    *,
    alpha: float,
    method: Method,
    m: int,
    k_points: int,
    n_random: int,
    seed: int,
    baseline: Baseline = "zero",
    scale: float = 1.0,
    max_new_tokens: int = 80,
    batch_size: int = 256,
) -> KnockoutStudy:
    """Top-k, random and mass-matched knock-outs for k log-spaced up to every edge, on the base
    and every tuned seed."""
    study = KnockoutStudy({"base": [], "tuned": []})
    for ref in pm.tuned:
        for role in pm.roles(ref):
            model, tok = pm.model(role, ref)
            scores = ranking_scores(pm, faith, role, ref, alpha=alpha, method=method, m=m)
            study.scores[(role, ref)] = scores
            attr = attribution(scores)
            study.ks = k_grid(attr.size, k_points)
            sets = knockout_sets(attr, study.ks, n_random=n_random, seed=seed)
            batch = pm.batch(role, ref, alpha)
            study.runs[role].append(
                run_knockouts(
                    model,
                    tok,
                    scores,
                    batch,
                    problems,
                    sets,
                    name=f"{role} {ref}",
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                    removal=removal_for(model, batch, baseline, scale),
                )  # fmt: skip
            )
    return study


def grown_runs(
    pm: PairModels,
    study: KnockoutStudy,
    problems: Sequence[Problem],
    *,
    alpha: float,
    n_grown: int,
    n_random: int,
    seed: int,
    baseline: Baseline = "zero",
    scale: float = 1.0,
    max_new_tokens: int = 80,
    batch_size: int = 256,
) -> list[Knockouts]:
    """For each tuned seed: remove the `n_grown` edges whose attribution rose most from the
    base, against as many random and mass-matched edges of the tuned model."""
    out = []
    base_scores = study.scores[("base", pm.tuned_ref)]
    for index, ref in enumerate(pm.tuned):
        model, tok = pm.tuned[ref]
        t_scores = study.scores[("tuned", ref)]
        grown = grown_edges(base_scores, t_scores, n_grown)
        sets = knockout_sets(
            attribution(t_scores), [n_grown], n_random=n_random, seed=seed + index,
            tested=functools.partial(_fixed, grown),
        )  # fmt: skip
        batch = pm.batch("tuned", ref, alpha)
        out.append(
            run_knockouts(
                model,
                tok,
                t_scores,
                batch,
                problems,
                sets,
                name=f"grown {ref}",
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                removal=removal_for(model, batch, baseline, scale),
            )  # fmt: skip
        )
    return out


def accuracy_table(records: dict[str, Any]) -> pd.DataFrame:
    """Greedy accuracy of the base and of each tuned seed on the pair's answered items."""
    return pd.DataFrame(
        {
            ref: {
                "base accuracy": r.base["correct"].mean(),
                "tuned accuracy": r.tuned["correct"].mean(),
            }
            for ref, r in records.items()
        }
    ).T
