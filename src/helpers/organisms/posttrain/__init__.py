"""Post-training from one pretrained base: SFT, Expert Iteration, DPO, PPO and GRPO.

Every algorithm modifies the model in place and returns a `TrainLog`. SFT, DPO and GRPO run on TRL's
trainers; PPO (absent from TRL 1.16) and an optional native GRPO are ours, built from the tested
pieces in `losses`.
"""

from helpers.organisms.posttrain.config import PostTrainConfig, TrainLog
from helpers.organisms.posttrain.dpo import dpo, make_preference_pairs, preference_margin
from helpers.organisms.posttrain.expert_iteration import expert_iteration
from helpers.organisms.posttrain.grpo import grpo
from helpers.organisms.posttrain.ppo import ValueModel, ppo
from helpers.organisms.posttrain.sft import sft

__all__ = [
    "PostTrainConfig",
    "TrainLog",
    "ValueModel",
    "dpo",
    "expert_iteration",
    "grpo",
    "make_preference_pairs",
    "ppo",
    "preference_margin",
    "sft",
]
