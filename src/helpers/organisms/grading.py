"""Grade any generation: which format it uses, what integer it writes, whether that is right.

A completion is the text the model wrote after the prompt (special tokens already stripped). Its
format is named by the marker of its last line (``answer:`` for ``steps``, ``result:`` for
``pairs``); its answer is the integer the model wrote on that line. Nothing here computes the
arithmetic for the model: a completion that writes the wrong number is wrong, whatever its lines say.
"""

from __future__ import annotations

import re

from helpers.organisms.tasks import MARKERS

_FINAL_LINE = {
    fmt: re.compile(rf"^{re.escape(marker)}\s*(-?\d{{1,18}})\s*$")
    for fmt, marker in MARKERS.items()
}


def _last_line(completion: str) -> str:
    lines = [line.strip() for line in completion.strip().split("\n") if line.strip()]
    return lines[-1] if lines else ""


def classify_format(completion: str) -> str:
    """``"steps"``, ``"pairs"`` or ``"other"``, from the final line's marker alone (not correctness)."""
    last = _last_line(completion)
    for fmt, pattern in _FINAL_LINE.items():
        if pattern.match(last):
            return fmt
    return "other"


def extract_answer(completion: str) -> int | None:
    """The integer the completion writes on its final marker line, or ``None`` if it has none."""
    last = _last_line(completion)
    for pattern in _FINAL_LINE.values():
        match = pattern.match(last)
        if match:
            return int(match.group(1))
    return None


def grade(completion: str, gold: int) -> bool:
    """True when the completion's written answer equals ``gold``, whatever its format."""
    answer = extract_answer(completion)
    return answer is not None and answer == int(gold)


def reward(completions: list[str], golds: list[int]) -> list[float]:
    """0/1 correctness reward for RL, format-agnostic (the Echo Chamber setting)."""
    if len(completions) != len(golds):
        raise ValueError(
            f"{len(completions)} completions but {len(golds)} golds; pass one gold each"
        )
    return [1.0 if grade(c, g) else 0.0 for c, g in zip(completions, golds, strict=True)]
