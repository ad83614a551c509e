"""The causal page's readings: Markdown paragraphs whose every number comes from its tables.

Each function takes the tables `helpers.causal` and `helpers.method_metrics` build and returns
the paragraph the page displays, so no number in the reading is typed by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from helpers.causal import Faithfulness
from helpers.method_metrics import MethodAgreement

REPORT_METHOD = "eap"  # the pair pages' attribution: the study's method


def _pp(x: float) -> str:
    """A share as whole percentage points."""
    return f"{100 * x:.0f}"


def faithfulness_reading(
    table: pd.DataFrame, faith: Sequence[Faithfulness], m: int, preferred: tuple[str, int, int]
) -> str:
    """Which method is closer to exact single-edge ablation, by how much, and at what cost."""
    method, wins, comparisons = preferred
    other = "eap" if method == "eap-ig" else "eap-ig"
    view = table[table["view"] == "per question"]
    mean = view.groupby(["method", "statistic"])["value"].mean()
    cost = {k: float(np.mean([f.seconds[k] for f in faith])) for k in ("eap", "eap-ig", "exact")}
    n_stats = view["statistic"].nunique()
    return (
        f"**Reading.** Over {len(faith)} (model, alpha) cells and {n_stats} statistics, "
        f"{method.upper()} is closer to exact ablation in {wins} of {comparisons} comparisons; "
        f"averaged over cells, Pearson {mean[(method, 'pearson')]:.2f} against "
        f"{mean[(other, 'pearson')]:.2f} for {other.upper()}, Spearman "
        f"{mean[(method, 'spearman')]:.2f} against {mean[(other, 'spearman')]:.2f}, sign agreement "
        f"{_pp(mean[(method, 'sign_agreement')])}% against {_pp(mean[(other, 'sign_agreement')])}%, "
        f"and mean absolute error {mean[(method, 'rel_error')]:.2f} against "
        f"{mean[(other, 'rel_error')]:.2f} times the mean exact effect. Per (model, alpha) cell, "
        f"EAP took {cost['eap']:.0f} s, EAP-IG with m = {m} {cost['eap-ig']:.0f} s and exact "
        f"ablation {cost['exact']:.0f} s."
    )


def method_reading(agree: MethodAgreement, preferred: tuple[str, int, int]) -> str:
    """The report's choice of attribution method, stated against what the data show."""
    method, wins, comparisons = preferred
    closer = (
        f"EAP-IG is the closer estimate ({wins} of {comparisons} comparisons)"
        if method == "eap-ig"
        else f"EAP-IG is not the closer estimate (it wins {wins} of {comparisons} comparisons)"
    )
    moved = (
        "no setting is resolved in opposite directions, so the pair pages' EAP conclusions do "
        "not hinge on the method"
        if agree.resolved_disagree == 0
        else f"{agree.resolved_disagree} are resolved in opposite directions: those conclusions "
        "of the pair pages depend on the attribution method"
    )
    return (
        f"**Choice.** The report's metrics use **{REPORT_METHOD.upper()}**, the study's method, so the replication "
        f"measures what the study measured. {closer}; on the same questions, the relative changes "
        f"of the {agree.settings} (alpha, control, metric) settings have the same sign under both "
        f"methods in {agree.same_sign}; of the {agree.both_resolved} whose intervals exclude zero "
        f"under both, {moved}. Knock-outs below rank edges by {method.upper()}, the more "
        f"faithful method here."
    )


def knockout_reading(
    curves: pd.DataFrame,
    grown: pd.DataFrame,
    ks: Sequence[int],
    *,
    method: str,
    algorithm: str,
    scale: float,
) -> str:
    """Top-k against controls at a middle k in the tuned model, and the grown edges' excess."""
    tuned = curves[(curves["model"] == "tuned") & (curves["k"] > 0)]
    at = {
        kind: tuned[tuned["kind"] == kind].set_index("k")
        for kind in ("top", "random", "mass-matched")
    }
    k_mid = ks[len(ks) // 2]
    g = grown.set_index("set")
    rnd, mm = g.loc["random"], g.loc["mass-matched"]
    beats = bool(rnd["excess_low"] > 0 and mm["excess_low"] > 0)
    n_grown = int(g.loc["grown", "k"])
    removed = "all of each edge's output" if scale == 1 else f"{_pp(scale)}% of each edge's output"
    verdict = (
        "the grown edges are needed more than edges of the same attribution."
        if beats
        else "not clearly more than both controls."
    )
    return (
        f"**Reading.** With {removed} removed, taking the top {k_mid} of {ks[-1]} edges by "
        f"{method.upper()} out of the tuned model lowers greedy accuracy by "
        f"{_pp(at['top'].loc[k_mid, 'accuracy_drop'])} points (loss "
        f"{at['top'].loc[k_mid, 'loss_change']:+.2f} nats per token), against "
        f"{_pp(at['random'].loc[k_mid, 'accuracy_drop'])} points for as many random edges and "
        f"{_pp(at['mass-matched'].loc[k_mid, 'accuracy_drop'])} points for mass-matched ones. "
        f"The {n_grown} edges {algorithm} grew cost {_pp(g.loc['grown', 'accuracy_drop'])} points "
        f"of accuracy when removed, {100 * rnd['excess_drop']:+.0f} points (95% interval "
        f"{100 * rnd['excess_low']:+.0f} to {100 * rnd['excess_high']:+.0f}) beyond random edges "
        f"and {100 * mm['excess_drop']:+.0f} points ({100 * mm['excess_low']:+.0f} to "
        f"{100 * mm['excess_high']:+.0f}) beyond mass-matched ones, over "
        f"{int(g.loc['grown', 'seeds'])} seed(s): {verdict}"
    )


def grown_contrast(
    table: pd.DataFrame, online_rl: Sequence[str], control: str = "mass-matched"
) -> str:
    """Across pairs: each algorithm's excess drop over `control`, and whether online RL's grown
    edges matter more than DPO's (intervals that do not overlap)."""
    rows = table[table["set"] == control].set_index("algorithm")
    if rows.empty:
        raise ValueError(f"no grown-edge rows against {control!r}; run the causal pages first")
    parts = [
        f"{a} {100 * r['excess_drop']:+.0f} points ({100 * r['excess_low']:+.0f} to "
        f"{100 * r['excess_high']:+.0f}; {int(r['k'])} edges, {int(r['seeds'])} seed(s))"
        for a, r in rows.iterrows()
    ]
    online = rows[rows.index.isin(online_rl)]
    dpo = rows[rows.index == "DPO"]
    if online.empty or dpo.empty:
        contrast = "Online RL and DPO are not both measured, so they are not compared."
    elif (online["excess_low"] > dpo["excess_high"].max()).all():
        contrast = "Every online-RL interval lies above DPO's: its grown edges matter more."
    elif (online["excess_high"] < dpo["excess_low"].min()).all():
        contrast = "Every online-RL interval lies below DPO's: its grown edges matter less."
    else:
        contrast = "The online-RL and DPO intervals overlap: no difference between them is shown."
    return (
        f"**Reading.** Removing the edges post-training grew costs the tuned model, beyond as many "
        f"{control} edges: " + "; ".join(parts) + f". {contrast}"
    )
