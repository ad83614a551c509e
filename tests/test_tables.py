"""Result tables of the summary and dynamics pages, on hand-made metric rows."""

from __future__ import annotations

import math

import pandas as pd

from helpers import tables


def _results() -> pd.DataFrame:
    rows = []
    for pair, algo, change in (("a", "GRPO", 0.5), ("b", "DPO", -0.25)):
        for metric, claimed in (("intensity", "up"), ("kurtosis", "down")):
            rows.append(
                {
                    "pair": pair,
                    "algorithm": algo,
                    "alpha": 0.3,
                    "metric": metric,
                    "base": 2.0,
                    "tuned": 2.0 * (1 + change),
                    "rel_change": change,
                    "rel_ci_low": change - 0.1,
                    "rel_ci_high": change + 0.1,
                    "matches_claim": (change > 0) == (claimed == "up"),
                }
            )
    return pd.DataFrame(rows)


def test_before_after_and_change_cells() -> None:
    results = _results()
    ba = tables.before_after(results, ["kurtosis", "intensity"])
    assert list(ba.columns) == ["kurtosis", "intensity"]
    assert ba.loc[("a", "GRPO", 0.3), "intensity"] == "2 → 3"
    change = tables.change_with_interval(results, ["intensity"])
    assert change.loc[("b", "DPO", 0.3), "intensity"] == "-25.0% [-35.0, -15.0] ✗"


def test_claim_share() -> None:
    results = _results()
    assert tables.claim_share(results, ["GRPO"], "intensity") == 1.0
    assert tables.claim_share(results, ["GRPO", "DPO"], "kurtosis") == 0.5
    assert math.isnan(tables.claim_share(results, ["PPO"], "intensity"))


def test_dynamics_wide_adds_the_base_as_step_zero() -> None:
    changes = pd.DataFrame(
        {
            "run": ["ppo"] * 4,
            "step": [3, 3, 9, 9],
            "metric": ["intensity", "kurtosis"] * 2,
            "rel_change": [0.1, -0.2, 0.3, -0.4],
        }
    )
    checkpoints = pd.DataFrame({"run": ["ppo"] * 3, "step": [0, 3, 9], "acc": [0.5, 0.6, 0.7]})
    out = tables.dynamics_wide(changes, checkpoints, ["intensity", "kurtosis"])
    assert out["step"].tolist() == [0, 3, 9]
    assert out["intensity"].tolist() == [0.0, 0.1, 0.3]
    assert out["kurtosis"].tolist() == [0.0, -0.2, -0.4]
    assert out["acc"].tolist() == [0.5, 0.6, 0.7]
