"""Seeded synthetic arithmetic word problems with two solution formats of different difficulty.

A problem is a start number followed by operations, e.g. ``start with 47, add 18, times 3, take 25.``
Each has two gold solutions:

- ``expr``: ``expr: (47+18)*3-25`` -- transcribe the operations into one expression (with the
  parentheses precedence needs); the grader computes it with the safe evaluator. Easy for a small
  model: no arithmetic is done by the model.
- ``text``: ``47+18=65\\n65*3=195\\n195-25=170\\nanswer: 170`` -- compute every intermediate result
  and end with a fixed answer line. Harder: the model must do multi-digit arithmetic itself.

Train and test are disjoint by construction: a question belongs to the test split iff a hash of its
text falls in a fixed bucket, whatever the seed or difficulty.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

FORMATS: tuple[str, ...] = ("expr", "text")
EXPR_MARKER = "expr:"
ANSWER_MARKER = "answer:"
TEST_FRACTION_BUCKETS = 5  # 1 in 5 questions belongs to the test split
_OP_WORDS = {"+": "add", "-": "take", "*": "times"}
_SPLITS = ("train", "test")


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem: question text, gold integer answer and a gold solution per format."""

    id: str
    question: str
    answer: int
    solutions: dict[str, str] = field(hash=False, compare=True)


def split_of(question: str) -> str:
    """Which split a question belongs to ("train" or "test"), fixed by a hash of its text."""
    digest = hashlib.sha256(question.encode()).digest()
    return "test" if digest[0] % TEST_FRACTION_BUCKETS == 0 else "train"


def prompt_of(problem_or_question: Problem | str) -> str:
    """The model's prompt: the question followed by a blank line (documents are prompt + solution + eos)."""
    question = (
        problem_or_question.question
        if isinstance(problem_or_question, Problem)
        else problem_or_question
    )
    return question + "\n\n"


def expr_solution(start: int, ops: list[tuple[str, int]]) -> str:
    """Expression-format solution: operations applied left to right, parentheses only where needed."""
    expr, has_additive = str(start), False
    for op, operand in ops:
        if op == "*" and has_additive:
            expr, has_additive = f"({expr})", False
        expr += f"{op}{operand}"
        has_additive = has_additive or op in "+-"
    return f"{EXPR_MARKER} {expr}"


def text_solution(start: int, ops: list[tuple[str, int]]) -> str:
    """Step-by-step solution: one ``a<op>b=c`` line per operation, then ``answer: N``."""
    lines, value = [], start
    for op, operand in ops:
        new = _apply(value, op, operand)
        lines.append(f"{value}{op}{operand}={new}")
        value = new
    lines.append(f"{ANSWER_MARKER} {value}")
    return "\n".join(lines)


def _apply(value: int, op: str, operand: int) -> int:
    return value + operand if op == "+" else value - operand if op == "-" else value * operand


def _random_problem(rng: random.Random, n_ops: tuple[int, int], digits: int) -> tuple[int, list]:
    low, high = 10 ** (digits - 1) if digits > 1 else 1, 10**digits - 1
    start = rng.randint(low, high)
    value, ops = start, []
    for _ in range(rng.randint(*n_ops)):
        op = rng.choice("+-*")
        if op == "*":
            operand = rng.randint(2, 9)
        elif op == "-":
            operand = rng.randint(1, min(value, high)) if value >= 1 else 0
            if operand == 0:
                op, operand = "+", rng.randint(low, high)
        else:
            operand = rng.randint(low, high)
        ops.append((op, operand))
        value = _apply(value, op, operand)
    return start, ops


def make_problem(start: int, ops: list[tuple[str, int]]) -> Problem:
    """Build the :class:`Problem` for a start number and a list of ``(op, operand)`` operations."""
    question = f"start with {start}" + "".join(f", {_OP_WORDS[o]} {n}" for o, n in ops) + "."
    answer = start
    for op, operand in ops:
        answer = _apply(answer, op, operand)
    pid = hashlib.sha256(question.encode()).hexdigest()[:12]
    solutions = {"expr": expr_solution(start, ops), "text": text_solution(start, ops)}
    return Problem(id=pid, question=question, answer=answer, solutions=solutions)


def make_problems(
    split: str,
    n: int,
    seed: int = 0,
    *,
    n_ops: int | tuple[int, int] = (2, 3),
    digits: int = 2,
) -> list[Problem]:
    """``n`` distinct problems of ``split`` ("train" | "test"), deterministic in ``seed``.

    Difficulty knobs: ``n_ops`` (operations per problem, an int or an inclusive range) and ``digits``
    (digits of the start number and of the added / taken operands; multipliers are 2-9).
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ops_range = (n_ops, n_ops) if isinstance(n_ops, int) else tuple(n_ops)
    if len(ops_range) != 2 or not 1 <= ops_range[0] <= ops_range[1] <= 8:
        raise ValueError(f"n_ops must be an int or (min, max) within 1..8, got {n_ops!r}")
    if not 1 <= digits <= 6:
        raise ValueError(f"digits must be within 1..6, got {digits}")
    rng = random.Random(f"{split}-{seed}-{ops_range}-{digits}")
    problems: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(
                f"could not draw {n} distinct {split} problems with n_ops={n_ops}, digits={digits}; "
                "ask for fewer or raise the difficulty knobs"
            )
        problem = make_problem(*_random_problem(rng, ops_range, digits))
        if problem.question in seen or split_of(problem.question) != split:
            continue
        seen.add(problem.question)
        problems.append(problem)
    return problems
