"""Where the committed organisms live and how to load them (offline, transformers directories)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from helpers.paths import layout

ORGANISMS_DIR: Path = layout().organisms
ORGANISM_NAMES: tuple[str, ...] = ("base", "sft", "ei", "dpo", "ppo", "grpo")
CHECKPOINTED_RUNS: tuple[str, ...] = ("ppo", "grpo")
METADATA_FILE = "metadata.json"


def organism_path(name: str, root: Path | None = None) -> Path:
    """Directory of organism ``name`` (one of ORGANISM_NAMES) under ``root`` (default ORGANISMS_DIR)."""
    if name not in ORGANISM_NAMES:
        raise ValueError(f"unknown organism {name!r}; choose one of {ORGANISM_NAMES}")
    return (root or ORGANISMS_DIR) / name


def checkpoints_dir(run: str, root: Path | None = None) -> Path:
    """Folder holding the log-spaced checkpoints of ``run`` ("ppo" or "grpo")."""
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


def load_organism(
    name_or_path: str | Path, dtype: torch.dtype = torch.float32, root: Path | None = None
) -> tuple[PreTrainedModel, AutoTokenizer]:
    """Load an organism (by name) or a checkpoint directory as ``(model, tokenizer)``, offline, eval mode."""
    path = _resolve(name_or_path, root)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.eval(), tokenizer
