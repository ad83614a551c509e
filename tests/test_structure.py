"""Code-base habits: small functions, a type-checked `src/`, one atomic write, one repo root."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "helpers"
MAX_FUNCTION_LINES = 80
MYPY = shutil.which("mypy", path=str(Path(sys.executable).parent)) or shutil.which("mypy")


def _functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, line count) of every function and method in a source file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            out.append((f"{path.relative_to(REPO)}:{node.name}", node.end_lineno - node.lineno + 1))
    return out


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_function_in_src_exceeds_80_lines() -> None:
    found = [f for path in _sources() for f in _functions(path)]
    assert len(found) > 200  # the walk sees the whole library
    long = [f"{name} ({n} lines)" for name, n in found if n > MAX_FUNCTION_LINES]
    assert not long, f"split these functions (limit {MAX_FUNCTION_LINES} lines): {long}"


def test_the_length_check_catches_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "long.py"
    path.write_text(f"def long() -> None:\n{body}\n")
    ((name, n),) = [(name.split(":")[-1], n) for name, n in _functions_at(path)]
    assert name == "long" and n == MAX_FUNCTION_LINES + 1


def _functions_at(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [
        (node.name, (node.end_lineno or 0) - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    ]


def test_os_replace_lives_in_io_only() -> None:
    users = sorted(
        str(p.relative_to(REPO))
        for p in _sources()
        if "os.replace(" in p.read_text() and p.name != "io.py"
    )
    # organisms.build is being rewritten (issue 14); it moves to helpers.io with that rewrite
    assert users in ([], ["src/helpers/organisms/build.py"])


def test_no_module_computes_the_repository_root() -> None:
    users = sorted(
        str(p.relative_to(REPO))
        for p in _sources()
        if ".parents[" in p.read_text() and p.name != "paths.py"
    )
    assert users in ([], ["src/helpers/organisms/build.py"])


def test_evaluation_imports_neither_organisms_nor_remote() -> None:
    for path in sorted((SRC / "evaluation").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            bad = [n for n in names if n.startswith(("helpers.organisms", "helpers.remote"))]
            assert not bad, f"{path.name} imports {bad}"


def test_no_remote_flag_in_signatures() -> None:
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = [a.arg for a in (*node.args.args, *node.args.kwonlyargs)]
                assert "remote" not in args, f"{path.name}:{node.name} takes a remote flag"


@pytest.mark.skipif(MYPY is None, reason="mypy is not installed (pip install -e '.[dev]')")
def test_mypy_is_clean_on_src() -> None:
    result = subprocess.run([MYPY], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
