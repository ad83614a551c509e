"""Seeded synthetic arithmetic problems with two solution formats that both make the model compute.

A problem is a start number and 2-5 operations applied left to right, e.g.
``start with 47, add 18, times 3, take 25.`` Operands of ``add``/``take`` are 1-99, multipliers 2-9,
and every intermediate value stays within 1..999, so the model does two- and three-digit arithmetic.

Both formats copy the start number first and write the final number themselves; they differ in how
much is written out, and so in how reliable they are for a small model:

- ``steps``: ``47+18=65\\n65*3=195\\n195-25=170\\nanswer: 170`` -- every intermediate result.
- ``pairs``: ``47+18*3=195\\n195-25=170\\nresult: 170`` -- two operations per line (left to right),
  so every other intermediate result is computed without being written.

Train and test are disjoint by construction: a question belongs to the test split iff a hash of its
text falls in a fixed bucket, whatever the seed or difficulty.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

FORMATS: tuple[str, ...] = ("steps", "pairs")
MARKERS: dict[str, str] = {"steps": "answer:", "pairs": "result:"}
TEST_FRACTION_BUCKETS = 5  # 1 in 5 questions belongs to the test split
MAX_VALUE = 999
MAX_OPERAND = 99
MAX_MULTIPLIER = 9
DEFAULT_N_OPS: tuple[int, int] = (2, 5)
_OP_WORDS = {"+": "add", "-": "take", "*": "times"}
_SPLITS = ("train", "test")

Op = tuple[str, int]


@dataclass(frozen=True)
class Problem:
    """One arithmetic problem: question text, gold integer answer and a gold solution per format."""

    id: str
    question: str
    start: int
    ops: tuple[Op, ...]
    answer: int
    solutions: dict[str, str] = field(hash=False, compare=True)

    @property
    def n_ops(self) -> int:
        """Number of operations (the difficulty knob the book bins by)."""
        return len(self.ops)


def split_of(question: str) -> str:
    """Which split a question belongs to ("train" or "test"), fixed by a hash of its text."""
    digest = hashlib.sha256(question.encode()).digest()
    return "test" if digest[0] % TEST_FRACTION_BUCKETS == 0 else "train"


def prompt_of(problem_or_question: Problem | str) -> str:
    """The model's prompt: the question and a blank line (documents are prompt + solution + eos)."""
    question = (
        problem_or_question.question
        if isinstance(problem_or_question, Problem)
        else problem_or_question
    )
    return question + "\n\n"


def apply_op(value: int, op: str, operand: int) -> int:
    """``value <op> operand`` for op in ``+ - *``."""
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    raise ValueError(f"unknown operation {op!r}; use one of + - *")


def steps_solution(start: int, ops: tuple[Op, ...]) -> str:
    """Every intermediate result: one ``a<op>b=c`` line per operation, then ``answer: N``."""
    lines, value = [], start
    for op, operand in ops:
        new = apply_op(value, op, operand)
        lines.append(f"{value}{op}{operand}={new}")
        value = new
    lines.append(f"{MARKERS['steps']} {value}")
    return "\n".join(lines)


def pairs_solution(start: int, ops: tuple[Op, ...]) -> str:
    """Two operations per line, applied left to right (``a<op>b<op>c=d``), then ``result: N``."""
    lines, value = [], start
    for i in range(0, len(ops), 2):
        chunk = ops[i : i + 2]
        text = str(value)
        for op, operand in chunk:
            text += f"{op}{operand}"
            value = apply_op(value, op, operand)
        lines.append(f"{text}={value}")
    lines.append(f"{MARKERS['pairs']} {value}")
    return "\n".join(lines)


def _feasible_ops(value: int) -> list[str]:
    ops = []
    if value < MAX_VALUE:
        ops.append("+")
    if value > 1:
        ops.append("-")
    if 2 * value <= MAX_VALUE:
        ops.append("*")
    return ops


def _draw_op(rng: random.Random, value: int) -> Op:
    op = rng.choice(_feasible_ops(value))
    if op == "+":
        return op, rng.randint(1, min(MAX_OPERAND, MAX_VALUE - value))
    if op == "-":
        return op, rng.randint(1, min(MAX_OPERAND, value - 1))
    return op, rng.randint(2, min(MAX_MULTIPLIER, MAX_VALUE // value))


def _random_problem(rng: random.Random, n_ops: tuple[int, int]) -> tuple[int, tuple[Op, ...]]:
    start = rng.randint(1, MAX_OPERAND)
    value, ops = start, []
    for _ in range(rng.randint(*n_ops)):
        op = _draw_op(rng, value)
        ops.append(op)
        value = apply_op(value, *op)
    return start, tuple(ops)


def make_problem(start: int, ops: list[Op] | tuple[Op, ...]) -> Problem:
    """The :class:`Problem` of a start number and ``(op, operand)`` operations (values unchecked)."""
    ops = tuple((str(o), int(n)) for o, n in ops)
    question = f"start with {start}" + "".join(f", {_OP_WORDS[o]} {n}" for o, n in ops) + "."
    answer = start
    for op, operand in ops:
        answer = apply_op(answer, op, operand)
    pid = hashlib.sha256(question.encode()).hexdigest()[:12]
    solutions = {"steps": steps_solution(start, ops), "pairs": pairs_solution(start, ops)}
    return Problem(pid, question, start, ops, answer, solutions)


def make_problems(
    split: str, n: int, seed: int = 0, *, n_ops: int | tuple[int, int] = DEFAULT_N_OPS
) -> list[Problem]:
    """``n`` distinct problems of ``split`` ("train" | "test"), deterministic in ``seed``.

    ``n_ops`` is the number of operations per problem (an int or an inclusive range within 1..8).
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ops_range = (n_ops, n_ops) if isinstance(n_ops, int) else (int(n_ops[0]), int(n_ops[-1]))
    if len(tuple(n_ops) if not isinstance(n_ops, int) else (n_ops,)) > 2 or not (
        1 <= ops_range[0] <= ops_range[1] <= 8
    ):
        raise ValueError(f"n_ops must be an int or (min, max) within 1..8, got {n_ops!r}")
    rng = random.Random(f"{split}-{seed}-{ops_range}")
    problems: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    while len(problems) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(
                f"could not draw {n} distinct {split} problems with n_ops={n_ops}; ask for fewer "
                "or allow more operations"
            )
        problem = make_problem(*_random_problem(rng, ops_range))
        if problem.question in seen or split_of(problem.question) != split:
            continue
        seen.add(problem.question)
        problems.append(problem)
    return problems
