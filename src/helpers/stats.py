"""Paired base-vs-tuned comparison of edge metrics: seeded bootstrap over questions, Wilcoxon test.

Both models answer the same questions in the same order, so sample k of ``base`` and sample k of
``tuned`` are a pair. The bootstrap resamples question indices *jointly* for both models and
recomputes every metric on each resample, fully vectorised through resample multiplicities
``m [n_boot, n]`` (how often each question was drawn):

* per-sample metrics (intensity, bin-free edge entropy, kurtosis): the resample value is
  ``m @ v / n``;
* information complexity: per-question histogram counts are computed once on a fixed range and
  summed with weights ``m``, so every resample uses the same bins (the range is part of the
  metric's definition, not re-estimated per resample);
* diversity: the ``n x n`` correlation matrix ``C`` is computed once; a resample's mean pairwise
  correlation averages ``C`` over pairs of *distinct original questions*, weighted by
  ``m_i m_j``: ``(m^T C m - sum m_i^2) / (n^2 - sum m_i^2)``. Pairs formed by a question drawn
  twice are excluded, since their correlation of 1 is an artefact of resampling, not similarity
  between questions (including them would bias resampled diversity down by about 1/n).

Intervals are percentile intervals of ``tuned_b - base_b`` (and of ``(tuned_b - base_b) /
|base_b|``). The paired test is the two-sided Wilcoxon signed-rank test on per-question metric
values; set-level metrics (information complexity, diversity) have none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as sps

from helpers import metrics as M

Direction = Literal["up", "down"]


@dataclass(frozen=True)
class MetricSpec:
    """A metric compared by :func:`compare`: whether it is per-sample, and the study's claim."""

    name: str
    kind: Literal["per-sample", "set"]
    claimed: Direction


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("intensity", "per-sample", "up"),
    MetricSpec("information_complexity", "set", "up"),
    MetricSpec("edge_entropy", "per-sample", "up"),
    MetricSpec("kurtosis", "per-sample", "down"),
    MetricSpec("diversity", "set", "up"),
)

COLUMNS = [
    "metric",
    "kind",
    "base",
    "tuned",
    "change",
    "rel_change",
    "ci_low",
    "ci_high",
    "rel_ci_low",
    "rel_ci_high",
    "ci_excludes_zero",
    "p_wilcoxon",
    "p_boot",
    "claimed",
    "matches_claim",
    "n_samples",
    "n_boot",
    "n_seeds",
]


# --------------------------------------------------------------------------- bootstrap machinery


def resample_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Seeded bootstrap draws of question indices, ``[n_boot, n]`` ints in ``[0, n)``."""
    if n < 1 or n_boot < 1:
        raise ValueError(
            f"need n >= 1 samples and n_boot >= 1 resamples, got n={n}, n_boot={n_boot}"
        )
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def multiplicities(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each question appears in each resample: ``[n_boot, n]`` float64."""
    n_boot = idx.shape[0]
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def boot_mean(values: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Resampled means of per-sample ``values [n]`` given multiplicities ``m [B, n]``."""
    return m @ values / m.shape[1]


def boot_histogram_entropy(counts: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Resampled pooled-histogram entropies (nats) from per-sample ``counts [n, bins]``."""
    return M.entropy(m @ counts)


def boot_diversity(corr: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Resampled diversities from the full ``corr [n, n]``, excluding same-question pairs.

    NaN for a resample that drew a single question only.
    """
    quad = np.einsum("bi,ij,bj->b", m, corr, m)
    self_w = (m**2) @ np.diag(corr)
    n = m.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_corr = (quad - self_w) / (n**2 - (m**2).sum(axis=1))
    return 1.0 - mean_corr


def percentile_interval(draws: np.ndarray, ci: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``draws`` (NaN draws ignored)."""
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    alpha = (1 - ci) / 2
    lo, hi = np.nanquantile(draws, [alpha, 1 - alpha])
    return float(lo), float(hi)


def paired_wilcoxon(base: np.ndarray, tuned: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of per-question ``tuned - base``; 1.0 if all equal."""
    d = np.asarray(tuned, np.float64) - np.asarray(base, np.float64)
    if not np.any(d != 0):
        return 1.0
    return float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


# --------------------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class _Prepared:
    """Per-model quantities that the point estimates and all resamples are built from."""

    per_sample: dict[str, np.ndarray]
    hist_counts: np.ndarray
    corr: np.ndarray


def _prepare(
    ss: M.ScoreSet,
    *,
    bins: int,
    hist_range: tuple[float, float],
    edges: M.Edges,
    use_abs_diversity: bool,
) -> _Prepared:
    w = ss.edge_matrix(edges)
    abs_w = np.abs(w)
    return _Prepared(
        per_sample={
            "intensity": abs_w.mean(axis=1),
            "edge_entropy": M.sample_edge_entropy(ss, edges=edges),
            "kurtosis": M.sample_kurtosis(ss, edges=edges),
        },
        hist_counts=M.sample_histograms(abs_w, bins, hist_range),
        corr=M.correlation_matrix(ss, edges=edges, use_abs=use_abs_diversity),
    )


def _point_and_boot(p: _Prepared, m: np.ndarray) -> dict[str, tuple[float, np.ndarray]]:
    ones = np.ones((1, m.shape[1]))
    out = {name: (float(v.mean()), boot_mean(v, m)) for name, v in p.per_sample.items()}
    out["information_complexity"] = (
        float(boot_histogram_entropy(p.hist_counts, ones)[0]),
        boot_histogram_entropy(p.hist_counts, m),
    )
    out["diversity"] = (float(boot_diversity(p.corr, ones)[0]), boot_diversity(p.corr, m))
    return out


def _paired_inputs(base: Any, tuned: Any, mask: Any | None) -> tuple[M.ScoreSet, M.ScoreSet]:
    b, t = M.as_score_set(base, mask), M.as_score_set(tuned, mask)
    if b.mask.shape != t.mask.shape or not np.array_equal(b.mask, t.mask):
        raise M.MetricInputError(
            f"base and tuned have different edge masks ({b.mask.shape} vs {t.mask.shape}); "
            "score both models on the same residual graph"
        )
    if b.n_samples != t.n_samples:
        raise M.MetricInputError(
            f"paired comparison needs the same questions for both models: base has "
            f"{b.n_samples} samples, tuned {t.n_samples}"
        )
    if b.n_samples < 2:
        raise M.MetricInputError("paired comparison needs at least two questions")
    return b, t


def _ranges(
    pairs: list[tuple[M.ScoreSet, M.ScoreSet]],
    hist_range: Literal["shared", "separate"] | tuple[float, float],
    edges: M.Edges,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Histogram ranges of (base, tuned): pooled over everything, each model's own, or fixed."""
    if not isinstance(hist_range, str):
        fixed = (float(hist_range[0]), float(hist_range[1]))
        return fixed, fixed
    if hist_range == "shared":
        shared = M.shared_range(*[x for pair in pairs for x in pair], edges=edges)
        return shared, shared
    if hist_range == "separate":
        return (
            M.shared_range(*[b for b, _ in pairs], edges=edges),
            M.shared_range(*[t for _, t in pairs], edges=edges),
        )
    raise ValueError(f"hist_range must be 'shared', 'separate' or (low, high), got {hist_range!r}")


def seed_draws(n_seeds: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seed stage of the two-stage bootstrap: ``(chosen, slots)``, both ``[n_boot, S]``.

    Draw b takes seeds ``chosen[b]`` (S of them, with replacement); its slot i reads question
    resample ``slots[b, i] = i * n_boot + b`` of the seed it took, out of ``S * n_boot`` resamples
    per seed, so a seed drawn twice gets independent question resamples.
    """
    chosen = np.random.default_rng([seed, n_seeds]).integers(0, n_seeds, size=(n_boot, n_seeds))
    slots = np.arange(n_seeds)[None, :] * n_boot + np.arange(n_boot)[:, None]
    return chosen, slots


def _seed_then_question_draws(
    per_seed: list[dict[str, tuple[float, np.ndarray]]], n_boot: int, seed: int
) -> dict[str, tuple[float, np.ndarray]]:
    """Pool seeds: point = mean over seeds; draw b = mean over the seeds it drew (`seed_draws`).

    With one seed this is the plain question bootstrap.
    """
    n_seeds = len(per_seed)
    if n_seeds == 1:
        return per_seed[0]
    chosen, slots = seed_draws(n_seeds, n_boot, seed)
    out = {}
    for name in per_seed[0]:
        stack = np.stack([d[name][1] for d in per_seed])  # [S, S * B]
        point = float(np.mean([d[name][0] for d in per_seed]))
        out[name] = (point, stack[chosen, slots].mean(axis=1))
    return out


def two_stage_weights(sizes: list[int], n_boot: int, seed: int) -> np.ndarray:
    """``[n_boot, sum(sizes)]`` bootstrap weight of every question of every seed, seeds first.

    The same draws as :func:`compare_pooled` makes, as weights on the stacked questions (for
    statistics that are not a mean over seeds, such as a regression fitted on all of them).
    """
    n_seeds = len(sizes)
    per_seed = [
        multiplicities(resample_indices(n, n_boot * n_seeds, seed + s), n)
        for s, n in enumerate(sizes)
    ]
    if n_seeds == 1:
        return per_seed[0]
    chosen, slots = seed_draws(n_seeds, n_boot, seed)
    weights = [np.zeros((n_boot, n)) for n in sizes]
    for slot in range(n_seeds):
        for s in range(n_seeds):
            hit = np.nonzero(chosen[:, slot] == s)[0]  # draws whose slot picked seed s
            weights[s][hit] += per_seed[s][slots[hit, slot]]
    return np.concatenate(weights, axis=1)


def bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no change" from the draws of a change.

    ``min(1, 2 * min(#(d <= 0), #(d >= 0)) / B)`` with the usual +1 correction: it is below
    ``1 - ci`` exactly when the percentile interval at level ``ci`` excludes zero (up to ties),
    so a multiple-testing correction of these p-values corrects the interval rule itself.
    NaN draws are ignored; all-zero draws (identical models) give 1.
    """
    d = np.asarray(draws, np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    below, above = np.count_nonzero(d <= 0), np.count_nonzero(d >= 0)
    return float(min(1.0, 2 * (min(below, above) + 1) / (d.size + 1)))


def compare_pooled(
    pairs: list[tuple[Any, Any]],
    *,
    mask: Any | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
    bins: int = M.DEFAULT_BINS,
    hist_range: Literal["shared", "separate"] | tuple[float, float] = "shared",
    edges: M.Edges = "real",
    use_abs_diversity: bool = False,
) -> pd.DataFrame:
    """Paired comparison pooled over seeds: one (base, tuned) pair of score sets per tuned seed.

    Each pair holds the questions selected for that seed (the base model scored on them, the
    tuned seed scored on them). Point values are means over seeds; intervals resample seeds,
    then questions within each drawn seed, so they include seed-to-seed variation. The Wilcoxon
    test pools every seed's per-question differences. Options as in :func:`compare`.
    """
    if not pairs:
        raise ValueError("compare_pooled needs at least one (base, tuned) pair")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1) (e.g. 0.95), got {ci}")
    sets = [_paired_inputs(b, t, mask) for b, t in pairs]
    if len({s[0].mask.shape for s in sets}) > 1:
        raise M.MetricInputError("the seeds' score sets live on different residual graphs")
    b_range, t_range = _ranges(sets, hist_range, edges)
    opts: dict[str, Any] = {"bins": bins, "edges": edges, "use_abs_diversity": use_abs_diversity}
    n_seeds = len(sets)
    prepared, eb, et = [], [], []
    for s, (b, t) in enumerate(sets):
        pb, pt = _prepare(b, hist_range=b_range, **opts), _prepare(t, hist_range=t_range, **opts)
        for model, ready, rng in (("base", pb, b_range), ("tuned", pt, t_range)):
            if ready.hist_counts.sum() == 0:  # as information_complexity itself refuses
                raise M.MetricInputError(
                    f"no |W| value of {model} falls inside hist_range={rng}; widen the range or "
                    "use hist_range='shared'"
                )
        m = multiplicities(resample_indices(b.n_samples, n_boot * n_seeds, seed + s), b.n_samples)
        prepared.append((pb, pt))
        eb.append(_point_and_boot(pb, m))
        et.append(_point_and_boot(pt, m))
    pooled_b = _seed_then_question_draws(eb, n_boot, seed)
    pooled_t = _seed_then_question_draws(et, n_boot, seed)
    n_samples = sum(b.n_samples for b, _ in sets)
    rows = [
        _row(spec, pooled_b[spec.name], pooled_t[spec.name], prepared, ci, n_samples, n_boot)
        for spec in METRICS
    ]
    table = pd.DataFrame(rows, columns=COLUMNS).assign(n_seeds=n_seeds)
    table.attrs.update(
        {
            "seed": seed,
            "ci": ci,
            "bins": bins,
            "hist_range_base": b_range,
            "hist_range_tuned": t_range,
            "edges": edges,
            "use_abs_diversity": use_abs_diversity,
            "entropy_unit": "nats",
            "n_seeds": n_seeds,
        }
    )
    return table


def _row(
    spec: MetricSpec,
    base: tuple[float, np.ndarray],
    tuned: tuple[float, np.ndarray],
    prepared: list[tuple[_Prepared, _Prepared]],
    ci: float,
    n_samples: int,
    n_boot: int,
) -> dict[str, Any]:
    """One metric's row of the comparison table from its pooled point values and draws."""
    (vb, boot_b), (vt, boot_t) = base, tuned
    change = vt - vb
    d = boot_t - boot_b
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = change / abs(vb) if vb != 0 else np.nan
        rel_d = d / np.abs(boot_b)
    lo, hi = percentile_interval(d, ci)
    rlo, rhi = percentile_interval(rel_d, ci)
    if spec.kind == "per-sample":
        pb = np.concatenate([b.per_sample[spec.name] for b, _ in prepared])
        pt = np.concatenate([t.per_sample[spec.name] for _, t in prepared])
        p = paired_wilcoxon(pb, pt)
    else:
        p = np.nan
    sign = 1 if spec.claimed == "up" else -1
    return {
        "metric": spec.name,
        "kind": spec.kind,
        "base": vb,
        "tuned": vt,
        "change": change,
        "rel_change": rel,
        "ci_low": lo,
        "ci_high": hi,
        "rel_ci_low": rlo,
        "rel_ci_high": rhi,
        "ci_excludes_zero": bool(lo > 0 or hi < 0),
        "p_wilcoxon": p,
        "p_boot": bootstrap_p(d),
        "claimed": spec.claimed,
        "matches_claim": bool(sign * change > 0),
        "n_samples": n_samples,
        "n_boot": n_boot,
    }


def compare(
    base: Any,
    tuned: Any,
    *,
    mask: Any | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    ci: float = 0.95,
    bins: int = M.DEFAULT_BINS,
    hist_range: Literal["shared", "separate"] | tuple[float, float] = "shared",
    edges: M.Edges = "real",
    use_abs_diversity: bool = False,
) -> pd.DataFrame:
    """Paired comparison of base and tuned edge scores on the same questions; one row per metric.

    ``hist_range="shared"`` (default) bins both models on ``(0, max |W|)`` pooled over both, so the
    two information complexities are measured on one scale; ``"separate"`` bins each model on its
    own ``(0, max |W|)`` (scale-free per model, but not a like-for-like comparison); a tuple fixes
    the range. ``rel_change`` is ``change / |base|``. Settings are stored in ``DataFrame.attrs``.
    One seed of :func:`compare_pooled`.
    """
    return compare_pooled(
        [(base, tuned)],
        mask=mask,
        n_boot=n_boot,
        seed=seed,
        ci=ci,
        bins=bins,
        hist_range=hist_range,
        edges=edges,
        use_abs_diversity=use_abs_diversity,
    )


def binning_sensitivity(
    base: Any,
    tuned: Any,
    *,
    bins: Sequence[int] = (20, 100, 500),
    n_boot: int = 200,
    seed: int = 0,
    metrics: Sequence[str] = ("information_complexity", "kurtosis"),
) -> pd.DataFrame:
    """Relative change of the histogram-dependent metrics under each binning convention.

    One row per (edges: real | dense, range: shared | separate, bins): whether a conclusion
    survives the choices a histogram entropy depends on. Columns "<metric> change".
    """
    rows = []
    edge_sets: tuple[M.Edges, ...] = ("real", "dense")
    ranges: tuple[Literal["shared", "separate"], ...] = ("shared", "separate")
    for edges in edge_sets:
        for hist_range in ranges:
            for b in bins:
                t = compare(
                    base,
                    tuned,
                    n_boot=n_boot,
                    bins=b,
                    hist_range=hist_range,
                    edges=edges,
                    seed=seed,
                ).set_index("metric")
                row: dict[str, Any] = {"edges": edges, "range": hist_range, "bins": b}
                for metric in metrics:
                    label = "complexity" if metric == "information_complexity" else metric
                    row[f"{label} change"] = t.loc[metric, "rel_change"]
                rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- multiple testing

ALPHA = 0.05  # the one significance level of the report


def holm(p: Any) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control under any dependence).

    Sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``; NaN entries
    are not tests: they stay NaN and do not count in m.
    """
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok], kind="stable")
        scaled = np.minimum(1.0, (m - np.arange(m)) * p[ok][order])
        adjusted = np.empty(m)
        adjusted[order] = np.maximum.accumulate(scaled)
        out[ok] = adjusted
    return out


def benjamini_hochberg(p: Any) -> np.ndarray:
    """Benjamini-Hochberg step-up adjusted p-values (false discovery rate; NaN = not a test).

    Sorted ascending, ``p_(i)`` becomes ``min_{j >= i} min(1, m p_(j) / j)``.
    """
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m:
        order = np.argsort(p[ok], kind="stable")
        scaled = np.minimum(1.0, m * p[ok][order] / np.arange(1, m + 1))
        adjusted = np.empty(m)
        adjusted[order] = np.minimum.accumulate(scaled[::-1])[::-1]
        out[ok] = adjusted
    return out


def mark_significance(table: pd.DataFrame, family: list[str] | None = None) -> pd.DataFrame:
    """Add ``p_holm`` and ``significant``: the report's one rule for "significant".

    A change is significant when its Holm-adjusted bootstrap p (``p_boot``) is below
    :data:`ALPHA`, i.e. when its interval still excludes zero after correcting for every test in
    the table (or in each group of ``family`` columns). Holm, not Benjamini-Hochberg: the tests
    of a table share their scores, so they are dependent, and Holm holds under any dependence.
    The raw ``p_boot`` and ``p_wilcoxon`` stay beside it. Rows with NaN ``p_boot`` are no test.
    """
    out = table.copy()
    if family:
        out["p_holm"] = out.groupby(family, dropna=False)["p_boot"].transform(holm)
    else:
        out["p_holm"] = holm(out["p_boot"].to_numpy())
    out["significant"] = out["p_holm"] < ALPHA
    return out


def distinct_settings(
    table: pd.DataFrame, keys: list[str], setting: str | None = None
) -> pd.DataFrame:
    """Keep one row set per identical setting: alphas with the same T_cut score the same window.

    Within each group of ``keys`` (e.g. pair, control, metric), rows whose ``setting`` value
    repeats are dropped after the first; the kept row's ``alphas`` lists every alpha it stands
    for, so a setting is reported, and counted as evidence, once. ``setting`` defaults to
    ``t_cuts`` (one T_cut per pooled seed) when the table has it, else ``t_cut``.
    """
    setting = setting or ("t_cuts" if "t_cuts" in table.columns else "t_cut")
    group = [*keys, setting]
    alphas = table.groupby(group, dropna=False)["alpha"].transform(
        lambda a: ", ".join(f"{x:g}" for x in a)
    )
    out = table.assign(alphas=alphas)
    return out.drop_duplicates(group, keep="first").reset_index(drop=True)
