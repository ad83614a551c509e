"""Volatile page content: progress bars (also a nested bar's cursor-up escapes) leave the page."""

import nbformat

from helpers.pages import strip_volatile


def _stderr(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stderr", text=text)


def test_progress_output_is_stripped_and_warnings_kept() -> None:
    cell = nbformat.v4.new_code_cell("x = 1")
    warning = _stderr("UserWarning: only 27 questions survive the selection\n")
    cell.outputs = [
        _stderr("checkpoints:  50%|#####     | 1/2 [00:01<00:01,  1.2it/s]"),
        _stderr("\x1b[A"),
        _stderr("\n"),
        warning,
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert strip_volatile(nb).cells[0].outputs == [warning]
