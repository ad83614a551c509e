"""The code base is ruff-clean (lint and format), notebooks included."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed (pip install -e '.[dev]')")
@pytest.mark.parametrize(
    "args",
    [
        ["check", "src", "tests", "benchmarks", "notebooks"],
        ["format", "--check", "src", "tests", "benchmarks"],
    ],
)
def test_ruff(args: list[str]) -> None:
    result = subprocess.run([RUFF, *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
