"""Loss windows and the per-answer-token decomposition: label masking, and the exact identity
that a window's scores are the mean of its tokens' scores (EAP is linear in the gradient)."""

from __future__ import annotations

import pytest
import torch

from helpers.eap import edge_scores, per_sample_loss
from helpers.tiny_models import tiny_model
from helpers.windows import (
    answer_index,
    token_decomposition,
    token_profile,
    window_labels,
    window_scores,
)

VOCAB = 64


def batch(lengths: list[int], answers: list[int], seq: int, *, left: bool = False, seed: int = 0):
    """Random prompt + answer rows padded to `seq`; labels on the answer tokens only."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), seq, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (n, a) in enumerate(zip(lengths, answers, strict=True)):
        span = slice(seq - n, seq) if left else slice(0, n)
        tokens = torch.randint(3, VOCAB, (n,), generator=g)
        ids[row, span], mask[row, span] = tokens, 1
        row_labels = tokens.clone()
        row_labels[: n - a] = -100
        labels[row, span] = row_labels
    return ids, mask, labels


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen2", vocab_size=VOCAB, seed=2, initializer_range=0.1)


def test_answer_index_and_window_labels() -> None:
    labels = torch.tensor([[-100, -100, 5, 6, 7, -100], [-100, 9, 8, -100, -100, -100]])
    assert answer_index(labels).tolist() == [[-1, -1, 0, 1, 2, -1], [-1, 0, 1, -1, -1, -1]]
    assert window_labels(labels, 1).tolist() == [
        [-100, -100, -100, 6, 7, -100],
        [-100, -100, 8, -100, -100, -100],
    ]
    assert window_labels(labels, 0, 1).tolist() == [
        [-100, -100, 5, -100, -100, -100],
        [-100, 9, -100, -100, -100, -100],
    ]
    with pytest.raises(ValueError, match=r"samples \[1\].*start < T_cut"):
        window_labels(labels, 2)
    with pytest.raises(ValueError, match="start < stop"):
        window_labels(labels, 2, 2)


def test_window_loss_is_the_mean_nll_of_its_tokens(model) -> None:
    ids, mask, labels = batch([14, 11], [5, 4], 16)
    win = window_scores(model, ids, mask, labels, 1, 3)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none", ignore_index=-100
    )
    k = answer_index(labels)[:, 1:]
    expected = torch.stack([nll[r][(k[r] >= 1) & (k[r] < 3)].mean() for r in range(2)])
    torch.testing.assert_close(win.loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("positions", "left"), [("all", False), ("labelled", True)])
def test_window_scores_are_the_mean_of_their_tokens_scores(model, positions, left) -> None:
    ids, mask, labels = batch([15, 12, 9], [6, 4, 3], 16, left=left, seed=1)
    tokens = token_decomposition(model, ids, mask, labels, positions=positions, chunk=5)
    assert tokens.scores.shape == (3, 6, 5, 5)
    assert tokens.n_tokens.tolist() == [6, 4, 3]
    assert bool(tokens.scores[1, 4:].isnan().all()) and not bool(tokens.scores[1, :4].isnan().any())
    whole = edge_scores(model, ids, mask, labels, positions=positions)
    scale = float(whole.scores.abs().max())
    assert scale > 0
    torch.testing.assert_close(tokens.window_mean(), whole.scores, rtol=0, atol=2e-6 * scale)
    torch.testing.assert_close(tokens.loss.nanmean(1), whole.loss, rtol=1e-5, atol=0)
    # A sub-window, scored directly through label masking, equals the mean over its tokens;
    # under "labelled" the position weights are the sub-window's own, so decompose it alone.
    sub = window_scores(model, ids, mask, labels, 1, 3, positions=positions)
    if positions == "all":
        torch.testing.assert_close(tokens.window_mean(1, 3), sub.scores, rtol=0, atol=2e-6 * scale)
    else:
        assert float((tokens.window_mean(1, 3) - sub.scores).abs().max()) > 1e-3 * scale
    sub_tokens = token_decomposition(
        model, ids, mask, window_labels(labels, 1, 3), positions=positions
    )
    torch.testing.assert_close(sub_tokens.window_mean(), sub.scores, rtol=0, atol=2e-6 * scale)
    # And one token alone is a window of one token (same scores where the position rule agrees).
    first = tokens.token(0)
    if positions == "all":
        one = window_scores(model, ids, mask, labels, 0, 1)
        torch.testing.assert_close(first.scores, one.scores, rtol=0, atol=2e-6 * scale)
    # Tokens really differ: the decomposition is not the window repeated.
    assert float((tokens.scores[0, 0] - tokens.scores[0, 1]).abs().max()) > 1e-3 * scale


def test_token_profile_shares_sum_to_one(model) -> None:
    ids, mask, labels = batch([12, 10], [4, 3], 12, seed=3)
    tokens = token_decomposition(model, ids, mask, labels)
    profile = token_profile(tokens)
    assert profile.index.tolist() == [0, 1, 2, 3]
    assert profile["samples"].tolist() == [2, 2, 2, 1]
    # Each sample's shares sum to 1 over its tokens; token 3 exists for sample 0 only.
    share = tokens.scores[:, :, tokens.mask].abs().sum(-1)
    share = share / share.nansum(1, keepdim=True)
    assert float(share.nansum(1).sub(1).abs().max()) < 1e-6
    assert profile.loc[0, "loss"] == pytest.approx(float(tokens.loss[:, 0].mean()), rel=1e-6)


def test_custom_objective_goes_through_the_decomposition(model) -> None:
    """Any mean-over-tokens objective decomposes the same way (here the NLL doubled)."""
    ids, mask, labels = batch([12, 10], [4, 3], 12, seed=4)

    def doubled(logits, labels):
        return 2 * per_sample_loss(logits, labels)

    tokens = token_decomposition(model, ids, mask, labels, objective=doubled)
    plain = token_decomposition(model, ids, mask, labels)
    torch.testing.assert_close(tokens.scores, 2 * plain.scores, equal_nan=True)
    assert "doubled" in edge_scores(model, ids, mask, labels, objective=doubled).objective
