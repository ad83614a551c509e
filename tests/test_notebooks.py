"""Every notebook template executes through papermill with tiny parameters (slow: minutes)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from helpers.organisms.registry import ORGANISMS_DIR

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (ORGANISMS_DIR / "base" / "config.json").is_file(),
        reason="needs the committed organisms (python -m helpers.organisms.build)",
    ),
]

TINY = {
    "pair_analysis": {
        "pair": "test_pair",
        "base": "organism:base",
        "tuned": "organism:sft",
        "n_items": 40,
        "alphas": [0.3],
        "focus_alpha": 0.3,
        "n_questions": 8,
        "n_boot": 100,
    },
    "faithfulness": {"n_items": 40, "n_questions": 4, "scales": [1.0, 0.1], "top_k": [3]},
    "organisms": {},
}


def _errors(nb: nbformat.NotebookNode) -> list[str]:
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]


@pytest.mark.parametrize("name", sorted(TINY))
def test_template_executes(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill as pm

    from helpers.pipeline import kernel_name

    # results of the test pair go to a temporary folder, not into data/results
    monkeypatch.setenv("RL_CIRCUITRY_RESULTS_DIR", str(tmp_path / "results"))
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
    assert images >= {"pair_analysis": 5, "faithfulness": 1, "organisms": 4}[name]
    if name == "pair_analysis":
        assert (tmp_path / "results" / "test_pair" / "metrics.csv").is_file()
