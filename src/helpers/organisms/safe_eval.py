"""Safe evaluator for model-written arithmetic: integers, + - * // **, parentheses, nothing else.

An explicit tokenizer and a recursive-descent parser; no ``eval``, ``exec`` or ``ast``. Input length,
nesting depth, exponents and the magnitude of every intermediate value are bounded, so hostile or
runaway model output is refused quickly with :class:`UnsafeExpression`.
"""

from __future__ import annotations

import re

MAX_LENGTH = 256
MAX_DEPTH = 32
MAX_EXPONENT = 64
MAX_MAGNITUDE = 10**15

_TOKEN = re.compile(r"\s*(?:(\d+)|(\*\*|//|[-+*()]))")


class UnsafeExpression(ValueError):
    """Raised for anything the safe evaluator refuses: bad syntax, names, huge values, long input."""


def _tokenize(expr: str) -> list[str]:
    """Split ``expr`` into integer literals and operator tokens, refusing any other character."""
    tokens: list[str] = []
    pos = 0
    end = len(expr.rstrip())
    while pos < end:
        match = _TOKEN.match(expr, pos)
        if match is None:
            char = expr[pos:].lstrip()[:1]
            if char.isalpha() or char == "_":
                raise UnsafeExpression(
                    f"names are not allowed (found {char!r} at {pos}); only integers and + - * // ** ( )"
                )
            if char == ".":
                raise UnsafeExpression(
                    f"attributes and decimals are not allowed (found '.' at {pos}); use integers"
                )
            raise UnsafeExpression(
                f"unexpected character {char!r} at {pos}; only integers and + - * // ** ( ) are allowed"
            )
        number, op = match.groups()
        if number is not None and len(number) > 18:
            raise UnsafeExpression(f"integer literal of {len(number)} digits is too large")
        tokens.append(number if number is not None else op)
        pos = match.end()
    return tokens


def _check(value: int) -> int:
    if abs(value) > MAX_MAGNITUDE:
        raise UnsafeExpression(f"intermediate value exceeds {MAX_MAGNITUDE:.0e} in magnitude")
    return value


class _Parser:
    """Grammar: expr := term (('+'|'-') term)*; term := unary (('*'|'//') unary)*;
    unary := '-' unary | '+' unary | power; power := atom ('**' unary)?; atom := INT | '(' expr ')'."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise UnsafeExpression("unexpected end of expression")
        self.pos += 1
        return token

    def expr(self) -> int:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term()
            value = _check(value + right if op == "+" else value - right)
        return value

    def term(self) -> int:
        value = self.unary()
        while self.peek() in ("*", "//"):
            op = self.take()
            right = self.unary()
            if op == "*":
                value = _check(value * right)
            else:
                if right == 0:
                    raise UnsafeExpression("division by zero")
                value = value // right
        return value

    def unary(self) -> int:
        if self.peek() in ("-", "+"):
            op = self.take()
            self._enter()
            value = self.unary()
            self.depth -= 1
            return -value if op == "-" else value
        return self.power()

    def power(self) -> int:
        base = self.atom()
        if self.peek() != "**":
            return base
        self.take()
        self._enter()
        exponent = self.unary()
        self.depth -= 1
        if exponent < 0 or exponent > MAX_EXPONENT:
            raise UnsafeExpression(f"exponent {exponent} outside 0..{MAX_EXPONENT}")
        value = 1
        for _ in range(exponent):
            value = _check(value * base)
        return value

    def atom(self) -> int:
        token = self.take()
        if token == "(":
            self._enter()
            value = self.expr()
            if self.take() != ")":
                raise UnsafeExpression("missing closing parenthesis")
            self.depth -= 1
            return value
        if token.isdigit():
            return _check(int(token))
        raise UnsafeExpression(f"unexpected token {token!r}")

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise UnsafeExpression(f"nesting deeper than {MAX_DEPTH}")


def safe_eval(expr: str) -> int:
    """Evaluate an integer arithmetic expression, or raise :class:`UnsafeExpression` saying why not."""
    if not isinstance(expr, str):
        raise UnsafeExpression(f"expected a string, got {type(expr).__name__}")
    if len(expr) > MAX_LENGTH:
        raise UnsafeExpression(f"expression of {len(expr)} characters exceeds {MAX_LENGTH}")
    tokens = _tokenize(expr)
    if not tokens:
        raise UnsafeExpression("empty expression")
    parser = _Parser(tokens)
    value = parser.expr()
    if parser.pos != len(tokens):
        raise UnsafeExpression(
            f"unexpected token {tokens[parser.pos]!r} after a complete expression"
        )
    return value
