"""Every figure function draws on synthetic scores, with labelled axes and a title."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from helpers import plots
from helpers.graph import residual_graph
from helpers.stats import compare


@pytest.fixture(scope="module")
def pair() -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    g = residual_graph(3)
    mask = g.mask.numpy()
    rng = np.random.default_rng(0)
    base = rng.standard_normal((12, *mask.shape)) * mask
    tuned = 1.3 * base + 0.1 * rng.standard_normal(base.shape) * mask
    return (base, tuned), mask


def _check(fig) -> None:
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    matplotlib.pyplot.close(fig)


def test_pair_figures(pair) -> None:
    (base, tuned), mask = pair
    from helpers.metrics import as_score_set

    b, t = as_score_set(base, mask), as_score_set(tuned, mask)
    _check(plots.relative_change_heatmap(b, t))
    _check(plots.score_distributions(b, t))
    _check(plots.node_entropy_bars(b, t))
    _check(plots.intensity_by_layer(b, t))
    _check(plots.metric_intervals(compare(b, t, n_boot=200)))


def test_organism_figures() -> None:
    hist = pd.DataFrame(
        {"step": [0, 1, 2], "loss": [3.0, 2.0, 1.5], "reward_mean": [0.1, 0.3, 0.5]}
    )
    _check(plots.training_curves({"grpo": hist}, ["loss", "reward_mean"]))
    frame = pd.DataFrame(
        {"model": ["base", "grpo"], "pass@1": [0.4, 0.6], "expr": [0.6, 0.9], "text": [0.4, 0.1]}
    )
    _check(plots.accuracy_bars(frame, ["pass@1"]))
    _check(plots.format_shares(frame, ["expr", "text"]))
    dyn = pd.DataFrame(
        {"step": [0, 1, 4, 16] * 2, "intensity": np.arange(8.0), "run": ["a"] * 4 + ["b"] * 4}
    )
    _check(plots.dynamics(dyn, ["intensity"]))
    eap = np.array([0.1, -0.2, 0.03, 1e-4])
    _check(plots.faithfulness_scatter(eap, eap * 1.1))
