"""The runner: execute each parameter file's notebook with papermill into the book, incrementally.

`python -m helpers.pipeline` reads `notebooks/params/*.yml`, and for each one executes the named
template with papermill into its page under `book/`, unless the page already records the same key
(template, parameters and input files unchanged). A failing notebook is reported and leaves every
other page, and its own previous page, untouched; the summary runs last.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

from helpers import io, pages, paramfiles, publish
from helpers.book import celltags
from helpers.paths import layout

META_KEY = "rl_circuitry"


PipelineError = paramfiles.ParamFileError  # a malformed parameter file; names file, key and fix


@dataclass
class Job:
    """One parameter file: which template to run, with what, into which page."""

    name: str
    template: Path
    output: Path
    parameters: dict[str, Any]
    inputs: list[Path] = field(default_factory=list)
    requires_gpu: bool = False
    stage: int = 1
    title: str = ""
    source: Path | None = None
    pair: str | None = None  # the results folder data/results/<pair> the page publishes

    def input_paths(self) -> list[Path]:
        """What the page is computed from: template, parameter file, listed inputs, the library."""
        own = [self.template, *([self.source] if self.source else []), *self.inputs]
        return [*own, *library_files()]

    def key(self) -> str:
        """Hash of everything that changes the page: template, parameters, inputs and code."""
        h = hashlib.sha256()
        h.update(_file_digest(self.template).encode())
        h.update(json.dumps(self.parameters, sort_keys=True, default=str).encode())
        for path in sorted(self.inputs):
            h.update(str(path.relative_to(layout().root)).encode())
            h.update(_path_digest(path).encode())
        lib = _library()
        for f in library_files():
            h.update(str(f.relative_to(lib)).encode())
            h.update(_file_digest(f).encode())
        return h.hexdigest()[:16]


# Modules only the book's HTML build runs (its prose generators, Sphinx extension, PDF): no
# page executes them, so editing them re-executes nothing (tests/test_pipeline.py checks that
# no template or other module imports them).
BOOK_BUILD_ONLY: tuple[str, ...] = tuple(
    f"book/{name}.py"
    for name in ("discussion", "findings", "glance", "pdf", "prose", "sphinxext", "typed")
)


def _library() -> Path:
    """The code every page runs (src/helpers): part of each page's inputs."""
    return Path(__file__).resolve().parent


def library_files() -> list[Path]:
    """The library's modules a page can run: every src/helpers/**/*.py but `BOOK_BUILD_ONLY`."""
    lib = _library()
    return sorted(
        f
        for f in lib.rglob("*.py")
        if f.is_file() and f.relative_to(lib).as_posix() not in BOOK_BUILD_ONLY
    )


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _path_digest(path: Path, pattern: str = "*") -> str:
    """Digest of a file, or of every file under a folder (names and contents); 'missing' if absent."""
    if path.is_file():
        return _file_digest(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob(pattern) if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(_file_digest(f).encode())
        return h.hexdigest()
    return "missing"


def load_job(path: Path) -> Job:
    """Parse and validate one parameter file; errors name the file, the key and the fix."""
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({err})") from err
    checked = paramfiles.check_file(
        path, spec, repo=layout().root, templates_dir=layout().notebooks
    )
    remote = bool(spec.get("remote", False))  # on NDIF: no local GPU needed
    return Job(
        name=path.stem,
        template=checked.template,
        output=checked.output,
        parameters=checked.parameters,
        inputs=checked.inputs,
        requires_gpu=bool(spec.get("requires_gpu", False)) and not remote,
        stage=int(spec.get("stage", 1)),
        title=str(spec.get("title", "")),
        source=path,
        pair=checked.parameters.get("pair"),
    )


def discover(params_dir: Path | None = None) -> list[Job]:
    """All jobs, validated, in run order: by stage (summary last), then by name."""
    jobs = [load_job(p) for p in sorted((params_dir or layout().params).glob("*.yml"))]
    for attr in ("output", "pair"):
        seen: dict[Any, str] = {}
        for job in jobs:
            value = getattr(job, attr)
            if value is not None and value in seen:
                raise PipelineError(
                    f"{seen[value]}.yml and {job.name}.yml both write {attr} {value}; "
                    "give each file its own"
                )
            seen[value] = job.name
    return sorted(jobs, key=lambda j: (j.stage, j.name))


def recorded_key(output: Path) -> str | None:
    """The key stored in an executed page, or None when absent or unreadable."""
    if not output.is_file():
        return None
    try:
        nb = nbformat.read(output, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable page is simply stale
        return None
    return nb.metadata.get(META_KEY, {}).get("key")


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _stamp(mark: io.Provenance) -> dict[str, Any]:
    """The time-free part of a stamp, for run.json and the page's metadata (no churn on re-runs)."""
    return {"commit": mark.commit, "dirty": list(mark.dirty_files)}


def provenance_cell(
    job: Job, key: str, seconds: float, mark: io.Provenance
) -> nbformat.NotebookNode:
    """A Markdown cell, shown at the top of the page, that says what produced it."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    params = (
        yaml.safe_dump(job.parameters, sort_keys=True, default_flow_style=False).strip()
        if job.parameters
        else "# the template's default parameters"
    )
    rel = job.source.relative_to(layout().root) if job.source else job.name
    dirty = (
        f"\n\nRun with uncommitted changes to: {', '.join(f'`{d}`' for d in mark.dirty_files)}."
        if mark.dirty_files
        else ""
    )
    text = (
        ":::{admonition} Provenance\n:class: provenance\n"
        f"Executed {now} from commit `{mark.label}` in {seconds:.0f} s, "
        f"template `notebooks/{job.template.name}`, parameter file `{rel}`, key `{key}`.{dirty}\n\n"
        f"```yaml\n{params}\n```\n:::"
    )
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = ["provenance"]
    return cell


def _finalise(
    nb: nbformat.NotebookNode, job: Job, key: str, seconds: float, mark: io.Provenance
) -> None:
    """Title the page, tag its cells (helpers.book.celltags), put the provenance first, record the key."""
    celltags.apply(nb)
    first = nb.cells[0] if nb.cells else None
    if job.title and first is not None and first.cell_type == "markdown":
        lines = first.source.split("\n")
        if lines[0].startswith("# "):
            first.source = "\n".join([f"# {job.title}", *lines[1:]])
    insert_at = 1 if first is not None and first.cell_type == "markdown" else 0
    nb.cells.insert(insert_at, provenance_cell(job, key, seconds, mark))
    nb.metadata[META_KEY] = {"key": key, "parameters": job.parameters, **_stamp(mark)}
    nb.metadata.get("papermill", {}).pop("input_path", None)
    nb.metadata.get("papermill", {}).pop("output_path", None)
    pages.strip_volatile(nb)


def kernel_config() -> Any:
    """Kernels on IPC sockets: no TCP port, so no 'running over TCP without encryption' warning."""
    from traitlets.config import Config

    config = Config()
    config.KernelManager.transport = "ipc"
    return config


def kernel_name() -> str:
    """The project's registered kernel when present (see scripts/setup.sh), else python3."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return "rl-circuitry" if "rl-circuitry" in specs else "python3"


@contextlib.contextmanager
def _environ(name: str, value: str) -> Iterator[None]:
    """Set one environment variable (the kernel papermill starts inherits it), then restore it."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _publish(job: Job, nb: nbformat.NotebookNode, staged: Path, record: dict[str, Any]) -> str:
    """Swap the staged tables into data/results, then the page into book/; 'same' if unchanged."""
    folders = sorted(d for d in staged.iterdir() if d.is_dir()) if staged.is_dir() else []
    for folder in folders:
        if folder.name != job.pair:
            raise PipelineError(
                f"{job.source}: the notebook wrote results for {folder.name!r} but the file's "
                f"pair is {job.pair!r}; set `pair: {job.name}` in its parameters"
            )
        publish.write_run_record(folder, record)
    for folder in folders:
        publish.swap_in(folder, publish.results_root() / folder.name)
    if job.output.is_file() and pages.same_page(nbformat.read(job.output, as_version=4), nb):
        return "same"
    final = staged.parent / "page.final.ipynb"
    nbformat.write(nb, final)
    os.chmod(final, io.FILE_MODE)
    job.output.parent.mkdir(parents=True, exist_ok=True)
    io.replace(final, job.output)
    return "written"


def execute(
    job: Job, key: str, *, progress: bool = True, produced: Iterable[Path] = ()
) -> tuple[float, str]:
    """Run one job with papermill in a staging folder; publish page and tables only on success.

    Provenance is taken before anything is written; `produced` (what this run's earlier jobs
    published) does not count as uncommitted input. Returns (seconds, "written" | "same").
    """
    import papermill as pm

    mark = io.inputs_provenance(job.input_paths(), produced)
    work = publish.tmp_root() / f"{job.name}.{os.getpid()}"
    staged = work / "results"
    staged.mkdir(parents=True, exist_ok=True)
    page = work / "page.ipynb"
    start = time.perf_counter()
    try:
        with _environ(publish.STAGING_ENV, str(staged)):
            pm.execute_notebook(
                str(job.template),
                str(page),
                parameters=job.parameters,
                kernel_name=kernel_name(),
                config=kernel_config(),
                language="python",
                cwd=str(layout().root),
                progress_bar=progress,
                log_output=False,
            )
        seconds = time.perf_counter() - start
        nb = nbformat.read(page, as_version=4)
        _finalise(nb, job, key, seconds, mark)
        source = str(job.source.relative_to(layout().root)) if job.source else job.name
        record = {"parameter_file": source, "parameters": job.parameters, "key": key}
        outcome = _publish(job, nb, staged, {**record, **_stamp(mark)})
    except BaseException:
        layout().failed.mkdir(parents=True, exist_ok=True)
        if page.exists():
            io.replace(page, layout().failed / f"{job.name}.ipynb")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return seconds, outcome


def build_html() -> int:
    """Rebuild the book's HTML (Sphinx rebuilds only changed pages); the build's exit status."""
    exe = Path(sys.executable).with_name("jupyter-book")
    root = layout().root
    cmd = [str(exe) if exe.is_file() else "jupyter-book", "build", str(root), "--builder", "html"]
    print(f"[html] {' '.join(cmd[1:])}", flush=True)
    return subprocess.run([*cmd, "-W", "-n", "--keep-going"], cwd=root, check=False).returncode


def _start_clean() -> None:
    """Undo what killed runs left: results folders moved aside, staging folders, partial pages."""
    for name in publish.recover():
        print(f"[restore] data/results/{name}: put back after an interrupted run")
    for path in publish.clean_leftovers():
        print(f"[clean] removed {path.relative_to(layout().root)}, left by an interrupted run")


@contextlib.contextmanager
def _one_runner() -> Iterator[None]:
    """Hold the runner's lock for the block; a second runner refuses, naming the first's pid.

    Two runners at once would share staging folders and start kernels side by side; the lock
    (an flock, so a killed runner releases it) keeps every run alone.
    """
    import fcntl

    path = publish.tmp_root().parent / "runner.lock"  # beside the staging folders, not in them
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise PipelineError(
                f"another runner (pid {holder}) is executing pages in this checkout; wait for it "
                "to finish or stop it, then run again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(
    only: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    params_dir: Path | None = None,
    html: bool | None = None,
) -> int:
    """Execute stale jobs; returns the number of failures (0 on success).

    `html` (default: when `only` names pages) rebuilds the book's HTML after a page was written.
    Only one runner executes at a time in a checkout (`_one_runner`).
    """
    if dry_run:
        return _run(only, force, dry_run, params_dir, html)
    with _one_runner():
        return _run(only, force, dry_run, params_dir, html)


def _run(
    only: list[str] | None,
    force: bool,
    dry_run: bool,
    params_dir: Path | None,
    html: bool | None,
) -> int:
    jobs = discover(params_dir)
    if not dry_run:
        _start_clean()
    if only:
        unknown = set(only) - {j.name for j in jobs}
        if unknown:
            raise PipelineError(
                f"--only names unknown parameter files {sorted(unknown)}; "
                f"known: {[j.name for j in jobs]}"
            )
        jobs = [j for j in jobs if j.name in only]
    has_gpu = gpu_available()
    failures: list[str] = []
    written = False
    produced: list[Path] = []  # what this run published: later jobs' inputs, not uncommitted
    for job in jobs:
        key = job.key()
        rel = job.output.relative_to(layout().root)
        if dry_run and job.source is not None:
            from helpers.families import validate_params

            report = validate_params(job.source)
            print(report)
            if not report.ok:
                failures.append(job.name)
        if job.requires_gpu and not has_gpu:
            kept = f"keeping {rel} as committed" if job.output.exists() else "it has no page yet"
            print(f"[skip] {job.name}: needs a GPU and none is visible; {kept}")
            continue
        if not force and recorded_key(job.output) == key:
            print(f"[fresh] {job.name}: {rel} is up to date")
            continue
        if dry_run:
            print(f"[stale] {job.name}: would execute {job.template.name} -> {rel}")
            continue
        print(f"[run] {job.name}: {job.template.name} -> {rel}", flush=True)
        try:
            seconds, outcome = execute(job, key, produced=produced)
        except Exception as err:  # noqa: BLE001 - report and go on with the others
            failures.append(job.name)
            print(
                f"[FAIL] {job.name}: {type(err).__name__}: {str(err)[-2000:]}\n"
                f"       the failed notebook is in {layout().failed.relative_to(layout().root)}/"
                f"{job.name}.ipynb;"
                f" {rel} was left as it was",
                file=sys.stderr,
            )
            continue
        produced += [job.output, *([publish.results_root() / job.pair] if job.pair else [])]
        written = written or outcome == "written"
        same = "; page unchanged, kept as it was" if outcome == "same" else ""
        print(f"[done] {job.name}: {seconds:.0f} s{same}")
    if failures:
        print(f"{len(failures)} notebook(s) failed: {', '.join(failures)}", file=sys.stderr)
    if written and (html if html is not None else bool(only)) and build_html():
        failures.append("html")
        print("the HTML build failed; run `make html` to see why", file=sys.stderr)
    return len(failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.pipeline", description=__doc__)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="parameter file names (stems)")
    parser.add_argument("--force", action="store_true", help="re-execute even when up to date")
    parser.add_argument(
        "--no-html",
        action="store_true",
        help="with --only: do not rebuild the book's HTML after the pages ran",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate every parameter file offline (ids, template, architecture, memory plan) "
        "and say what would run; run nothing",
    )
    parser.add_argument(
        "--params",
        metavar="NAME",
        help="print a parameter file's notebook parameters as YAML (for papermill -f) and exit",
    )
    args = parser.parse_args(argv)
    try:
        if args.params:
            path = layout().params / f"{args.params}.yml"
            if not path.is_file():
                raise PipelineError(f"no parameter file {path.relative_to(layout().root)}")
            print(yaml.safe_dump(load_job(path).parameters, sort_keys=False), end="")
            return 0
        html = False if args.no_html else None
        failed = run(only=args.only, force=args.force, dry_run=args.dry_run, html=html)
        return 1 if failed else 0
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
