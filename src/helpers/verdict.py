"""The verdict on each of the study's claims, computed from the result tables by one stated rule.

Evidence. One row of evidence is one *distinct setting*: a pair, a control, a metric and a loss
window (alphas that give the same T_cut score the same tokens and count once). Seeds of a tuned
model are already pooled into its rows. A setting is *for* the claim when its change is
significant (``stats.mark_significance``: Holm-adjusted bootstrap p < 0.05 across every test of
that control's table, i.e. the corrected interval excludes zero) in the claimed direction, and
*against* when it is significant the other way.

Rule, per claim, control and group of algorithms (online RL = PPO and GRPO):

* **replicated**: more than half of the group's settings are for the claim and none against;
* **contradicted**: more than half are against and none for;
* **undetermined**: anything else (mixed, mostly not significant, or no settings).

Online RL against DPO (the study: online RL shows the change, DPO does not): **replicated** when
the online-RL claim is replicated and DPO's is not; **contradicted** when DPO's claim is
replicated too or the online-RL claim is contradicted; **undetermined** otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.controls import CONTROLS
from helpers.stats import METRICS, distinct_settings, mark_significance

ONLINE_RL: tuple[str, ...] = ("PPO", "GRPO")
OFFLINE: tuple[str, ...] = ("DPO",)
CLAIMS: dict[str, str] = {m.name: m.claimed for m in METRICS}
CLAIM_LABELS: dict[str, str] = {
    "intensity": "activation intensity up",
    "information_complexity": "information complexity up",
    "edge_entropy": "edge entropy (bin-free complexity) up",
    "kurtosis": "kurtosis down",
    "diversity": "inter-sample diversity up",
}
# The control the verdict rests on: the gradient at the final residual is the chain-rule factor
# every score shares, so dividing by its norm removes confidence and the unembedding's gain alike
# (helpers.controls explains the choice; tests/test_controls.py measures it).
VERDICT_CONTROL = "per_grad_resid"
REQUIRED = ("pair", "algorithm", "alpha", "t_cut", "metric", "rel_change", "p_boot", "claimed")


def evidence(results: pd.DataFrame) -> pd.DataFrame:
    """Distinct settings, marked significant by the report's rule, with their direction.

    ``direction`` is "for", "against", "not significant", or "no test" (a control undefined on
    the setting, e.g. no first token to drop at T_cut = 1). Tables without a ``control`` column
    are the raw definition.
    """
    missing = [c for c in REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(
            f"result tables lack columns {missing}; re-run the pair pages with this version "
            "(analysis.score_pair writes them)"
        )
    table = results if "control" in results.columns else results.assign(control="raw")
    table = distinct_settings(table, ["pair", "control", "metric"])
    table = mark_significance(table, ["control"])
    sign = np.where(table["claimed"] == "up", 1.0, -1.0) * np.sign(table["rel_change"])
    direction = np.select(
        [
            table["p_boot"].isna(),
            table["significant"] & (sign > 0),
            table["significant"] & (sign < 0),
        ],
        ["no test", "for", "against"],
        default="not significant",
    )
    return table.assign(direction=direction)


def significance_of(results: pd.DataFrame) -> pd.Series:
    """The report's "significant" for every row of `results`, duplicates of a setting included.

    The test is made once per distinct setting (as in `evidence`) and read back onto every
    alpha that setting stands for, so prose that counts rows uses the same rule as the verdict.
    """
    ev = evidence(results)
    setting = "t_cuts" if "t_cuts" in results.columns else "t_cut"
    keys = ["pair", "control", "metric", setting]
    table = results if "control" in results.columns else results.assign(control="raw")
    marked = table[keys].merge(ev[[*keys, "significant"]], on=keys, how="left")
    return pd.Series(marked["significant"].fillna(False).to_numpy(bool), index=results.index)


def rule(n_settings: int, n_for: int, n_against: int) -> str:
    """The one verdict rule (module docstring) on counts of settings."""
    if n_for > n_settings / 2 and n_against == 0:
        return "replicated"
    if n_against > n_settings / 2 and n_for == 0:
        return "contradicted"
    return "undetermined"


def claim_verdicts(
    ev: pd.DataFrame, groups: Mapping[str, Sequence[str]] | None = None
) -> pd.DataFrame:
    """Per claim, control and group: settings, for, against, the verdict, and the changes.

    ``groups`` maps a label to algorithms (default: online RL, then each algorithm on its own).
    Settings with no test do not count.
    """
    if groups is None:
        groups = {"online RL": ONLINE_RL, **{a: (a,) for a in sorted(ev["algorithm"].unique())}}
    rows = []
    tested = ev[ev["direction"] != "no test"]
    for label, algorithms in groups.items():
        part = tested[tested["algorithm"].isin(algorithms)]
        for (metric, control), cell in part.groupby(["metric", "control"], sort=False):
            n_for = int((cell["direction"] == "for").sum())
            n_against = int((cell["direction"] == "against").sum())
            rows.append(
                {
                    "claim": metric,
                    "control": control,
                    "group": label,
                    "n_settings": len(cell),
                    "n_for": n_for,
                    "n_against": n_against,
                    "verdict": rule(len(cell), n_for, n_against),
                    "median_rel_change": float(cell["rel_change"].median()),
                    "min_rel_change": float(cell["rel_change"].min()),
                    "max_rel_change": float(cell["rel_change"].max()),
                }
            )
    return pd.DataFrame(rows)


def contrast_verdicts(
    claims: pd.DataFrame, online: str = "online RL", offline: str = "DPO"
) -> pd.DataFrame:
    """Online RL against DPO, per claim and control, by the module's contrast rule."""
    frame = claims.set_index(["claim", "control", "group"])["verdict"].unstack("group")
    if online not in frame.columns or offline not in frame.columns:
        return pd.DataFrame(columns=["claim", "control", online, offline, "verdict"])
    pair = frame[[online, offline]].dropna()

    def decide(row: pd.Series) -> str:
        if row[offline] == "replicated" or row[online] == "contradicted":
            return "contradicted"
        if row[online] == "replicated":
            return "replicated"
        return "undetermined"

    out = pair.assign(verdict=pair.apply(decide, axis=1)).reset_index()
    out.columns.name = None
    return out


def verdict_grid(claims: pd.DataFrame, group: str = "online RL") -> pd.DataFrame:
    """Claims by controls: "verdict (for/against of n)" cells, for one group, in report order."""
    part = claims[claims["group"] == group]
    cell = part["verdict"] + " (" + part["n_for"].astype(str) + "/" + part["n_against"].astype(str)
    cell += " of " + part["n_settings"].astype(str) + ")"
    grid = part.assign(cell=cell).pivot(index="claim", columns="control", values="cell")
    order = [c for c in CLAIMS if c in grid.index]
    columns = [c for c in CONTROLS if c in grid.columns]
    return grid.reindex(index=order, columns=columns).rename(index=CLAIM_LABELS)


def contrast_grid(contrast: pd.DataFrame) -> pd.DataFrame:
    """Claims by controls: the online-RL-against-DPO verdict, in report order."""
    grid = contrast.pivot(index="claim", columns="control", values="verdict")
    order = [c for c in CLAIMS if c in grid.index]
    columns = [c for c in CONTROLS if c in grid.columns]
    return grid.reindex(index=order, columns=columns).rename(index=CLAIM_LABELS)


def summary_markdown(
    claims: pd.DataFrame, contrast: pd.DataFrame, control: str = VERDICT_CONTROL
) -> str:
    """Generated reading of the verdict: raw definition against the control it rests on."""
    lines = []
    for metric in CLAIMS:
        cells = claims[(claims["claim"] == metric) & (claims["group"] == "online RL")]
        by = cells.set_index("control")
        if "raw" not in by.index:
            continue
        text = f"- **{CLAIM_LABELS[metric]}**: {_phrase(by.loc['raw'])} on the raw definition"
        if control in by.index:
            text += f"; {_phrase(by.loc[control])} with scores normalised by |dL/d residual|"
        row = contrast[(contrast["claim"] == metric) & (contrast["control"] == control)]
        if len(row):
            text += f"; online RL against DPO: {row['verdict'].iloc[0]}"
        lines.append(text + ".")
    if not lines:
        return "No online-RL setting in the tables yet: nothing to conclude."
    head = (
        "Verdicts for online RL (PPO, GRPO), one per claim, from the tables by the rule above "
        "(settings for / against the claim, of the distinct settings):"
    )
    return "\n".join([head, *lines])


def _phrase(row: pd.Series) -> str:
    """'replicated (3 of 4 settings for, 0 against; median change +12%)'."""
    return (
        f"{row['verdict']} ({row['n_for']} of {row['n_settings']} settings for, "
        f"{row['n_against']} against; median change {100 * row['median_rel_change']:+.0f}%)"
    )
