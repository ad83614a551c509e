"""Atomic saving of a model and its tokenizer as a transformers directory (checkpoints, results)."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers import io


def step_dir(root: str | os.PathLike, step: int) -> Path:
    """`root/step-XXXXX`, the checkpoint folder of a step (zero-padded so names sort by step)."""
    return Path(root) / f"step-{step:05d}"


def save_model_dir(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike
) -> Path:
    """Save `model` and `tokenizer` to `path` atomically (write a sibling temp folder, then rename)."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return io.atomic_dir(path, write)
