"""Glue between our `PostTrainConfig` and TRL's trainers: arguments, callbacks, clean-up.

TRL defaults that are wrong for a ~1M-parameter char-level model on CPU are overridden here
(bf16 and gradient checkpointing off, no reporting, no saving, one log per step).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
)
from transformers.trainer_callback import ProgressCallback

from helpers.organisms.posttrain.checkpoints import save_model_dir, step_dir
from helpers.organisms.posttrain.config import PostTrainConfig
from helpers.organisms.posttrain.losses import exact_kl, masked_mean


def trainer_kwargs(cfg: PostTrainConfig, model: PreTrainedModel, output_dir: str) -> dict[str, Any]:
    """Keyword arguments shared by SFTConfig, DPOConfig and GRPOConfig for one of our runs."""
    if cfg.lr_scheduler == "constant":
        scheduler = "constant_with_warmup" if cfg.warmup_steps else "constant"
    else:
        scheduler = "linear"
    return {
        "output_dir": output_dir,
        "max_steps": cfg.steps,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": scheduler,
        "warmup_steps": cfg.warmup_steps,
        "weight_decay": cfg.weight_decay,
        "max_grad_norm": cfg.max_grad_norm,
        "optim": "adamw_torch",
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "report_to": "none",
        "save_strategy": "no",
        "logging_strategy": "steps",
        "logging_steps": 1,
        "bf16": False,
        "fp16": False,
        "gradient_checkpointing": False,
        "use_cpu": model.device.type == "cpu",
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
    }


@contextmanager
def trl_managed(model: PreTrainedModel) -> Iterator[PreTrainedModel]:
    """Hand `model` to a TRL trainer and get it back plain.

    TRL patches an instance-level fused-LM-head `forward`, turns `config.use_cache` off, rewrites
    `config._name_or_path` (our GRPO does) and tags the model; all are restored on exit.
    """
    saved = (model.config.use_cache, model.config._name_or_path, getattr(model, "model_tags", None))
    try:
        yield model
    finally:
        if "forward" in vars(model):
            del model.forward
        model.config.use_cache, model.config._name_or_path, model.model_tags = saved


class ReferenceKLProbe:
    """Exact per-token KL(model || reference) on a fixed probe batch, the reference's logits cached once.

    Called as ``probe(model)``; averages over the completion positions of the probe sequences.
    """

    def __init__(
        self,
        ref_model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_mask: torch.Tensor,
    ):
        self.input_ids, self.attention_mask = input_ids, attention_mask
        self.mask = completion_mask[:, 1:]
        self.ref_logits = self._logits(ref_model)

    @torch.no_grad()
    def _logits(self, model: torch.nn.Module) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            out = model(
                input_ids=self.input_ids, attention_mask=self.attention_mask, use_cache=False
            )
        finally:
            model.train(was_training)
        return out.logits[:, :-1].float()

    def __call__(self, model: torch.nn.Module) -> float:
        return float(masked_mean(exact_kl(self._logits(model), self.ref_logits), self.mask))


class HistoryCallback(TrainerCallback):
    """Collect TRL's per-step logs into our history rows, renaming keys via `key_map`."""

    def __init__(self, key_map: Mapping[str, str], defaults: Mapping[str, Any] | None = None):
        self.key_map = dict(key_map)
        self.defaults = dict(defaults or {})
        self.rows: dict[int, dict[str, Any]] = {}

    def row(self, step: int) -> dict[str, Any]:
        """The history row of `step`, created on first use."""
        return self.rows.setdefault(step, {"step": step, **self.defaults})

    def on_log(self, args, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        if not logs or "train_runtime" in logs:
            return
        row = self.row(state.global_step)
        for src, dst in self.key_map.items():
            if src in logs:
                row[dst] = float(logs[src])

    def history(self) -> list[dict[str, Any]]:
        """Rows sorted by step."""
        return [self.rows[s] for s in sorted(self.rows)]


class StepHookCallback(TrainerCallback):
    """Run each `hook(model, step)` after every optimiser step (KL probes, checkpoints)."""

    def __init__(self, *hooks: Callable[[torch.nn.Module, int], None]):
        self.hooks = hooks

    def on_step_end(self, args, state: TrainerState, control: TrainerControl, model=None, **kwargs):
        for hook in self.hooks:
            hook(model, state.global_step)


def checkpoint_hook(
    tokenizer: PreTrainedTokenizerBase,
    steps: tuple[int, ...],
    checkpoint_dir: str | os.PathLike | None,
    saved: list[str],
    step_offset: int = 0,
) -> Callable[[torch.nn.Module, int], None]:
    """A step hook saving the model at each of `steps` (global step = trainer step + offset)."""

    def hook(model: torch.nn.Module, step: int) -> None:
        global_step = step + step_offset
        if checkpoint_dir is not None and global_step in steps:
            pretrained = cast(PreTrainedModel, model)  # TRL trains a transformers model
            use_cache = pretrained.config.use_cache
            pretrained.config.use_cache = True  # TRL turns it off while training; saved keep it
            try:
                path = save_model_dir(
                    pretrained, tokenizer, step_dir(Path(checkpoint_dir), global_step)
                )
            finally:
                pretrained.config.use_cache = use_cache
            saved.append(str(path))

    return hook


class _QuietProgressCallback(ProgressCallback):
    """TRL's progress bar without printing every log dict (one per step at logging_steps=1)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return


def quiet_progress(trainer: Trainer) -> Trainer:
    """Keep the trainer's tqdm bar but stop it echoing each step's logs."""
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_QuietProgressCallback())
    return trainer
