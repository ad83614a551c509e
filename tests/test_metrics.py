"""Known-answer tests of the edge metrics (helpers.metrics)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats as sps

from helpers import metrics as M


def residual_mask(n_layers: int) -> np.ndarray:
    """Mask of the merged residual graph: source strictly before target in serial order."""
    sources, targets = M.default_node_names(n_layers)
    order = {n: i for i, n in enumerate(("emb", *sources[1:], "logits"))}
    return np.array([[order[s] < order[t] for t in targets] for s in sources])


MASK3 = residual_mask(3)  # 7 x 7, 28 real edges


def random_scores(n: int = 12, mask: np.ndarray = MASK3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_t(4, size=(n, *mask.shape)) * mask


def test_residual_mask_matches_graph_size() -> None:
    assert residual_mask(30).shape == (61, 61)
    assert residual_mask(30).sum() == 61 * 62 // 2


# --------------------------------------------------------------------------- entropies


def test_uniform_histogram_gives_maximal_entropy() -> None:
    bins = 10
    centres = (np.arange(bins) + 0.5) / bins
    mask = np.ones((4, 5), bool)
    w = np.tile(centres, 8).reshape(4, 4, 5)  # every bin gets 8 values
    assert M.information_complexity(w, mask, bins=bins, hist_range=(0, 1)) == pytest.approx(
        np.log(bins)
    )
    assert M.information_complexity(
        w, mask, bins=bins, hist_range=(0, 1), normalize=True
    ) == pytest.approx(1.0)
    # Anything less uniform has lower entropy.
    w2 = w.copy()
    w2[0, 0, :] = 0.05
    assert M.information_complexity(w2, mask, bins=bins, hist_range=(0, 1)) < np.log(bins)


def test_uniform_magnitudes_give_maximal_bin_free_and_node_entropy() -> None:
    rng = np.random.default_rng(1)
    signs = rng.choice([-1.0, 1.0], size=(5, *MASK3.shape))
    w = 0.3 * signs * MASK3
    n_edges = MASK3.sum()
    assert M.edge_entropy(w, MASK3) == pytest.approx(np.log(n_edges))
    assert M.edge_entropy(w, MASK3, normalize=True) == pytest.approx(1.0)
    node_h = M.node_entropy(w, MASK3)
    np.testing.assert_allclose(node_h.to_numpy(), np.log(MASK3.sum(axis=1)))
    assert list(node_h.index) == list(M.default_node_names(3)[0])
    assert node_h["mlp.2"] == 0.0  # a single outgoing edge (to logits)
    normed = M.node_entropy(w, MASK3, normalize=True)
    np.testing.assert_allclose(normed.iloc[:-1], 1.0)
    assert np.isnan(normed["mlp.2"])


def test_one_dominant_edge_gives_high_kurtosis_and_low_entropy() -> None:
    n_edges = int(MASK3.sum())
    w = np.zeros((3, *MASK3.shape))
    w[:, 0, 0] = 5.0  # emb -> attn.0 carries all the attribution
    p = 1.0 / n_edges
    bernoulli_excess_kurtosis = (1 - 6 * p * (1 - p)) / (p * (1 - p))
    assert M.kurtosis(w, MASK3) == pytest.approx(bernoulli_excess_kurtosis)
    assert M.edge_entropy(w, MASK3) == 0.0
    two_point = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert M.information_complexity(w, MASK3) == pytest.approx(two_point)
    gauss = np.random.default_rng(0).normal(size=w.shape) * MASK3
    assert M.kurtosis(w, MASK3) > M.kurtosis(gauss, MASK3) + 20
    assert M.information_complexity(w, MASK3) < 0.5 * M.information_complexity(gauss, MASK3)


# --------------------------------------------------------------------------- kurtosis, diversity


def test_gaussian_scores_have_excess_kurtosis_near_zero() -> None:
    mask = residual_mask(30)
    w = np.random.default_rng(2).normal(size=(20, *mask.shape)) * mask
    per_sample = M.sample_kurtosis(w, mask)
    expected = [sps.kurtosis(w[k][mask], fisher=True, bias=True) for k in range(20)]
    np.testing.assert_allclose(per_sample, expected, rtol=1e-10)
    assert abs(M.kurtosis(w, mask)) < 0.1


def test_identical_samples_have_zero_diversity() -> None:
    one = random_scores(1)
    w = np.repeat(one, 6, axis=0)
    assert M.diversity(w, MASK3) == pytest.approx(0.0, abs=1e-12)
    flipped = np.concatenate([one, -one])  # correlation -1
    assert M.diversity(flipped, MASK3) == pytest.approx(2.0)


def test_diversity_matches_numpy_corrcoef() -> None:
    w = random_scores(9)
    c = np.corrcoef(w[:, MASK3])
    expected = 1 - c[~np.eye(9, dtype=bool)].mean()
    assert M.diversity(w, MASK3) == pytest.approx(expected, rel=1e-12)
    c_abs = np.corrcoef(np.abs(w[:, MASK3]))
    assert M.diversity(w, MASK3, use_abs=True) == pytest.approx(
        1 - c_abs[~np.eye(9, dtype=bool)].mean(), rel=1e-12
    )


# --------------------------------------------------------------------------- conventions


def test_values_in_masked_out_cells_change_nothing() -> None:
    w = random_scores(8)
    dirty = w + 1e3 * np.random.default_rng(5).normal(size=w.shape) * ~MASK3
    for edges in ("real", "dense"):
        assert M.summarize(dirty, MASK3, edges=edges) == M.summarize(w, MASK3, edges=edges)
        np.testing.assert_array_equal(
            M.node_entropy(dirty, MASK3, edges=edges), M.node_entropy(w, MASK3, edges=edges)
        )
        for by in ("source_layer", "target_layer", "source", "target"):
            np.testing.assert_array_equal(
                M.intensity_profile(dirty, MASK3, by=by, edges=edges),
                M.intensity_profile(w, MASK3, by=by, edges=edges),
            )
    np.testing.assert_array_equal(
        M.relative_change(dirty, 2 * dirty, MASK3), M.relative_change(w, 2 * w, MASK3)
    )


@pytest.mark.parametrize("c", [4.0, 0.37, -2.5])
def test_scale_invariance_and_linear_intensity(c: float) -> None:
    w = random_scores(10)
    base, scaled = M.summarize(w, MASK3), M.summarize(c * w, MASK3)
    assert scaled["intensity"] == pytest.approx(abs(c) * base["intensity"], rel=1e-12)
    for name in ("information_complexity", "edge_entropy", "kurtosis", "diversity"):
        assert scaled[name] == pytest.approx(base[name], rel=1e-10), name
    np.testing.assert_allclose(M.node_entropy(c * w, MASK3), M.node_entropy(w, MASK3))


def test_dense_convention_counts_structural_zeros() -> None:
    w = np.random.default_rng(3).uniform(0.1, 1.0, size=(15, *MASK3.shape)) * MASK3
    n_edges, n_cells = MASK3.sum(), MASK3.size
    assert M.intensity(w, MASK3, edges="dense") == pytest.approx(
        M.intensity(w, MASK3) * n_edges / n_cells
    )
    # Shared structural zeros make independent samples look correlated.
    assert M.diversity(w, MASK3) > 0.9
    assert M.diversity(w, MASK3, edges="dense") < 0.6
    assert M.edge_vectors(w, MASK3, edges="dense").shape == (15, n_cells)
    assert M.edge_vectors(w, MASK3).shape == (15, n_edges)


def test_sample_histograms_match_numpy_histogram() -> None:
    rng = np.random.default_rng(4)
    x = np.abs(rng.normal(size=(6, 50)))
    x[0, :3] = [0.2, 1.5, 1.5]  # values on both range ends
    for hist_range in [(0.2, 1.5), (0.0, float(x.max()))]:
        counts = M.sample_histograms(x, 7, hist_range)
        expected = np.stack([np.histogram(row, bins=7, range=hist_range)[0] for row in x])
        np.testing.assert_array_equal(counts, expected)


def test_shared_range_pools_both_models() -> None:
    a, b = random_scores(4, seed=1), 3 * random_scores(4, seed=2)
    lo, hi = M.shared_range(a, b, mask=MASK3)
    assert lo == 0.0
    assert hi == pytest.approx(max(np.abs(a[:, MASK3]).max(), np.abs(b[:, MASK3]).max()))
    # On a range twice as wide, the same values fill fewer bins.
    own = M.information_complexity(a, MASK3)
    _, a_hi = M.shared_range(a, mask=MASK3)
    assert M.information_complexity(a, MASK3, hist_range=(0, 2 * a_hi)) < own


# --------------------------------------------------------------------------- per edge / layer


def test_layer_of_parses_node_names() -> None:
    assert M.layer_of("emb", 4) == -1
    assert M.layer_of("attn.0", 4) == 0
    assert M.layer_of("mlp.3", 4) == 3
    assert M.layer_of("logits", 4) == 4
    with pytest.raises(ValueError, match="cannot parse node name"):
        M.layer_of("attn.q.0", 4)


def test_intensity_profiles_by_layer_and_node() -> None:
    n_layers = 3
    sources, targets = M.default_node_names(n_layers)
    src_layer = np.array([M.layer_of(s, n_layers) for s in sources], float)
    tgt_layer = np.array([M.layer_of(t, n_layers) for t in targets], float)
    w_src = np.broadcast_to((src_layer + 2)[:, None], MASK3.shape)[None] * MASK3
    w_src = np.concatenate([w_src, -w_src])  # sign is irrelevant to intensity
    prof = M.intensity_profile(w_src, MASK3, by="source_layer")
    assert list(prof.index) == [-1, 0, 1, 2]
    np.testing.assert_allclose(prof.to_numpy(), [1, 2, 3, 4])
    w_tgt = np.broadcast_to((tgt_layer + 2)[None, :], MASK3.shape)[None] * MASK3
    prof_t = M.intensity_profile(w_tgt, MASK3, by="target_layer")
    assert list(prof_t.index) == [0, 1, 2, 3]
    np.testing.assert_allclose(prof_t.to_numpy(), [2, 3, 4, 5])
    per_node = M.intensity_profile(w_src, MASK3, by="source", edges="dense")
    assert list(per_node.index) == list(sources)
    # mlp.2 has one real edge among 7 cells; emb has all 7.
    assert per_node["mlp.2"] == pytest.approx(4 / 7)
    assert per_node["emb"] == pytest.approx(1.0)


def test_relative_change_per_edge() -> None:
    w = random_scores(5)
    w[:, 0, 1] = 0.0  # emb -> mlp.0 silent in base
    rel = M.relative_change(w, 3 * w, MASK3)
    live = MASK3.copy()
    live[0, 1] = False
    np.testing.assert_allclose(rel[live], 2.0)
    assert np.isnan(rel[~live]).all()


# --------------------------------------------------------------------------- inputs


def test_torch_and_edge_scores_like_inputs_agree_with_numpy() -> None:
    w = random_scores(6).astype(np.float32)
    obj = SimpleNamespace(
        scores=torch.from_numpy(w),
        mask=torch.from_numpy(MASK3),
        sources=list(M.default_node_names(3)[0]),
        targets=list(M.default_node_names(3)[1]),
        loss=torch.zeros(6),
    )
    ss = M.as_score_set(obj)
    assert ss.scores.dtype == np.float64
    assert ss.n_layers == 3
    assert M.summarize(obj) == M.summarize(w, MASK3)
    assert M.summarize(torch.from_numpy(w), torch.from_numpy(MASK3)) == M.summarize(w, MASK3)
    # One [S, T] matrix counts as one sample.
    assert M.intensity(w[0], MASK3) == pytest.approx(M.intensity(w[:1], MASK3))


def test_bad_inputs_raise_clear_errors() -> None:
    w = random_scores(4)
    with pytest.raises(ValueError, match="no edge mask"):
        M.intensity(w)
    with pytest.raises(ValueError, match="mask shape"):
        M.intensity(w, MASK3[:-1])
    with pytest.raises(ValueError, match=r"\[n_samples, n_sources, n_targets\]"):
        M.intensity(w[None], MASK3)
    with pytest.raises(ValueError, match="edges must be"):
        M.intensity(w, MASK3, edges="all")
    bad = w.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        M.intensity(bad, MASK3)
    flat = w.copy()
    flat[2] = 0.0
    with pytest.raises(ValueError, match=r"samples \[2\]"):
        M.kurtosis(flat, MASK3)
    with pytest.raises(ValueError, match=r"samples \[2\]"):
        M.diversity(flat, MASK3)
    with pytest.raises(ValueError, match="bins must be"):
        M.information_complexity(w, MASK3, bins=0)
    with pytest.raises(ValueError, match="node names"):
        M.intensity_profile(np.ones((2, 4, 6)), np.ones((4, 6), bool))
