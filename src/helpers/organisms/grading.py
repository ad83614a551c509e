"""Grade any generation: which format it uses, what integer it answers, whether that is right.

A completion is the text the model wrote after the prompt (special tokens already stripped).
``expr`` completions are ``expr: <expression>`` on one line, computed by the safe evaluator;
``text`` completions end with the line ``answer: <int>``; anything else is ``"other"`` and
answers nothing.
"""

from __future__ import annotations

import re

from helpers.organisms.safe_eval import UnsafeExpression, safe_eval
from helpers.organisms.tasks import ANSWER_MARKER, EXPR_MARKER

_ANSWER_LINE = re.compile(rf"^{re.escape(ANSWER_MARKER)}\s*(-?\d{{1,18}})\s*$")


def classify_format(completion: str) -> str:
    """``"expr"``, ``"text"`` or ``"other"``, from the format markers alone (not correctness)."""
    stripped = completion.strip()
    if stripped.startswith(EXPR_MARKER):
        return "expr"
    lines = [line.strip() for line in stripped.split("\n") if line.strip()]
    if lines and _ANSWER_LINE.match(lines[-1]) and not any(EXPR_MARKER in li for li in lines):
        return "text"
    return "other"


def extract_answer(completion: str) -> int | None:
    """The integer a completion answers, or ``None`` if it has no well-formed answer."""
    fmt = classify_format(completion)
    stripped = completion.strip()
    if fmt == "expr":
        if "\n" in stripped:
            return None
        try:
            return safe_eval(stripped[len(EXPR_MARKER) :])
        except UnsafeExpression:
            return None
    if fmt == "text":
        last = stripped.split("\n")[-1].strip()
        return int(_ANSWER_LINE.match(last).group(1))
    return None


def grade(completion: str, gold: int) -> bool:
    """True when the completion's answer equals ``gold``, whatever its format."""
    answer = extract_answer(completion)
    return answer is not None and answer == int(gold)


def reward(completions: list[str], golds: list[int]) -> list[float]:
    """0/1 correctness reward for RL, format-agnostic (the Echo Chamber setting)."""
    if len(completions) != len(golds):
        raise ValueError(
            f"{len(completions)} completions but {len(golds)} golds; pass one gold each"
        )
    return [1.0 if grade(c, g) else 0.0 for c, g in zip(completions, golds, strict=True)]
