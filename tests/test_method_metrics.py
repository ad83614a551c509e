"""The pair's metrics under EAP and EAP-IG (`helpers.method_metrics`) and the causal page's
readings (`helpers.causal_reading`): counts and sentences follow their tables."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from helpers import causal_reading, method_metrics
from helpers.eap import edge_scores
from helpers.graph import residual_graph
from helpers.tiny_models import tiny_model


def _cell(alpha, method, control, metric, rel, lo, hi) -> dict:
    return {"alpha": alpha, "method": method, "control": control, "metric": metric,
            "rel_change": rel, "rel_ci_low": lo, "rel_ci_high": hi}  # fmt: skip


def test_agreement_counts_signs_and_resolved_cells() -> None:
    rows = [
        # same sign, both resolved
        _cell(0.3, "eap", "raw", "intensity", 0.2, 0.1, 0.3),
        _cell(0.3, "eap-ig", "raw", "intensity", 0.5, 0.2, 0.8),
        # opposite signs, both resolved: a conclusion that depends on the method
        _cell(0.3, "eap", "raw", "kurtosis", 0.2, 0.1, 0.3),
        _cell(0.3, "eap-ig", "raw", "kurtosis", -0.2, -0.3, -0.1),
        # opposite signs, EAP-IG unresolved
        _cell(0.3, "eap", "raw", "diversity", -0.1, -0.2, -0.05),
        _cell(0.3, "eap-ig", "raw", "diversity", 0.1, -0.1, 0.3),
        # only one method: not compared
        _cell(0.1, "eap", "raw", "intensity", 0.2, 0.1, 0.3),
    ]
    got = method_metrics.agreement(pd.DataFrame(rows))
    assert got == method_metrics.MethodAgreement(
        settings=3, same_sign=1, both_resolved=2, resolved_disagree=1
    )
    text = causal_reading.method_reading(got, ("eap-ig", 9, 14))
    assert "same sign under both methods in 1" in text and "of the 2 whose" in text
    assert "1 are resolved in opposite directions" in text and "9 of 14" in text


def test_agreement_names_the_fix_without_common_cells() -> None:
    table = pd.DataFrame([_cell(0.3, "eap", "raw", "intensity", 0.2, 0.1, 0.3)])
    with pytest.raises(ValueError, match="both 'eap' and 'eap-ig'"):
        method_metrics.agreement(table)


def test_method_table_on_a_tiny_model() -> None:
    model = tiny_model("llama", num_hidden_layers=2, vocab_size=40)
    ids = torch.randint(3, 40, (6, 8), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :3] = -100
    scores = {}
    for method in ("eap", "eap-ig"):
        base = edge_scores(model, ids, None, labels, method=method, m=2)
        tuned = edge_scores(model, ids.flip(0), None, labels.flip(0), method=method, m=2)
        scores[(0.3, method)] = (base, tuned)
    table = method_metrics.method_table(scores, n_boot=50)
    assert set(table["control"]) == {"raw", "per_grad_resid"}
    assert set(table["method"]) == {"eap", "eap-ig"}
    # the same model on the same questions in another order: every mean metric is unchanged
    raw = table[(table["control"] == "raw") & (table["metric"] == "intensity")]
    assert raw["rel_change"].abs().max() < 1e-6
    assert residual_graph(2).mask.sum() > 0


def _grown(algorithm: str, excess: tuple[float, float, float]) -> list[dict]:
    e, lo, hi = excess
    base = {"pair": f"causal_{algorithm.lower()}", "algorithm": algorithm, "k": 10, "seeds": 3}
    return [
        {**base, "set": "grown", "excess_drop": float("nan"), "excess_low": float("nan"),
         "excess_high": float("nan")},
        {**base, "set": "mass-matched", "excess_drop": e, "excess_low": lo, "excess_high": hi},
    ]  # fmt: skip


def test_grown_contrast_reads_the_intervals() -> None:
    table = pd.DataFrame(
        _grown("PPO", (0.2, 0.1, 0.3)) + _grown("GRPO", (0.25, 0.15, 0.35))
        + _grown("DPO", (0.0, -0.05, 0.05))
    )  # fmt: skip
    text = causal_reading.grown_contrast(table, ["PPO", "GRPO"])
    assert "PPO +20 points (+10 to +30; 10 edges, 3 seed(s))" in text
    assert "DPO +0 points (-5 to +5" in text
    assert "Every online-RL interval lies above DPO's" in text
    overlap = table.copy()
    overlap.loc[overlap["algorithm"] == "DPO", "excess_high"] = 0.2
    assert "overlap" in causal_reading.grown_contrast(overlap, ["PPO", "GRPO"])
    with pytest.raises(ValueError, match="run the causal pages"):
        causal_reading.grown_contrast(table[table["set"] == "grown"], ["PPO"])
