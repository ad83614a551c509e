"""Grade answers: math-verify for the real datasets, the organisms' own grader for the synthetic split.

Math-verify's timeouts use `signal.alarm`, which only works in the main thread (elsewhere it raises
ValueError). `grade_answers` therefore grades in-process from the main thread, and from any other
thread hands the whole list to a one-process pool, whose worker grades in its own main thread with
the timeouts active. A timed-out parse or comparison counts as wrong; grading never hangs.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

from tqdm.auto import tqdm

from helpers.evaluation.datasets import last_boxed

GRADERS: tuple[str, ...] = ("math_verify", "organisms")


@dataclass(frozen=True)
class Grade:
    """Whether an answer is correct, and the answer it was read as ("" when none was found)."""

    correct: bool
    pred: str


def _parse_prediction(completion: str, timeout_s: int) -> list:
    """Parsed final answer: the last \\boxed{} first, then math-verify's anchors and fallbacks."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    boxed = last_boxed(completion)
    if boxed is not None:
        parsed = parse(
            "\\boxed{" + boxed + "}",
            [LatexExtractionConfig(boxed_match_priority=0)],
            parsing_timeout=timeout_s,
        )
        if parsed:
            return parsed
    return parse(
        completion,
        [LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=timeout_s,
    )


def _parse_gold(gold: str, timeout_s: int) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(
        "$" + gold + "$",
        [LatexExtractionConfig(), ExprExtractionConfig()],
        parsing_timeout=timeout_s,
    )
    return parsed or [gold]


def grade_math(completion: str, gold: str, *, timeout_s: int = 5) -> Grade:
    """Math-verify grade of `completion` against the gold answer string (main thread only)."""
    from math_verify import verify

    pred = _parse_prediction(completion, timeout_s)
    if not pred:
        return Grade(False, "")
    correct = verify(_parse_gold(gold, timeout_s), pred, timeout_seconds=timeout_s)
    # parse returns [sympy object, matched string]; the string is the readable form.
    return Grade(bool(correct), str(pred[-1]))


def grade_organism(completion: str, gold: str) -> Grade:
    """The organisms' grader: integer answer extracted by format, compared exactly."""
    from helpers.organisms.grading import extract_answer, grade

    value = extract_answer(completion)
    return Grade(bool(grade(completion, int(gold))), "" if value is None else str(value))


def _grade_all(
    completions: Sequence[str], golds: Sequence[str], grader: str, timeout_s: int, progress: bool
) -> list[Grade]:
    pairs = zip(completions, golds, strict=True)
    bar = tqdm(pairs, total=len(completions), desc=f"grading ({grader})", disable=not progress)
    if grader == "organisms":
        return [grade_organism(c, g) for c, g in bar]
    return [grade_math(c, g, timeout_s=timeout_s) for c, g in bar]


def grade_answers(
    completions: Sequence[str],
    golds: Sequence[str],
    *,
    grader: str = "math_verify",
    timeout_s: int = 5,
    progress: bool = True,
) -> list[Grade]:
    """Grade each completion against its gold answer with `grader` ("math_verify" | "organisms")."""
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}; choose one of {', '.join(GRADERS)}")
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    if timeout_s < 1:
        raise ValueError("timeout_s must be a whole number of seconds >= 1 (signal.alarm)")
    completions, golds = list(completions), [str(g) for g in golds]
    if grader == "organisms" or threading.current_thread() is threading.main_thread():
        return _grade_all(completions, golds, grader, timeout_s, progress)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_grade_all, completions, golds, grader, timeout_s, False).result()


def grader_for(dataset: str) -> str:
    """The grader a dataset is scored with."""
    return "organisms" if dataset == "organisms" else "math_verify"
