"""The landing page's "results at a glance": one forest plot drawn from the result tables at build time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from helpers.book.findings import DEFAULT_CONTROL, Findings

ALGORITHM_ORDER = ("SFT", "EI", "DPO", "PPO", "GRPO")  # offline first, online RL last
FIGURE_NAME = "results_at_a_glance.png"


def focus_alpha(metrics: pd.DataFrame, preferred: float | None = None) -> float:
    """The α the landing page shows: ``preferred`` when every pair has it, else the median shared α."""
    per_pair = metrics.groupby("pair")["alpha"].apply(lambda a: set(a.round(9)))
    shared = sorted(set.intersection(*per_pair)) if len(per_pair) else []
    if not shared:
        raise ValueError("no α is shared by every pair: re-run the pairs on a common alpha list")
    if preferred is not None and round(preferred, 9) in shared:
        return preferred
    return float(shared[(len(shared) - 1) // 2])


def glance_table(
    findings: Findings, alpha: float | None = None, controls: Sequence[str] = (DEFAULT_CONTROL,)
) -> pd.DataFrame:
    """One row per metric, algorithm and control at the focus α: change and its 95% interval."""
    table = findings.metrics
    if table.empty:
        raise ValueError("no result tables: run `python -m helpers.pipeline` first")
    if "control" not in table.columns:
        table = table.assign(control=DEFAULT_CONTROL)
    shown = table[table["control"].isin(controls)]
    if shown.empty:
        raise ValueError(
            f"no rows for controls {list(controls)}; tables have "
            f"{sorted(table['control'].unique())}"
        )
    at = focus_alpha(shown, alpha)
    shown = shown[(shown["alpha"] - at).abs() < 1e-9].copy()
    twice = shown.groupby("algorithm")["pair"].transform("nunique") > 1
    shown.loc[twice, "algorithm"] = shown["algorithm"] + " (" + shown["pair"] + ")"
    rank = {a: i for i, a in enumerate(ALGORITHM_ORDER)}
    shown["_algo"] = shown["algorithm"].map(lambda a: rank.get(a.split(" (")[0], len(rank)))
    shown["_control"] = shown["control"].map({c: i for i, c in enumerate(controls)})
    shown["_metric"] = shown["metric"].map(
        {m: i for i, m in enumerate(dict.fromkeys(table["metric"]))}
    )
    shown = shown.sort_values(["_metric", "_algo", "algorithm", "_control"])
    columns = ["metric", "algorithm", "control", "alpha", "rel_change", "rel_ci_low", "rel_ci_high"]
    columns += [c for c in ("claimed", "matches_claim") if c in shown.columns]
    return shown[columns].reset_index(drop=True)


def write_figure(
    findings: Findings,
    path: Path,
    alpha: float | None = None,
    controls: Sequence[str] = (DEFAULT_CONTROL,),
) -> str:
    """Draw the forest plot of :func:`glance_table` to ``path`` (PNG); returns its caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers import plots

    table = glance_table(findings, alpha, controls)
    fig = plots.forest(table, title=f"Results at a glance (α = {table['alpha'].iloc[0]:g})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return fig.caption
