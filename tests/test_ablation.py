"""Exact edge ablation agrees with EAP in the linear regime, and the agreement summary is right."""

import numpy as np
import torch

from helpers.ablation import agreement, edge_ablation_effects
from helpers.eap import edge_scores
from helpers.tiny_models import tiny_model


def _batch(vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding in the second sample
    labels = ids.clone()
    labels[:, :4] = -100
    labels[mask == 0] = -100
    return ids, mask, labels


def test_small_ablation_matches_eap_scores() -> None:
    model = tiny_model("llama", num_hidden_layers=2, dtype=torch.float64)
    ids, mask, labels = _batch(model.config.vocab_size)
    eap = edge_scores(model, ids, mask, labels)
    eps = 1e-2  # RMSNorm computes in float32 even for float64 models: smaller eps measures rounding
    plus = edge_ablation_effects(model, ids, mask, labels, scale=eps, progress=False)
    minus = edge_ablation_effects(model, ids, mask, labels, scale=-eps, progress=False)
    slope = (plus.effects - minus.effects) / (2 * eps)
    real = eap.mask.numpy()
    np.testing.assert_allclose(
        slope[:, real], eap.scores.double().numpy()[:, real], rtol=1e-2, atol=2e-5
    )
    assert np.isnan(plus.effects[:, ~real]).all()
    np.testing.assert_allclose(plus.clean_loss, eap.loss.double().numpy(), rtol=1e-5)


def test_agreement_known_values() -> None:
    exact = np.array([5.0, -4.0, 3.0, 0.1, -0.2, 0.05])
    same = agreement(exact * 2, exact, ks=(2, 3))
    assert same["spearman"] == 1.0 and same["top2_overlap"] == 1.0 and same["sign_agreement"] == 1.0
    flipped = agreement(exact[::-1].copy(), exact, ks=(2,))
    assert flipped["top2_overlap"] == 0.0
    with_nan = agreement(np.array([1.0, np.nan, 2.0]), np.array([1.0, 5.0, 2.0]), ks=(1,))
    assert with_nan["n_edges"] == 2
