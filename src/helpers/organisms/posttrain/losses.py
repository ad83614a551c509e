"""The pieces of the policy-gradient objectives, as pure tensor functions (tested one by one).

Shapes: per-token tensors are ``[batch, time]`` with a 0/1 (or bool) ``mask`` marking the completion
tokens; masked positions never influence a result.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over positions where `mask` is set (0 where nothing is set)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Standardise `x` to zero mean, unit variance over masked positions; 0 elsewhere."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask.to(x.dtype)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each row's masked (contiguous) span of tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t, with V = 0 after the last token of the span;
    A_t = delta_t + gamma * lam * A_{t+1}. Returns (advantages, returns = advantages + values),
    both 0 outside the mask.
    """
    if not rewards.shape == values.shape == mask.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
            f"{tuple(mask.shape)} must have the same [batch, time] shape"
        )
    m = mask.to(rewards.dtype)
    values = values * m
    rewards = rewards * m
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    next_mask = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value * next_mask - values[:, t]
        adv_t = (delta + gamma * lam * next_adv * next_mask) * m[:, t]
        advantages[:, t] = adv_t
        next_value, next_adv, next_mask = values[:, t], adv_t, m[:, t]
    return advantages, (advantages + values) * m


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the group's std if `scale`.

    `rewards` is ``[n_prompts * group_size]`` with each prompt's samples contiguous; the std is the
    unbiased one, as in TRL's GRPOTrainer, and a group whose rewards are all equal gets 0.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(
            f"rewards of shape {tuple(rewards.shape)} cannot be split into groups of {group_size}; "
            "pass a flat tensor of n_prompts * group_size rewards"
        )
    grouped = rewards.view(-1, group_size)
    centred = grouped - grouped.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (grouped.std(dim=1, keepdim=True) + eps)
    return centred.reshape(-1)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token Monte-Carlo estimate of KL(pi || pi_ref) from log-probs of tokens sampled from pi.

    k1 = log r, k2 = (log r)^2 / 2, k3 = exp(-log r) - 1 + log r with log r = logp - ref_logp
    (Schulman's estimators; k3 is unbiased and non-negative, k1 unbiased, k2 low-variance).
    """
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator {kind!r}; choose 'k1', 'k2' or 'k3'")


def exact_kl(logits: torch.Tensor, ref_logits: torch.Tensor) -> torch.Tensor:
    """Exact per-position KL(softmax(logits) || softmax(ref_logits)) over the vocabulary: ``[..., V] -> [...]``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref_logp = torch.log_softmax(ref_logits.float(), dim=-1)
    return (logp.exp() * (logp - ref_logp)).sum(-1)


def clipped_surrogate(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped policy loss, per token: -min(r A, clip(r, 1-eps, 1+eps) A), r = pi / pi_old.

    Returns the per-token loss (0 outside the mask), whether each token was clipped, and the
    per-token ratio, so callers choose how to aggregate (per token, per sequence, ...).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages
    m = mask.to(logp.dtype)
    loss = -torch.minimum(unclipped, clipped) * m
    was_clipped = (clipped < unclipped) & mask.bool()
    return loss, was_clipped, ratio


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float = 0.2,
) -> torch.Tensor:
    """PPO's clipped value loss: mean over masked tokens of 0.5 * max((V-R)^2, (V_clip-R)^2)."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    loss = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return masked_mean(loss, mask)
