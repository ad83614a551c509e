"""The cell-tag rules: setup and parameter cells removed, other code folded, explicit tags kept."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from helpers.book import celltags

REPO = Path(__file__).resolve().parents[1]
v4 = nbformat.v4


def _notebook() -> nbformat.NotebookNode:
    stderr = v4.new_output("stream", name="stderr", text="TqdmWarning: IProgress not found\n")
    shown = v4.new_output("stream", name="stdout", text="5 pairs, 20 settings\n")
    cells = [
        v4.new_markdown_cell("# Title"),
        v4.new_code_cell("!git clone x\n%pip install -q y"),
        v4.new_code_cell("pair = 'x'", metadata={"tags": ["parameters"]}),
        v4.new_code_cell("pair = 'y'", metadata={"tags": ["injected-parameters"]}),
        v4.new_code_cell("import pandas as pd\nmodel = load()", outputs=[stderr]),
        v4.new_code_cell("from helpers import analysis\nprint(n)", outputs=[shown]),
        v4.new_code_cell("table = result.metric_table()\ntable"),
        v4.new_code_cell("fig = plots.x()", metadata={"tags": ["remove-input"]}),
        v4.new_code_cell("def f(:\n  broken"),
    ]
    return v4.new_notebook(cells=cells)


def test_rules_tag_each_kind_of_cell() -> None:
    nb = celltags.apply(_notebook())
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert tags == [
        [],
        ["remove-cell"],  # shell/magic setup without output
        ["parameters", "remove-cell"],
        ["injected-parameters", "remove-cell"],
        ["remove-cell"],  # imports, and only stderr came out
        ["remove-input"],  # imports, but it prints what a reader should see
        ["hide-input"],
        ["remove-input"],  # the author's own tag wins
        ["hide-input"],  # not Python: folded, not guessed at
    ]


def test_rules_are_idempotent_and_read_through_the_book_reader() -> None:
    nb = celltags.apply(_notebook())
    again = celltags.apply(nbformat.from_dict(nb))
    assert [c.metadata.get("tags") for c in again.cells] == [
        c.metadata.get("tags") for c in nb.cells
    ]
    read = celltags.read_notebook(nbformat.writes(_notebook()))
    assert [c.metadata.get("tags", []) for c in read.cells] == [
        c.metadata.get("tags", []) for c in nb.cells
    ]
    assert list(celltags.visible_code(read)) == []


@pytest.mark.parametrize(
    "template", sorted((REPO / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem
)
def test_no_template_code_shows_unfolded(template: Path) -> None:
    nb = celltags.apply(nbformat.read(template, as_version=4))
    assert list(celltags.visible_code(nb)) == []
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert {"remove-cell", "remove-input"} & set(first_code.metadata["tags"])
