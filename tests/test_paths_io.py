"""One repository layout (overridable in one place) and one atomic write with provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import io, paths


def test_layout_follows_use_root_then_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("RL_CIRCUITRY_ROOT", raising=False)
    monkeypatch.delenv("RL_CIRCUITRY_RESULTS_DIR", raising=False)
    assert paths.layout().root == paths.REPO_ROOT
    assert (paths.REPO_ROOT / "pyproject.toml").is_file()
    with paths.use_root(tmp_path) as lay:
        assert lay.scores == tmp_path / "data" / "scores"
        assert paths.layout().params == tmp_path / "notebooks" / "params"
    assert paths.layout().root == paths.REPO_ROOT
    monkeypatch.setenv("RL_CIRCUITRY_ROOT", str(tmp_path))
    assert paths.layout().generations == tmp_path.resolve() / "data" / "generations"
    monkeypatch.setenv("RL_CIRCUITRY_RESULTS_DIR", str(tmp_path / "mine"))
    assert paths.layout().results == tmp_path / "mine"


def test_atomic_write_replaces_whole_files_and_keeps_the_old_on_error(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "a.json"
    io.write_json(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"x": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]  # no temp left


def test_atomic_dir_replaces_a_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    io.atomic_dir(target, lambda d: (d / "old.txt").write_text("1"))
    io.atomic_dir(target, lambda d: (d / "new.txt").write_text("2"))
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]


def test_provenance_of_a_checkout_and_outside_git(tmp_path: Path) -> None:
    stamp = io.provenance()
    assert stamp.commit is not None and len(stamp.commit) == 40
    assert stamp.label.startswith(stamp.commit[:7])
    assert stamp.label.endswith("+dirty") == stamp.dirty
    assert {"python", "torch", "pandas"} <= set(stamp.versions)
    assert io.git_commit() == stamp.label
    with paths.use_root(tmp_path):
        assert io.git_commit() == "unknown" and io.provenance().commit is None
