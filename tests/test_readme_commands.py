"""What a new user meets following the README (issue 13, cases 4-7).

4: the browser tests install no system package unless asked, and say how; 5: every README command
runs through the venv; 6: `make book FORCE=1` recomputes everything and `--only` rebuilds the
HTML of what it ran; 7: scripts/setup.sh says what it does before each step.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import pipeline

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
TOOLS = ("python", "python3", "papermill", "pip", "jupyter-book", "pytest", "ruff")


def test_case4_browser_tests_install_nothing_unasked(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    import sitecheck

    ran: list[list[str]] = []
    monkeypatch.setattr(sitecheck, "find_chromium", lambda: None)
    monkeypatch.setattr(sitecheck.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    monkeypatch.setattr(sitecheck.os, "geteuid", lambda: 0)  # even as root with apt-get
    monkeypatch.delenv("CHROMIUM", raising=False)
    monkeypatch.delenv(sitecheck.INSTALL_ENV, raising=False)
    exe, reason = sitecheck.chromium_or_reason()
    assert exe is None and ran == []
    assert "sudo apt-get install -y chromium fonts-liberation" in reason
    assert "RL_CIRCUITRY_INSTALL_CHROMIUM=1" in reason
    assert "sudo apt-get install -y chromium fonts-liberation" in README
    assert "`make test` installs nothing else" in README


def _commands(text: str) -> list[str]:
    """Shell command lines of the README's bash blocks and its inline code spans."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        lines += [line.split("#")[0].strip() for line in joined.splitlines()]
    lines += re.findall(r"`([^`\n]+)`", text)
    return [line for line in lines if line]


def test_case5_readme_commands_run_through_the_venv() -> None:
    bare = [
        cmd
        for cmd in _commands(README)
        for part in re.split(r"&&|\|\||;|\|", cmd)
        if (words := part.split()) and words[0] in TOOLS
    ]
    assert bare == [], f"README commands that need an activated venv: {bare}"
    assert ".venv/bin/python -m helpers.pipeline" in README


def _make_var(name: str, *args: str) -> str:
    proc = subprocess.run(
        [
            "make",
            "-s",
            "--no-print-directory",
            "--eval",
            f"show: ; @echo [$({name})]",
            "show",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def test_case6_force_recomputes_everything_and_is_documented() -> None:
    assert _make_var("PIPELINE_ARGS", "FORCE=1") == "[--force]"
    assert _make_var("PIPELINE_ARGS") == "[]"
    assert "make book FORCE=1" in README


def test_case6_only_rebuilds_the_html(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "notebooks" / "params").mkdir(parents=True)
    (tmp_path / "book").mkdir()
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    nbformat.write(nb, tmp_path / "notebooks" / "tiny.ipynb")
    (tmp_path / "notebooks" / "params" / "a.yml").write_text(
        "notebook: tiny\noutput: book/a.ipynb\nparameters: {x: 2}\n"
    )
    monkeypatch.setenv("RL_CIRCUITRY_ROOT", str(tmp_path))
    built: list[int] = []
    monkeypatch.setattr(pipeline, "build_html", lambda: built.append(1) or 0)
    assert pipeline.main(["--only", "a"]) == 0
    assert built == [1]
    assert pipeline.main(["--only", "a", "--force", "--no-html"]) == 0
    assert pipeline.main(["--force"]) == 0  # `make book` builds the HTML itself, once
    assert built == [1]


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for the interpreter: no torch, no project; pip and ipykernel only log (to stderr,
# which setup.sh does not silence).
case "$1 $2" in
  "-c import sys; print(sys.prefix)") echo "{prefix}" ;;
  "-m pip") echo "RAN pip ${{@: -3}}" >&2 ;;
  "-m ipykernel") echo "RAN ipykernel" >&2 ;;
  *) exit 1 ;;
esac
"""


def test_case7_setup_prints_a_line_before_each_step(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON.format(prefix=tmp_path))
    fake.chmod(0o755)
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh")],
        env={**os.environ, "PYTHON": str(fake)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=True,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    ran = [i for i, line in enumerate(lines) if line.startswith("RAN")]
    assert len(ran) == 3  # torch, the project, the kernel
    for i in ran:  # each step announced right before it runs, saying what it installs
        assert lines[i - 1].startswith("setup: "), lines
    assert "torch 2.13.0" in lines[ran[0] - 1] and "minutes" in lines[ran[0] - 1]
    assert "the project and its extras" in lines[ran[1] - 1]
    assert "kernel rl-circuitry" in lines[ran[2] - 1]
    assert re.fullmatch(r"setup: done in \d+ s \(.*\)", lines[-1])
