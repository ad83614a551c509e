"""The repository root and its data layout, in one place (tests point it elsewhere with `use_root`).

Every module asks `layout()` for a folder instead of computing the root from `__file__`, so one
override moves them all: `RL_CIRCUITRY_ROOT` for a process, `use_root(path)` for a block of code.
`RL_CIRCUITRY_RESULTS_DIR` moves only the result tables (an exploratory run never overwrites
what the book publishes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Layout:
    """Where each kind of file lives under one repository root."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def organisms(self) -> Path:
        """Committed model organisms."""
        return self.data / "organisms"

    @property
    def generations(self) -> Path:
        """Cached greedy answers and their grades (git-ignored)."""
        return self.data / "generations"

    @property
    def scores(self) -> Path:
        """Cached EAP scores (git-ignored)."""
        return self.data / "scores"

    @property
    def results(self) -> Path:
        """Per-pair metric tables the summary page reads."""
        override = os.environ.get("RL_CIRCUITRY_RESULTS_DIR")
        return Path(override) if override else self.data / "results"

    @property
    def scratch(self) -> Path:
        """Tables of hand, Colab and Jupyter runs (git-ignored; only the runner publishes)."""
        return self.data / "scratch"

    @property
    def runs(self) -> Path:
        """The runner's staging folders and pages in progress (git-ignored)."""
        return self.data / "tmp" / "run"

    @property
    def failed(self) -> Path:
        """Notebooks whose execution failed, kept for inspection."""
        return self.data / "tmp" / "failed"

    @property
    def notebooks(self) -> Path:
        """Papermill templates."""
        return self.root / "notebooks"

    @property
    def params(self) -> Path:
        """Parameter files, one per book page."""
        return self.notebooks / "params"

    @property
    def book(self) -> Path:
        return self.root / "book"


_override: list[Path] = []


def layout() -> Layout:
    """The current layout: the innermost `use_root`, else `RL_CIRCUITRY_ROOT`, else this checkout."""
    if _override:
        return Layout(_override[-1])
    env = os.environ.get("RL_CIRCUITRY_ROOT")
    return Layout(Path(env).resolve() if env else REPO_ROOT)


@contextmanager
def use_root(root: str | os.PathLike) -> Iterator[Layout]:
    """Point every module's folders at `root` inside the block (for tests and sandboxes)."""
    _override.append(Path(root))
    try:
        yield layout()
    finally:
        _override.pop()
