"""Problem generator, grader and format classifier on crafted inputs."""

import pytest

from helpers.organisms.grading import classify_format, extract_answer, grade, reward
from helpers.organisms.safe_eval import safe_eval
from helpers.organisms.tasks import (
    FORMATS,
    Problem,
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
    test |= {p.question for p in make_problems("test", 30, n_ops=1, digits=1)}
    assert not train & test
    assert all(split_of(q) == "test" for q in test)


def test_problems_are_distinct_within_a_split() -> None:
    problems = make_problems("test", 1000)
    assert len({p.question for p in problems}) == 1000
    assert len({p.id for p in problems}) == 1000


def test_gold_solutions_agree_with_answer() -> None:
    for p in make_problems("train", 300, n_ops=(1, 4), digits=2):
        assert set(p.solutions) == set(FORMATS)
        for fmt, solution in p.solutions.items():
            assert classify_format(solution) == fmt
            assert extract_answer(solution) == p.answer
        assert safe_eval(p.solutions["expr"].removeprefix("expr:")) == p.answer


def test_known_problem_texts() -> None:
    p = make_problem(47, [("+", 18), ("*", 3), ("-", 25)])
    assert p.question == "start with 47, add 18, times 3, take 25."
    assert prompt_of(p) == "start with 47, add 18, times 3, take 25.\n\n"
    assert prompt_of(p.question) == prompt_of(p)
    assert p.answer == 170
    assert p.solutions["expr"] == "expr: (47+18)*3-25"
    assert p.solutions["text"] == "47+18=65\n65*3=195\n195-25=170\nanswer: 170"
    nested = make_problem(5, [("-", 2), ("*", 3), ("+", 1), ("*", 2)])
    assert nested.solutions["expr"] == "expr: ((5-2)*3+1)*2"
    assert nested.answer == 20


def test_difficulty_knobs() -> None:
    for p in make_problems("train", 100, n_ops=4, digits=3):
        assert p.question.count(",") == 4
        assert 100 <= int(p.question.split(",")[0].split()[-1]) <= 999
        assert p.answer >= 0
    with pytest.raises(ValueError, match="split"):
        make_problems("valid", 3)
    with pytest.raises(ValueError, match="n_ops"):
        make_problems("train", 3, n_ops=(3, 1))
    with pytest.raises(ValueError, match="digits"):
        make_problems("train", 3, digits=0)
    with pytest.raises(ValueError, match="could not draw 500 distinct"):
        make_problems("test", 500, n_ops=1, digits=1)  # only ~50 such test questions exist


def test_problem_is_frozen_and_hashable() -> None:
    p = make_problems("test", 1)[0]
    assert isinstance(p, Problem)
    with pytest.raises(AttributeError):
        p.answer = 3  # type: ignore[misc]
    assert len({p, p}) == 1


@pytest.mark.parametrize(
    ("completion", "fmt", "answer"),
    [
        ("expr: (47+18)*3-25", "expr", 170),
        ("  expr: 2*3 \n", "expr", 6),
        ("expr: 2*", "expr", None),
        ("expr: __import__('os')", "expr", None),
        ("expr: 1+1\n1+1=2", "expr", None),
        ("47+18=65\n65*3=195\n195-25=170\nanswer: 170", "text", 170),
        ("47+18=66\nanswer: 170\n", "text", 170),
        ("answer: -4", "text", -4),
        ("47+18=65\n65*3=195", "other", None),
        ("answer: 17\nexpr: 17", "other", None),
        ("answer: seventeen", "other", None),
        ("", "other", None),
        ("the answer is 170", "other", None),
    ],
)
def test_classifier_and_extractor_on_crafted_generations(
    completion: str, fmt: str, answer: int | None
) -> None:
    assert classify_format(completion) == fmt
    assert extract_answer(completion) == answer


def test_grade_and_reward_are_format_agnostic() -> None:
    completions = ["expr: 10*2", "5+15=20\nanswer: 20", "answer: 21", "garbage", "expr: 4*5"]
    assert [grade(c, 20) for c in completions] == [True, True, False, False, True]
    assert reward(completions, [20, 20, 20, 20, 21]) == [1.0, 1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="one gold each"):
        reward(completions, [20])
