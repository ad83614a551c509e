"""Every notebook template executes through papermill with tiny parameters (slow: minutes)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from helpers.organisms.registry import ORGANISMS_DIR

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ORGANISMS_DIR / "pretrained" / "config.json").is_file(),
        reason="needs the committed organisms (python -m helpers.organisms.build)",
    ),
]

TINY = {
    "pair_analysis": {
        "pair": "test_pair",
        "base": "organism:sft",
        "tuned": "organism:grpo",
        "n_items": 40,
        "alphas": [0.3],
        "focus_alpha": 0.3,
        "n_questions": 8,
        "n_boot": 100,
    },
    "faithfulness": {"n_items": 40, "n_questions": 4, "scales": [1.0, 0.1], "top_k": [3]},
    "organisms": {},
    "causal": {
        "pair": "test_pair",
        "n_items": 60,
        "alphas": [0.3],
        "n_questions": 6,
        "ig_steps": 2,
        "n_problems": 8,
        "k_points": 3,
        "n_grown": 3,
        "n_boot": 50,
    },
}


def _errors(nb: nbformat.NotebookNode) -> list[str]:
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("name", sorted(TINY))
def test_template_executes(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run by hand (papermill, as the README shows), a template leaves `git status` as it was:
    a pair page's tables go to data/scratch, which its first output line names (issue 13)."""
    import papermill as pm

    from helpers.pipeline import kernel_name

    monkeypatch.delenv("RL_CIRCUITRY_RESULTS_DIR", raising=False)
    monkeypatch.delenv("RL_CIRCUITRY_STAGING", raising=False)
    before = _git_status()
    published = sorted((REPO / "data" / "results").rglob("*"))
    scratch = REPO / "data" / "scratch" / "test_pair"
    existing = set(scratch.iterdir()) if scratch.is_dir() else set()
    out = tmp_path / f"{name}.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / f"{name}.ipynb"),
        str(out),
        parameters=TINY[name],
        kernel_name=kernel_name(),
        language="python",
        cwd=str(REPO),
        progress_bar=False,
    )
    nb = nbformat.read(out, as_version=4)
    assert not _errors(nb)
    images = sum(
        "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert images >= {"pair_analysis": 5, "faithfulness": 1, "organisms": 4, "causal": 3}[name]
    assert _git_status() == before
    assert sorted((REPO / "data" / "results").rglob("*")) == published
    if name == "pair_analysis":
        [folder] = set(scratch.iterdir()) - existing
        try:
            first = next(o for c in nb.cells for o in c.get("outputs", []) if "text" in o)
            assert first["text"].startswith(
                f"Scratch run: this notebook's tables go to data/scratch/test_pair/{folder.name}/"
            )
            assert (folder / "metrics.csv").is_file()
        finally:
            shutil.rmtree(folder)
