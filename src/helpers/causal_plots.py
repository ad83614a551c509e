"""The causal page's figures: faithfulness, metrics under both methods, knock-out curves and
grown edges. Each returns a Figure with its caption (`plots.show` displays both)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from helpers.plots import BASE_TUNED, with_caption

# One palette per meaning: attribution methods, and the edge sets a knock-out removes.
METHOD_COLORS: dict[str, str] = {"eap": "#8C8C8C", "eap-ig": "#0072B2"}
SET_COLORS: dict[str, str] = {
    "top": "#D55E00",
    "grown": "#D55E00",
    "random": "#8C8C8C",
    "mass-matched": "#E69F00",
}


def _interval_dots(ax, values, lows, highs, y, color: str, label: str) -> None:
    ax.errorbar(
        values, y, xerr=[values - lows, highs - values], fmt="o", color=color, label=label,
        capsize=2,
    )  # fmt: skip


def faithfulness_forest(view: pd.DataFrame, statistics: Sequence[str], *, title: str):
    """Per (model, alpha): each method's agreement with exact ablation, with its interval."""
    shown = view[view["statistic"].isin(statistics)].assign(
        label=lambda t: t["model"].str.replace("organism:", "") + ", α=" + t["alpha"].astype(str)
    )
    labels = list(dict.fromkeys(shown["label"]))
    fig, axes = plt.subplots(1, len(statistics), figsize=(3.2 * len(statistics), 3.6), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), statistics, strict=True):
        for offset, (method, color) in zip((-0.15, 0.15), METHOD_COLORS.items(), strict=True):
            rows = shown[(shown["statistic"] == name) & (shown["method"] == method)]
            rows = rows.set_index("label").loc[labels]
            y = np.arange(len(labels)) + offset
            _interval_dots(ax, rows["value"], rows["low"], rows["high"], y, color, method.upper())
        ax.set_yticks(np.arange(len(labels)), labels)
        ax.set_xlabel(f"{name.replace('_', ' ')} (unitless)")
        ax.axvline(0, color="black", lw=0.6)
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return with_caption(
        fig,
        "Dots: agreement of each estimate with the exact loss change of removing one edge, over "
        "every (question, edge) pair, with 95% bootstrap intervals over questions. Look at whether "
        "the blue (EAP-IG) dots lie right of the grey (EAP) ones.",
    )


def method_forest(table: pd.DataFrame, *, title: str):
    """Relative change of each metric under EAP and EAP-IG, per control and alpha."""
    rows = list(dict.fromkeys(zip(table["control"], table["metric"], table["alpha"], strict=True)))
    y_of = {r: len(rows) - 1 - i for i, r in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.4))
    for offset, (method, color) in zip((-0.15, 0.15), METHOD_COLORS.items(), strict=True):
        part = table[table["method"] == method]
        y = (
            np.array(
                [y_of[r] for r in zip(part["control"], part["metric"], part["alpha"], strict=True)]
            )
            + offset
        )
        _interval_dots(
            ax, 100 * part["rel_change"].to_numpy(), 100 * part["rel_ci_low"].to_numpy(),
            100 * part["rel_ci_high"].to_numpy(), y, color, method.upper(),
        )  # fmt: skip
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(list(y_of.values()), [f"{c} · {m} · α={a:g}" for c, m, a in y_of])
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlabel("relative change, tuned vs base (%)")
    ax.set_ylabel("control · metric · alpha")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return with_caption(
        fig,
        "Each pair of lines is one metric's change from base to tuned, with its 95% interval, "
        "computed from EAP (grey) and from EAP-IG (blue) scores of the same questions. Look for "
        "pairs on opposite sides of zero: there the method changes the conclusion.",
    )


def knockout_curves(curves: pd.DataFrame, names: Mapping[str, str], *, title: str):
    """Loss change and greedy accuracy against the number of edges removed, base and tuned."""
    roles = list(names)
    fig, axes = plt.subplots(2, len(roles), figsize=(5 * len(roles), 7), sharex=True, squeeze=False)
    for col, role in enumerate(roles):
        for kind in ("top", "random", "mass-matched"):
            c = curves[(curves["model"] == role) & (curves["kind"] == kind)].sort_values("k")
            x = c["k"].clip(lower=0.7)  # k = 0 (the plain model) drawn at the left edge
            color = SET_COLORS[kind]
            axes[0, col].plot(x, c["loss_change"], "o-", color=color, label=kind)
            axes[0, col].fill_between(x, c["loss_low"], c["loss_high"], color=color, alpha=0.2)
            axes[1, col].plot(x, 100 * c["accuracy"], "o-", color=color, label=kind)
            axes[1, col].fill_between(
                x, 100 * c["acc_low"], 100 * c["acc_high"], color=color, alpha=0.2
            )
        axes[0, col].set_title(f"{role}: {names[role]}", color=BASE_TUNED[col % 2])
        axes[0, col].set_ylabel("loss change (nats / answer token)")
        axes[1, col].set_ylabel("greedy accuracy, edges removed (%)")
        axes[1, col].set_xlabel("edges removed k (log scale; leftmost point: none)")
        axes[1, col].set_xscale("log")
    axes[0, 0].legend(title="edges removed")
    fig.suptitle(title)
    fig.tight_layout()
    return with_caption(
        fig,
        "Lines: the exact loss change on each model's answers (top) and the greedy accuracy on "
        "held-out problems (bottom) with k edges removed; bands: 95% bootstrap intervals over "
        "questions (and seeds for the tuned model). Look at whether the top-k (red) curve falls "
        "faster than the random (grey) and mass-matched (orange) controls.",
    )


def grown_bars(grown: pd.DataFrame, *, title: str):
    """Accuracy drop of the tuned model with the grown edges or a control set removed."""
    g = grown.set_index("set")
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    y = 100 * g["accuracy_drop"]
    err = [100 * (g["accuracy"] - g["acc_low"]), 100 * (g["acc_high"] - g["accuracy"])]
    ax.barh(g.index, y, xerr=err, color=[SET_COLORS[s] for s in g.index], capsize=3)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_xlabel(f"accuracy drop of the tuned model (points), {int(g['k'].iloc[0])} edges removed")
    ax.set_ylabel("edges removed")
    ax.set_title(title)
    fig.tight_layout()
    return with_caption(
        fig,
        "Bars: how much greedy accuracy the tuned model loses with each edge set removed, with "
        "95% intervals. Look at whether the grown edges (red) cost more than the controls.",
    )


def grown_by_algorithm(table: pd.DataFrame):
    """Every pair's excess drop (control's accuracy minus the grown set's), per algorithm."""
    from helpers.plots import ALGORITHM_COLORS, OTHER_ALGORITHM_COLOR

    part = table[table["set"] != "grown"].reset_index(drop=True)
    labels = [f"{a} · vs {s}" for a, s in zip(part["algorithm"], part["set"], strict=True)]
    fig, ax = plt.subplots(figsize=(6.5, 0.4 * len(part) + 1.4))
    y = np.arange(len(part))[::-1]
    for yi, (_, r) in zip(y, part.iterrows(), strict=True):
        color = ALGORITHM_COLORS.get(r["algorithm"], OTHER_ALGORITHM_COLOR)
        ax.plot([100 * r["excess_low"], 100 * r["excess_high"]], [yi, yi], color=color, lw=2)
        ax.scatter(100 * r["excess_drop"], yi, color=color, edgecolors="black", zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, labels)
    ax.set_xlabel("excess accuracy drop of the grown edges over the control (points)")
    ax.set_title("Do the edges post-training grew matter more than controls?")
    fig.tight_layout()
    return with_caption(
        fig,
        "Each line: how many more points of accuracy the tuned model loses without the edges its "
        "training grew than without as many control edges, with a 95% paired interval. Look at "
        "whether PPO and GRPO lie further right than DPO.",
    )
