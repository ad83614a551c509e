"""Configuration and training log shared by every post-training algorithm.

One `PostTrainConfig` drives SFT, Expert Iteration, DPO, PPO and GRPO so that runs from the same base
differ only in the algorithm; fields an algorithm does not use are ignored by it. `TrainLog` is what
each run returns: per-step history, saved checkpoints and wall time, written atomically as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import io

GRPO_LOSS_TYPES: tuple[str, ...] = ("grpo", "dapo", "dr_grpo", "bnpo")
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")


@dataclass
class PostTrainConfig:
    """Hyper-parameters of one post-training run (defaults sized for a ~1M-parameter char-level model).

    A *step* is one optimiser step for SFT and DPO, and one rollout batch (`batch_size` prompts x
    `group_size` samples) for PPO and GRPO; for Expert Iteration, `steps` optimiser steps are spread
    over `ei_rounds` sample-filter-finetune rounds.
    """

    steps: int = 100
    learning_rate: float = 1e-4
    batch_size: int = 8  # prompts per step (SFT/DPO: examples per step)
    group_size: int = 8  # samples per prompt (PPO, GRPO, Expert Iteration)
    max_new_tokens: int = 96
    temperature: float = 0.7
    kl_coef: float = 1e-3  # PPO: per-token KL penalty in the reward; GRPO: beta
    seed: int = 0
    checkpoint_steps: tuple[int, ...] = ()
    # optimiser
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    lr_scheduler: str = (
        "constant"  # "constant" or "linear" (decay to 0); applies to every algorithm
    )
    # rollouts: sequences per forward pass when sampling (memory knob only, not a hyper-parameter)
    generation_batch_size: int = 256
    # Expert Iteration
    ei_rounds: int = 4
    ei_prompts_per_round: int | None = None  # None: batch_size * optimiser steps of a round
    # DPO
    dpo_beta: float = 0.1
    # PPO
    ppo_epochs: int = 4
    minibatch_size: int = 32  # sequences per PPO/GRPO-native minibatch
    clip_range: float = 0.2  # PPO and GRPO ratio clip (epsilon)
    value_clip_range: float = 0.2
    vf_coef: float = 1.0
    value_lr: float | None = None  # None: 3 x learning_rate
    gamma: float = 1.0
    gae_lambda: float = 0.95
    whiten_advantages: bool = True
    kl_estimator: str = "k1"  # PPO's per-token penalty in the reward
    value_model: str = (
        "separate"  # PPO critic: "separate" backbone copy, or "shared" head on the policy
    )
    # GRPO
    grpo_backend: str = "trl"  # "trl" (TRL's GRPOTrainer) or "native" (our loop, same objective)
    grpo_loss_type: str = "dapo"  # TRL's token-level normalisation (see GRPOConfig.loss_type)
    grpo_iterations: int = 1  # optimisation passes over each rollout batch (mu in the GRPO paper)
    scale_rewards: bool = True  # divide group-centred rewards by the group's std

    def __post_init__(self) -> None:
        self.checkpoint_steps = tuple(int(s) for s in self.checkpoint_steps)
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "group_size": self.group_size,
            "max_new_tokens": self.max_new_tokens,
            "ppo_epochs": self.ppo_epochs,
            "minibatch_size": self.minibatch_size,
            "ei_rounds": self.ei_rounds,
            "grpo_iterations": self.grpo_iterations,
            "generation_batch_size": self.generation_batch_size,
        }
        for name, value in positive.items():
            if int(value) < 1:
                raise ValueError(f"PostTrainConfig.{name}={value}; it must be a positive integer")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate={self.learning_rate}; pass a positive finite float")
        if self.temperature <= 0:
            raise ValueError(
                f"temperature={self.temperature}; sampling needs a positive temperature"
            )
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef={self.kl_coef}; pass 0 (no KL) or a positive coefficient")
        if not 0 < self.clip_range < 1:
            raise ValueError(f"clip_range={self.clip_range}; pass a value in (0, 1), e.g. 0.2")
        if not (0 <= self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError("gamma and gae_lambda must lie in [0, 1]")
        if self.lr_scheduler not in ("constant", "linear"):
            raise ValueError(f"lr_scheduler={self.lr_scheduler!r}; choose 'constant' or 'linear'")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator={self.kl_estimator!r}; choose one of {KL_ESTIMATORS}")
        if self.value_model not in ("separate", "shared"):
            raise ValueError(f"value_model={self.value_model!r}; choose 'separate' or 'shared'")
        if self.grpo_backend not in ("trl", "native"):
            raise ValueError(f"grpo_backend={self.grpo_backend!r}; choose 'trl' or 'native'")
        if self.grpo_loss_type not in GRPO_LOSS_TYPES:
            raise ValueError(
                f"grpo_loss_type={self.grpo_loss_type!r}; choose one of {GRPO_LOSS_TYPES}"
            )
        if self.group_size < 2:
            # GRPO needs two samples per prompt for a group baseline; EI and PPO are fine with more.
            raise ValueError("group_size must be at least 2 (GRPO normalises within each group)")
        bad = [s for s in self.checkpoint_steps if not 1 <= s <= self.steps]
        if bad:
            raise ValueError(f"checkpoint_steps {bad} fall outside 1..steps={self.steps}")

    @property
    def critic_lr(self) -> float:
        """Learning rate of PPO's critic (`value_lr`, or 3x the policy's)."""
        return self.value_lr if self.value_lr is not None else 3.0 * self.learning_rate

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view of the configuration (for metadata files)."""
        out = dataclasses.asdict(self)
        out["checkpoint_steps"] = list(self.checkpoint_steps)
        return out


@dataclass
class TrainLog:
    """What a post-training run returns: one dict per step, checkpoint paths, wall time."""

    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    algorithm: str = ""
    config: dict[str, Any] = field(default_factory=dict)

    def series(self, key: str) -> list[float]:
        """Values of `key` over the steps that logged it (None entries skipped)."""
        return [row[key] for row in self.history if row.get(key) is not None]

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write the log as JSON atomically (`helpers.io`)."""
        payload = json.dumps(_jsonable(dataclasses.asdict(self)), indent=1, allow_nan=False)
        return io.write_text(path, payload)


def _jsonable(obj: Any) -> Any:
    """Replace non-finite floats by None and tuples by lists, so the JSON is strict."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
