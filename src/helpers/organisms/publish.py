"""Publish a built organism set into ``data/organisms``: choose the committed checkpoints, store every
model but the root as a float16 delta on its parent, check the size budget, replace the old set.

Committed: every final model; seed 0's log-spaced checkpoints of PPO and GRPO (training dynamics);
and, for every algorithm, the checkpoint (or final model) nearest to each of two common KL levels,
chosen so that every algorithm reaches both (budgets compared at equal distance from the base).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from helpers import io
from helpers.organisms import storage
from helpers.organisms.registry import (
    ALGORITHMS,
    METADATA_FILE,
    ORGANISM_NAMES,
    ORGANISMS_DIR,
    float16_state,
    list_checkpoints,
    load_organism,
)

MAX_BYTES = 80 * 2**20  # the budget for committed weights
DYNAMICS_RUNS: tuple[str, ...] = ("ppo", "grpo")
SELECTION_FILE = "selection.json"
BUILD_LOG = "build_log.json"
COPIED = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "train_log.json",
    METADATA_FILE,
)


def trajectory(algorithm: str, out: Path) -> list[tuple[str, float]]:
    """(folder relative to ``out``, KL to base) along seed 0 of ``algorithm``, final model last."""
    points = []
    for path in [*list_checkpoints(algorithm, out), out / algorithm]:
        meta = json.loads((path / METADATA_FILE).read_text())
        points.append((str(path.relative_to(out)), float(meta["kl_to_base"])))
    return points


def kl_levels(trajectories: dict[str, list[tuple[str, float]]]) -> tuple[float, float]:
    """Two KL levels every algorithm reaches: the smallest final KL, and a quarter of it."""
    reach = min(max(kl for _, kl in points) for points in trajectories.values())
    if not reach > 0:
        raise ValueError(f"an algorithm never moved from the base (max KL {reach}); check its run")
    return (reach / 4, reach)


def nearest(points: list[tuple[str, float]], level: float) -> tuple[str, float]:
    """The point whose KL is nearest to ``level`` in log scale."""
    return min(points, key=lambda p: abs(math.log(max(p[1], 1e-12)) - math.log(level)))


def select(out: Path) -> dict[str, Any]:
    """The committed folders, the KL levels and each algorithm's matched checkpoint per level."""
    trajectories = {a: trajectory(a, out) for a in ALGORITHMS}
    levels = kl_levels(trajectories)
    matched: dict[str, list[dict[str, Any]]] = {
        a: [
            {
                "level": lv,
                "model": nearest(trajectories[a], lv)[0],
                "kl": nearest(trajectories[a], lv)[1],
            }
            for lv in levels
        ]
        for a in ALGORITHMS
    }
    folders = list(ORGANISM_NAMES)
    for run in DYNAMICS_RUNS:
        folders += [str(p.relative_to(out)) for p in list_checkpoints(run, out)]
    folders += [m["model"] for rows in matched.values() for m in rows]
    return {"folders": list(dict.fromkeys(folders)), "kl_levels": list(levels), "matched": matched}


def _write_folder(src: Path, dst: Path, out: Path) -> int:
    """Copy one model folder as committed (delta weights); returns the bytes of its weights."""
    dst.mkdir(parents=True)
    for name in COPIED:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    meta = json.loads((src / METADATA_FILE).read_text())
    state = {k: v.to(torch.float16) for k, v in load_organism(src)[0].state_dict().items()}
    if meta.get("parent") is None:
        from safetensors.torch import save_file

        save_file(state, dst / storage.FULL_FILE)
        return (dst / storage.FULL_FILE).stat().st_size
    parent = float16_state(out / meta["parent"])
    return storage.write_delta(dst, state, parent)


def publish(out: Path, target: Path = ORGANISMS_DIR) -> dict[str, Any]:
    """Write the selected set of build folder ``out`` to ``target`` (replacing it); returns the selection."""
    missing = [n for n in ORGANISM_NAMES if not (out / n / METADATA_FILE).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{missing} are not built and measured in {out}; run the build first"
        )
    selection = select(out)
    staging = target.with_name(target.name + ".publishing")
    shutil.rmtree(staging, ignore_errors=True)
    sizes = {f: _write_folder(out / f, staging / f, out) for f in selection["folders"]}
    total = sum(sizes.values())
    if total > MAX_BYTES:
        shutil.rmtree(staging)
        raise ValueError(
            f"committed weights {total / 2**20:.1f} MiB exceed {MAX_BYTES / 2**20:.0f} MiB"
        )
    selection["weight_bytes"] = sizes
    selection["total_weight_mib"] = total / 2**20
    io.write_json(staging / SELECTION_FILE, selection)
    if (out / BUILD_LOG).is_file():  # wall seconds per model, kept with the set they describe
        shutil.copy2(out / BUILD_LOG, staging / BUILD_LOG)
    _check_exact(out, staging, selection["folders"])
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    print(
        f"published {len(selection['folders'])} folders, {total / 2**20:.1f} MiB of weights",
        flush=True,
    )
    return selection


def _check_exact(out: Path, staged: Path, folders: list[str]) -> None:
    """Every staged model decodes to exactly the float16 weights that were measured."""
    for folder in folders:
        built = float16_state(out / folder)
        stored = float16_state(staged / folder)
        bad = [k for k in built if not torch.equal(built[k], stored[k])]
        if bad:
            raise ValueError(f"{folder}: stored weights differ from the built ones in {bad[:3]}")


if __name__ == "__main__":
    from helpers.organisms.build import BUILD_DIR

    publish(BUILD_DIR)
