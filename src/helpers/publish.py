"""Where a notebook's result tables go: only the runner publishes into `data/results/<pair>`.

The runner sets `RL_CIRCUITRY_STAGING` to a private staging folder before it executes a page; the
page writes its tables into `<staging>/<pair>/`, and the runner swaps that folder into
`data/results/<pair>` only after the whole page ran (`swap_in`). Any other execution (papermill
by hand, Colab, Jupyter) writes to `data/scratch/<pair>/<UTC time>/`, which git ignores, and says
so in its first output line (`announce`). The old results folder is moved aside before the swap
and put back by `recover` at the next start when a kill interrupted it; `clean_leftovers` removes
what a killed run left behind. Tables are written at fixed precision, and a table equal within
`RTOL` to the published one keeps the published bytes, so a re-run changes no tracked file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers import io
from helpers.paths import layout

STAGING_ENV = "RL_CIRCUITRY_STAGING"
FLOAT_FORMAT = "%.6g"
RTOL = 1e-3  # tables closer than this (relative) to the published ones are not rewritten
RUN_RECORD = "run.json"


def results_root() -> Path:
    """The published results, `data/results/` (each pair's tables in its own folder)."""
    return layout().results


def scratch_root() -> Path:
    """Where hand, Colab and Jupyter runs put their tables (git-ignored)."""
    return layout().scratch


def tmp_root() -> Path:
    """The runner's own working space: staging folders, pages in progress (git-ignored)."""
    return layout().runs


@dataclass(frozen=True)
class Target:
    """Where this execution's tables go, and whether they will be published."""

    folder: Path
    published: bool

    def line(self) -> str:
        """The sentence a notebook prints first, so a reader knows where its tables went."""
        rel = _rel(self.folder)
        if self.published:
            return (
                f"This page's tables: data/results/{self.folder.name}/ (the runner publishes them "
                "when the page completes)."
            )
        return (
            f"Scratch run: this notebook's tables go to {rel}/ (git-ignored); only "
            "`.venv/bin/python -m helpers.pipeline` publishes into data/results/."
        )


_TARGETS: dict[str, Target] = {}


def target(name: str) -> Target:
    """The folder for page `name`'s tables in this process: staging under the runner, else scratch."""
    if name in _TARGETS:
        return _TARGETS[name]
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"a results name must be a plain file name, got {name!r}")
    staging = os.environ.get(STAGING_ENV)
    if staging:
        found = Target(Path(staging) / name, published=True)
    else:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        found = Target(scratch_root() / name / stamp, published=False)
    _TARGETS[name] = found
    return found


def announce(name: str) -> Target:
    """Print where page `name`'s tables go (call it first in a template) and return the target."""
    found = target(name)
    print(found.line(), flush=True)
    return found


def _rel(path: Path) -> str:
    root = layout().root
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


# --------------------------------------------------------------------------- writing tables


def csv_bytes(table: pd.DataFrame) -> bytes:
    """A table as CSV at fixed precision (6 significant digits): float noise does not show."""
    return table.to_csv(index=False, float_format=FLOAT_FORMAT).encode()


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """Write `table` at fixed precision, atomically."""
    io.write_bytes(path, csv_bytes(table))


def same_table(a: Path, b: Path, rtol: float = RTOL) -> bool:
    """Whether two CSV files hold the same table: equal text columns, numbers within `rtol`."""
    try:
        left, right = pd.read_csv(a), pd.read_csv(b)
    except (OSError, ValueError):
        return False
    if list(left.columns) != list(right.columns) or left.shape != right.shape:
        return False
    for col in left.columns:
        x, y = left[col], right[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(np.float64), y.to_numpy(np.float64)
            if not np.allclose(xv, yv, rtol=rtol, atol=1e-12, equal_nan=True):
                return False
        elif not x.astype(str).equals(y.astype(str)):
            return False
    return True


def same_file(a: Path, b: Path) -> bool:
    """Same bytes, or (for CSV tables) the same table within `RTOL`."""
    if not (a.is_file() and b.is_file()):
        return False
    if a.read_bytes() == b.read_bytes():
        return True
    return a.suffix == ".csv" and same_table(a, b)


# --------------------------------------------------------------------------- publishing


def write_run_record(folder: Path, record: dict[str, Any]) -> None:
    """`run.json`: the parameter file, its parameters and the commit of the inputs."""
    io.write_text(folder / RUN_RECORD, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _aside(name: str, pid: int) -> Path:
    return tmp_root() / f"{name}.old.{pid}"


def swap_in(staged: Path, published: Path) -> None:
    """Replace folder `published` by `staged`; files equal within tolerance keep the old bytes.

    The old folder is moved aside first (into data/tmp/run, same file system) and deleted only
    once the new one is in place; `recover` puts it back if a kill lands in between.
    """
    for new in staged.rglob("*"):
        old = published / new.relative_to(staged)
        if new.is_file():
            os.chmod(new, io.FILE_MODE)
            if same_file(old, new):
                shutil.copy2(old, new)
    aside = _aside(published.name, os.getpid())
    aside.parent.mkdir(parents=True, exist_ok=True)
    published.parent.mkdir(parents=True, exist_ok=True)
    if published.exists():
        io.replace(published, aside)
    io.replace(staged, published)
    shutil.rmtree(aside, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover() -> list[str]:
    """Put back results folders that an interrupted swap moved aside; returns what it restored."""
    restored = []
    root = tmp_root()
    for aside in sorted(root.glob("*.old.*")) if root.is_dir() else []:
        name, _, pid = aside.name.rpartition(".old.")
        if not pid.isdigit() or _alive(int(pid)):
            continue
        published = results_root() / name
        if published.exists():
            shutil.rmtree(aside, ignore_errors=True)  # the swap had completed
        else:
            io.replace(aside, published)
            restored.append(name)
    return restored


def clean_leftovers() -> list[Path]:
    """Remove staging folders and partial pages of runs that are no longer alive."""
    removed: list[Path] = []
    root = tmp_root()
    for entry in sorted(root.iterdir()) if root.is_dir() else []:
        pid = entry.name.rsplit(".", 1)[-1]
        if ".old." in entry.name or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        removed.append(entry)
    for stale in sorted(layout().book.rglob(".tmp-*.ipynb")):
        stale.unlink()  # pages in progress of runs before this layout
        removed.append(stale)
    for folder in (results_root(), scratch_root()):
        for stale in sorted(folder.rglob(".*.tmp")) if folder.is_dir() else []:
            stale.unlink()  # an atomic write a kill interrupted
            removed.append(stale)
    return removed


# --------------------------------------------------------------------------- reading published


class ResultsMismatch(ValueError):
    """Published tables were produced with other parameters than the page's parameter file."""


def check_published(folder: Path, params_dir: Path) -> None:
    """Raise unless `folder/run.json` records the parameters that `params_dir/<name>.yml` holds."""
    from helpers.paramfiles import file_parameters

    name = folder.name
    spec_path = params_dir / f"{name}.yml"
    record_path = folder / RUN_RECORD
    parameters = file_parameters(spec_path) if spec_path.is_file() else None
    if parameters is None:
        raise ResultsMismatch(
            f"{_rel(folder)} has no parameter file {_rel(spec_path)}: remove the folder, or add "
            f"the file and run `.venv/bin/python -m helpers.pipeline --only {name}`"
        )
    if not record_path.is_file():
        raise ResultsMismatch(
            f"{_rel(folder)} has no {RUN_RECORD}, so its parameters are unknown: re-run "
            f"`.venv/bin/python -m helpers.pipeline --only {name} --force`"
        )
    recorded = json.loads(record_path.read_text()).get("parameters")
    want = json.loads(json.dumps(parameters, default=str))
    if recorded != want:
        keys = sorted(set(recorded or {}) | set(want))
        diff = {
            k: ((recorded or {}).get(k), want.get(k))
            for k in keys
            if (recorded or {}).get(k) != want.get(k)
        }
        shown = ", ".join(
            f"{k}: {r!r} in the tables vs {w!r} in the file" for k, (r, w) in diff.items()
        )
        raise ResultsMismatch(
            f"{_rel(record_path)} was produced with other parameters than {_rel(spec_path)} "
            f"({shown}); re-run `.venv/bin/python -m helpers.pipeline --only {name}`"
        )
