"""Loss windows over the answer tokens, and a per-answer-token decomposition of EAP scores.

A window keeps the labels of answer tokens k in [start, stop) (k counts each sample's labelled
tokens from 0) and masks the others, so `edge_scores` differentiates the mean loss of those
tokens only: same inputs, same cost as one ordinary call. Tokens after the window stay in the
input but, by causality, carry no gradient, so they add nothing to the scores.

The decomposition scores every answer token on its own. EAP is linear in the gradient and a
window's loss is the mean of its tokens' losses, so, with the same position weights, a window's
scores are exactly the mean of its tokens' scores (tests/test_windows.py checks this identity).
To keep the position weights of the whole window under `positions="labelled"` too, each token is
scored with the window's labels and an objective that reads that token alone. Batched: each
(sample, token) pair is one row, so a window of T tokens costs about T ordinary calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from helpers.eap import (
    IGNORE_INDEX,
    EdgeScores,
    Objective,
    Positions,
    concat,
    edge_scores,
    per_sample_loss,
)


def answer_index(labels: torch.Tensor) -> torch.Tensor:
    """long [batch, seq]: k for the k-th labelled token of each row (from 0), -1 elsewhere."""
    labelled = labels != IGNORE_INDEX
    return torch.where(labelled, labelled.long().cumsum(-1) - 1, -1)


def window_labels(labels: torch.Tensor, start: int, stop: int | None = None) -> torch.Tensor:
    """Labels with only answer tokens k in [start, stop) kept (stop=None: to the end)."""
    if start < 0 or (stop is not None and stop <= start):
        raise ValueError(f"need 0 <= start < stop, got start={start}, stop={stop}")
    k = answer_index(labels)
    keep = k >= start
    if stop is not None:
        keep &= k < stop
    empty = ~keep.any(-1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(
            f"samples {rows[:5]} have no answer token in the window [{start}, {stop}); "
            "drop them first, or choose a window inside every sample's answer (start < T_cut)"
        )
    return torch.where(keep, labels, IGNORE_INDEX)


def window_scores(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    start: int,
    stop: int | None = None,
    **kwargs: Any,
) -> EdgeScores:
    """`edge_scores` of the loss over answer tokens [start, stop) only; kwargs pass through."""
    return edge_scores(
        model, input_ids, attention_mask, window_labels(labels, start, stop), **kwargs
    )


class TokenObjective:
    """`base` objective restricted to one answer token per row: row r reads token `which[r]`.

    The labels it receives keep the whole window (so position weights stay the window's); it
    masks every other token before calling `base`, which must be a mean over labelled tokens.
    """

    def __init__(self, which: torch.Tensor, base: Objective = per_sample_loss) -> None:
        self.which = which
        self.base = base
        self.__name__ = f"token:{getattr(base, '__name__', 'custom')}"

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The base objective on row r's token which[r] alone."""
        k = answer_index(labels)
        only = torch.where(k == self.which.to(k.device)[:, None], labels, IGNORE_INDEX)
        return self.base(logits, only)


@dataclass
class TokenScores:
    """Per-answer-token EAP scores: token k of sample i at [i, k]; NaN where i has no token k."""

    scores: torch.Tensor  # float32 [batch, T, S, T_targets]
    loss: torch.Tensor  # float32 [batch, T], the objective of token k alone
    n_tokens: torch.Tensor  # long [batch], answer tokens per sample
    sources: list[str]
    targets: list[str]
    mask: torch.Tensor  # bool [S, T_targets]

    def token(self, k: int) -> EdgeScores:
        """Scores of answer token k as an EdgeScores, over the samples that have one."""
        rows = self.n_tokens > k
        if not bool(rows.any()):
            raise ValueError(f"no sample has an answer token {k} (longest: {self.n_tokens.max()})")
        return EdgeScores(
            self.scores[rows, k], self.sources, self.targets, self.mask, self.loss[rows, k]
        )

    def window_mean(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """[batch, S, T] mean over tokens k in [start, stop) of each sample's token scores."""
        k = torch.arange(self.scores.shape[1])[start:stop]
        present = (k[None] < self.n_tokens[:, None]).float()  # [batch, window]
        if not bool((present.sum(1) > 0).all()):
            raise ValueError(f"some sample has no answer token in [{start}, {stop})")
        total = torch.einsum("bk,bkst->bst", present, self.scores[:, k].nan_to_num(0.0))
        return total / present.sum(1).view(-1, 1, 1)


def token_decomposition(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    *,
    positions: Positions = "all",
    objective: Objective = per_sample_loss,
    chunk: int = 64,
    progress: bool = False,
) -> TokenScores:
    """EAP scores of each answer token's own objective, batched as one row per (sample, token).

    Each row keeps its sample's labels, so the position weights are those of the whole window,
    and a `TokenObjective` reads its one token: the window's scores are the token mean exactly.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    n_tokens = (labels != IGNORE_INDEX).sum(-1)
    t_max = int(n_tokens.max())
    rows = [(i, k) for i in range(labels.shape[0]) for k in range(int(n_tokens[i]))]
    parts = []
    for start in tqdm(range(0, len(rows), chunk), desc="per-token EAP", disable=not progress):
        sample, which = (torch.tensor(c) for c in zip(*rows[start : start + chunk], strict=True))
        width = int(attention_mask[sample].sum(-1).max()) if _right_padded(attention_mask) else None
        cut = slice(None, width)
        parts.append(
            edge_scores(
                model,
                input_ids[sample][:, cut],
                attention_mask[sample][:, cut],
                labels[sample][:, cut],
                positions=positions,
                objective=TokenObjective(which, objective),
            )
        )
    flat = concat(parts)
    batch, (s, t) = labels.shape[0], flat.mask.shape
    scores = torch.full((batch, t_max, s, t), float("nan"))
    loss = torch.full((batch, t_max), float("nan"))
    index = torch.tensor(rows)
    scores[index[:, 0], index[:, 1]] = flat.scores
    loss[index[:, 0], index[:, 1]] = flat.loss
    return TokenScores(scores, loss, n_tokens, flat.sources, flat.targets, flat.mask)


def _right_padded(attention_mask: torch.Tensor) -> bool:
    """True when every row's tokens start at column 0 (so trailing padding can be cut)."""
    return bool(attention_mask[:, 0].all())


def token_profile(tokens: TokenScores) -> pd.DataFrame:
    """Per answer token: its mean loss, its intensity, and its share of the attribution mass.

    The share is token k's sum of |scores| over the real edges, divided by the sum over all
    tokens, averaged over samples: how much of the window's attribution the token carries.
    """
    real = tokens.scores[:, :, tokens.mask].abs().double()  # [batch, T, E]
    mass = real.sum(-1)  # [batch, T]
    share = mass / mass.nansum(1, keepdim=True)
    frame = pd.DataFrame(
        {
            "token": np.arange(real.shape[1]),
            "samples": (~mass.isnan()).sum(0).numpy(),
            "loss": np.nanmean(tokens.loss.double().numpy(), axis=0),
            "intensity": np.nanmean(real.mean(-1).numpy(), axis=0),
            "mass_share": np.nanmean(share.numpy(), axis=0),
        }
    )
    return frame.set_index("token")
