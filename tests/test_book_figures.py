"""The landing page's forest plot and the figure style: palettes, labelled axes, captions."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import pandas as pd
import pytest
from test_book_numbers import synthetic_findings

from helpers import plots
from helpers.book import glance
from helpers.book.findings import Findings


def test_algorithm_palette_is_fixed_and_distinct() -> None:
    core = [plots.ALGORITHM_COLORS[a] for a in glance.ALGORITHM_ORDER]
    assert len(set(core)) == len(core)
    assert plots.BASE_TUNED[1] not in core and plots.BASE_TUNED[0] not in core
    assert plots.algorithm_palette(["GRPO", "KTO"]) == {
        "GRPO": plots.ALGORITHM_COLORS["GRPO"],
        "KTO": plots.OTHER_ALGORITHM_COLOR,
    }


def test_glance_table_at_the_focus_alpha_in_reading_order() -> None:
    f = synthetic_findings({("GRPO", "intensity", 0.5): -0.6})
    table = glance.glance_table(f, alpha=0.5)
    assert set(table["alpha"]) == {0.5} and set(table["control"]) == {"raw"}
    intensity = table[table["metric"] == "intensity"]
    assert list(intensity["algorithm"]) == ["SFT", "DPO", "PPO", "GRPO"]
    assert intensity.set_index("algorithm").loc["GRPO", "rel_change"] == -0.6
    assert glance.focus_alpha(f.metrics, preferred=0.7) == 0.1  # absent: the median shared alpha


def test_glance_table_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="run `python -m helpers.pipeline` first"):
        glance.glance_table(Findings(metrics=pd.DataFrame()))
    with pytest.raises(ValueError, match="no rows for controls"):
        glance.glance_table(synthetic_findings(), controls=("per_grad_resid",))


def test_forest_plot_one_panel_per_metric_coloured_by_algorithm(tmp_path) -> None:
    f = synthetic_findings()
    table = glance.glance_table(f, alpha=0.1)
    fig = plots.forest(table)
    panels = [ax for ax in fig.axes if ax.axison]
    assert [ax.get_title() for ax in panels] == [
        "intensity (study: up)",
        "diversity (study: up)",
        "kurtosis (study: down)",
    ]
    for ax in panels:
        assert ax.get_xlabel() == "relative change, tuned vs base (%)"
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels == ["SFT · raw", "DPO · raw", "PPO · raw", "GRPO · raw"]  # top to bottom
        line_colours = {
            mcolors.to_hex(line.get_color()) for line in ax.lines if len(line.get_xdata()) == 2
        }
        assert {
            plots.ALGORITHM_COLORS[a].lower() for a in ("SFT", "DPO", "PPO", "GRPO")
        } <= line_colours
    assert panels[0].get_ylabel() == "algorithm · control"
    assert "95% interval" in fig.caption and "grey side" in fig.caption
    plt.close(fig)
    caption = glance.write_figure(f, tmp_path / "glance.png", alpha=0.1)
    assert (tmp_path / "glance.png").stat().st_size > 10_000 and caption == fig.caption


def test_summary_figures_use_the_palette_and_say_what_to_look_at() -> None:
    results = synthetic_findings().metrics
    for fig in (
        plots.change_by_algorithm(results, ["intensity", "diversity", "kurtosis"]),
        plots.intensity_vs_confidence(results),
    ):
        ax = fig.axes[0]
        assert ax.get_xlabel().endswith("(%)") or "%" in ax.get_ylabel()
        assert ax.get_title() and fig.caption
        legend = {t.get_text() for t in ax.get_legend().get_texts()}
        assert legend == {"DPO", "GRPO", "PPO", "SFT"}
        plt.close(fig)


@pytest.mark.parametrize(
    "name",
    [
        "relative_change_heatmap",
        "score_distributions",
        "node_entropy_bars",
        "intensity_by_layer",
        "metric_intervals",
        "training_curves",
        "accuracy_bars",
        "format_shares",
        "dynamics",
        "faithfulness_scatter",
        "forest",
        "change_by_algorithm",
        "intensity_vs_confidence",
    ],
)
def test_every_figure_function_has_a_caption(name: str) -> None:
    import inspect

    source = inspect.getsource(getattr(plots, name))
    assert "with_caption(" in source, f"plots.{name} returns a figure without a caption"
