"""Causal evidence for the attribution: faithfulness against exact ablation, circuit knock-outs
against random and attribution-mass-matched edge sets, and the edges post-training grew.

Everything ablates the residual graph (`helpers.ablation.knocked_out`): removing edge u -> v
deletes u's output from v's pre-norm input (a `Removal` may delete only a fraction of it, or
replace it by its mean). Edges are indexed in `edge_names` order
(row-major over the graph's mask), and a model's attribution of an edge is its mean |score| over
questions. Knock-outs are scored twice: the exact change of the loss on each model's own answer
(one forward with the edges removed), and the greedy accuracy of the ablated model on held-out
problems, generated with the edges removed at every step. Intervals are percentile bootstraps
over questions (`helpers.stats`), two-stage (seeds, then questions) when a model has seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps
from tqdm.auto import tqdm

from helpers import stats
from helpers.ablation import Edge, edge_ablation_effects, knocked_out
from helpers.eap import (
    EdgeScores,
    Method,
    concat,
    edge_scores,
    per_sample_loss,
    position_ids_from_mask,
)
from helpers.evaluation import ModelBatch
from helpers.organisms import grading
from helpers.organisms.evaluate import generate
from helpers.organisms.tasks import Problem, prompt_of

KINDS: tuple[str, ...] = ("top", "random", "mass-matched")


# --------------------------------------------------------------------------- timing


@dataclass
class Clock:
    """Wall-clock seconds per named analysis, for the page's statement of cost."""

    seconds: dict[str, float] = field(default_factory=dict)

    def time(self, name: str) -> _Timer:
        """Context manager adding the block's duration to `name`."""
        return _Timer(self, name)

    def table(self) -> pd.DataFrame:
        """One row per analysis: seconds and minutes."""
        rows = [{"analysis": k, "seconds": v, "minutes": v / 60} for k, v in self.seconds.items()]
        return pd.DataFrame(rows).set_index("analysis")


class _Timer:
    def __init__(self, clock: Clock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        spent = time.perf_counter() - self.start
        self.clock.seconds[self.name] = self.clock.seconds.get(self.name, 0.0) + spent


# --------------------------------------------------------------------------- edge sets


def edge_list(scores: EdgeScores) -> list[Edge]:
    """(source, target) of every real edge, in `edge_names` order."""
    return [(int(s), int(t)) for s, t in scores.graph.edge_index().tolist()]


def attribution(scores: EdgeScores) -> np.ndarray:
    """float64 [n_edges] mean |score| over questions: the importance edges are ranked by."""
    return scores.edge_values().abs().double().mean(0).numpy()


def k_grid(n_edges: int, n_points: int) -> list[int]:
    """About `n_points` log-spaced edge counts from 1 to `n_edges` (both included), distinct."""
    if n_edges < 1 or n_points < 1:
        raise ValueError(f"need n_edges >= 1 and n_points >= 1, got {n_edges}, {n_points}")
    ks = np.unique(np.round(np.geomspace(1, n_edges, n_points)).astype(int))
    return [int(k) for k in ks]


def top_edges(attr: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k edges of largest attribution (ties broken by index)."""
    return np.argsort(-np.asarray(attr), kind="stable")[:k]


def _pool(n_edges: int, k: int, exclude: Sequence[int] | np.ndarray) -> np.ndarray:
    """Edges a control may draw from: all but `exclude`, or all when fewer than k remain."""
    pool = np.setdiff1d(np.arange(n_edges), np.asarray(exclude, dtype=int))
    return pool if pool.size >= k else np.arange(n_edges)


def random_edges(
    n_edges: int, k: int, rng: np.random.Generator, exclude: Sequence[int] | np.ndarray = ()
) -> np.ndarray:
    """k distinct edges drawn uniformly from those not in `exclude` (all, if too few remain)."""
    return rng.choice(_pool(n_edges, k, exclude), size=k, replace=False)


def mass_matched_edges(
    attr: np.ndarray,
    k: int,
    target: float,
    rng: np.random.Generator,
    exclude: Sequence[int] | np.ndarray = (),
    max_swaps: int = 1000,
) -> np.ndarray:
    """k edges outside `exclude` whose total attribution is as close to `target` as swaps get.

    From a random draw, swap the (chosen, unchosen) pair that most reduces |mass - target| until
    no swap helps. When `target` exceeds what the pool can reach (the top-k's mass), this ends on
    the heaviest edges left: the strongest control of as much mass as the rest of the graph has.
    """
    attr = np.asarray(attr, dtype=float)
    pool = _pool(attr.size, k, exclude)
    chosen = list(rng.choice(pool, size=k, replace=False))
    for _ in range(max_swaps):
        rest = np.setdiff1d(pool, chosen)
        if rest.size == 0:
            break
        gap = attr[chosen].sum() - target
        # replacing i by j changes the mass by attr[j] - attr[i]; best: attr[j] ~ attr[i] - gap
        want = attr[chosen][:, None] - gap
        cost = np.abs(attr[rest][None, :] - want)
        i, j = np.unravel_index(np.argmin(cost), cost.shape)
        if cost[i, j] >= abs(gap) - 1e-15:
            break
        chosen[i] = rest[j]
    return np.asarray(chosen, dtype=int)


@dataclass(frozen=True)
class EdgeSet:
    """One set of edges to remove: its kind, size, draw and total attribution."""

    kind: str
    k: int
    draw: int
    edges: tuple[int, ...]
    mass: float


def knockout_sets(
    attr: np.ndarray,
    ks: Sequence[int],
    *,
    n_random: int,
    seed: int,
    tested: Callable[[int], np.ndarray] | None = None,
) -> list[EdgeSet]:
    """For each k: the tested set (default the top-k), `n_random` random and one mass-matched set.

    Controls are drawn outside the tested set while enough edges remain; the mass-matched set
    aims at the tested set's attribution mass.
    """
    rng = np.random.default_rng(seed)
    pick = tested or (lambda k: top_edges(attr, k))
    out = []
    for k in ks:
        chosen = pick(k)
        mass = float(attr[chosen].sum())
        out.append(EdgeSet("top", k, 0, tuple(int(i) for i in chosen), mass))
        for d in range(n_random):
            r = random_edges(attr.size, k, rng, exclude=chosen)
            out.append(EdgeSet("random", k, d, tuple(int(i) for i in r), float(attr[r].sum())))
        mm = mass_matched_edges(attr, k, mass, rng, exclude=chosen)
        out.append(EdgeSet("mass-matched", k, 0, tuple(int(i) for i in mm), float(attr[mm].sum())))
    return out


# --------------------------------------------------------------------------- ablated models


@dataclass(frozen=True)
class Removal:
    """How a knocked-out edge is removed: the fraction `scale` of its output, towards zero or
    towards the source's mean output (`baseline`, from `ablation.source_means`)."""

    scale: float = 1.0
    baseline: dict[int, torch.Tensor] | None = None

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of `ablation.knocked_out`."""
        return {"scale": self.scale, "baseline": self.baseline}


@torch.no_grad()
def ablated_loss(
    model: torch.nn.Module,
    batch: ModelBatch,
    edges: Sequence[Edge],
    chunk: int = 64,
    removal: Removal | None = None,
) -> np.ndarray:
    """float64 [n] each question's mean NLL on its answer tokens with `edges` removed."""
    out = []
    for start in range(0, batch.input_ids.shape[0], chunk):
        sl = slice(start, start + chunk)
        ids, mask, labels = batch.input_ids[sl], batch.attention_mask[sl], batch.labels[sl]
        with knocked_out(model, edges, **(removal or Removal()).kwargs()):
            logits = model(
                input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)
            ).logits
        out.append(per_sample_loss(logits, labels).double().numpy())
    return np.concatenate(out)


def ablated_accuracy(
    model: Any,
    tokenizer: Any,
    problems: Sequence[Problem],
    edges: Sequence[Edge],
    *,
    max_new_tokens: int = 80,
    batch_size: int = 256,
    removal: Removal | None = None,
) -> np.ndarray:
    """bool [n] greedy correctness on `problems`, generating with `edges` removed at every step."""
    prompts = [prompt_of(p) for p in problems]
    with knocked_out(model, edges, **(removal or Removal()).kwargs()):
        gens = generate(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
    return np.array(
        [grading.grade(c[0], p.answer) for c, p in zip(gens.completions, problems, strict=True)]
    )


@dataclass
class Knockouts:
    """Per-question outcomes of every edge set on one model (row i of each array: `sets[i]`)."""

    model: str
    sets: list[EdgeSet]
    loss: np.ndarray  # float64 [n_sets, n_questions], loss change against the plain model
    correct: np.ndarray  # bool [n_sets, n_problems]
    clean_loss: np.ndarray  # float64 [n_questions]
    clean_correct: np.ndarray  # bool [n_problems]
    total_mass: float  # attribution of all edges together


def run_knockouts(
    model: torch.nn.Module,
    tokenizer: Any,
    scores: EdgeScores,
    batch: ModelBatch,
    problems: Sequence[Problem],
    sets: Sequence[EdgeSet],
    *,
    name: str,
    max_new_tokens: int = 80,
    batch_size: int = 256,
    removal: Removal | None = None,
    progress: bool = True,
) -> Knockouts:
    """Loss change on `batch` and greedy accuracy on `problems` with each edge set removed."""
    edges = edge_list(scores)
    kw: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "removal": removal,
    }
    clean_loss = ablated_loss(model, batch, [])
    clean_correct = ablated_accuracy(model, tokenizer, problems, [], **kw)
    loss, correct = [], []
    done: dict[frozenset[int], tuple[np.ndarray, np.ndarray]] = {}  # k = all edges: one set
    for s in tqdm(sets, desc=f"knock-outs {name}", disable=not progress):
        key = frozenset(s.edges)
        if key not in done:
            removed = [edges[i] for i in s.edges]
            done[key] = (
                ablated_loss(model, batch, removed, removal=removal) - clean_loss,
                ablated_accuracy(model, tokenizer, problems, removed, **kw),
            )
        loss.append(done[key][0])
        correct.append(done[key][1])
    total = float(attribution(scores).sum())
    return Knockouts(
        name, list(sets), np.array(loss), np.array(correct), clean_loss, clean_correct, total
    )


# --------------------------------------------------------------------------- intervals


def pooled_mean(
    values: Sequence[np.ndarray], *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, 95% low, high) of per-question values of one or more seeds (mean of seed means),
    bootstrapped over questions, and over seeds first when there are several (draws weight the
    seeds they drew by their question counts)."""
    sizes = [len(v) for v in values]
    weights = stats.two_stage_weights(sizes, n_boot, seed)
    stacked = np.concatenate([np.asarray(v, dtype=float) for v in values])
    per_seed = [float(np.mean(v)) for v in values]
    draws = weights @ stacked / weights.sum(1)  # each seed slot drawn is a question resample
    lo, hi = stats.percentile_interval(draws)
    return float(np.mean(per_seed)), lo, hi


def _by_set(runs: Sequence[Knockouts], field_: str) -> dict[tuple[str, int], list[np.ndarray]]:
    """Per (kind, k): each seed's per-question values, random draws averaged per question."""
    out: dict[tuple[str, int], list[np.ndarray]] = {}
    for run in runs:
        rows: dict[tuple[str, int], list[np.ndarray]] = {}
        for i, s in enumerate(run.sets):
            rows.setdefault((s.kind, s.k), []).append(getattr(run, field_)[i].astype(float))
        for key, parts in rows.items():
            out.setdefault(key, []).append(np.mean(parts, axis=0))
    return out


def curve_table(
    runs: Sequence[Knockouts], *, model: str, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """One row per (kind, k): loss change and accuracy with intervals, seeds pooled; k = 0 is
    the plain model. Accuracy drop is against the plain model's accuracy on the same problems."""
    rows = []
    clean_acc = [r.clean_correct.astype(float) for r in runs]
    acc0, lo0, hi0 = pooled_mean(clean_acc, n_boot=n_boot, seed=seed)
    for kind in KINDS:
        rows.append(
            {
                "model": model,
                "kind": kind,
                "k": 0,
                "mass_share": 0.0,
                "loss_change": 0.0,
                "loss_low": 0.0,
                "loss_high": 0.0,
                "accuracy": acc0,
                "acc_low": lo0,
                "acc_high": hi0,
            }  # fmt: skip
        )
    losses, correct = _by_set(runs, "loss"), _by_set(runs, "correct")
    for (kind, k), values in losses.items():
        lc, llo, lhi = pooled_mean(values, n_boot=n_boot, seed=seed)
        ac, alo, ahi = pooled_mean(correct[(kind, k)], n_boot=n_boot, seed=seed)
        share = np.mean([_mass_share(r, kind, k) for r in runs])
        rows.append(
            {
                "model": model,
                "kind": kind,
                "k": k,
                "mass_share": float(share),
                "loss_change": lc,
                "loss_low": llo,
                "loss_high": lhi,
                "accuracy": ac,
                "acc_low": alo,
                "acc_high": ahi,
            }  # fmt: skip
        )
    out = pd.DataFrame(rows).sort_values(["kind", "k"], kind="stable").reset_index(drop=True)
    out["accuracy_drop"] = acc0 - out["accuracy"]
    out["seeds"] = len(runs)
    return out


def _mass_share(run: Knockouts, kind: str, k: int) -> float:
    """Mean share of the model's total attribution that the (kind, k) sets carry."""
    masses = [s.mass for s in run.sets if s.kind == kind and s.k == k]
    return float(np.mean(masses) / run.total_mass)


def paired_gap(
    tested: Sequence[np.ndarray],
    control: Sequence[np.ndarray],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high) of control - tested per question (paired), seeds pooled."""
    diffs = [
        np.asarray(c, float) - np.asarray(t, float) for t, c in zip(tested, control, strict=True)
    ]
    return pooled_mean(diffs, n_boot=n_boot, seed=seed)


# --------------------------------------------------------------------------- grown edges


def grown_edges(base: EdgeScores, tuned: EdgeScores, n: int) -> np.ndarray:
    """Indices of the n edges whose attribution (mean |score|) rose most from base to tuned."""
    if base.sources != tuned.sources:
        raise ValueError("base and tuned scores are on different graphs; score both models")
    rise = attribution(tuned) - attribution(base)
    return np.argsort(-rise, kind="stable")[:n]


def grown_table(
    runs: Sequence[Knockouts], *, pair: str, algorithm: str, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Accuracy and loss change of the grown set and each control in the tuned model (seeds
    pooled), and each control's accuracy minus the grown set's (positive: grown edges matter more)."""
    acc, loss = _by_set(runs, "correct"), _by_set(runs, "loss")
    clean = [r.clean_correct.astype(float) for r in runs]
    acc0 = pooled_mean(clean, n_boot=n_boot, seed=seed)[0]
    k = runs[0].sets[0].k
    rows = []
    for kind in KINDS:
        a, alo, ahi = pooled_mean(acc[(kind, k)], n_boot=n_boot, seed=seed)
        lc, llo, lhi = pooled_mean(loss[(kind, k)], n_boot=n_boot, seed=seed)
        row = {"pair": pair, "algorithm": algorithm, "set": "grown" if kind == "top" else kind,
               "k": k, "seeds": len(runs), "accuracy_clean": acc0, "accuracy": a,
               "acc_low": alo, "acc_high": ahi, "accuracy_drop": acc0 - a,
               "loss_change": lc, "loss_low": llo, "loss_high": lhi}  # fmt: skip
        if kind != "top":
            g, glo, ghi = paired_gap(acc[("top", k)], acc[(kind, k)], n_boot=n_boot, seed=seed)
            row.update({"excess_drop": g, "excess_low": glo, "excess_high": ghi})
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- faithfulness


@dataclass
class Faithfulness:
    """Per-question estimates of each method and the exact effects, real edges only."""

    model: str
    alpha: float
    estimates: dict[str, np.ndarray]  # method -> float64 [n_questions, n_edges]
    exact: np.ndarray  # float64 [n_questions, n_edges]
    seconds: dict[str, float]
    scores: dict[str, EdgeScores] = field(default_factory=dict)  # method -> the raw scores


def score_methods(
    model: torch.nn.Module,
    batch: ModelBatch,
    *,
    m: int,
    chunk: int = 16,
    methods: Sequence[Method] = ("eap", "eap-ig"),
) -> tuple[dict[str, EdgeScores], dict[str, float]]:
    """EAP and EAP-IG (m steps) scores of a batch, in chunks of questions, with their seconds."""
    out: dict[str, EdgeScores] = {}
    seconds: dict[str, float] = {}
    for method in methods:
        start = time.perf_counter()
        parts = []
        for s in range(0, batch.input_ids.shape[0], chunk):
            ids, mask, labels = (
                t[s : s + chunk] for t in (batch.input_ids, batch.attention_mask, batch.labels)
            )
            width = int(mask.sum(-1).max())
            parts.append(
                edge_scores(
                    model,
                    ids[:, :width],
                    mask[:, :width],
                    labels[:, :width],
                    method=method,
                    m=m,
                )
            )
        out[method] = concat(parts)
        seconds[method] = time.perf_counter() - start
    return out, seconds


def faithfulness(
    model: torch.nn.Module, batch: ModelBatch, *, name: str, alpha: float, m: int
) -> Faithfulness:
    """EAP, EAP-IG and exact single-edge zero-ablation of every edge on one selection batch."""
    scores, seconds = score_methods(model, batch, m=m)
    start = time.perf_counter()
    exact = edge_ablation_effects(
        model, batch.input_ids, batch.attention_mask, batch.labels, progress=False
    )
    seconds["exact"] = time.perf_counter() - start
    mask = exact.mask
    est = {k: v.scores.double().numpy()[:, mask] for k, v in scores.items()}
    return Faithfulness(name, alpha, est, exact.effects[:, mask], seconds, scores)


def agreement_stats(est: np.ndarray, exact: np.ndarray, top_k: Sequence[int]) -> dict[str, float]:
    """Pearson, Spearman, sign agreement, top-k overlap (by |.|) and mean |error| / mean |exact|."""
    est, exact = np.asarray(est, float).ravel(), np.asarray(exact, float).ravel()
    out = {
        "pearson": float(np.corrcoef(est, exact)[0, 1]),
        "spearman": float(sps.spearmanr(est, exact).statistic),
        "sign_agreement": float(np.mean(np.sign(est) == np.sign(exact))),
        "rel_error": float(np.abs(est - exact).mean() / np.abs(exact).mean()),
    }
    a, b = np.argsort(-np.abs(est)), np.argsort(-np.abs(exact))
    for k in top_k:
        if k <= est.size:
            out[f"top{k}_overlap"] = len(set(a[:k]) & set(b[:k])) / k
    return out


def faithfulness_table(
    results: Sequence[Faithfulness], *, top_k: Sequence[int] = (5, 10, 20), n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """One row per (model, alpha, method, view, statistic): value and bootstrap 95% interval.

    Views: "per question" pools every (question, edge) pair; "mean over questions" compares the
    per-edge means (what a circuit ranking uses). Draws resample questions.
    """
    rows = []
    for res in results:
        n = res.exact.shape[0]
        idx = stats.resample_indices(n, n_boot, seed)
        for method, est in res.estimates.items():
            for view in ("per question", "mean over questions"):

                def stat(
                    rows_: np.ndarray, est: np.ndarray = est, view: str = view, res=res
                ) -> dict:
                    e, x = est[rows_], res.exact[rows_]
                    if view == "mean over questions":
                        e, x = e.mean(0), x.mean(0)
                    return agreement_stats(e, x, top_k)

                point = stat(np.arange(n))
                draws = pd.DataFrame([stat(i) for i in idx])
                for name, value in point.items():
                    lo, hi = stats.percentile_interval(draws[name].to_numpy())
                    rows.append(
                        {
                            "model": res.model,
                            "alpha": res.alpha,
                            "method": method,
                            "view": view,
                            "statistic": name,
                            "value": value,
                            "low": lo,
                            "high": hi,
                            "questions": n,
                        }  # fmt: skip
                    )
    return pd.DataFrame(rows)


def preferred_method(table: pd.DataFrame, view: str = "per question") -> tuple[str, int, int]:
    """(method, wins, comparisons): the method closer to exact ablation on more (model, alpha,
    statistic) cells, where closer is higher correlation/agreement/overlap or lower error."""
    t = table[table["view"] == view]
    wide = t.pivot_table(index=["model", "alpha", "statistic"], columns="method", values="value")
    better_low = wide.index.get_level_values("statistic") == "rel_error"
    ig_better = np.where(better_low, wide["eap-ig"] < wide["eap"], wide["eap-ig"] > wide["eap"])
    wins = int(ig_better.sum())
    total = len(wide)
    return ("eap-ig" if wins > total / 2 else "eap"), wins, total
