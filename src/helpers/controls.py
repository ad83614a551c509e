"""Controls that separate "the circuit changed" from "the model got more confident" (method.md 10).

EAP scores are linear in the gradient of the loss, and the study's loss is each model's NLL of
its own answer, so a model surer of its answer scores lower on an unchanged circuit, and the two
models are scored on different text. Each control gives a (base, tuned) pair of score sets that
`stats.compare_pooled` compares exactly as the raw ones (one column of the pair table each):

* ``raw``: the study's definition;
* ``no_first_token``: the loss window without the first answer token (often a format choice);
* ``per_loss``, ``per_grad_logits``, ``per_grad_resid``: each sample's scores divided by its
  loss, by |dL/dlogits|, or by |dL/dr| at the final residual stream r;
* ``same_text_base``, ``same_text_tuned``: both models scored on one text (the base's answer,
  then the tuned model's), so a change can come only from the weights;
* ``margin``: the target is the logit margin of the answer token over the runner-up, whose
  gradient at the logits has norm sqrt(2) however confident the model is;
* ``regression``: per question, log intensity ~ log loss + model; the model term is the change
  of intensity at equal confidence (with a loss-overlap diagnostic: where the two models' losses
  do not overlap, "equal loss" is an extrapolation).

Which normaliser: a sample's scores are -<O_u, J_v^T g> with g = dL/dr, the gradient at the final
residual, and J_v the branch Jacobian of the (unchanged) circuit. Dividing by |g| removes the
gradient's size exactly and leaves only its direction, so it is the one that isolates the
circuit; |dL/dlogits| misses the unembedding's gain (g = W_U^T dL/dlogits through the final
norm), and the loss is not the gradient's size at all (it only tracks it for a near-one-hot
softmax). tests/test_controls.py measures this on a model whose unembedding alone is scaled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch

from helpers import metrics as M
from helpers.eap import IGNORE_INDEX, EdgeScores, Objective, concat, edge_scores
from helpers.evaluation.selection import ModelBatch, Selection
from helpers.stats import (
    COLUMNS,
    METRICS,
    bootstrap_p,
    compare_pooled,
    percentile_interval,
    two_stage_weights,
)
from helpers.windows import window_labels

CONTROLS: dict[str, str] = {
    "raw": "the study's definition: each model's NLL of its own answer",
    "no_first_token": "first answer token left out of the loss window",
    "per_loss": "each sample's scores divided by its loss",
    "per_grad_logits": "each sample's scores divided by |dL/dlogits|",
    "per_grad_resid": "each sample's scores divided by |dL/d final residual|",
    "same_text_base": "both models scored on the base model's answer",
    "same_text_tuned": "both models scored on the tuned model's answer",
    "margin": "target: logit margin of the answer token over the runner-up",
    "regression": "log intensity ~ log loss + model: the change at equal confidence",
}
NORMALISERS = {
    "per_loss": "loss",
    "per_grad_logits": "grad_norm_logits",
    "per_grad_resid": "grad_norm_resid",
}
# (model, batch, objective or None, label) -> EdgeScores: how a control gets scores (a cache).
Scorer = Callable[[Any, ModelBatch, "Objective | None", str], EdgeScores]


def check_controls(controls: list[str]) -> list[str]:
    """The controls asked for, in the report's order; raises naming the valid ones."""
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown controls {unknown}; choose from {', '.join(CONTROLS)}")
    return [c for c in CONTROLS if c in controls]


def margin_objective(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Minus the mean logit margin (answer token over the best other token), float32 [batch].

    Same alignment and label convention as `eap.per_sample_loss`; the sign makes it a loss
    (lower when the model prefers its answer more), which no metric of the report depends on.
    """
    batch = logits.shape[0]
    labels = labels.to(logits.device)
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    z = logits[keep].float()
    answer = targets[keep].unsqueeze(1)
    runner_up = z.scatter(1, answer, float("-inf")).amax(1)
    margin = z.gather(1, answer).squeeze(1) - runner_up
    rows = keep.nonzero()[:, 0]
    total = torch.zeros(batch, dtype=torch.float32, device=logits.device).index_add(0, rows, margin)
    return -total / keep.sum(-1)


def normalise(scores: EdgeScores, by: str) -> EdgeScores:
    """Each sample's scores divided by its `loss`, `grad_norm_logits` or `grad_norm_resid`."""
    factor = getattr(scores, by, None)
    if factor is None:
        raise ValueError(
            f"these scores carry no {by!r}; re-score them with this version of eap.edge_scores "
            "(a cached file from before the gradient norms were recorded lacks them)"
        )
    if not bool((factor > 0).all()):
        raise ValueError(f"{by} is zero for some sample: its scores cannot be normalised")
    return replace(scores, scores=scores.scores / factor.view(-1, 1, 1))


def without_first_token(batch: ModelBatch) -> ModelBatch:
    """The same inputs with the first answer token's label masked (window [1, T_cut))."""
    return replace(batch, labels=window_labels(batch.labels, 1))


def direct_scorer(chunk: int = 16, **kwargs: Any) -> Scorer:
    """A `Scorer` that calls `edge_scores` in chunks, without a cache (tests, small runs)."""

    def score(model: Any, batch: ModelBatch, objective: Objective | None, label: str) -> EdgeScores:
        n = batch.input_ids.shape[0]
        parts = [
            edge_scores(
                model,
                batch.input_ids[i : i + chunk],
                batch.attention_mask[i : i + chunk],
                batch.labels[i : i + chunk],
                objective=objective,
                **kwargs,
            )
            for i in range(0, n, chunk)
        ]
        return concat(parts)

    return score


def control_scores(
    score: Scorer,
    base: Any,
    tuned: Any,
    selection: Selection,
    controls: list[str],
    raw: tuple[EdgeScores, EdgeScores] | None = None,
) -> dict[str, tuple[EdgeScores, EdgeScores]]:
    """(base, tuned) score sets of each control on one selection (one tuned seed).

    `raw` reuses scores already computed; the normalised controls and the regression need no
    further EAP call, the others one per model (same text: one, for the model on the other's
    answer). A control undefined here (no first token to drop at T_cut = 1) is left out; "raw"
    is always in the result (the regression reads it).
    """
    controls = check_controls(controls)
    text = selection.batches
    if raw is None:
        raw = (score(base, text["base"], None, "base"), score(tuned, text["tuned"], None, "tuned"))
    out: dict[str, tuple[EdgeScores, EdgeScores]] = {"raw": raw}
    for name in controls:
        if name in NORMALISERS:
            out[name] = (normalise(raw[0], NORMALISERS[name]), normalise(raw[1], NORMALISERS[name]))
        elif name == "no_first_token" and selection.t_cut >= 2:
            out[name] = tuple(  # type: ignore[assignment]
                score(m, without_first_token(text[r]), None, f"{r} without first token")
                for m, r in ((base, "base"), (tuned, "tuned"))
            )
        elif name == "same_text_base":
            out[name] = (raw[0], score(tuned, text["base"], None, "tuned on base's answer"))
        elif name == "same_text_tuned":
            out[name] = (score(base, text["tuned"], None, "base on tuned's answer"), raw[1])
        elif name == "margin":
            out[name] = tuple(  # type: ignore[assignment]
                score(m, text[r], margin_objective, f"{r} margin")
                for m, r in ((base, "base"), (tuned, "tuned"))
            )
    return {name: out[name] for name in ("raw", *controls) if name in out}


def control_table(
    per_seed: list[dict[str, tuple[EdgeScores, EdgeScores]]],
    controls: list[str],
    **compare_options: Any,
) -> pd.DataFrame:
    """The comparison table of every control, pooled over tuned seeds: one row per (control,
    metric). A control missing for every seed (e.g. no first token at T_cut = 1) gets NaN rows,
    so its column exists and no test is counted for it.
    """
    controls = check_controls(controls)
    frames = []
    for name in controls:
        if name == "regression":
            raws = [seed["raw"] for seed in per_seed if "raw" in seed]
            frame = regression_table(raws, **_regression_options(compare_options))
        else:
            pairs = [seed[name] for seed in per_seed if name in seed]
            frame = compare_pooled(pairs, **compare_options) if pairs else _undefined(name)
        frames.append(frame.assign(control=name))
    table = pd.concat(frames, ignore_index=True)
    extra = [c for c in table.columns if c not in COLUMNS and c != "control"]
    return table.reindex(columns=["control", *COLUMNS, *extra])


def _regression_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: options[k] for k in ("n_boot", "seed", "ci") if k in options}


def _undefined(name: str) -> pd.DataFrame:
    """NaN rows (every comparison column) for a control that is undefined on this setting."""
    rows = {"metric": [m.name for m in METRICS], "kind": [m.kind for m in METRICS]}
    rows["claimed"] = [m.claimed for m in METRICS]
    return pd.DataFrame(rows).reindex(columns=COLUMNS).assign(n_samples=0, n_seeds=0)


# --------------------------------------------------------------------------- regression


def question_values(scores: EdgeScores) -> pd.DataFrame:
    """Per question: its loss and its per-sample metrics (intensity, edge entropy, kurtosis)."""
    ss = M.as_score_set(scores)
    return pd.DataFrame(
        {
            "loss": scores.loss.double().numpy(),
            "intensity": M.sample_intensity(ss),
            "edge_entropy": M.sample_edge_entropy(ss),
            "kurtosis": M.sample_kurtosis(ss),
        }
    )


def _wls_model_effect(y: np.ndarray, x: np.ndarray, model: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Model coefficient of y ~ 1 + x + model by weighted least squares, one fit per weight row."""
    design = np.stack([np.ones_like(x), x, model], axis=1)  # [N, 3]
    xtx = np.einsum("bn,ni,nj->bij", w, design, design)
    xty = np.einsum("bn,ni,n->bi", w, design, y)
    with np.errstate(invalid="ignore"):
        beta = np.linalg.solve(xtx + 1e-12 * np.eye(3), xty[..., None])[..., 0]
    return beta[:, 2]


def loss_overlap(base_loss: np.ndarray, tuned_loss: np.ndarray) -> float:
    """Share of all questions whose loss lies inside both models' loss ranges (0: no overlap)."""
    lo = max(base_loss.min(), tuned_loss.min())
    hi = min(base_loss.max(), tuned_loss.max())
    both = np.concatenate([base_loss, tuned_loss])
    return float(((both >= lo) & (both <= hi)).mean()) if hi >= lo else 0.0


def regression_table(
    raws: list[tuple[EdgeScores, EdgeScores]],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
) -> pd.DataFrame:
    """Per-sample metrics at equal confidence: metric ~ log loss + model, per question.

    Intensity is fitted on the log scale (its model term c gives a relative change exp(c) - 1);
    edge entropy and kurtosis linearly (relative change c / base mean). The slope on log loss is
    learnt across questions; seeds are pooled into one fit; the interval and p-value come
    from the same seed-then-question bootstrap as every other control (a question's two rows are drawn together). Set-level
    metrics have no per-question value: NaN rows. ``loss_overlap`` says how much "equal loss"
    is inside the data rather than an extrapolation.
    """
    if not raws:
        raise ValueError("regression_table needs the raw scores of at least one seed")
    frames_b = [question_values(b) for b, _ in raws]
    frames_t = [question_values(t) for _, t in raws]
    sizes = [len(f) for f in frames_b]
    bad = [i for i, (b, t) in enumerate(zip(frames_b, frames_t, strict=True)) if len(b) != len(t)]
    if bad:
        raise ValueError(f"seeds {bad}: base and tuned are not scored on the same questions")
    vb, vt = pd.concat(frames_b, ignore_index=True), pd.concat(frames_t, ignore_index=True)
    if not ((vb["loss"] > 0).all() and (vt["loss"] > 0).all()):
        raise ValueError("a loss is zero or negative: log loss is undefined (raw NLL scores only)")
    w = two_stage_weights(sizes, n_boot, seed)
    x = np.log(np.concatenate([vb["loss"], vt["loss"]]))
    x -= x.mean()  # centred, so the intercept is the level at the pooled mean log loss
    model = np.repeat([0.0, 1.0], len(vb))
    rows = []
    for spec in METRICS:
        row: dict[str, Any] = {"metric": spec.name, "kind": spec.kind, "claimed": spec.claimed}
        if spec.kind == "per-sample":
            y = np.concatenate([vb[spec.name], vt[spec.name]])
            row.update(_fit_row(spec, y, x, model, np.concatenate([w, w], axis=1), ci))
        row.update(n_samples=int(sum(sizes)), n_boot=n_boot, n_seeds=len(sizes))
        rows.append(row)
    table = pd.DataFrame(rows)
    table["loss_overlap"] = loss_overlap(vb["loss"].to_numpy(), vt["loss"].to_numpy())
    return table


def _fit_row(
    spec: Any, y: np.ndarray, x: np.ndarray, model: np.ndarray, w: np.ndarray, ci: float
) -> dict[str, Any]:
    """Table entries of one metric's model effect: point fit, bootstrap fits, interval, p."""
    log_scale = spec.name == "intensity"
    if log_scale:
        y = np.log(y)
    point = float(_wls_model_effect(y, x, model, np.ones((1, len(y))))[0])
    draws = _wls_model_effect(y, x, model, w)
    level = float(y[model == 0].mean())
    base = float(np.exp(level)) if log_scale else level
    if log_scale:
        rel, rel_draws = float(np.expm1(point)), np.expm1(draws)
    else:
        rel, rel_draws = point / abs(base), draws / abs(base)
    rlo, rhi = percentile_interval(rel_draws, ci)
    tuned = base * (1 + rel) if log_scale else base + point
    sign = 1 if spec.claimed == "up" else -1
    return {
        "base": base,
        "tuned": tuned,
        "change": tuned - base,
        "rel_change": rel,
        "ci_low": rlo * abs(base),
        "ci_high": rhi * abs(base),
        "rel_ci_low": rlo,
        "rel_ci_high": rhi,
        "ci_excludes_zero": bool(rlo > 0 or rhi < 0),
        "p_boot": bootstrap_p(draws),
        "matches_claim": bool(sign * rel > 0),
    }
