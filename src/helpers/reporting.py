"""Tables of the committed organisms, read from their metadata and training logs (no recomputation)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from helpers.organisms.registry import (
    ORGANISM_NAMES,
    ORGANISMS_DIR,
    list_checkpoints,
    load_metadata,
    organism_path,
)
from helpers.organisms.tasks import FORMATS

FORMAT_COLUMNS: tuple[str, ...] = (*FORMATS, "other")


def _eval_row(meta: dict) -> dict:
    ev = meta["evaluation"]
    k = ev.get("k")
    row = {
        "pass@1 (greedy)": ev["greedy_pass1"],
        f"pass@{k}": ev.get("pass_at_k"),
        f"maj@{k}": ev.get("maj_at_k"),
        "mean answer tokens": ev["greedy_mean_length"],
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
                **_eval_row(meta),
                "train minutes": (meta.get("wall_time_s") or 0) / 60,
                "parameters": meta.get("n_parameters"),
            }
        )
    return pd.DataFrame(rows)


def training_history(name: str, root: Path | None = None) -> pd.DataFrame:
    """Per-step training log of an organism (pretraining loss for the base, the algorithm's otherwise)."""
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
    """Accuracy and format shares of a run's log-spaced checkpoints, with the base as step 0."""
    rows = []
    if include_base:
        rows.append(
            {
                "run": run,
                "step": 0,
                "ref": "organism:base",
                **_eval_row(load_metadata("base", root)),
            }
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
