"""The pair's metrics under each attribution method: does EAP vs EAP-IG change a conclusion?

The pair pages score edges with EAP (the study's method). The causal page scores the same
questions with EAP and EAP-IG for its faithfulness check; this module compares base and tuned
under both, with the report's raw definition and its verdict control, so the page can show
whether the method choice moves any relative change across zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.controls import NORMALISERS, normalise
from helpers.eap import EdgeScores
from helpers.stats import compare_pooled
from helpers.verdict import VERDICT_CONTROL

CONTROLS: tuple[str, ...] = ("raw", VERDICT_CONTROL)


def method_table(
    scores: dict[tuple[float, str], tuple[EdgeScores, EdgeScores]],
    *,
    controls: Sequence[str] = CONTROLS,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (alpha, method, control, metric): the paired relative change base -> tuned
    with its bootstrap interval, from ``scores[(alpha, method)] = (base, tuned)``."""
    rows = []
    for (alpha, method), (base, tuned) in sorted(scores.items()):
        for control in controls:
            pair = (base, tuned)
            if control != "raw":
                field_ = NORMALISERS[control]
                pair = (normalise(base, field_), normalise(tuned, field_))
            table = compare_pooled([pair], n_boot=n_boot, seed=seed)
            rows.append(table.assign(alpha=alpha, method=method, control=control))
    out = pd.concat(rows, ignore_index=True)
    keep = ["alpha", "method", "control", "metric", "base", "tuned", "rel_change", "rel_ci_low",
            "rel_ci_high", "p_boot"]  # fmt: skip
    return out[[c for c in keep if c in out.columns]]


@dataclass(frozen=True)
class MethodAgreement:
    """How often the two methods agree on a relative change's sign and on it being resolved."""

    settings: int  # (alpha, control, metric) cells compared
    same_sign: int  # cells whose relative change has the same sign under both methods
    both_resolved: int  # cells where both intervals exclude zero
    resolved_disagree: int  # cells where both exclude zero, on opposite sides


def agreement(table: pd.DataFrame, a: str = "eap", b: str = "eap-ig") -> MethodAgreement:
    """Compare method `a` with `b` cell by cell on `method_table`'s output."""
    wide = table.pivot_table(
        index=["alpha", "control", "metric"],
        columns="method",
        values=["rel_change", "rel_ci_low", "rel_ci_high"],
    )
    methods = set(wide.columns.get_level_values("method"))
    wide = wide.dropna() if {a, b} <= methods else wide.iloc[0:0]
    if wide.empty:
        raise ValueError(f"no (alpha, control, metric) cell has both {a!r} and {b!r}")
    sign_a, sign_b = np.sign(wide[("rel_change", a)]), np.sign(wide[("rel_change", b)])

    def resolved(m: str) -> pd.Series:
        return (wide[("rel_ci_low", m)] > 0) | (wide[("rel_ci_high", m)] < 0)

    both = resolved(a) & resolved(b)
    return MethodAgreement(
        settings=len(wide),
        same_sign=int((sign_a == sign_b).sum()),
        both_resolved=int(both.sum()),
        resolved_disagree=int((both & (sign_a != sign_b)).sum()),
    )
