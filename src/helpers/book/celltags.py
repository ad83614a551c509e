"""Which cells a reader sees: setup and parameter cells removed, other code folded, outputs kept.

The rules run twice: the runner applies them when it writes a page, and the book build reads every
notebook through :func:`read_notebook` (``nb_custom_formats`` in ``_config.yml``), so a page run by
hand, on Colab or from an older commit renders the same way and no one tags cells by hand.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable

import nbformat

REMOVE_CELL = "remove-cell"
REMOVE_INPUT = "remove-input"
HIDE_INPUT = "hide-input"
# Tags an author or a template may set; any of them means "leave this cell's visibility alone".
VISIBILITY_TAGS = frozenset(
    {
        REMOVE_CELL,
        REMOVE_INPUT,
        HIDE_INPUT,
        "remove-output",
        "hide-cell",
        "hide-output",
        "show-input",
    }
)
PARAMETER_TAGS = frozenset({"parameters", "injected-parameters"})
SETUP_TAG = "setup"  # a template may mark a setup cell explicitly


def _statements(source: str) -> list[ast.stmt] | None:
    """Top-level statements of a code cell, or None when it is not plain Python (magics, ``!``)."""
    try:
        return ast.parse(source).body
    except SyntaxError:
        return None


def is_setup(source: str) -> bool:
    """A setup cell imports things (or runs shell/magic lines): the reader needs its effect only."""
    body = _statements(source)
    if body is None:
        return any(line.lstrip().startswith(("!", "%")) for line in source.splitlines())
    return any(isinstance(stmt, ast.Import | ast.ImportFrom) for stmt in body)


def _shows_something(cell: nbformat.NotebookNode) -> bool:
    """True when the cell has an output a reader sees (a result, a figure, or printed text)."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            continue
        return True
    return False


def tags_for(cell: nbformat.NotebookNode) -> list[str]:
    """The visibility tag the rules give one cell ([] for Markdown and for explicitly tagged cells)."""
    if cell.cell_type != "code":
        return []
    tags = set(cell.metadata.get("tags", []))
    if tags & VISIBILITY_TAGS:
        return []
    if tags & PARAMETER_TAGS:
        return [REMOVE_CELL]  # the provenance block shows the values the page ran with
    if SETUP_TAG in tags or is_setup(cell.source):
        return [REMOVE_INPUT] if _shows_something(cell) else [REMOVE_CELL]
    return [HIDE_INPUT]


def apply(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Tag every cell of ``nb`` in place by the rules above; returns ``nb`` (idempotent)."""
    for cell in nb.cells:
        extra = tags_for(cell)
        if extra:
            cell.metadata["tags"] = [*cell.metadata.get("tags", []), *extra]
    return nb


def read_notebook(text: str) -> nbformat.NotebookNode:
    """myst-nb reader for ``.ipynb``: the notebook as stored, with the tag rules applied."""
    return apply(nbformat.reads(text, as_version=4))


def visible_code(nb: nbformat.NotebookNode) -> Iterable[str]:
    """Sources of the code cells whose input a reader sees unfolded (for checks; should be none)."""
    for cell in nb.cells:
        tags = set(cell.metadata.get("tags", []))
        if cell.cell_type == "code" and not tags & {
            REMOVE_CELL,
            REMOVE_INPUT,
            HIDE_INPUT,
            "hide-cell",
        }:
            yield cell.source
