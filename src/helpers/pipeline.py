"""The runner: execute each parameter file's notebook with papermill into the book, incrementally.

`python -m helpers.pipeline` reads `notebooks/params/*.yml`, and for each one executes the named
template with papermill into its page under `book/`, unless the page already records the same key
(template, parameters and input files unchanged). A failing notebook is reported and leaves every
other page, and its own previous page, untouched; the summary runs last.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import yaml

from helpers import io
from helpers.paths import layout

META_KEY = "rl_circuitry"


class PipelineError(ValueError):
    """A parameter file or template is malformed; the message names the file and the fix."""


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

    def key(self) -> str:
        """Hash of everything that changes the page: template, parameters and input files."""
        h = hashlib.sha256()
        h.update(_file_digest(self.template).encode())
        h.update(json.dumps(self.parameters, sort_keys=True, default=str).encode())
        for path in sorted(self.inputs):
            h.update(str(path.relative_to(layout().root)).encode())
            h.update(_path_digest(path).encode())
        return h.hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _path_digest(path: Path) -> str:
    """Digest of a file, or of every file under a folder (names and contents); 'missing' if absent."""
    if path.is_file():
        return _file_digest(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            h.update(_file_digest(f).encode())
        return h.hexdigest()
    return "missing"


def load_job(path: Path) -> Job:
    """Parse one parameter file; errors name the file and the missing or wrong field."""
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(spec, dict):
        raise PipelineError(f"{path}: expected a mapping with keys notebook, output, parameters")
    for required in ("notebook", "output"):
        if required not in spec:
            raise PipelineError(f"{path}: missing key '{required}'")
    template = layout().notebooks / f"{spec['notebook']}.ipynb"
    if not template.is_file():
        known = sorted(p.stem for p in layout().notebooks.glob("*.ipynb"))
        raise PipelineError(f"{path}: unknown notebook '{spec['notebook']}'; templates: {known}")
    output = layout().root / spec["output"]
    if output.suffix != ".ipynb" or layout().root / "book" not in output.parents:
        raise PipelineError(f"{path}: output must be an .ipynb under book/, got {spec['output']}")
    parameters = spec.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise PipelineError(f"{path}: 'parameters' must be a mapping")
    remote = bool(spec.get("remote", False))  # on NDIF: no local GPU needed
    if remote:
        parameters = {**parameters, "remote": True}
    return Job(
        name=path.stem,
        template=template,
        output=output,
        parameters=parameters,
        inputs=[layout().root / p for p in spec.get("inputs", [])],
        requires_gpu=bool(spec.get("requires_gpu", False)) and not remote,
        stage=int(spec.get("stage", 1)),
        title=str(spec.get("title", "")),
        source=path,
    )


def discover(params_dir: Path | None = None) -> list[Job]:
    """All jobs, in run order: by stage (summary last), then by name."""
    jobs = [load_job(p) for p in sorted((params_dir or layout().params).glob("*.yml"))]
    names = [j.output for j in jobs]
    if len(set(names)) != len(names):
        raise PipelineError("two parameter files write the same output page")
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


def provenance_cell(job: Job, key: str, seconds: float) -> nbformat.NotebookNode:
    """A Markdown cell, shown at the top of the page, that says what produced it."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    params = (
        yaml.safe_dump(job.parameters, sort_keys=True, default_flow_style=False).strip()
        if job.parameters
        else "# the template's default parameters"
    )
    rel = job.source.relative_to(layout().root) if job.source else job.name
    text = (
        ":::{admonition} Provenance\n:class: provenance\n"
        f"Executed {now} from commit `{io.git_commit()}` in {seconds:.0f} s, "
        f"template `notebooks/{job.template.name}`, parameter file `{rel}`, key `{key}`.\n\n"
        f"```yaml\n{params}\n```\n:::"
    )
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = ["provenance"]
    return cell


def _finalise(nb: nbformat.NotebookNode, job: Job, key: str, seconds: float) -> None:
    """Title the page, hide the parameter cells, put the provenance block first, record the key."""
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if ("parameters" in tags or "injected-parameters" in tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    first = nb.cells[0] if nb.cells else None
    if job.title and first is not None and first.cell_type == "markdown":
        lines = first.source.split("\n")
        if lines[0].startswith("# "):
            first.source = "\n".join([f"# {job.title}", *lines[1:]])
    insert_at = 1 if first is not None and first.cell_type == "markdown" else 0
    nb.cells.insert(insert_at, provenance_cell(job, key, seconds))
    nb.metadata[META_KEY] = {"key": key, "parameters": job.parameters, "commit": io.git_commit()}
    nb.metadata.get("papermill", {}).pop("input_path", None)
    nb.metadata.get("papermill", {}).pop("output_path", None)


def kernel_name() -> str:
    """The project's registered kernel when present (see scripts/setup.sh), else python3."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return "rl-circuitry" if "rl-circuitry" in specs else "python3"


def execute(job: Job, key: str, *, progress: bool = True) -> float:
    """Run one job with papermill; the page is replaced only when execution succeeded."""
    import papermill as pm

    job.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=job.output.parent, prefix=".tmp-")
    os.close(fd)  # papermill writes here; the page is moved into place only on success
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(job.template),
            tmp,
            parameters=job.parameters,
            kernel_name=kernel_name(),
            language="python",
            cwd=str(layout().root),
            progress_bar=progress,
            log_output=False,
        )
    except BaseException:
        layout().failed.mkdir(parents=True, exist_ok=True)
        if Path(tmp).exists():
            io.replace(tmp, layout().failed / f"{job.name}.ipynb")
        raise
    seconds = time.perf_counter() - start
    nb = nbformat.read(tmp, as_version=4)
    _finalise(nb, job, key, seconds)
    nbformat.write(nb, tmp)
    io.replace(tmp, job.output)
    return seconds


def run(
    only: list[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    params_dir: Path | None = None,
) -> int:
    """Execute stale jobs; returns the number of failures (0 on success)."""
    jobs = discover(params_dir)
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
            seconds = execute(job, key)
        except Exception as err:  # noqa: BLE001 - report and go on with the others
            failures.append(job.name)
            print(
                f"[FAIL] {job.name}: {type(err).__name__}: {str(err)[-2000:]}\n"
                f"       the failed notebook is in {layout().failed.relative_to(layout().root)}/{job.name}.ipynb;"
                f" {rel} was left as it was",
                file=sys.stderr,
            )
            continue
        print(f"[done] {job.name}: {seconds:.0f} s")
    if failures:
        print(f"{len(failures)} notebook(s) failed: {', '.join(failures)}", file=sys.stderr)
    return len(failures)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.pipeline", description=__doc__)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="parameter file names (stems)")
    parser.add_argument("--force", action="store_true", help="re-execute even when up to date")
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
        return 1 if run(only=args.only, force=args.force, dry_run=args.dry_run) else 0
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
