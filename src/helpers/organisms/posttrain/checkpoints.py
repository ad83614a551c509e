"""Atomic saving of a model and its tokenizer as a transformers directory (checkpoints, results)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase


def step_dir(root: str | os.PathLike, step: int) -> Path:
    """`root/step-XXXXX`, the checkpoint folder of a step (zero-padded so names sort by step)."""
    return Path(root) / f"step-{step:05d}"


def save_model_dir(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | os.PathLike
) -> Path:
    """Save `model` and `tokenizer` to `path` atomically (write a sibling temp folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
