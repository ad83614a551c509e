"""The runner's pages as the book shows them: code folded by the tag rules, kernels quiet."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from test_pipeline import project  # noqa: F401  (the miniature repository fixture)

from helpers import pipeline


def test_runner_pages_are_tagged_and_its_kernels_print_no_tcp_warning(
    project: Path,  # noqa: F811
    capfd: pytest.CaptureFixture[str],
) -> None:
    assert (
        pipeline.run(params_dir=project / "notebooks" / "params", only=["alpha"], html=False) == 0
    )
    err = capfd.readouterr().err
    assert "without encryption" not in err and "TCP" not in err, err[-2000:]
    nb = nbformat.read(project / "book" / "alpha.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells if c.cell_type == "code"]
    assert tags == [
        ["parameters", "remove-cell"],
        ["injected-parameters", "remove-cell"],
        ["hide-input"],
    ]
    assert pipeline.kernel_config().KernelManager.transport == "ipc"
