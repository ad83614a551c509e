"""The runner executes stale pages only, keeps good pages when a notebook fails, and adds provenance."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from helpers import pipeline


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A miniature repository: one template, two parameter files (one of them fails on demand)."""
    (tmp_path / "notebooks" / "params").mkdir(parents=True)
    (tmp_path / "book").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A page"),
        nbformat.v4.new_code_cell("x = 1\nfail = False", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("assert not fail, 'asked to fail'\nprint('x is', x * 2)"),
    ]
    nbformat.write(nb, tmp_path / "notebooks" / "tiny.ipynb")
    for name, x in (("alpha", 3), ("beta", 5)):
        (tmp_path / "notebooks" / "params" / f"{name}.yml").write_text(
            f"notebook: tiny\noutput: book/{name}.ipynb\ninputs: [data/{name}.txt]\n"
            f"parameters:\n  x: {x}\n  fail: false\n"
        )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "alpha.txt").write_text("v1")
    monkeypatch.setenv("RL_CIRCUITRY_ROOT", str(tmp_path))  # the one override of the layout
    return tmp_path


def _outputs(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )


def test_runs_skips_and_reruns_on_input_change(project: Path) -> None:
    params = project / "notebooks" / "params"
    assert pipeline.run(params_dir=params) == 0
    page = project / "book" / "alpha.ipynb"
    assert "x is 6" in _outputs(page)
    nb = nbformat.read(page, as_version=4)
    provenance = [c for c in nb.cells if "provenance" in c.metadata.get("tags", [])]
    assert len(provenance) == 1 and ":class: provenance" in provenance[0].source
    assert "x: 3" in provenance[0].source
    hidden = [c for c in nb.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert len(hidden) == 2  # the template's parameters cell and papermill's injected one
    folded = [c for c in nb.cells if "hide-input" in c.metadata.get("tags", [])]
    assert len(folded) == 1  # the other code cell: folded by helpers.book.celltags

    mtime = page.stat().st_mtime_ns
    assert pipeline.run(params_dir=params) == 0
    assert page.stat().st_mtime_ns == mtime  # fresh: not re-executed

    (project / "data" / "alpha.txt").write_text("v2")
    assert pipeline.run(params_dir=params) == 0
    assert page.stat().st_mtime_ns != mtime  # an input changed: re-executed


def test_failure_is_reported_and_keeps_previous_pages(project: Path) -> None:
    params = project / "notebooks" / "params"
    assert pipeline.run(params_dir=params) == 0
    before = (project / "book" / "beta.ipynb").read_text()
    spec = params / "beta.yml"
    spec.write_text(spec.read_text().replace("fail: false", "fail: true"))
    assert pipeline.run(params_dir=params) == 1
    assert (project / "book" / "beta.ipynb").read_text() == before
    assert "x is 6" in _outputs(project / "book" / "alpha.ipynb")
    assert (project / "data" / "tmp" / "failed" / "beta.ipynb").exists()


def test_bad_parameter_files_name_the_fix(project: Path) -> None:
    bad = project / "notebooks" / "params" / "gamma.yml"
    bad.write_text("notebook: nope\noutput: book/gamma.ipynb\n")
    with pytest.raises(pipeline.PipelineError, match="unknown notebook 'nope'.*tiny"):
        pipeline.discover(project / "notebooks" / "params")
    bad.write_text("notebook: tiny\noutput: elsewhere/gamma.ipynb\n")
    with pytest.raises(pipeline.PipelineError, match="under book/"):
        pipeline.discover(project / "notebooks" / "params")
    bad.unlink()
    with pytest.raises(pipeline.PipelineError, match="unknown parameter files"):
        pipeline.run(only=["nope"], params_dir=project / "notebooks" / "params")


def test_title_replaces_the_first_heading(project: Path) -> None:
    spec = project / "notebooks" / "params" / "alpha.yml"
    spec.write_text('title: "Alpha page"\n' + spec.read_text())
    assert (
        pipeline.run(only=["alpha"], params_dir=project / "notebooks" / "params", html=False) == 0
    )
    nb = nbformat.read(project / "book" / "alpha.ipynb", as_version=4)
    assert nb.cells[0].source == "# Alpha page"
    assert "provenance" in nb.cells[1].metadata["tags"]


def test_remote_files_pass_remote_and_need_no_gpu(project: Path) -> None:
    spec = project / "notebooks" / "params" / "alpha.yml"
    spec.write_text("requires_gpu: true\nremote: true\n" + spec.read_text())
    job = pipeline.load_job(spec)
    assert job.parameters["remote"] is True and not job.requires_gpu
    spec.write_text(spec.read_text().replace("remote: true", "remote: false"))
    job = pipeline.load_job(spec)
    assert "remote" not in job.parameters and job.requires_gpu


def test_params_prints_the_notebook_parameters(project: Path, capsys) -> None:
    assert pipeline.main(["--params", "beta"]) == 0
    assert capsys.readouterr().out == "x: 5\nfail: false\n"
    assert pipeline.main(["--params", "nope"]) == 2


REPO = Path(__file__).resolve().parents[1]


def test_book_build_modules_are_out_of_every_pages_key() -> None:
    """Editing the book's prose generators re-executes no page; editing an engine module does."""
    files = {f.relative_to(pipeline._library()).as_posix() for f in pipeline.library_files()}
    assert "eap.py" in files and "book/display.py" in files and "book/celltags.py" in files
    assert not files & set(pipeline.BOOK_BUILD_ONLY)
    assert len(pipeline.BOOK_BUILD_ONLY) == 7
    for name in pipeline.BOOK_BUILD_ONLY:
        assert (pipeline._library() / name).is_file(), name


def test_no_page_or_page_module_imports_a_book_build_module() -> None:
    """What `BOOK_BUILD_ONLY` leaves out of the key must be unreachable from a page's run."""
    modules = {f"helpers.book.{Path(n).stem}" for n in pipeline.BOOK_BUILD_ONLY}
    stems = {m.rsplit(".", 1)[1] for m in modules}
    offenders = []
    sources = [*pipeline.library_files(), *(REPO / "notebooks").glob("*.ipynb")]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        named = {
            n.strip() for group in re.findall(r"from helpers\.book import ([\w, ]+)", text)
            for n in group.split(",")
        }  # fmt: skip
        dotted = set(re.findall(r"helpers\.book\.(\w+)", text))
        offenders += [f"{path.name}: {stem}" for stem in sorted(stems & (named | dotted))]
    assert offenders == []
