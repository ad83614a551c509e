"""Executed pages without volatile content, so re-executing a page changes no tracked file.

Papermill and the kernel stamp every cell with start and end times, papermill adds random ids to
the cells it injects, and progress bars print their rates to stderr. `strip_volatile` removes
those (and numbers cells deterministically); `same_page` says whether two executed pages show
the same thing apart from their provenance block, in which case the runner keeps the old file.
"""

from __future__ import annotations

import copy
import re

import nbformat

PROVENANCE_TAG = "provenance"
VOLATILE_CELL_KEYS = ("execution", "papermill")
VOLATILE_NB_KEYS = ("widgets",)
PAPERMILL_KEPT = ("parameters", "default_parameters", "version")
# tqdm's lines: carriage returns, "<n>/<total> [...]", rates in it/s or s/it, or the cursor-up
# escape a nested bar prints ("\x1b[A").
PROGRESS = re.compile(r"\r|\d+it/s|\d+s/it|\|\s*\d+/\d+\s*\[|\x1b\[A")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _is_progress(output: nbformat.NotebookNode) -> bool:
    if output.get("output_type") == "stream" and output.get("name") == "stderr":
        text = output.get("text", "")
        return bool(PROGRESS.search(text)) or not text.strip()
    return WIDGET_MIME in output.get("data", {})


def strip_volatile(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Drop timestamps, durations, widget state and progress output; number the cells' ids."""
    for key in VOLATILE_NB_KEYS:
        nb.metadata.pop(key, None)
    pm = nb.metadata.get("papermill")
    if isinstance(pm, dict):
        nb.metadata["papermill"] = {k: pm[k] for k in PAPERMILL_KEPT if k in pm}
    for index, cell in enumerate(nb.cells):
        for key in VOLATILE_CELL_KEYS:
            cell.metadata.pop(key, None)
        cell["id"] = f"cell-{index:03d}"
        if cell.cell_type == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if not _is_progress(o)]
    return nb


def _comparable(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = strip_volatile(copy.deepcopy(nb))
    nb.cells = [c for c in nb.cells if PROVENANCE_TAG not in c.metadata.get("tags", [])]
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index:03d}"
        if cell.cell_type == "code":
            cell["execution_count"] = None
            for out in cell.get("outputs", []):
                if "execution_count" in out:
                    out["execution_count"] = None
    return nb


def same_page(a: nbformat.NotebookNode, b: nbformat.NotebookNode) -> bool:
    """Whether two executed pages hold the same cells, outputs and recorded key and commit.

    Only the provenance block (time and duration of the run) may differ.
    """
    return nbformat.writes(_comparable(a)) == nbformat.writes(_comparable(b))
