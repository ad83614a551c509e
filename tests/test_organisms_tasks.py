"""Problem generator, grader and format classifier on crafted inputs."""

import pytest

from helpers.organisms.grading import classify_format, extract_answer, grade, reward
from helpers.organisms.tasks import (
    FORMATS,
    MAX_VALUE,
    Problem,
    apply_op,
    make_problem,
    make_problems,
    prompt_of,
    split_of,
)


def test_generator_is_deterministic_and_seed_dependent() -> None:
    a = make_problems("train", 50, seed=3)
    b = make_problems("train", 50, seed=3)
    c = make_problems("train", 50, seed=4)
    assert a == b
    assert [p.question for p in a] != [p.question for p in c]


def test_splits_are_disjoint_across_seeds_and_difficulty() -> None:
    train = {p.question for s in (0, 1) for p in make_problems("train", 2000, seed=s)}
    test = {p.question for s in (0, 1) for p in make_problems("test", 500, seed=s)}
    test |= {p.question for p in make_problems("test", 30, n_ops=1)}
    assert not train & test
    assert all(split_of(q) == "test" for q in test)


def test_problems_are_distinct_within_a_split() -> None:
    problems = make_problems("test", 1000)
    assert len({p.question for p in problems}) == 1000
    assert len({p.id for p in problems}) == 1000


def test_values_stay_in_range_and_difficulty_spreads() -> None:
    problems = make_problems("train", 2000, seed=0)
    assert {p.n_ops for p in problems} == {2, 3, 4, 5}
    for p in problems:
        value = p.start
        assert 1 <= p.start <= 99
        for op, operand in p.ops:
            assert (op in "+-" and 1 <= operand <= 99) or (op == "*" and 2 <= operand <= 9)
            value = apply_op(value, op, operand)
            assert 1 <= value <= MAX_VALUE
        assert value == p.answer
    assert sum(p.answer >= 100 for p in problems) > 500  # three-digit arithmetic is common


def test_gold_solutions_compute_and_agree_with_answer() -> None:
    for p in make_problems("train", 300):
        assert set(p.solutions) == set(FORMATS)
        for fmt, solution in p.solutions.items():
            assert classify_format(solution) == fmt
            assert extract_answer(solution) == p.answer
            assert solution.startswith(str(p.start))  # both formats copy the start number first
            assert str(p.answer) in solution.split("\n")[-2]  # the last written line computes it
        # `pairs` writes half the lines of `steps` (rounded up), plus the final line
        assert p.solutions["pairs"].count("\n") == (p.n_ops + 1) // 2


def test_known_problem_texts() -> None:
    p = make_problem(47, [("+", 18), ("*", 3), ("-", 25)])
    assert p.question == "start with 47, add 18, times 3, take 25."
    assert prompt_of(p) == "start with 47, add 18, times 3, take 25.\n\n"
    assert prompt_of(p.question) == prompt_of(p)
    assert p.answer == 170
    assert p.solutions["steps"] == "47+18=65\n65*3=195\n195-25=170\nanswer: 170"
    assert p.solutions["pairs"] == "47+18*3=195\n195-25=170\nresult: 170"
    four = make_problem(5, [("-", 2), ("*", 3), ("+", 1), ("*", 2)])
    assert four.solutions["pairs"] == "5-2*3=9\n9+1*2=20\nresult: 20"
    assert four.answer == 20


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="split"):
        make_problems("valid", 3)
    with pytest.raises(ValueError, match="n_ops"):
        make_problems("train", 3, n_ops=(3, 1))
    with pytest.raises(ValueError, match="could not draw 6000 distinct"):
        make_problems("test", 6000, n_ops=1)  # about 4,000 one-operation test questions exist


def test_problem_is_frozen_and_hashable() -> None:
    p = make_problems("test", 1)[0]
    assert isinstance(p, Problem)
    with pytest.raises(AttributeError):
        p.answer = 3  # type: ignore[misc]
    assert len({p, p}) == 1


@pytest.mark.parametrize(
    ("completion", "fmt", "answer"),
    [
        ("47+18=65\n65*3=195\n195-25=170\nanswer: 170", "steps", 170),
        ("47+18*3=195\n195-25=170\nresult: 170", "pairs", 170),
        ("47+18=66\nanswer: 170\n", "steps", 170),
        # the written number is graded, not the arithmetic of the lines above it
        ("47+18*3=195\n195-25=170\nresult: 171", "pairs", 171),
        ("47+18=65\n65*3=195", "other", None),
        ("answer: 17\nsomething", "other", None),
        ("answer: seventeen", "other", None),
        ("result: (47+18)*3-25", "other", None),  # an expression is not an answer
        ("", "other", None),
        ("the answer is 170", "other", None),
    ],
)
def test_classifier_and_extractor_on_crafted_generations(
    completion: str, fmt: str, answer: int | None
) -> None:
    assert classify_format(completion) == fmt
    assert extract_answer(completion) == answer


def test_grade_reads_the_model_written_result() -> None:
    p = make_problem(47, [("+", 18), ("*", 3), ("-", 25)])
    right_lines_wrong_answer = "47+18=65\n65*3=195\n195-25=170\nanswer: 169"
    wrong_lines_right_answer = "47+18=60\n60*3=180\n180-25=170\nanswer: 170"
    assert not grade(right_lines_wrong_answer, p.answer)
    assert grade(wrong_lines_right_answer, p.answer)
    assert not grade("expr: (47+18)*3-25", p.answer)  # transcribing the question earns nothing


def test_grade_and_reward_are_format_agnostic() -> None:
    completions = ["result: 20", "5+15=20\nanswer: 20", "answer: 21", "garbage", "result: 20"]
    assert [grade(c, 20) for c in completions] == [True, True, False, False, True]
    assert reward(completions, [20, 20, 20, 20, 21]) == [1.0, 1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="one gold each"):
        reward(completions, [20])
