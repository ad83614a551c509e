"""Tables of the committed organisms, read from their metadata and training logs (no recomputation)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from helpers.organisms.registry import (
    BASE,
    ORGANISM_NAMES,
    ORGANISMS_DIR,
    ROOT,
    list_checkpoints,
    load_metadata,
    organism_path,
)
from helpers.organisms.tasks import FORMATS

FORMAT_COLUMNS: tuple[str, ...] = (*FORMATS, "other")


def _eval_row(meta: dict) -> dict:
    ev = meta["evaluation"]
    k = ev.get("k")
    low, high = ev.get("greedy_pass1_ci95") or (None, None)
    row = {
        "pass@1 (greedy)": ev["greedy_pass1"],
        "pass@1 low": low,
        "pass@1 high": high,
        f"pass@{k}": ev.get("pass_at_k"),
        f"maj@{k}": ev.get("maj_at_k"),
        "mean answer tokens": ev["greedy_mean_length"],
        "KL to base": meta.get("kl_to_base"),
    }
    row.update({fmt: ev["greedy_format_shares"].get(fmt, 0.0) for fmt in FORMAT_COLUMNS})
    for fmt, acc in (ev.get("greedy_accuracy_by_format") or {}).items():
        row[f"accuracy | {fmt}"] = acc
    return row


def organism_table(
    names: tuple[str, ...] = ORGANISM_NAMES, root: Path | None = None
) -> pd.DataFrame:
    """One row per organism: held-out accuracy, format shares, answer length, training time, size."""
    rows = []
    for name in names:
        meta = load_metadata(name, root)
        rows.append(
            {
                "model": name,
                "algorithm": meta.get("algorithm", name),
                "seed": (meta.get("train", {}).get("arguments") or {}).get("seed"),
                **_eval_row(meta),
                "train minutes": (meta.get("wall_time_s") or 0) / 60,
                "parameters": meta.get("n_parameters"),
            }
        )
    return pd.DataFrame(rows)


def training_history(name: str, root: Path | None = None) -> pd.DataFrame:
    """Per-step training log of an organism (pretraining loss for the root, the algorithm's otherwise)."""
    path = organism_path(name, root) / "train_log.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; rebuild with python -m helpers.organisms.build"
        )
    history = pd.DataFrame(json.loads(path.read_text())["history"])
    if "step" not in history:
        history.insert(0, "step", range(len(history)))
    return history


def checkpoint_table(
    run: str, root: Path | None = None, *, include_base: bool = True
) -> pd.DataFrame:
    """Accuracy and format shares of a run's log-spaced checkpoints and final model, with the SFT
    base as step 0."""
    rows = []
    if include_base:
        rows.append(
            {
                "run": run,
                "step": 0,
                "ref": f"organism:{BASE}",
                **_eval_row(load_metadata(BASE, root)),
            }
        )
    final = organism_path(run, root)
    steps = json.loads((final / "train_log.json").read_text()).get("arguments", {}).get("steps")
    rows.append(
        {"run": run, "step": steps, "ref": f"organism:{run}", **_eval_row(load_metadata(run, root))}
    )
    for path in list_checkpoints(run, root):
        meta = load_metadata(path)
        ref = f"organism:{path.relative_to(root or ORGANISMS_DIR)}"
        rows.append(
            {
                "run": run,
                "step": int(meta.get("step", path.name.split("-")[1])),
                "ref": ref,
                **_eval_row(meta),
            }
        )
    return pd.DataFrame(rows).drop_duplicates("step", keep="last").sort_values("step")


def ops_table(names: tuple[str, ...] = ORGANISM_NAMES, root: Path | None = None) -> pd.DataFrame:
    """Greedy accuracy per number of operations (rows: organisms, columns: operations)."""
    rows = {
        n: load_metadata(n, root)["evaluation"].get("greedy_accuracy_by_ops", {}) for n in names
    }
    table = pd.DataFrame(rows).T
    table.columns = [f"{c} ops" for c in table.columns]
    return table.rename_axis("model")


def first_token_table(
    names: tuple[str, ...] = ORGANISM_NAMES, root: Path | None = None
) -> pd.DataFrame:
    """T_cut and the first answer token's share of the EAP loss at each study alpha, per organism."""
    rows = []
    for name in names:
        for row in load_metadata(name, root).get("first_token_share", []):
            rows.append({"model": name, **row})
    return pd.DataFrame(rows)


def kl_matched_table(root: Path | None = None) -> pd.DataFrame:
    """Each algorithm's committed model nearest to the two common KL levels, with its accuracy."""
    folder = root or ORGANISMS_DIR
    selection = json.loads((folder / "selection.json").read_text())
    rows = []
    for algorithm, matches in selection["matched"].items():
        for m in matches:
            meta = load_metadata(folder / m["model"])
            rows.append(
                {
                    "algorithm": algorithm,
                    "KL level": m["level"],
                    "model": m["model"],
                    "KL to base": m["kl"],
                    "pass@1 (greedy)": meta["evaluation"]["greedy_pass1"],
                    "steps share": meta["evaluation"]["greedy_format_shares"].get("steps"),
                }
            )
    return pd.DataFrame(rows)


def evaluation_note(meta: dict, n_parameters: int) -> str:
    """One line saying how the organism table's accuracies were measured (from the SFT metadata)."""
    ev = meta["evaluation"]
    return (
        f"{n_parameters:,} parameters; greedy accuracy on {ev['n_problems']} held-out problems (95% "
        f"Wilson interval); pass@{ev['k']} and maj@{ev['k']} from {ev['k']} samples at temperature "
        f"{ev['temperature']} on {ev['n_sampled']} problems for the SFT base, fewer for the others"
    )


def organisms_reading(table: pd.DataFrame, shares: pd.DataFrame, k: int, alpha: float) -> str:
    """The organisms page's reading: the base's accuracy and headroom, then each model against it."""
    t = table.set_index("model")
    b = t.loc[BASE]
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    lines = [
        f"- **{m}**: pass@1 {pct(b['pass@1 (greedy)'])} → {pct(t.loc[m, 'pass@1 (greedy)'])} "
        f"[{pct(t.loc[m, 'pass@1 low'])}, {pct(t.loc[m, 'pass@1 high'])}], `steps` share "
        f"{100 * b['steps']:.0f}% → {100 * t.loc[m, 'steps']:.0f}%, KL to base "
        f"{t.loc[m, 'KL to base']:.3g}"
        for m in t.index
        if m not in (ROOT, BASE)
    ]
    at = shares[(shares["model"] == BASE) & (shares["alpha"] == alpha)]["first_token_share"]
    gap = 100 * (b[f"pass@{k}"] - b["pass@1 (greedy)"])
    return (
        f"**Reading.** The SFT base answers {pct(b['pass@1 (greedy)'])} of held-out problems "
        f"greedily [{pct(b['pass@1 low'])}, {pct(b['pass@1 high'])}] and {pct(b[f'pass@{k}'])} with "
        f"{k} samples ({gap:+.1f} points from sampling); its answers are "
        f"{b['mean answer tokens']:.0f} tokens long on average, and at alpha {alpha:g} the first "
        f"answer token carries {100 * float(at.iloc[0]):.1f}% of its EAP loss. Against the SFT "
        "base:\n" + "\n".join(lines)
    )
