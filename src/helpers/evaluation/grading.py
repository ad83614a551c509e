"""Grade answers: math-verify for the real datasets; tasks register graders of their own.

Each answer gets one time budget for everything (parsing the answer and the gold, comparing),
enforced by one `signal.setitimer` timer (main thread only; from any other thread the whole list
goes to a one-process pool whose worker grades in its own main thread). Math-verify's own per-call
alarms are off, so an answer cannot take twice its budget. The budget does not depend on what ran
before: math-verify's and sympy's caches are cleared before each answer, after one warm-up grade
that pays the imports. An answer that runs out of time is a `Grade(timed_out=True)`, not a wrong
answer: callers do not cache it, so the next run grades it again.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

from tqdm.auto import tqdm

from helpers import plugins
from helpers.evaluation.datasets import get_task, last_boxed


@dataclass(frozen=True)
class Grade:
    """Whether an answer is correct, the answer it was read as ("" when none was found), and
    whether grading ran out of time (then `correct` is False and the grade is not final)."""

    correct: bool
    pred: str
    timed_out: bool = False


class _OutOfTime(BaseException):
    """Raised by the budget timer; a BaseException so math-verify's `except Exception` lets it by."""


@contextlib.contextmanager
def _budget(seconds: float) -> Iterator[None]:
    """Raise _OutOfTime in this (main) thread when `seconds` of wall time have passed."""

    def expire(signum: int, frame: object) -> None:
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_WARM = False


def _fresh_caches() -> None:
    """Clear math-verify's and sympy's caches, once warmed up, so no answer is graded faster or
    slower because of the answers graded before it."""
    global _WARM
    import math_verify.grader
    import math_verify.parser
    from sympy.core.cache import clear_cache

    math_verify.parser.TIMEOUT_WARNING_SHOWN = True  # the budget below is the timeout
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    if not _WARM:
        _WARM = True
        _grade_math_unbudgeted("\\boxed{\\frac{1}{2}}", "0.5")  # imports and parser set-up
    for name in ("parse_latex_cached", "parse_expr_cached"):
        clear = getattr(getattr(math_verify.parser, name, None), "cache_clear", None)
        if callable(clear):
            clear()
    clear_cache()


def _parse_prediction(completion: str) -> list:
    """Parsed final answer: the last \\boxed{} first, then math-verify's anchors and fallbacks."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    boxed = last_boxed(completion)
    if boxed is not None:
        parsed = parse(
            "\\boxed{" + boxed + "}",
            [LatexExtractionConfig(boxed_match_priority=0)],
            parsing_timeout=None,
        )
        if parsed:
            return parsed
    return parse(
        completion, [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=None
    )


def _parse_gold(gold: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    parsed = parse(
        "$" + gold + "$", [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=None
    )
    return parsed or [gold]


def _grade_math_unbudgeted(completion: str, gold: str) -> Grade:
    from math_verify import verify

    pred = _parse_prediction(completion)
    if not pred:
        return Grade(False, "")
    correct = verify(_parse_gold(gold), pred, timeout_seconds=None)
    # parse returns [sympy object, matched string]; the string is the readable form.
    return Grade(bool(correct), str(pred[-1]))


def grade_math(completion: str, gold: str, *, timeout_s: float = 5) -> Grade:
    """Math-verify grade of `completion` against the gold answer, within `timeout_s` seconds in
    all (main thread only); `Grade(timed_out=True)` when the budget runs out."""
    _fresh_caches()
    try:
        with _budget(timeout_s):
            return _grade_math_unbudgeted(completion, gold)
    except _OutOfTime:
        return Grade(False, "", timed_out=True)


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
    completions: Sequence[str], golds: Sequence[str], grader: str, timeout_s: float, progress: bool
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
    timeout_s: float = 5,
    progress: bool = True,
) -> list[Grade]:
    """Grade each completion against its gold answer with a registered `grader`."""
    if grader not in GRADERS:
        plugins.load()
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}; choose one of {', '.join(GRADERS)}")
    if len(completions) != len(golds):
        raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
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
