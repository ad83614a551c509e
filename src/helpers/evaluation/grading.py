"""Grade answers: math-verify for the real datasets; tasks register graders of their own.

Math-verify's timeouts use `signal.alarm`, which only works in the main thread (elsewhere it raises
ValueError). `grade_answers` therefore grades in-process from the main thread, and from any other
thread hands the whole list to a one-process pool, whose worker grades in its own main thread with
the timeouts active. A timed-out parse or comparison counts as wrong; grading never hangs.
"""

from __future__ import annotations

import importlib.metadata
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

from tqdm.auto import tqdm

from helpers import plugins
from helpers.evaluation.datasets import get_task, last_boxed


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


@dataclass(frozen=True)
class Grader:
    """A grader: `grade(completion, gold)`, a version tag for caches, and whether it needs the
    main thread (math-verify's timeouts use `signal.alarm`)."""

    name: str
    grade: Callable[[str, str], Grade]
    version: Callable[[], str]
    main_thread_only: bool = False


GRADERS: dict[str, Grader] = {}


def register_grader(grader: Grader) -> Grader:
    """Add (or replace) a grader by name."""
    GRADERS[grader.name] = grader
    return grader


def _math_verify_version() -> str:
    return "math-verify-" + importlib.metadata.version("math-verify")


register_grader(
    Grader(
        "math_verify", lambda c, g: grade_math(c, g), _math_verify_version, main_thread_only=True
    )
)


def _grade_all(
    completions: Sequence[str], golds: Sequence[str], grader: str, timeout_s: int, progress: bool
) -> list[Grade]:
    pairs = zip(completions, golds, strict=True)
    bar = tqdm(pairs, total=len(completions), desc=f"grading ({grader})", disable=not progress)
    if grader == "math_verify":
        return [grade_math(c, g, timeout_s=timeout_s) for c, g in bar]
    grade = GRADERS[grader].grade
    return [grade(c, g) for c, g in bar]


def grade_answers(
    completions: Sequence[str],
    golds: Sequence[str],
    *,
    grader: str = "math_verify",
    timeout_s: int = 5,
    progress: bool = True,
) -> list[Grade]:
    """Grade each completion against its gold answer with a registered `grader`."""
    if grader not in GRADERS:
        plugins.load()
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}; choose one of {', '.join(GRADERS)}")
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    if timeout_s < 1:
        raise ValueError("timeout_s must be a whole number of seconds >= 1 (signal.alarm)")
    completions, golds = list(completions), [str(g) for g in golds]
    main = threading.current_thread() is threading.main_thread()
    if not GRADERS[grader].main_thread_only or main:
        return _grade_all(completions, golds, grader, timeout_s, progress)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_grade_all, completions, golds, grader, timeout_s, False).result()


def grader_for(dataset: str) -> str:
    """The grader a task is scored with."""
    return get_task(dataset).grader


def grader_version(grader: str) -> str:
    """Version tag of a grader, part of the grade cache's file name."""
    if grader not in GRADERS:
        plugins.load()
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}; choose one of {', '.join(GRADERS)}")
    return GRADERS[grader].version()
