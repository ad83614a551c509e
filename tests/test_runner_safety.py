"""Only the runner publishes; provenance names the inputs' commit; re-runs leave a clean tree.

Issue 13, cases 1-3 and 15 (leftovers), on a miniature git repository whose one template writes
a results table through `helpers.publish` (with float noise and a progress bar, as the pair
pages do). Interrupted runs (SIGINT, SIGKILL) leave the published results and page intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from helpers import analysis, pipeline, publish

SRC = Path(__file__).resolve().parents[1] / "src"
TEMPLATE_CODE = """\
import time, numpy as np, pandas as pd
from tqdm import tqdm
from helpers import publish
where = publish.announce(pair)
for _ in tqdm(range(3)):
    pass
noise = np.random.default_rng().normal(size=3) * 1e-7  # float noise far below the tolerance
table = pd.DataFrame({"metric": ["a", "b", "c"], "value": x * (1 + noise) / 3})
publish.write_csv(table, where.folder / "metrics.csv")
time.sleep(sleep)
print("x is", x)
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def _spec(name: str, x: int, sleep: float = 0) -> str:
    return (
        f"notebook: tiny\noutput: book/{name}.ipynb\ninputs: [data/{name}.txt]\n"
        f"parameters:\n  pair: {name}\n  x: {x}\n  sleep: {sleep}\n"
    )


def _patch(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Point the layout (this process and the kernels it starts) at the miniature repository."""
    monkeypatch.setenv("RL_CIRCUITRY_ROOT", str(root))
    monkeypatch.delenv("RL_CIRCUITRY_RESULTS_DIR", raising=False)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed miniature repository with one publishing template and one parameter file."""
    (tmp_path / "notebooks" / "params").mkdir(parents=True)
    (tmp_path / "book").mkdir()
    (tmp_path / "data").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A page"),
        nbformat.v4.new_code_cell(
            'pair = "alpha"\nx = 1\nsleep = 0', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(TEMPLATE_CODE),
    ]
    nbformat.write(nb, tmp_path / "notebooks" / "tiny.ipynb")
    (tmp_path / "notebooks" / "params" / "alpha.yml").write_text(_spec("alpha", 3))
    (tmp_path / "data" / "alpha.txt").write_text("v1")
    (tmp_path / ".gitignore").write_text("data/tmp/\ndata/scratch/\n")
    (tmp_path / "README.md").write_text("unrelated\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "inputs")
    _patch(monkeypatch, tmp_path)
    return tmp_path


def _commit_all(root: Path, message: str) -> str:
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return _git(root, "rev-parse", "--short", "HEAD").strip()


def _outputs(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    ]


def _provenance(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return next(c.source for c in nb.cells if "provenance" in c.metadata.get("tags", []))


def test_case1_hand_run_writes_scratch_and_summary_refuses_mismatch(repo: Path) -> None:
    """Case 1: a papermill run by hand never touches data/results; the summary names both files."""
    import papermill as pm

    assert pipeline.run(params_dir=repo / "notebooks" / "params") == 0
    published = repo / "data" / "results" / "alpha" / "metrics.csv"
    before = published.read_bytes()
    record = json.loads((published.parent / "run.json").read_text())
    assert record["parameter_file"] == "notebooks/params/alpha.yml"
    assert record["parameters"] == {"pair": "alpha", "x": 3, "sleep": 0}

    status = _git(repo, "status", "--porcelain", "--untracked-files=all")
    out = repo / "data" / "scratch" / "out.ipynb"
    out.parent.mkdir(parents=True)
    assert publish.STAGING_ENV not in os.environ
    pm.execute_notebook(
        str(repo / "notebooks" / "tiny.ipynb"),
        str(out),
        parameters={"x": 10},
        kernel_name=pipeline.kernel_name(),
        language="python",
        cwd=str(repo),
        progress_bar=False,
    )
    first = _outputs(out)[0]
    assert first.startswith("Scratch run: this notebook's tables go to data/scratch/alpha/")
    assert published.read_bytes() == before
    [scratch] = (repo / "data" / "scratch" / "alpha").glob("*/metrics.csv")
    assert pd.read_csv(scratch)["value"].sum() == pytest.approx(10, rel=1e-5)
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == status

    # tables produced with other parameters than the committed file: refused, naming both
    spec = repo / "notebooks" / "params" / "alpha.yml"
    spec.write_text(_spec("alpha", 4))
    with pytest.raises(publish.ResultsMismatch) as err:
        analysis.load_results(repo / "data" / "results")
    message = str(err.value)
    assert "data/results/alpha/run.json" in message and "notebooks/params/alpha.yml" in message
    assert "x: 3 in the tables vs 4 in the file" in message


def test_case2_provenance_names_the_inputs_commit_and_dirty_inputs(repo: Path) -> None:
    """Case 2: from a clean tree the page names the inputs' last commit, without +dirty."""
    inputs_commit = _git(repo, "rev-parse", "--short", "HEAD").strip()
    (repo / "README.md").write_text("a later commit that touches no input\n")
    head = _commit_all(repo, "unrelated")
    assert head != inputs_commit
    assert pipeline.run(params_dir=repo / "notebooks" / "params") == 0
    page = repo / "book" / "alpha.ipynb"
    text = _provenance(page)
    assert f"from commit `{inputs_commit}` in" in text and "+dirty" not in text
    meta = nbformat.read(page, as_version=4).metadata["rl_circuitry"]
    assert meta["commit"].startswith(inputs_commit) and meta["dirty"] == []
    run_record = json.loads((repo / "data" / "results" / "alpha" / "run.json").read_text())
    assert run_record["commit"].startswith(inputs_commit) and run_record["dirty"] == []

    (repo / "data" / "alpha.txt").write_text("v2, not committed")
    assert pipeline.run(params_dir=repo / "notebooks" / "params") == 0
    text = _provenance(page)
    assert f"`{inputs_commit}+dirty`" in text
    assert "uncommitted changes to: `data/alpha.txt`" in text


def test_inputs_this_run_wrote_are_not_uncommitted_changes(repo: Path) -> None:
    """A page that reads what an earlier page of the same run published (the summary reads the
    pairs' tables) names the commit, not '+dirty' for those tables; a hand edit still counts."""
    params = repo / "notebooks" / "params"
    (params / "beta.yml").write_text(
        "notebook: tiny\noutput: book/beta.ipynb\nstage: 9\ninputs: [data/results]\n"
        "parameters:\n  pair: beta\n  x: 1\n  sleep: 0\n"
    )
    _commit_all(repo, "a page reading the results")
    assert pipeline.run(params_dir=params) == 0
    meta = nbformat.read(repo / "book" / "beta.ipynb", as_version=4).metadata["rl_circuitry"]
    assert meta["dirty"] == [] and "+dirty" not in _provenance(repo / "book" / "beta.ipynb")
    _commit_all(repo, "pages and results")
    (repo / "data" / "results" / "alpha" / "metrics.csv").write_text("metric,value\na,9\n")
    assert pipeline.run(only=["beta"], params_dir=params, html=False) == 0
    meta = nbformat.read(repo / "book" / "beta.ipynb", as_version=4).metadata["rl_circuitry"]
    assert meta["dirty"] == ["data/results/alpha/metrics.csv"]


def test_case3_forced_rerun_leaves_the_tree_clean(repo: Path) -> None:
    """Case 3: re-executing a committed page changes no tracked file; files are 0644."""
    params = repo / "notebooks" / "params"
    assert pipeline.run(params_dir=params) == 0
    _commit_all(repo, "pages and results")
    assert pipeline.run(params_dir=params, force=True) == 0
    assert _git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    for path in [repo / "book" / "alpha.ipynb", *(repo / "data" / "results").rglob("*.*")]:
        assert path.stat().st_mode & 0o777 == 0o644, path
    nb = nbformat.read(repo / "book" / "alpha.ipynb", as_version=4)
    assert "papermill" not in nb.cells[2].metadata and "execution" not in nb.cells[2].metadata
    assert all("it/s" not in text for text in _outputs(repo / "book" / "alpha.ipynb"))
    assert [c.id for c in nb.cells] == [f"cell-{i:03d}" for i in range(len(nb.cells))]

    # a real change beyond the tolerance is written
    (params / "alpha.yml").write_text(_spec("alpha", 6))
    assert pipeline.run(params_dir=params) == 0
    table = pd.read_csv(repo / "data" / "results" / "alpha" / "metrics.csv")
    assert table["value"].sum() == pytest.approx(6, rel=1e-5)


def test_case15_leftovers_of_a_killed_run_are_cleaned(repo: Path) -> None:
    """Case 15: partial pages and staging folders of dead runs go at the next start."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(dead.stdout)
    stale_stage = publish.tmp_root() / f"alpha.{pid}" / "results" / "alpha"
    stale_stage.mkdir(parents=True)
    (stale_stage / "metrics.csv").write_text("half")
    old_page = repo / "book" / ".tmp-abc123.ipynb"
    old_page.write_text("{}")
    half_write = repo / "data" / "results" / "alpha" / ".metrics.csv.x1.tmp"
    half_write.parent.mkdir(parents=True)
    half_write.write_text("half")
    assert pipeline.run(params_dir=repo / "notebooks" / "params") == 0
    assert not stale_stage.exists() and not old_page.exists() and not half_write.exists()
    assert list(publish.tmp_root().iterdir()) == []


def test_interrupted_swap_is_undone_at_the_next_start(repo: Path, monkeypatch) -> None:
    """A kill between moving the old results aside and putting the new ones in place."""
    assert pipeline.run(params_dir=repo / "notebooks" / "params") == 0
    published = repo / "data" / "results" / "alpha"
    before = (published / "metrics.csv").read_bytes()
    staged = repo / "data" / "tmp" / "run" / "alpha.1" / "results" / "alpha"
    staged.mkdir(parents=True)
    (staged / "metrics.csv").write_text("metric,value\na,9\n")
    calls = []
    real_replace = os.replace

    def killed_on_second(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill lands after the old folder was moved aside
        real_replace(src, dst)

    monkeypatch.setattr(publish.os, "replace", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        publish.swap_in(staged, published)
    monkeypatch.setattr(publish.os, "replace", real_replace)
    assert not published.exists()
    monkeypatch.setattr(publish, "_alive", lambda pid: False)
    assert publish.recover() == ["alpha"]
    assert (published / "metrics.csv").read_bytes() == before


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_run_keeps_results_and_the_next_run_completes(repo: Path, sig) -> None:
    params = repo / "notebooks" / "params"
    assert pipeline.run(params_dir=params) == 0
    published = repo / "data" / "results" / "alpha" / "metrics.csv"
    page = repo / "book" / "alpha.ipynb"
    before, page_before = published.read_bytes(), page.read_bytes()

    (params / "alpha.yml").write_text(_spec("alpha", 5, sleep=60))
    env = {**os.environ, "PYTHONPATH": str(SRC)}  # RL_CIRCUITRY_ROOT: the miniature repository
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpers.pipeline", "--no-html"],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not list(publish.tmp_root().glob("alpha.*/results/alpha/metrics.csv")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.2)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=60)
    if sig == signal.SIGINT:  # the kernel got it too: give the group a moment, then make sure
        time.sleep(1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    assert published.read_bytes() == before and page.read_bytes() == page_before

    (params / "alpha.yml").write_text(_spec("alpha", 5))
    assert pipeline.run(params_dir=params) == 0
    assert pd.read_csv(published)["value"].sum() == pytest.approx(5, rel=1e-5)
    assert list(publish.tmp_root().iterdir()) == []


def test_a_second_runner_refuses_while_one_runs(repo: Path) -> None:
    """Two runners would share staging and start kernels side by side: the second one refuses,
    naming the first's pid, and runs once the first has let go."""
    import fcntl

    lock = publish.tmp_root().parent / "runner.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    params = repo / "notebooks" / "params"
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        with pytest.raises(pipeline.PipelineError, match=r"another runner \(pid 4242\)"):
            pipeline.run(params_dir=params)
        assert not (repo / "book" / "alpha.ipynb").exists()
    assert pipeline.run(params_dir=params) == 0
