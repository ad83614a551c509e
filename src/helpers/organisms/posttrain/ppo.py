"""PPO for a causal LM (ours: TRL 1.16 has none), in the InstructGPT / OpenRLHF form.

Per step: sample `group_size` completions for each of `batch_size` prompts; the reward of token t is
``-kl_coef * KL_t(pi_old || pi_ref)`` plus the task reward on the completion's last token; a critic
gives V_t; GAE gives advantages (whitened) and returns; then `ppo_epochs` passes of minibatch
updates of the clipped surrogate (policy) and the clipped value loss (critic).

Critic (`cfg.value_model`): "separate" (default) is a copy of the base's backbone with a
zero-initialised linear value head and its own AdamW; "shared" is a value head on the policy's own
last hidden state, trained jointly (loss = policy + vf_coef * value), about half the compute.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from helpers.organisms.posttrain.checkpoints import save_model_dir, step_dir
from helpers.organisms.posttrain.config import PostTrainConfig, TrainLog
from helpers.organisms.posttrain.expert_iteration import prompt_stream
from helpers.organisms.posttrain.losses import (
    clipped_surrogate,
    clipped_value_loss,
    gae,
    kl_estimate,
    masked_mean,
    masked_whiten,
)
from helpers.organisms.posttrain.rl import (
    RewardFn,
    ScoredRollout,
    collect,
    last_token_index,
    lr_lambda,
    minibatches,
    trim,
)
from helpers.organisms.posttrain.rollout import token_logprobs
from helpers.organisms.posttrain.sft import check_pairs, frozen_copy


class ValueModel(nn.Module):
    """Separate critic: a copy of the policy's backbone with a scalar head on the last hidden state."""

    def __init__(self, policy: PreTrainedModel):
        super().__init__()
        self.backbone = copy.deepcopy(getattr(policy, policy.base_model_prefix))
        self.head = nn.Linear(policy.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.to(policy.device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Value of every prefix: [N, L] (position t: state after reading tokens 0..t)."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
        return self.head(hidden).squeeze(-1).float()


def logprobs_and_values(
    model: PreTrainedModel,
    head: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One backbone pass giving next-token log-probs [N, L-1] and values of `head` on its hidden states [N, L-1]."""
    hidden = getattr(model, model.base_model_prefix)(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).last_hidden_state[:, :-1]
    logits = model.get_output_embeddings()(hidden).float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return logp, head(hidden).squeeze(-1).float()


def _behaviour_logp(batch: ScoredRollout) -> torch.Tensor:
    """The rollout's behaviour log-probs, which `_advantages` fills in for every rollout."""
    if batch.old_logp is None:
        raise RuntimeError("the rollout has no behaviour log-probs after scoring")
    return batch.old_logp


def token_rewards(
    batch: ScoredRollout, kl_coef: float, estimator: str = "k1"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards [N, L-1]: -kl_coef * KL estimate, plus the task score on each last token.

    Returns (rewards, per-token KL estimate), both 0 outside the completion mask.
    """
    if batch.old_logp is None:
        raise ValueError("the rollout has no behaviour log-probs: score it with the policy first")
    kl = kl_estimate(batch.old_logp, batch.ref_logp, estimator) * batch.mask
    rewards = -kl_coef * kl
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(batch.mask)] += batch.scores
    return rewards * batch.mask, kl


STAT_KEYS: tuple[str, ...] = ("loss", "value_loss", "clip_fraction", "approx_kl")


def _critic_and_optimizers(
    model: PreTrainedModel, cfg: PostTrainConfig, shared: bool
) -> tuple[nn.Module, tuple[torch.optim.Optimizer, torch.optim.Optimizer]]:
    """The critic (a zero-initialised head on the policy, or a separate value model) and the
    policy's and critic's optimizers."""
    critic: nn.Module
    if shared:
        head = nn.Linear(model.config.hidden_size, 1).to(model.device)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        critic = head
    else:
        critic = ValueModel(model)
    policy_opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    critic_opt = torch.optim.AdamW(
        critic.parameters(), lr=cfg.critic_lr, weight_decay=cfg.weight_decay
    )
    return critic, (policy_opt, critic_opt)


def _advantages(
    model: PreTrainedModel, critic: nn.Module, batch: Any, cfg: PostTrainConfig, shared: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(old values, advantages, returns, per-token KL) of a collected batch, from the critic."""
    ro = batch.rollout
    with torch.no_grad():
        if shared:  # one pass gives the behaviour log-probs and the old values
            batch.old_logp, old_values = logprobs_and_values(
                model, critic, ro.input_ids, ro.attention_mask, cfg.temperature
            )
        else:
            old_values = critic(ro.input_ids, ro.attention_mask)[:, :-1]
        old_values = old_values * batch.mask
    rewards, kl = token_rewards(batch, cfg.kl_coef, cfg.kl_estimator)
    advantages, returns = gae(rewards, old_values, batch.mask, cfg.gamma, cfg.gae_lambda)
    if cfg.whiten_advantages:
        advantages = masked_whiten(advantages, batch.mask)
    return old_values, advantages, returns, kl


def _minibatch_step(
    model: PreTrainedModel,
    critic: nn.Module,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    tensors: Sequence[torch.Tensor],
    cfg: PostTrainConfig,
    shared: bool,
) -> dict[str, float]:
    """One PPO update of policy and critic on a trimmed minibatch; returns its statistics."""
    policy_opt, critic_opt = optimizers
    ids, attn, mask, old_logp, adv, ret, old_v = tensors
    if shared:
        logp, values = logprobs_and_values(model, critic, ids, attn, cfg.temperature)
    else:
        logp, _ = token_logprobs(model, ids, attn, cfg.temperature)
        values = critic(ids, attn)[:, :-1]
    tok_loss, clipped, _ = clipped_surrogate(logp, old_logp, adv, mask, cfg.clip_range)
    policy_loss = masked_mean(tok_loss, mask)
    value_loss = cfg.vf_coef * clipped_value_loss(values, old_v, ret, mask, cfg.value_clip_range)
    policy_opt.zero_grad(set_to_none=True)
    critic_opt.zero_grad(set_to_none=True)
    # separate critic: the two losses touch disjoint parameters, one backward serves both
    (policy_loss + value_loss).backward()
    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
    nn.utils.clip_grad_norm_(critic.parameters(), cfg.max_grad_norm)
    policy_opt.step()
    critic_opt.step()
    return {
        "loss": policy_loss.item(),
        "value_loss": value_loss.item(),
        "clip_fraction": float(masked_mean(clipped.float(), mask)),
        "approx_kl": float(masked_mean(0.5 * (logp.detach() - old_logp) ** 2, mask)),
    }


def ppo(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    golds: Sequence[int],
    reward_fn: RewardFn,
    cfg: PostTrainConfig,
    checkpoint_dir: str | os.PathLike | None = None,
) -> TrainLog:
    """Train `model` in place with PPO for `cfg.steps` rollout batches; see the module docstring."""
    check_pairs(prompts, golds, "golds")
    start = time.perf_counter()
    log = TrainLog(algorithm="ppo", config=cfg.to_dict())
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    was_training = model.training
    ref = frozen_copy(model)
    shared = cfg.value_model == "shared"
    critic, (policy_opt, critic_opt) = _critic_and_optimizers(model, cfg, shared)

    schedule = lr_lambda(cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    stream = prompt_stream(len(prompts), cfg.seed)
    bar = tqdm(range(1, cfg.steps + 1), desc="ppo")
    for step in bar:
        for opt, lr in ((policy_opt, cfg.learning_rate), (critic_opt, cfg.critic_lr)):
            for group in opt.param_groups:
                group["lr"] = lr * schedule(step - 1)
        idx = [next(stream) for _ in range(cfg.batch_size)]
        batch = collect(
            model,
            ref,
            tokenizer,
            [prompts[i] for i in idx],
            [golds[i] for i in idx],
            reward_fn,
            cfg,
            seed=cfg.seed * 1_000_003 + step,
            with_old_logp=not shared,
        )
        ro = batch.rollout
        old_values, advantages, returns, kl = _advantages(model, critic, batch, cfg, shared)

        model.train()
        critic.train()
        stats: dict[str, list[float]] = {k: [] for k in STAT_KEYS}
        for _ in range(cfg.ppo_epochs):
            for mb in minibatches(len(ro), cfg.minibatch_size, gen):
                per_token = (batch.mask, _behaviour_logp(batch), advantages, returns, old_values)
                tensors = trim(
                    ro.attention_mask[mb],
                    ro.input_ids[mb],
                    ro.attention_mask[mb],
                    *(t[mb] for t in per_token),
                )
                done = _minibatch_step(
                    model, critic, (policy_opt, critic_opt), tensors, cfg, shared
                )
                for key, value in done.items():
                    stats[key].append(value)

        row = {
            "step": step,
            **{k: sum(v) / len(v) for k, v in stats.items()},
            "reward_mean": float(batch.scores.mean()),
            "kl": float(masked_mean(kl, batch.mask)),
            "kl_per_sequence": float((kl * batch.mask).sum(1).mean()),
            "value_mean": float(masked_mean(old_values, batch.mask)),
            "mean_length": float(ro.completion_lengths.float().mean()),
            "terminated": float(ro.terminated.float().mean()),
        }
        log.history.append(row)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}", kl=f"{row['kl']:.4f}")
        if checkpoint_dir is not None and step in cfg.checkpoint_steps:
            log.checkpoints.append(
                str(save_model_dir(model, tokenizer, step_dir(Path(checkpoint_dir), step)))
            )
    model.train(was_training)
    log.wall_time_s = time.perf_counter() - start
    return log
