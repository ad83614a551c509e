"""Grading: math-verify on crafted answers, the organisms' grader, and grading off the main thread."""

import threading

import pytest

from helpers.evaluation.grading import grade_answers, grade_math, grader_for
from helpers.organisms.tasks import make_problems

# (completion, gold, expected correct)
CRAFTED = [
    ("so the answer is \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", True),
    ("Thus $\\boxed{0.5}$", "\\frac12", True),  # decimal vs fraction
    ("\\boxed{\\dfrac{3}{4}}", "0.75", True),
    ("The answer is 42.", "42", True),  # no box: fallback on the anchor
    ("We get 5 apples, then 12 apples in total.", "12", True),  # last-number fallback
    ("\\boxed{41}", "42", False),
    ("First \\boxed{3}, wait, corrected: \\boxed{5}", "5", True),  # the last box counts
    ("First \\boxed{3}, wait, corrected: \\boxed{5}", "3", False),
    ("\\boxed{3\\sqrt{3}}", "\\sqrt{27}", True),  # symbolic equality
    ("\\boxed{x^2+2x+1}", "(x+1)^2", True),
    ("\\boxed{1,000}", "1000", True),  # thousands separator
    ("\\boxed{-3}", "3", False),
    ("\\boxed{\\frac{7}{3}}", "\\frac{7}{4}", False),
    ("\\boxed{18 \\text{ dollars}}", "18", True),  # units text
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("No final answer here.", "7", False),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), CRAFTED)
def test_math_verify_on_crafted_answers(completion, gold, expected):
    assert grade_math(completion, gold).correct is expected


def test_pred_is_the_last_box_and_empty_when_nothing_found():
    assert grade_math("\\boxed{3} then \\boxed{\\frac{1}{2}}", "1").pred == "\\frac{1}{2}"
    assert grade_math("nothing", "1").pred == ""


def test_grading_in_a_worker_thread_uses_a_process_and_agrees():
    completions = [c for c, _, _ in CRAFTED[:6]]
    golds = [g for _, g, _ in CRAFTED[:6]]
    in_main = grade_answers(completions, golds, progress=False)
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["grades"] = grade_answers(completions, golds, progress=False)
        except BaseException as exc:  # surfaced below
            box["error"] = exc

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "grading in a thread hung"
    assert "error" not in box, box.get("error")
    assert box["grades"] == in_main
    assert [g.correct for g in in_main] == [e for _, _, e in CRAFTED[:6]]


def test_organism_grader_and_dispatch():
    problem = make_problems("test", 1, 0)[0]
    good = {fmt: sol for fmt, sol in problem.solutions.items()}
    grades = grade_answers(
        [*good.values(), "answer: -99999"],
        [str(problem.answer)] * (len(good) + 1),
        grader="organisms",
        progress=False,
    )
    assert [g.correct for g in grades] == [True] * len(good) + [False]
    assert grades[0].pred == str(problem.answer)
    assert grader_for("organisms") == "organisms" and grader_for("gsm8k") == "math_verify"
    with pytest.raises(ValueError, match="unknown grader"):
        grade_answers(["x"], ["1"], grader="exact")
    with pytest.raises(ValueError, match="gold answers"):
        grade_answers(["x", "y"], ["1"])
