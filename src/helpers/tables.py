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
