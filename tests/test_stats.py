"""Tests of iclnb.stats: interval coverage and width, NaN handling, FDR against scipy, paired log-ratios."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from iclnb.core.errors import IclnbError
from iclnb.stats import bootstrap_ci, fdr, paired_log_ratio, permutation_pvalue


def test_bootstrap_ci_of_the_mean_covers_and_has_normal_width():
    rng = np.random.default_rng(0)
    n, sigma, mu, n_cols = 200, 2.0, 1.5, 60
    samples = rng.normal(mu, sigma, size=(n, n_cols))
    est, low, high = bootstrap_ci(samples, n_resamples=2000, rng=rng)
    assert est.shape == low.shape == high.shape == (n_cols,)
    np.testing.assert_allclose(est, samples.mean(axis=0))
    assert np.all(low <= est) and np.all(est <= high)
    coverage = np.mean((low <= mu) & (mu <= high))
    assert coverage > 0.85  # nominal 0.95 over 60 columns
    width = high - low
    assert np.mean(width) == pytest.approx(2 * 1.96 * sigma / np.sqrt(n), rel=0.08)


def test_bootstrap_ci_axis_and_nan_handling():
    rng = np.random.default_rng(1)
    samples = rng.standard_normal((3, 50))  # samples along axis 1
    samples[0, :10] = np.nan
    samples[2, :] = np.nan
    samples[2, 0] = 4.0  # a single finite sample
    est, low, high = bootstrap_ci(samples, axis=1, n_resamples=500, rng=rng)
    assert est.shape == (3,)
    assert est[0] == pytest.approx(np.mean(samples[0, 10:]))
    assert low[0] < est[0] < high[0]
    assert est[2] == 4.0 and np.isnan(low[2]) and np.isnan(high[2])
    est, low, high = bootstrap_ci(np.full(5, np.nan), rng=rng)
    assert np.isnan(est) and np.isnan(low) and np.isnan(high)


def test_bootstrap_ci_1d_returns_floats_and_is_reproducible():
    x = np.arange(20.0)
    a = bootstrap_ci(x, rng=np.random.default_rng(5), statistic=np.median, n_resamples=300)
    b = bootstrap_ci(x, rng=np.random.default_rng(5), statistic=np.median, n_resamples=300)
    assert all(isinstance(v, float) for v in a)
    assert a == b
    assert a[0] == 9.5
    with pytest.raises(IclnbError, match="confidence"):
        bootstrap_ci(x, confidence=95)


def test_paired_log_ratio_exact_ratio_has_zero_width():
    rng = np.random.default_rng(2)
    b = rng.uniform(0.5, 3.0, size=40)
    out = paired_log_ratio(2 * b, b, rng=rng)
    assert out["mean_log_ratio"] == pytest.approx(np.log(2), abs=1e-12)
    assert out["ci_low"] == pytest.approx(np.log(2), abs=1e-12)
    assert out["ci_high"] == pytest.approx(np.log(2), abs=1e-12)
    assert out["ratio"] == pytest.approx(2.0)
    assert out["n"] == 40 and out["n_dropped"] == 0


def test_paired_log_ratio_drops_invalid_pairs():
    a = np.array([2.0, 4.0, -1.0, np.nan, 3.0, 0.0])
    b = np.array([1.0, 1.0, 1.0, 1.0, np.nan, 2.0])
    out = paired_log_ratio(a, b, rng=np.random.default_rng(3), n_resamples=500)
    assert out["n"] == 2 and out["n_dropped"] == 4
    assert out["mean_log_ratio"] == pytest.approx((np.log(2) + np.log(4)) / 2)
    assert np.log(2) - 1e-12 <= out["ci_low"] <= out["ci_high"] <= np.log(4) + 1e-12
    with pytest.raises(IclnbError, match="paired"):
        paired_log_ratio(a, b[:3])


def test_fdr_matches_scipy_and_passes_nan_through():
    p = np.array([0.01, 0.04, 0.03, 0.5, 0.002])
    np.testing.assert_allclose(fdr(p), scipy.stats.false_discovery_control(p))
    # hand: sorted 0.002, 0.01, 0.03, 0.04, 0.5 -> 0.01, 0.025, 0.04*5/4=0.05 (monotone), 0.05, 0.5
    np.testing.assert_allclose(fdr(p), [0.025, 0.05, 0.05, 0.5, 0.01])
    with_nan = np.array([0.01, np.nan, 0.04, 0.03, 0.5, 0.002, np.nan])
    q = fdr(with_nan)
    assert np.isnan(q[[1, 6]]).all()
    np.testing.assert_allclose(q[~np.isnan(with_nan)], fdr(p))
    assert np.isnan(fdr(np.full((2, 2), np.nan))).all()
    with pytest.raises(IclnbError):
        fdr([0.5, 1.5])


def test_permutation_pvalue_hand_example():
    null = np.array([[-3.0, 0.1], [1.0, 0.2], [2.0, -0.3], [0.5, 0.0]])
    obs = np.array([2.0, np.nan])
    p = permutation_pvalue(obs, null)
    # |null| >= 2 in column 0: -3 and 2 -> (1 + 2) / (1 + 4)
    assert p[0] == pytest.approx(3 / 5)
    assert np.isnan(p[1])
    assert permutation_pvalue(2.0, null[:, 0], alternative="greater") == pytest.approx(2 / 5)
    assert permutation_pvalue(2.0, null[:, 0], alternative="less") == pytest.approx(5 / 5)
    with pytest.raises(IclnbError, match="null"):
        permutation_pvalue(obs, null[:, 0])
