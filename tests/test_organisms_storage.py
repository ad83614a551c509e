"""float16 delta storage: exact round trip, the parent's identity checked, caches keyed on it."""

from __future__ import annotations

import pytest
import torch

from helpers.evaluation.cache import weights_fingerprint
from helpers.organisms import storage


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(4, 3, generator=g), "b.bias": torch.randn(5, generator=g)}


def test_delta_round_trip_is_bit_exact_in_float16(tmp_path) -> None:
    parent, child = _state(0), _state(1)
    (tmp_path / "config.json").write_text("{}")
    storage.write_delta(tmp_path, child, parent)
    back = storage.read_delta(tmp_path, parent)
    assert all(torch.equal(back[k], child[k].to(torch.float16)) for k in child)


def test_delta_read_against_another_parent_fails_and_names_the_fix(tmp_path) -> None:
    storage.write_delta(tmp_path, _state(1), _state(0))
    with pytest.raises(ValueError, match="publish the set again"):
        storage.read_delta(tmp_path, _state(2))


def test_fingerprint_covers_the_delta_and_its_parent(tmp_path) -> None:
    folders = [tmp_path / n for n in ("x", "y", "z")]
    for folder in folders:
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    storage.write_delta(folders[0], _state(1), _state(0))
    storage.write_delta(folders[1], _state(1), _state(0))
    storage.write_delta(folders[2], _state(1), _state(2))  # same child, another parent
    prints = [weights_fingerprint(f) for f in folders]
    assert prints[0] == prints[1] and prints[0] != prints[2]
