"""The one atomic write, and the one provenance stamp every artifact carries.

`atomic_write(path, write)` lets `write` fill a temporary file in the target's folder, then
renames it over `path`, so a crash leaves either the old file or the new one; it is the only
caller of `os.replace` in the library. `provenance()` says what produced an artifact: commit,
whether the tree had uncommitted changes, package versions and time.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpers.paths import layout

PACKAGES: tuple[str, ...] = ("torch", "transformers", "nnsight", "trl", "numpy", "pandas")
FILE_MODE = 0o644  # what a plain write would give; mkstemp's 0600 would stick to every artifact
DIR_MODE = 0o755


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Move a finished file or folder `src` onto `dst` in one rename (a folder is replaced)."""
    dst = Path(dst)
    if Path(src).is_dir() and dst.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)
    return dst


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, FILE_MODE)
        return replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (flushed to disk before the rename)."""

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, payload: Any, *, indent: int = 2) -> Path:
    """Write `payload` as JSON atomically (non-JSON values as their `str`)."""
    return write_text(path, json.dumps(payload, indent=indent, default=str))


def atomic_dir(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)` on a temporary folder beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        write(tmp)
        os.chmod(tmp, DIR_MODE)
        return replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=layout().root, capture_output=True, text=True, check=True
    ).stdout.strip()


def git_state() -> tuple[str | None, bool]:
    """(full commit of the checkout, whether tracked files have uncommitted changes); None outside git."""
    try:
        return _git("rev-parse", "HEAD"), bool(
            _git("status", "--porcelain", "--untracked-files=no")
        )
    except (OSError, subprocess.CalledProcessError):
        return None, False


def git_commit(short: bool = True) -> str:
    """Commit of the checkout, with '+dirty' when tracked files changed ('unknown' outside git)."""
    sha, dirty = git_state()
    if sha is None:
        return "unknown"
    return (sha[:7] if short else sha) + ("+dirty" if dirty else "")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of `packages` (those installed), plus Python's."""
    out = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@dataclass(frozen=True)
class Provenance:
    """What produced an artifact: commit, dirty flag, package versions and UTC time."""

    commit: str | None
    dirty: bool
    versions: dict[str, str] = field(default_factory=dict)
    time: str = ""
    dirty_files: list[str] = field(default_factory=list)  # of `inputs_provenance`'s inputs

    @property
    def label(self) -> str:
        """Short commit with '+dirty', as pages print it."""
        return (
            "unknown" if self.commit is None else self.commit[:7] + ("+dirty" if self.dirty else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def provenance() -> Provenance:
    """The stamp of this checkout and environment, now."""
    sha, dirty = git_state()
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return Provenance(sha, dirty, versions(), now)


def inputs_provenance(inputs: list[Path], produced: Iterable[Path] = ()) -> Provenance:
    """The stamp of what a page is computed from: the last commit that touched any of `inputs`
    (files or folders), and those of them that differ from it (modified, added, untracked).

    Taken before a run writes anything, so a run from a clean tree names a commit holding
    exactly its inputs. Files under `produced` (what earlier jobs of the same run wrote, from
    the same checkout) are that run's own outputs, not uncommitted inputs, and are not listed.
    """
    root = layout().root
    rel = sorted({str(p.relative_to(root)) for p in inputs if p.is_relative_to(root)})
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    try:
        commit = _git("log", "-1", "--format=%H", "--", *rel) or None
        changed = _git("diff", "--name-only", "HEAD", "--", *rel) if commit else ""
        untracked = _git("ls-files", "--others", "--exclude-standard", "--", *rel)
    except (OSError, subprocess.CalledProcessError):
        return Provenance(None, False, versions(), now)
    own = [str(p.relative_to(root)) for p in produced if p.is_relative_to(root)]
    files = sorted(
        f
        for f in {f for f in (changed + "\n" + untracked).splitlines() if f.strip()}
        if not any(f == o or f.startswith(o.rstrip("/") + "/") for o in own)
    )
    return Provenance(commit, bool(files), versions(), now, files)
