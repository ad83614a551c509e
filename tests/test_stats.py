"""Tests of the paired base-vs-tuned comparison (helpers.stats)."""

import numpy as np
import pandas as pd
import pytest

from helpers import metrics as M
from helpers import stats as S


def residual_mask(n_layers: int) -> np.ndarray:
    """Mask of the merged residual graph: source strictly before target in serial order."""
    sources, targets = M.default_node_names(n_layers)
    order = {n: i for i, n in enumerate(("emb", *sources[1:], "logits"))}
    return np.array([[order[s] < order[t] for t in targets] for s in sources])


MASK3 = residual_mask(3)


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_t(4, size=(n, *MASK3.shape)) * MASK3


def paired_example(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Questions with a shared difficulty a_k (lognormal) and tuned |W| scaled by (1 + shift)."""
    rng = np.random.default_rng(seed)
    a = rng.lognormal(0.0, 0.5, size=n)[:, None, None]
    base = a * rng.normal(size=(n, *MASK3.shape)) * MASK3
    tuned = a * (1 + shift) * rng.normal(size=(n, *MASK3.shape)) * MASK3
    return base, tuned


# --------------------------------------------------------------------------- machinery


def test_resampling_is_seeded_and_multiplicities_count_draws() -> None:
    idx = S.resample_indices(7, 50, seed=3)
    np.testing.assert_array_equal(idx, S.resample_indices(7, 50, seed=3))
    assert not np.array_equal(idx, S.resample_indices(7, 50, seed=4))
    m = S.multiplicities(idx, 7)
    expected = np.stack([np.bincount(row, minlength=7) for row in idx])
    np.testing.assert_array_equal(m, expected)
    assert (m.sum(axis=1) == 7).all()


def test_vectorised_replicates_match_explicit_resampling() -> None:
    w = random_scores(9, seed=7)
    idx = S.resample_indices(9, 25, seed=1)
    m = S.multiplicities(idx, 9)
    vals = M.sample_intensity(w, MASK3)
    rng_fixed = M.shared_range(w, mask=MASK3)
    counts = M.sample_histograms(np.abs(w[:, MASK3]), 20, rng_fixed)
    corr = M.correlation_matrix(w, MASK3)
    b_mean = S.boot_mean(vals, m)
    b_hist = S.boot_histogram_entropy(counts, m)
    b_div = S.boot_diversity(corr, m)
    for b, row in enumerate(idx):
        assert b_mean[b] == pytest.approx(M.intensity(w[row], MASK3))
        assert b_hist[b] == pytest.approx(
            M.information_complexity(w[row], MASK3, bins=20, hist_range=rng_fixed)
        )
        # Mean correlation over ordered position pairs whose original questions differ.
        distinct = row[:, None] != row[None, :]
        expected_div = 1 - corr[np.ix_(row, row)][distinct].mean()
        assert b_div[b] == pytest.approx(expected_div)
    # Without resampling the formula reproduces the plain diversity.
    assert S.boot_diversity(corr, np.ones((1, 9)))[0] == pytest.approx(M.diversity(w, MASK3))


def test_paired_wilcoxon_handles_ties_and_detects_shift() -> None:
    x = np.arange(10.0)
    assert S.paired_wilcoxon(x, x) == 1.0
    assert S.paired_wilcoxon(x, x + np.linspace(1, 2, 10)) < 0.01


# --------------------------------------------------------------------------- compare


def test_compare_table_shape_and_point_estimates() -> None:
    b, t = paired_example(20, 0.3, seed=0)
    table = S.compare(b, t, mask=MASK3, n_boot=300, seed=0)
    assert list(table.columns) == S.COLUMNS
    assert list(table.metric) == [s.name for s in S.METRICS]
    row = table.set_index("metric")
    assert row.loc["intensity", "base"] == pytest.approx(M.intensity(b, MASK3))
    assert row.loc["intensity", "tuned"] == pytest.approx(M.intensity(t, MASK3))
    shared = M.shared_range(b, t, mask=MASK3)
    assert row.loc["information_complexity", "base"] == pytest.approx(
        M.information_complexity(b, MASK3, hist_range=shared)
    )
    assert row.loc["kurtosis", "tuned"] == pytest.approx(M.kurtosis(t, MASK3))
    assert row.loc["diversity", "base"] == pytest.approx(M.diversity(b, MASK3))
    assert row.loc["edge_entropy", "tuned"] == pytest.approx(M.edge_entropy(t, MASK3))
    i = row.loc["intensity"]
    assert i.change == pytest.approx(i.tuned - i.base)
    assert i.rel_change == pytest.approx((i.tuned - i.base) / i.base)
    assert np.isnan(row.loc["diversity", "p_wilcoxon"])
    assert np.isnan(row.loc["information_complexity", "p_wilcoxon"])
    assert table.attrs["hist_range_base"] == shared
    assert table.attrs["entropy_unit"] == "nats"


def test_identical_models_show_no_change() -> None:
    w = random_scores(10)
    table = S.compare(w, w.copy(), mask=MASK3, n_boot=200)
    np.testing.assert_array_equal(table.change, 0.0)
    np.testing.assert_array_equal(table[["ci_low", "ci_high"]].to_numpy(), 0.0)
    assert not table.ci_excludes_zero.any()
    assert not table.matches_claim.any()
    assert (table.p_wilcoxon.dropna() == 1.0).all()


def test_bootstrap_interval_covers_known_shift() -> None:
    shift, n = 0.1, 40
    true_change = shift * np.exp(0.5**2 / 2) * np.sqrt(2 / np.pi)  # E[a] * E|N(0,1)| * shift
    covered = []
    for rep in range(100):
        b, t = paired_example(n, shift, seed=100 + rep)
        row = S.compare(b, t, mask=MASK3, n_boot=500, seed=rep).iloc[0]
        assert row.metric == "intensity"
        covered.append(row.ci_low <= true_change <= row.ci_high)
    assert 0.88 <= np.mean(covered) <= 0.99


def test_bootstrap_resamples_questions_jointly() -> None:
    # The shared difficulty a_k cancels in the paired difference, so the interval's width
    # must follow the spread of per-question differences, not of each model's values.
    b, t = paired_example(60, 0.1, seed=5)
    row = S.compare(b, t, mask=MASK3, n_boot=2000, seed=0).iloc[0]
    d = M.sample_intensity(t, MASK3) - M.sample_intensity(b, MASK3)
    paired_width = 2 * 1.96 * d.std() / np.sqrt(len(d))
    unpaired_width = (
        2
        * 1.96
        * np.sqrt(M.sample_intensity(t, MASK3).var() + M.sample_intensity(b, MASK3).var())
        / np.sqrt(len(d))
    )
    width = row.ci_high - row.ci_low
    assert width == pytest.approx(paired_width, rel=0.15)
    assert width < 0.8 * unpaired_width


def test_large_shift_excludes_zero_and_matches_claim() -> None:
    b, t = paired_example(30, 1.0, seed=9)
    row = S.compare(b, t, mask=MASK3, n_boot=1000).set_index("metric").loc["intensity"]
    assert row.ci_low > 0
    assert row.ci_excludes_zero
    assert row.matches_claim
    assert row.p_wilcoxon < 1e-6
    assert row.rel_ci_low < 1.0 < row.rel_ci_high  # the relative shift is exactly +100%


def test_claimed_directions_for_kurtosis_and_diversity() -> None:
    rng = np.random.default_rng(11)
    n, mask = 25, np.ones((12, 12), bool)
    pattern = rng.normal(size=(1, 12, 12))
    base = 3 * pattern + rng.standard_t(3, size=(n, 12, 12))  # similar samples, heavy tails
    tuned = 0.5 * pattern + rng.normal(size=(n, 12, 12))  # diverse samples, Gaussian
    row = S.compare(base, tuned, mask=mask, n_boot=500).set_index("metric")
    assert row.loc["kurtosis", "claimed"] == "down"
    assert row.loc["kurtosis", "change"] < 0 and row.loc["kurtosis", "matches_claim"]
    assert row.loc["diversity", "claimed"] == "up"
    assert row.loc["diversity", "ci_low"] > 0 and row.loc["diversity", "matches_claim"]


def test_compare_ignores_masked_out_cells_and_is_reproducible() -> None:
    b, t = paired_example(15, 0.2, seed=2)
    noise = np.random.default_rng(0).normal(size=b.shape) * 50 * ~MASK3
    clean = S.compare(b, t, mask=MASK3, n_boot=300, seed=4)
    dirty = S.compare(b + noise, t - noise, mask=MASK3, n_boot=300, seed=4)
    num = clean.select_dtypes("number").columns
    np.testing.assert_array_equal(clean[num].to_numpy(), dirty[num].to_numpy())
    other_seed = S.compare(b, t, mask=MASK3, n_boot=300, seed=5)
    assert not np.array_equal(clean.ci_low.to_numpy(), other_seed.ci_low.to_numpy())


def test_histogram_range_options() -> None:
    b, t = paired_example(12, 0.5, seed=3)
    sep = S.compare(b, t, mask=MASK3, n_boot=100, hist_range="separate").set_index("metric")
    assert sep.loc["information_complexity", "base"] == pytest.approx(
        M.information_complexity(b, MASK3)
    )
    assert sep.loc["information_complexity", "tuned"] == pytest.approx(
        M.information_complexity(t, MASK3)
    )
    fixed = S.compare(b, t, mask=MASK3, n_boot=100, hist_range=(0.0, 1.0), bins=10)
    assert fixed.iloc[1].base == pytest.approx(
        M.information_complexity(b, MASK3, bins=10, hist_range=(0.0, 1.0))
    )
    with pytest.raises(ValueError, match="hist_range must be"):
        S.compare(b, t, mask=MASK3, hist_range="pooled")


def test_compare_rejects_unpaired_inputs() -> None:
    b = random_scores(6)
    with pytest.raises(ValueError, match="same questions"):
        S.compare(b, b[:5], mask=MASK3)
    other = M.as_score_set(b, MASK3 & ~np.eye(7, dtype=bool))
    with pytest.raises(ValueError, match="different edge masks"):
        S.compare(M.as_score_set(b, MASK3), other)
    with pytest.raises(ValueError, match="ci must be"):
        S.compare(b, b, mask=MASK3, ci=95)


# --------------------------------------------------------------------------- seeds, corrections


def test_holm_and_benjamini_hochberg_match_hand_computed_values() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Holm, sorted 0.005, 0.01, 0.03, 0.04: 4x, 3x, 2x, 1x = 0.02, 0.03, 0.06, 0.04; running max.
    np.testing.assert_allclose(S.holm(p), [0.03, 0.06, 0.06, 0.02])
    # BH: m p_(j) / j = 0.02, 0.02, 0.04, 0.04; running min from the top.
    np.testing.assert_allclose(S.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    # NaN is no test (m = 2 here), and adjusted values are capped at 1.
    np.testing.assert_allclose(S.holm([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])
    np.testing.assert_allclose(S.benjamini_hochberg([0.01, np.nan, 0.04]), [0.02, np.nan, 0.04])
    np.testing.assert_allclose(S.holm([0.5, 0.6]), [1.0, 1.0])
    np.testing.assert_allclose(S.benjamini_hochberg([0.5, 0.6]), [0.6, 0.6])
    assert S.holm([]).shape == (0,)


def test_bootstrap_p_agrees_with_the_interval_rule() -> None:
    assert S.bootstrap_p(np.zeros(500)) == 1.0
    assert S.bootstrap_p(np.ones(999)) == pytest.approx(2 / 1000)
    rng = np.random.default_rng(0)
    for mean in (0.5, 1.5, 2.5, 3.5):
        d = rng.normal(mean, 1.0, size=4000)
        lo, hi = S.percentile_interval(d, 0.95)
        assert (S.bootstrap_p(d) < 0.05) == (lo > 0 or hi < 0)


def test_mark_significance_corrects_within_each_family() -> None:
    table = pd.DataFrame(
        {"control": ["raw", "raw", "norm", "norm"], "p_boot": [0.01, 0.04, 0.02, np.nan]}
    )
    marked = S.mark_significance(table, ["control"])
    np.testing.assert_allclose(marked["p_holm"], [0.02, 0.04, 0.02, np.nan])
    assert marked["significant"].tolist() == [True, True, True, False]
    whole = S.mark_significance(table)  # one family of three tests
    np.testing.assert_allclose(whole["p_holm"], [0.03, 0.04, 0.04, np.nan])


def test_distinct_settings_reports_an_identical_t_cut_once() -> None:
    table = pd.DataFrame(
        {
            "pair": ["a"] * 4 + ["b"] * 2,
            "alpha": [0.03, 0.1, 0.3, 0.5, 0.03, 0.1],
            "t_cut": [1, 1, 3, 5, 1, 2],
            "metric": ["intensity"] * 6,
        }
    )
    out = S.distinct_settings(table, ["pair", "metric"])
    assert out["alpha"].tolist() == [0.03, 0.3, 0.5, 0.03, 0.1]
    assert out["alphas"].tolist() == ["0.03, 0.1", "0.3", "0.5", "0.03", "0.1"]


def test_pooled_single_seed_is_the_plain_comparison() -> None:
    b, t = paired_example(15, 0.3, seed=4)
    one = S.compare_pooled([(b, t)], mask=MASK3, n_boot=300, seed=2)
    plain = S.compare(b, t, mask=MASK3, n_boot=300, seed=2)
    pd.testing.assert_frame_equal(one, plain)
    assert (one["n_seeds"] == 1).all()


def test_pooled_seeds_widen_the_interval_by_the_seed_spread() -> None:
    """Seeds that moved differently: resampling seeds widens the interval, concatenating does not."""
    shifts = (0.0, 0.3, 0.6)
    pairs = [paired_example(40, s, seed=20 + i) for i, s in enumerate(shifts)]
    pooled = S.compare_pooled(pairs, mask=MASK3, n_boot=2000, seed=0).set_index("metric")
    per_seed = [S.compare(b, t, mask=MASK3, n_boot=200).set_index("metric") for b, t in pairs]
    row = pooled.loc["intensity"]
    assert row.base == pytest.approx(np.mean([r.loc["intensity", "base"] for r in per_seed]))
    assert row.tuned == pytest.approx(np.mean([r.loc["intensity", "tuned"] for r in per_seed]))
    assert row.n_samples == 120 and row.n_seeds == 3
    concat = S.compare(
        np.concatenate([b for b, _ in pairs]),
        np.concatenate([t for _, t in pairs]),
        mask=MASK3,
        n_boot=2000,
    ).set_index("metric")
    width = row.rel_ci_high - row.rel_ci_low
    width_concat = concat.loc["intensity", "rel_ci_high"] - concat.loc["intensity", "rel_ci_low"]
    assert width > 1.5 * width_concat
    # Three resampled seeds: the interval spans most of the seeds' own changes (0 to +60%).
    assert row.rel_ci_low < 0.1 and row.rel_ci_high > 0.45


def test_two_stage_weights_are_the_pooled_comparisons_draws() -> None:
    """With equal seed sizes, the weighted mean of per-question differences under
    two_stage_weights is exactly the pooled intensity change of each draw."""
    pairs = [paired_example(12, s, seed=40 + i) for i, s in enumerate((0.0, 0.5, 1.0))]
    n_boot = 400
    w = S.two_stage_weights([12, 12, 12], n_boot, seed=3)
    assert w.shape == (n_boot, 36)
    np.testing.assert_array_equal(w.sum(axis=1), 36)  # three seed slots of 12 questions each
    assert (w.reshape(n_boot, 3, 12).sum(axis=2) % 12 == 0).all()  # whole seeds drawn
    d = np.concatenate(
        [M.sample_intensity(t, MASK3) - M.sample_intensity(b, MASK3) for b, t in pairs]
    )
    lo, hi = S.percentile_interval(w @ d / 36, 0.95)
    row = S.compare_pooled(pairs, mask=MASK3, n_boot=n_boot, seed=3).iloc[0]
    assert (row.ci_low, row.ci_high) == pytest.approx((lo, hi), rel=1e-9)
    np.testing.assert_array_equal(
        S.two_stage_weights([5], 10, 0), S.multiplicities(S.resample_indices(5, 10, 0), 5)
    )
