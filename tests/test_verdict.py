"""The verdict rule on small synthetic result tables (helpers.verdict)."""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import verdict as V


def rows(
    pair: str,
    algorithm: str,
    settings: list[tuple[float, int, float, float]],
    control="raw",
    metric="intensity",
    claimed="up",
) -> list[dict]:
    """(alpha, t_cut, rel_change, p_boot) per setting."""
    return [
        {
            "pair": pair,
            "algorithm": algorithm,
            "alpha": a,
            "t_cut": t,
            "metric": metric,
            "rel_change": r,
            "p_boot": p,
            "claimed": claimed,
            "control": control,
        }
        for a, t, r, p in settings
    ]


def test_rule() -> None:
    assert V.rule(4, 3, 0) == "replicated"
    assert V.rule(4, 2, 0) == "undetermined"  # half is not more than half
    assert V.rule(4, 3, 1) == "undetermined"  # any setting against blocks it
    assert V.rule(3, 0, 2) == "contradicted"
    assert V.rule(0, 0, 0) == "undetermined"


def test_evidence_counts_identical_t_cut_once_and_corrects_per_control() -> None:
    table = pd.DataFrame(
        rows("ppo", "PPO", [(0.03, 1, 0.2, 0.001), (0.1, 1, 0.2, 0.001), (0.3, 3, -0.1, 0.002)])
        + rows("ppo", "PPO", [(0.03, 1, 0.2, 0.03), (0.3, 3, 0.3, 0.04)], control="margin")
    )
    ev = V.evidence(table).set_index(["control", "alpha"])
    assert len(ev) == 4  # alpha 0.1 duplicates alpha 0.03 (both T_cut 1) under raw
    assert ev.loc[("raw", 0.03), "alphas"] == "0.03, 0.1"
    # raw: Holm over its two tests gives 0.002, 0.004. margin: 0.03 and 0.04 are each below
    # 0.05 but not after Holm (0.06, 0.06), so neither counts.
    assert ev.loc[("raw", 0.03), "p_holm"] == pytest.approx(0.002)
    assert ev.loc[("raw", 0.03), "direction"] == "for"
    assert ev.loc[("raw", 0.3), "direction"] == "against"
    assert ev.loc[("margin", 0.03), "p_holm"] == pytest.approx(0.06)
    assert (ev.loc["margin", "direction"] == "not significant").all()


def test_significance_of_reads_the_rule_back_onto_every_alpha() -> None:
    table = pd.DataFrame(
        rows("ppo", "PPO", [(0.03, 1, 0.2, 0.001), (0.1, 1, 0.2, 0.001), (0.3, 3, 0.1, 0.03)])
    )
    # Two distinct tests (T_cut 1, 3): Holm gives 0.002 and 0.03; both below 0.05.
    assert V.significance_of(table).tolist() == [True, True, True]
    table.loc[2, "p_boot"] = 0.2
    assert V.significance_of(table).tolist() == [True, True, False]


def test_claim_verdicts_and_online_rl_against_dpo() -> None:
    table = pd.DataFrame(
        rows("ppo", "PPO", [(0.1, 2, 0.3, 0.001), (0.3, 5, 0.2, 0.001)])
        + rows("grpo", "GRPO", [(0.1, 2, 0.4, 0.001), (0.3, 5, 0.01, 0.6)])
        + rows("dpo", "DPO", [(0.1, 2, 0.02, 0.7), (0.3, 5, -0.01, 0.8)])
        # kurtosis: claimed down; online RL raises it significantly everywhere.
        + rows(
            "ppo",
            "PPO",
            [(0.1, 2, 0.5, 0.001), (0.3, 5, 0.4, 0.001)],
            metric="kurtosis",
            claimed="down",
        )
        + rows(
            "grpo",
            "GRPO",
            [(0.1, 2, 0.5, 0.001), (0.3, 5, 0.4, 0.001)],
            metric="kurtosis",
            claimed="down",
        )
        + rows(
            "dpo",
            "DPO",
            [(0.1, 2, 0.5, 0.001), (0.3, 5, 0.4, 0.001)],
            metric="kurtosis",
            claimed="down",
        )
        # A control undefined at every setting: no test, so undetermined with 0 settings.
        + rows("ppo", "PPO", [(0.1, 2, float("nan"), float("nan"))], control="no_first_token")
    )
    claims = V.claim_verdicts(V.evidence(table))
    online = claims[claims["group"] == "online RL"].set_index(["claim", "control"])
    assert online.loc[("intensity", "raw"), ["n_settings", "n_for", "n_against"]].tolist() == [
        4,
        3,
        0,
    ]
    assert online.loc[("intensity", "raw"), "verdict"] == "replicated"
    assert online.loc[("kurtosis", "raw"), "verdict"] == "contradicted"
    assert ("intensity", "no_first_token") not in online.index
    dpo = claims[claims["group"] == "DPO"].set_index(["claim", "control"])
    assert dpo.loc[("intensity", "raw"), "verdict"] == "undetermined"
    contrast = V.contrast_verdicts(claims)
    by = contrast.set_index(["claim", "control"])
    assert by.loc[("intensity", "raw"), "verdict"] == "replicated"
    assert by.loc[("kurtosis", "raw"), "verdict"] == "contradicted"
    assert V.contrast_grid(contrast).loc["kurtosis down", "raw"] == "contradicted"
    grid = V.verdict_grid(claims)
    assert grid.loc["activation intensity up", "raw"] == "replicated (3/0 of 4)"
    text = V.summary_markdown(claims, contrast, control="raw")
    assert "**activation intensity up**: replicated (3 of 4 settings for, 0 against" in text
    assert "median change +25%" in text  # median of +30, +40, +20, +1
    assert "online RL against DPO: replicated" in text


def test_evidence_names_missing_columns() -> None:
    with pytest.raises(ValueError, match="p_boot"):
        V.evidence(pd.DataFrame(rows("a", "PPO", [(0.1, 1, 0.1, 0.1)])).drop(columns="p_boot"))


def test_control_grid_and_summary_show_each_distinct_setting_once() -> None:
    from helpers import tables

    table = pd.DataFrame(
        rows("ppo", "PPO", [(0.03, 1, 0.2, 0.001), (0.1, 1, 0.2, 0.001), (0.3, 3, -0.1, 0.3)])
        + rows(
            "ppo",
            "PPO",
            [
                (0.03, 1, float("nan"), float("nan")),
                (0.1, 1, float("nan"), float("nan")),
                (0.3, 3, 0.05, 0.01),
            ],
            control="no_first_token",
        )
    ).assign(
        rel_ci_low=lambda d: d["rel_change"] - 0.05, rel_ci_high=lambda d: d["rel_change"] + 0.05
    )
    grid = tables.control_grid(table)
    assert list(grid.columns) == ["raw", "no_first_token"]  # the report's order of controls
    assert list(grid.index) == [("0.03, 0.1", 1, "intensity"), ("0.3", 3, "intensity")]
    assert grid.loc[("0.03, 0.1", 1, "intensity"), "raw"] == "+20.0% [+15.0, +25.0] *"
    assert grid.loc[("0.3", 3, "intensity"), "raw"] == "-10.0% [-15.0, -5.0]"
    assert grid.loc[("0.03, 0.1", 1, "intensity"), "no_first_token"] == "—"
    summary = tables.control_summary(V.evidence(table), ["intensity"], ["raw", "no_first_token"])
    assert summary.shape == (2, 2)
    assert (
        summary.loc[("PPO", "ppo", "0.3"), ("intensity", "no_first_token")]
        == "+5.0% [+0.0, +10.0] *"
    )
