"""Result tables the summary and dynamics pages show: pivots of the per-pair metric rows.

Each takes the long metric table (one row per pair, alpha and metric, as `analysis.load_results`
or `PairAnalysis.metric_table` give it) and returns a frame ready to display.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd


def wide(
    results: pd.DataFrame, cell: Callable[[pd.Series], Any], metrics: Sequence[str]
) -> pd.DataFrame:
    """One row per (pair, algorithm, alpha), one column per metric, each cell `cell(row)`."""
    shown = results.assign(cell=results.apply(cell, axis=1))
    table = shown.pivot_table(
        index=["pair", "algorithm", "alpha"], columns="metric", values="cell", aggfunc="first"
    )
    return table.reindex(columns=list(metrics))


def before_after(results: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Each metric as "base → tuned" values."""
    return wide(results, lambda r: f"{r['base']:.3g} → {r['tuned']:.3g}", metrics)


def change_with_interval(results: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Each metric's relative change (%), its 95% interval, and ✓/✗ for the study's direction."""

    def cell(r: pd.Series) -> str:
        mark = "✓" if r["matches_claim"] else "✗"
        return (
            f"{100 * r['rel_change']:+.1f}% [{100 * r['rel_ci_low']:+.1f}, "
            f"{100 * r['rel_ci_high']:+.1f}] {mark}"
        )

    return wide(results, cell, metrics)


def claim_share(results: pd.DataFrame, algorithms: Sequence[str], metric: str) -> float:
    """Fraction of the settings of `algorithms` where `metric` moves as the study reports (NaN if none)."""
    rows = results[results["algorithm"].isin(list(algorithms)) & (results["metric"] == metric)]
    return float(rows["matches_claim"].mean()) if len(rows) else float("nan")


def dynamics_wide(
    changes: pd.DataFrame, checkpoints: pd.DataFrame, metrics: Sequence[str]
) -> pd.DataFrame:
    """Per (run, step): each metric's relative change against the base, with the checkpoint's
    evaluation columns; step 0 (the base itself) is added with zero change."""
    table = changes.pivot_table(
        index=["run", "step"], columns="metric", values="rel_change"
    ).reset_index()
    table = table.merge(checkpoints, on=["run", "step"])
    runs = list(dict.fromkeys(changes["run"]))
    origin = pd.DataFrame([{"run": r, "step": 0, **{m: 0.0 for m in metrics}} for r in runs])
    origin = origin.merge(checkpoints, on=["run", "step"])
    out = pd.concat([origin, table], ignore_index=True)
    return out.sort_values(["run", "step"], ignore_index=True)


def _interval_cell(r: pd.Series) -> str:
    """'+12.3% [+3.1, +20.0]', with ' *' when significant by the report's rule; '—' if no test."""
    if pd.isna(r["rel_change"]):
        return "—"
    mark = " *" if r.get("significant", False) else ""
    return (
        f"{100 * r['rel_change']:+.1f}% [{100 * r['rel_ci_low']:+.1f}, "
        f"{100 * r['rel_ci_high']:+.1f}]{mark}"
    )


def control_grid(table: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One pair's changes under every control: rows (T_cut, metric), one column per control.

    Alphas with the same T_cut are shown once (``stats.distinct_settings``); * marks a change
    significant after Holm's correction over every test of that control's column.
    """
    from helpers.controls import CONTROLS
    from helpers.stats import distinct_settings, mark_significance

    rows = distinct_settings(table, ["control", "metric"])
    rows = mark_significance(rows, ["control"]).assign(
        cell=lambda d: d.apply(_interval_cell, axis=1)
    )
    grid = rows.pivot_table(
        index=["alphas", "t_cut", "metric"], columns="control", values="cell", aggfunc="first"
    )
    order = list(metrics) if metrics else list(dict.fromkeys(table["metric"]))
    grid = grid.reindex(columns=[c for c in CONTROLS if c in grid.columns])
    keys = sorted(grid.index, key=lambda k: (k[1], order.index(k[2]) if k[2] in order else 99))
    return grid.reindex([k for k in keys if k[2] in order])


def control_summary(
    ev: pd.DataFrame, metrics: Sequence[str], controls: Sequence[str]
) -> pd.DataFrame:
    """Every pair and distinct setting: `metrics` x `controls`, change [interval] (* significant).

    `ev` is `verdict.evidence(results)`: the settings already deduplicated and marked.
    """
    part = ev[ev["metric"].isin(list(metrics)) & ev["control"].isin(list(controls))]
    part = part.assign(cell=part.apply(_interval_cell, axis=1))
    grid = part.pivot_table(
        index=["algorithm", "pair", "alphas"],
        columns=["metric", "control"],
        values="cell",
        aggfunc="first",
    )
    wanted = [(m, c) for m in metrics for c in controls if (m, c) in grid.columns]
    return grid.reindex(columns=pd.MultiIndex.from_tuples(wanted, names=["metric", "control"]))


SENTENCE_CONTROLS = {
    "per_grad_resid": "normalised by |dL/d residual|",
    "same_text_base": "on the base model's answer",
    "margin": "with the logit-margin target",
    "regression": "at equal loss",
}


def controls_sentence(controls: pd.DataFrame, alpha: float, metric: str = "intensity") -> str:
    """A pair page's reading of one metric under the raw definition and the main controls."""
    rows = controls.set_index(["control", "metric"])

    def say(control: str) -> str:
        r = rows.loc[(control, metric)]
        if pd.isna(r["rel_change"]):
            return "undefined"
        return (
            f"{100 * r['rel_change']:+.1f}% [{100 * r['rel_ci_low']:+.1f}, "
            f"{100 * r['rel_ci_high']:+.1f}]"
        )

    parts = [f"{say('raw')} raw"] if ("raw", metric) in rows.index else []
    parts += [
        f"{say(c)} {label}" for c, label in SENTENCE_CONTROLS.items() if (c, metric) in rows.index
    ]
    return f"**Controls.** At alpha = {alpha:g}, {metric} changes by " + "; ".join(parts) + "."


def kl_matched(changes: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Rows: algorithm at a KL level (the `pair` label); columns: metric x control, each cell the
    relative change against the base with its interval (`changes`: `analysis.changes_along`)."""
    table = changes[changes["metric"].isin(metrics)].copy()
    table["cell"] = table.apply(_interval_cell, axis=1)
    out = table.pivot_table(
        index="pair", columns=["control", "metric"], values="cell", aggfunc="first"
    )
    order = list(dict.fromkeys(changes["pair"]))
    return out.reindex(order)[[c for c in out.columns if c[1] in metrics]]
