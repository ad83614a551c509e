"""The committed organisms load offline, decode exactly, and reproduce their recorded accuracy."""

import json

import pytest

from helpers.organisms import storage
from helpers.organisms.evaluate import evaluate
from helpers.organisms.publish import DYNAMICS_RUNS, SELECTION_FILE
from helpers.organisms.registry import (
    ALGORITHMS,
    ORGANISM_NAMES,
    ORGANISMS_DIR,
    ROOT,
    float16_state,
    list_checkpoints,
    load_metadata,
    load_organism,
    organism_path,
)
from helpers.organisms.tasks import make_problems

pytestmark = pytest.mark.skipif(
    not (ORGANISMS_DIR / ROOT / "config.json").is_file(),
    reason=f"no organisms at {ORGANISMS_DIR}; build them: python -m helpers.organisms.build",
)


@pytest.mark.parametrize("name", ORGANISM_NAMES)
def test_organism_has_metadata_and_delta_weights(name: str) -> None:
    path = organism_path(name)
    meta = json.loads((path / "metadata.json").read_text())
    for key in ("evaluation", "kl_to_base", "first_token_share", "n_parameters", "parent"):
        assert key in meta, f"{name}/metadata.json lacks {key!r}"
    ev = meta["evaluation"]
    assert ev["n_problems"] >= 1000
    low, high = ev["greedy_pass1_ci95"]
    assert low < ev["greedy_pass1"] < high
    assert sum(ev["greedy_format_shares"].values()) == pytest.approx(1.0)
    assert storage.is_delta(path) == (name != ROOT)
    assert meta["n_parameters"] >= 2_000_000


def test_set_fits_the_budget_and_records_its_selection() -> None:
    selection = json.loads((ORGANISMS_DIR / SELECTION_FILE).read_text())
    weights = sum(
        p.stat().st_size
        for p in ORGANISMS_DIR.rglob("*")
        if p.name in (storage.DELTA_FILE, storage.FULL_FILE)
    )
    assert weights <= 80 * 2**20
    low, high = selection["kl_levels"]
    assert 0 < low < high
    assert set(selection["matched"]) == set(ALGORITHMS)
    for rows in selection["matched"].values():
        for row in rows:
            assert (ORGANISMS_DIR / row["model"] / "metadata.json").is_file()


@pytest.mark.parametrize("run", DYNAMICS_RUNS)
def test_checkpoints_are_log_spaced_and_measured(run: str) -> None:
    steps = list_checkpoints(run)
    assert len(steps) >= 6
    numbers = [int(p.name.split("-")[1]) for p in steps]
    assert numbers[0] == 1 and numbers == sorted(numbers)
    for path in steps:
        meta = load_metadata(path)
        assert meta["step"] == int(path.name.split("-")[1])
        assert meta["kl_to_base"] >= 0


def test_delta_chain_decodes_to_a_model_different_from_its_parent() -> None:
    sft, ppo = float16_state("sft"), float16_state("ppo")
    assert sft.keys() == ppo.keys()
    assert any(not (sft[k] == ppo[k]).all() for k in sft)
    model, tokenizer = load_organism("ppo")
    assert model.config.num_hidden_layers >= 6 and model.config.vocab_size == len(tokenizer)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sft", "grpo"])
def test_reevaluation_matches_recorded_accuracy(name: str) -> None:
    model, tokenizer = load_organism(name)
    recorded = load_metadata(name)["evaluation"]
    problems = make_problems("test", recorded["n_problems"], seed=0)[:200]
    result = evaluate(model, tokenizer, problems, k=0, max_new_tokens=80, progress=False)
    # greedy decoding is deterministic up to CPU float non-associativity: within 1 point
    assert abs(result.greedy_pass1 - recorded["greedy_pass1_first_200"]) <= 0.01
