"""The committed organisms load offline and reproduce the greedy accuracy recorded in their metadata."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers.organisms.evaluate import evaluate
from helpers.organisms.registry import (
    CHECKPOINTED_RUNS,
    ORGANISM_NAMES,
    ORGANISMS_DIR,
    list_checkpoints,
    load_metadata,
    load_organism,
    organism_path,
)
from helpers.organisms.tasks import make_problems

pytestmark = pytest.mark.skipif(
    not (ORGANISMS_DIR / "base" / "config.json").is_file(),
    reason=f"no organisms at {ORGANISMS_DIR}; build them: python -m helpers.organisms.build",
)


@pytest.mark.parametrize("name", ORGANISM_NAMES)
def test_organism_loads_offline_with_metadata(name: str) -> None:
    path = organism_path(name)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    meta = json.loads((path / "metadata.json").read_text())
    for key in ("arguments", "data", "seed", "evaluation", "wall_time_s"):
        assert key in meta, f"{name}/metadata.json lacks {key!r}"
    ev = meta["evaluation"]
    assert ev["n_problems"] >= 500
    assert sum(ev["greedy_format_shares"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("run", CHECKPOINTED_RUNS)
def test_checkpoints_are_log_spaced_and_evaluated(run: str) -> None:
    steps = list_checkpoints(run)
    assert len(steps) >= 6
    numbers = [int(p.name.split("-")[1]) for p in steps]
    assert numbers[0] == 1 and numbers == sorted(numbers)
    gaps = [b / a for a, b in zip(numbers, numbers[1:], strict=False)]
    assert max(gaps) / min(gaps) < 3  # roughly constant ratio: log spacing
    for path in steps:
        meta = load_metadata(path)
        assert meta["step"] == int(path.name.split("-")[1])
        assert 0.0 <= meta["evaluation"]["greedy_pass1"] <= 1.0


@pytest.mark.parametrize("name", ["base", "sft", "grpo"])
def test_reevaluation_matches_recorded_accuracy(name: str) -> None:
    model, tokenizer = load_organism(name)
    check = load_metadata(name)["evaluation_check"]
    problems = make_problems("test", check["n_problems"], seed=0)
    result = evaluate(
        model,
        tokenizer,
        problems,
        k=0,
        max_new_tokens=check["max_new_tokens"],
        batch_size=check["batch_size"],
        progress=False,
    )
    # greedy decoding is deterministic up to CPU float non-associativity: allow one flipped answer
    assert abs(result.greedy_pass1 - check["greedy_pass1"]) <= 1 / check["n_problems"] + 1e-9
