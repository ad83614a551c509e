"""Where the committed organisms live, what they are called, and how to load them (offline).

The chain is the study's: ``pretrained`` -> ``sft`` (the primary comparison's base) -> ``ppo``,
``grpo``, ``dpo`` (seeds 0, 1, 2: ``ppo``, ``ppo-s1``, ``ppo-s2``) and ``ei``. Every folder is a
transformers directory (config, tokenizer, ``metadata.json``); the weights of all but the root are a
float16 delta on the parent named in the metadata (`helpers.organisms.storage`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from helpers.organisms import storage
from helpers.paths import layout

ORGANISMS_DIR: Path = layout().organisms
ROOT = "pretrained"
BASE = "sft"  # the primary comparison's base, as the study's SFT / instruct models
SEEDED: tuple[str, ...] = ("ppo", "grpo", "dpo")
SEEDS: tuple[int, ...] = (0, 1, 2)
ALGORITHMS: tuple[str, ...] = ("ppo", "grpo", "dpo", "ei")
CHECKPOINTED_RUNS: tuple[str, ...] = ALGORITHMS  # seed 0 of each keeps checkpoints
METADATA_FILE = "metadata.json"


def seed_name(algorithm: str, seed: int) -> str:
    """The organism name of ``algorithm`` trained with ``seed`` (seed 0 is the bare name)."""
    return algorithm if seed == 0 else f"{algorithm}-s{seed}"


def _names() -> tuple[str, ...]:
    names = [ROOT, BASE]
    for algorithm in ALGORITHMS:
        seeds = SEEDS if algorithm in SEEDED else (0,)
        names += [seed_name(algorithm, s) for s in seeds]
    return tuple(names)


ORGANISM_NAMES: tuple[str, ...] = _names()


def algorithm_of(name: str) -> tuple[str, int]:
    """(algorithm, seed) of an organism name: ``"ppo-s2"`` -> ``("ppo", 2)``."""
    if name not in ORGANISM_NAMES:
        raise ValueError(f"unknown organism {name!r}; choose one of {ORGANISM_NAMES}")
    algorithm, _, seed = name.partition("-s")
    return algorithm, int(seed or 0)


def seeds_of(algorithm: str) -> list[str]:
    """The organism names of every seed of ``algorithm`` (one name for unseeded ones)."""
    return [n for n in ORGANISM_NAMES if n not in (ROOT, BASE) and algorithm_of(n)[0] == algorithm]


def organism_path(name: str, root: Path | None = None) -> Path:
    """Directory of organism ``name`` (one of ORGANISM_NAMES) under ``root`` (default ORGANISMS_DIR)."""
    if name not in ORGANISM_NAMES:
        raise ValueError(f"unknown organism {name!r}; choose one of {ORGANISM_NAMES}")
    return (root or ORGANISMS_DIR) / name


def checkpoints_dir(run: str, root: Path | None = None) -> Path:
    """Folder holding the checkpoints of ``run`` (seed 0 of an algorithm)."""
    if run not in CHECKPOINTED_RUNS:
        raise ValueError(f"only {CHECKPOINTED_RUNS} keep checkpoints, got {run!r}")
    return (root or ORGANISMS_DIR) / f"{run}-checkpoints"


def list_checkpoints(run: str, root: Path | None = None) -> list[Path]:
    """The ``step-XXXXX`` checkpoint directories of ``run``, in training order (empty if none)."""
    folder = checkpoints_dir(run, root)
    if not folder.is_dir():
        return []
    steps = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(steps, key=lambda p: int(p.name.split("-", 1)[1]))


def _resolve(name_or_path: str | Path, root: Path | None) -> Path:
    if isinstance(name_or_path, str) and name_or_path in ORGANISM_NAMES:
        path = organism_path(name_or_path, root)
    else:
        path = Path(name_or_path)
        if not path.is_absolute() and not path.exists():
            path = (root or ORGANISMS_DIR) / path
    if not (path / "config.json").is_file():
        hint = (
            f"run `python -m helpers.organisms.build --only {name_or_path}`"
            if name_or_path in ORGANISM_NAMES
            else f"pass one of {ORGANISM_NAMES} or a directory holding config.json"
        )
        raise FileNotFoundError(f"no organism at {path}; {hint}")
    return path


def load_metadata(name_or_path: str | Path, root: Path | None = None) -> dict:
    """The ``metadata.json`` of an organism or checkpoint (arguments, mixture, seed, evaluation)."""
    return json.loads((_resolve(name_or_path, root) / METADATA_FILE).read_text())


def float16_state(name_or_path: str | Path, root: Path | None = None) -> dict[str, torch.Tensor]:
    """The float16 weights of an organism, decoding its delta chain back to the root."""
    path = _resolve(name_or_path, root)
    if not storage.is_delta(path):
        from safetensors.torch import load_file

        return {k: v.to(torch.float16) for k, v in load_file(path / storage.FULL_FILE).items()}
    parent = json.loads((path / METADATA_FILE).read_text())["parent"]
    base_root = root if root is not None else _organisms_root_of(path)
    return storage.read_delta(path, float16_state(parent, base_root))


def _organisms_root_of(path: Path) -> Path:
    """The organisms folder a model folder lives in (parent of ``name`` or of ``run-checkpoints/step``)."""
    return path.parent.parent if path.parent.name.endswith("-checkpoints") else path.parent


def load_organism(
    name_or_path: str | Path, dtype: torch.dtype = torch.float32, root: Path | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an organism (by name) or a checkpoint directory as ``(model, tokenizer)``, offline, eval mode."""
    path = _resolve(name_or_path, root)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not storage.is_delta(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        return model.eval(), tokenizer
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    state = float16_state(path, root)
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) for k, v in state.items()}, strict=False
    )
    if unexpected or [m for m in missing if "rotary" not in m]:
        raise ValueError(
            f"{path}: weights do not match the config (missing {missing}, unexpected {unexpected})"
        )
    return model.eval(), tokenizer
