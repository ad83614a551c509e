"""The report's figures, one function per figure kind; each returns its matplotlib Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import TwoSlopeNorm
from matplotlib.ticker import MaxNLocator

from helpers import metrics as M

sns.set_theme(style="whitegrid", context="notebook")
# One palette per meaning. Algorithms: Okabe-Ito colours (distinguishable with any colour-vision
# deficiency), fixed per algorithm so every page colours GRPO alike. Base vs tuned: grey against
# reddish purple, a pair no algorithm uses. White figure backgrounds keep the dark theme legible.
ALGORITHM_COLORS: dict[str, str] = {
    "SFT": "#E69F00",  # orange
    "EI": "#56B4E9",  # sky blue
    "DPO": "#009E73",  # bluish green
    "PPO": "#D55E00",  # vermillion
    "GRPO": "#0072B2",  # blue
    "RLVR (PPO)": "#D55E00",
}
OTHER_ALGORITHM_COLOR = "#F0E442"  # yellow: an algorithm the report does not know yet
BASE_TUNED = ("#8C8C8C", "#CC79A7")
plt.rcParams.update({"figure.facecolor": "white", "savefig.facecolor": "white"})


def algorithm_palette(algorithms: Sequence[str]) -> dict[str, str]:
    """The fixed colour of each algorithm (unknown ones share yellow), for seaborn's ``palette=``."""
    return {a: ALGORITHM_COLORS.get(a, OTHER_ALGORITHM_COLOR) for a in algorithms}


def with_caption(fig, text: str):
    """Attach the caption a page shows under the figure: what to look at, in one or two lines."""
    fig.caption = text
    return fig


def show(fig, caption: str | None = None) -> None:
    """Display a figure and, under it, its caption (``caption`` or the figure's default)."""
    from IPython.display import Markdown, display

    display(fig)
    text = caption if caption is not None else getattr(fig, "caption", "")
    if text:
        display(Markdown(f"*{text}*"))
    plt.close(fig)


def relative_change_heatmap(base: Any, tuned: Any, *, title: str = "", clip: float = 1.0):
    """Per-edge relative change of mean |W| (tuned vs base), sources x targets; absent edges blank."""
    b, t = M.as_score_set(base), M.as_score_set(tuned)
    rel = M.relative_change(b, t)
    targets, sources = list(b.targets or ()), list(b.sources or ())
    finite = rel[np.isfinite(rel)]
    lim = min(clip, float(np.nanmax(np.abs(finite)))) if finite.size else clip
    lim = lim if lim > 0 else 1.0
    fig, ax = plt.subplots(figsize=(0.45 * len(targets) + 3.5, 0.4 * len(sources) + 2))
    norm = TwoSlopeNorm(vmin=-lim, vcenter=0.0, vmax=lim)
    shown = np.ma.masked_invalid(np.clip(rel, -lim, lim))
    im = ax.imshow(shown, cmap="RdBu_r", norm=norm, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(targets)), targets, rotation=90, fontsize=7)
    ax.set_yticks(range(len(sources)), sources, fontsize=7)
    ax.set_xlabel("target node (reads the residual stream)")
    ax.set_ylabel("source node (writes the residual stream)")
    ax.grid(False)
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label(f"relative change of mean |W| (clipped at ±{lim:.2g})")
    ax.set_title(title or "Per-edge relative change, tuned vs base", fontsize=11)
    fig.tight_layout()
    return with_caption(
        fig,
        "Red cells: edges whose mean |W| grew after post-training; blue: shrank; blank: edges the graph does not have. Look for rows or columns that change together (a node gaining or losing influence) rather than single cells.",
    )


def score_distributions(base: Any, tuned: Any, *, labels: Sequence[str] = ("base", "tuned")):
    """|W| over real edges and questions, base vs tuned: histogram on a log axis and the ECDF."""
    vb = np.abs(M.edge_vectors(base)).ravel()
    vt = np.abs(M.edge_vectors(tuned)).ravel()
    positive = np.concatenate([vb, vt])
    positive = positive[positive > 0]
    if positive.size == 0:
        raise ValueError("all scores are zero: nothing to plot")
    bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 60)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for v, label, color in zip((vb, vt), labels, BASE_TUNED, strict=True):
        v = v[v > 0]
        weights = np.full(v.size, 1.0 / v.size)  # fraction of scores per (log-width) bin
        axes[0].hist(
            v, bins=bins, weights=weights, histtype="step", lw=1.6, color=color, label=label
        )
        xs = np.sort(v)
        axes[1].plot(xs, np.arange(1, xs.size + 1) / xs.size, color=color, label=label)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("|edge score| (nats of loss change, log scale)")
        ax.legend()
    axes[0].set_ylabel("fraction of edge scores per bin")
    axes[0].set_title("Distribution of |W| over edges and questions")
    axes[1].set_ylabel("fraction of edge scores ≤ x")
    axes[1].set_title("Empirical CDF")
    fig.tight_layout()
    return with_caption(
        fig,
        "A shift of the tuned curve to the left means smaller edge scores overall; a narrower curve means attribution concentrated on fewer edges.",
    )


def node_entropy_bars(base: Any, tuned: Any, *, labels: Sequence[str] = ("base", "tuned")):
    """Per-source-node output-edge entropy (nats), base vs tuned."""
    frame = pd.DataFrame({labels[0]: M.node_entropy(base), labels[1]: M.node_entropy(tuned)})
    frame = frame.dropna(how="all")
    long = frame.reset_index().melt(id_vars="source", var_name="model", value_name="entropy")
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(frame) + 2), 3.6))
    sns.barplot(data=long, x="source", y="entropy", hue="model", palette=BASE_TUNED, ax=ax)
    ax.set_xlabel("source node")
    ax.set_ylabel("output-edge entropy (nats)")
    ax.set_title("How evenly each node spreads attribution over its outgoing edges")
    ax.tick_params(axis="x", rotation=90, labelsize=8)
    fig.tight_layout()
    return with_caption(
        fig,
        "Higher bars: the node spreads its attribution over more of its outgoing edges. Compare base and tuned node by node.",
    )


def intensity_by_layer(base: Any, tuned: Any, *, labels: Sequence[str] = ("base", "tuned")):
    """Mean |W| grouped by source layer and by target layer, base vs tuned (emb = -1, logits = L)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, by in zip(axes, ("source_layer", "target_layer"), strict=True):
        for x, label, color in zip((base, tuned), labels, BASE_TUNED, strict=True):
            prof = M.intensity_profile(x, by=by)  # type: ignore[arg-type]  # a literal pair
            ax.plot(prof.index, prof.values, marker="o", color=color, label=label)
        ax.set_xlabel(by.replace("_", " ") + " (emb = -1, logits = L)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_yscale("log")
        ax.set_ylabel("mean |edge score| (log scale)")
        ax.legend()
    axes[0].set_title("Intensity of a layer's outgoing edges")
    axes[1].set_title("Intensity of a layer's incoming edges")
    fig.tight_layout()
    return with_caption(
        fig,
        "Where intensity changes: a gap between the lines at one layer says post-training changed that layer's edges more than the others.",
    )


def metric_intervals(table: pd.DataFrame, *, title: str = ""):
    """Relative change of each metric with its bootstrap 95% interval, coloured by the study's claim."""
    t = table.reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(t) + 1.2))
    faces = ["black" if m else "white" for m in t["matches_claim"]]
    y = np.arange(len(t))
    lo = 100 * (t["rel_change"] - t["rel_ci_low"])
    hi = 100 * (t["rel_ci_high"] - t["rel_change"])
    ax.errorbar(100 * t["rel_change"], y, xerr=[lo, hi], fmt="none", ecolor="grey", capsize=3)
    ax.scatter(100 * t["rel_change"], y, c=faces, edgecolors="black", zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{m} (claim: {c})" for m, c in zip(t["metric"], t["claimed"], strict=True)])
    ax.set_xlabel("relative change, tuned vs base (%), with bootstrap 95% interval")
    ax.set_ylabel("metric")
    ax.set_title(title or "Change of each metric (filled: in the study's direction)")
    fig.tight_layout()
    return with_caption(
        fig,
        "Filled markers: the change goes the way the study reports for online RL; hollow: the other way. An interval that crosses zero is a change we cannot tell from noise.",
    )


def training_curves(histories: Mapping[str, pd.DataFrame], columns: Sequence[str]):
    """One panel per column (loss, reward, KL, ...), one line per run, against the training step."""
    fig, axes = plt.subplots(1, len(columns), figsize=(4.2 * len(columns), 3.4), squeeze=False)
    for ax, col in zip(axes[0], columns, strict=True):
        for name, hist in histories.items():
            if col in hist and hist[col].notna().any():
                ax.plot(hist["step"], hist[col], label=name, lw=1.3)
        ax.set_xlabel("training step")
        ax.set_ylabel(col.replace("_", " "))
        ax.set_title(col.replace("_", " "))
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="upper center", ncol=len(names), bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    return with_caption(
        fig,
        "The training signal of each run against its step; a flat curve late in training means the run converged.",
    )


def accuracy_bars(frame: pd.DataFrame, columns: Sequence[str], *, k: int | None = None):
    """Accuracy metrics (fractions) per model as grouped bars, in percent."""
    long = frame.melt(id_vars="model", value_vars=list(columns), var_name="metric", value_name="v")
    long["v"] = 100 * long["v"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    sns.barplot(data=long, x="model", y="v", hue="metric", ax=ax)
    ax.set_ylabel("held-out problems solved (%)")
    ax.set_xlabel("model")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy on the held-out split" + (f" (k = {k})" if k else ""))
    fig.tight_layout()
    return with_caption(
        fig,
        "How often each model solves a held-out problem; the gap between greedy pass@1 and pass@k is what sampling adds.",
    )


def format_shares(frame: pd.DataFrame, formats: Sequence[str], *, x: str = "model"):
    """Stacked shares of each solution format per model (or checkpoint), in percent."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    bottom = np.zeros(len(frame))
    labels = frame[x].astype(str)
    for fmt, color in zip(formats, sns.color_palette("Set2", len(formats)), strict=True):
        vals = 100 * frame[fmt].to_numpy(dtype=float)
        ax.bar(labels, vals, bottom=bottom, label=fmt, color=color)
        bottom += vals
    ax.set_ylabel("share of greedy answers (%)")
    ax.set_xlabel(x)
    ax.set_ylim(0, 100)
    ax.legend(title="format", bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title("Solution format of the greedy answers")
    fig.tight_layout()
    return with_caption(
        fig,
        "Which solution format each model writes; a bar of one colour is a model that collapsed onto one format.",
    )


def dynamics(frame: pd.DataFrame, metrics: Sequence[str], *, run_col: str = "run"):
    """Metrics against the training step, one panel per metric, one line per run (log-spaced steps)."""
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.8 * len(metrics), 3.4), squeeze=False, sharex=True
    )
    for ax, metric in zip(axes[0], metrics, strict=True):
        sns.lineplot(data=frame, x="step", y=metric, hue=run_col, marker="o", ax=ax)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("training step (symlog)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_title(metric.replace("_", " "))
    fig.tight_layout()
    return with_caption(
        fig,
        "Each metric along training: the step at which a line leaves its starting value says when post-training began to change the attribution.",
    )


def faithfulness_scatter(eap: np.ndarray, exact: np.ndarray, *, title: str = ""):
    """EAP's linear estimate against the exact loss change of ablating each edge (symlog axes)."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(exact, eap, s=14, alpha=0.7)
    lim = float(np.nanmax(np.abs(np.concatenate([eap, exact])))) * 1.1
    ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--", label="y = x")
    lin = max(lim * 1e-3, 1e-8)
    ax.set_xscale("symlog", linthresh=lin)
    ax.set_yscale("symlog", linthresh=lin)
    ax.set_xlabel("exact Δ loss when the edge is ablated (nats)")
    ax.set_ylabel("EAP score (nats)")
    ax.set_title(title or "EAP against exact edge ablation")
    ax.legend()
    fig.tight_layout()
    return with_caption(
        fig,
        "Points on the dashed diagonal: EAP's linear estimate equals the exact effect of ablating the edge; points far off it are edges where the linear approximation fails.",
    )


def _shade_claimed_side(ax, claim: str) -> None:
    """Grey background on the side of zero the study reports for online RL ("up" or "down")."""
    left, right = ax.get_xlim()
    left, right = min(left, 0.0), max(right, 0.0)
    if claim == "up":
        ax.axvspan(0, right, color="#EDEDED", zorder=0)
    elif claim == "down":
        ax.axvspan(left, 0, color="#EDEDED", zorder=0)
    ax.set_xlim(left, right)


def forest(table: pd.DataFrame, *, title: str = ""):
    """Results at a glance: relative change with its interval, one panel per metric.

    ``table`` has one row per (metric, algorithm, control) with ``rel_change``, ``rel_ci_low``,
    ``rel_ci_high`` (fractions) and optionally ``claimed`` ("up"/"down"); rows keep table order.
    """
    metrics = list(dict.fromkeys(table["metric"]))
    rows = list(dict.fromkeys(zip(table["algorithm"], table["control"], strict=True)))
    controls = list(dict.fromkeys(table["control"]))
    markers = dict(zip(controls, "osD^v<>", strict=False))
    ncols = min(3, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.1 * ncols, 0.32 * len(rows) * nrows + 1.4 * nrows), squeeze=False
    )
    y_of = {row: len(rows) - 1 - i for i, row in enumerate(rows)}
    for ax, metric in zip(axes.flat, metrics, strict=False):
        part = table[table["metric"] == metric]
        for _, r in part.iterrows():
            y = y_of[(r["algorithm"], r["control"])]
            color = ALGORITHM_COLORS.get(r["algorithm"], OTHER_ALGORITHM_COLOR)
            ax.plot([100 * r["rel_ci_low"], 100 * r["rel_ci_high"]], [y, y], color=color, lw=2)
            ax.scatter(
                100 * r["rel_change"],
                y,
                color=color,
                marker=markers[r["control"]],
                edgecolors="black",
                linewidths=0.6,
                zorder=3,
                s=36,
            )
        ax.axvline(0, color="black", lw=0.8)
        claim = part["claimed"].iloc[0] if "claimed" in part else ""
        _shade_claimed_side(ax, claim)
        ax.set_title(
            metric.replace("_", " ") + (f" (study: {claim})" if claim else ""), fontsize=10
        )
        ax.set_xlabel("relative change, tuned vs base (%)")
        ax.set_yticks(list(y_of.values()), [f"{a} · {c}" for a, c in y_of])
        ax.set_ylabel("algorithm · control" if ax.get_subplotspec().is_first_col() else "")
        ax.tick_params(axis="y", labelsize=8)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(title or "Results at a glance: change of each metric with its 95% interval")
    fig.tight_layout()
    return with_caption(
        fig,
        "Each line is one algorithm's change from the base with its bootstrap 95% interval; the "
        "grey side of zero is the direction the study reports for online RL. "
        "Look at which side of zero each interval lies and whether online RL (PPO, GRPO) and DPO "
        "fall on different sides, under the raw metric and under each control.",
    )


def change_by_algorithm(results: pd.DataFrame, metrics: Sequence[str]):
    """Each metric's relative change per algorithm, the range over its pairs and alphas."""
    data = results.assign(change=100 * results["rel_change"])
    fig, ax = plt.subplots(figsize=(9, 4))
    sns.pointplot(
        data=data,
        x="metric",
        y="change",
        hue="algorithm",
        palette=algorithm_palette(sorted(data["algorithm"].unique())),
        dodge=0.5,
        linestyle="none",
        errorbar=("pi", 100),
        ax=ax,
        order=list(metrics),
    )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("relative change, tuned vs base (%)")
    ax.set_xlabel("metric (point: mean over alphas; bar: range over pairs and alphas)")
    ax.set_title("Direction and size of each metric's change, by post-training algorithm")
    ax.tick_params(axis="x", rotation=15)
    fig.tight_layout()
    return with_caption(
        fig,
        "Compare the colours within each metric: the study predicts online RL (PPO, GRPO) above "
        "zero for intensity, complexity and diversity and below it for kurtosis, and DPO not.",
    )


def intensity_vs_confidence(results: pd.DataFrame):
    """Change of intensity against the change of the mean self-loss, one point per pair and alpha."""
    conf = results[results["metric"] == "intensity"].assign(
        loss_change=lambda d: 100 * (d["loss_tuned"] / d["loss_base"] - 1),
        intensity_change=lambda d: 100 * d["rel_change"],
    )
    fig, ax = plt.subplots(figsize=(6, 4.2))
    sns.scatterplot(
        data=conf,
        x="loss_change",
        y="intensity_change",
        hue="algorithm",
        palette=algorithm_palette(sorted(conf["algorithm"].unique())),
        s=60,
        ax=ax,
    )
    ax.axhline(0, color="black", lw=0.8)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("change of mean self-loss, tuned vs base (%)")
    ax.set_ylabel("change of activation intensity (%)")
    ax.set_title("Intensity against confidence")
    fig.tight_layout()
    return with_caption(
        fig,
        "Points along a rising line mean intensity follows the model's loss on its own answer: "
        "a more confident model scores lower on the same circuit, whatever the algorithm.",
    )
