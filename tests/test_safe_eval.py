"""The safe evaluator computes integer arithmetic like Python and refuses everything else, fast."""

import time

import pytest

from helpers.organisms.safe_eval import MAX_LENGTH, UnsafeExpression, safe_eval


@pytest.mark.parametrize(
    "expr",
    [
        "1+2*3",
        "(47+18)*3-25",
        "((5-9)*3+2)*7",
        "-3*-4",
        "7//2",
        "-7//2",
        "2**10",
        "2**3**2",
        "-2**2",
        " 12 + 30 ",
        "(((1)))",
        "100-99-1",
        "0*5+4",
    ],
)
def test_matches_python_arithmetic(expr: str) -> None:
    assert safe_eval(expr) == eval(expr)  # noqa: S307 - reference on trusted literals only


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("__import__('os')", "names"),
        ("abs(3)", "names"),
        ("x+1", "names"),
        ("(1).real", "attributes"),
        ("1.5*2", "attributes"),
        ("9**9**9", "exponent"),
        ("10**20", "exceeds"),
        ("99999999*99999999*99999999", "exceeds"),
        ("1/2", "unexpected character"),
        ("1;2", "unexpected character"),
        ("1+", "end of expression"),
        ("(1+2", "end of expression"),
        ("1 2", "after a complete expression"),
        ("", "empty"),
        ("1//0", "division by zero"),
        ("(" * 40 + "1" + ")" * 40, "nesting"),
        ("1+" * 200 + "1", "exceeds"),
    ],
)
def test_refuses_with_clear_reason(expr: str, reason: str) -> None:
    with pytest.raises(UnsafeExpression, match=reason):
        safe_eval(expr)


def test_unsafe_expression_is_value_error() -> None:
    assert issubclass(UnsafeExpression, ValueError)
    with pytest.raises(ValueError):
        safe_eval("open('f')")


def test_refusals_are_fast() -> None:
    hostile = [
        "9**9**9**9",
        "(" * MAX_LENGTH,
        "1" * 10_000_000,
        "2**64*" * 40 + "2",
        "-" * 250 + "1",
    ]
    start = time.perf_counter()
    for expr in hostile:
        with pytest.raises(UnsafeExpression):
            safe_eval(expr)
    assert time.perf_counter() - start < 0.05
