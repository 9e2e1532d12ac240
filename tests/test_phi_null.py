"""The null of the cluster separation Φ for walk data: node labels permuted over nodes, and its summary."""

from __future__ import annotations

import numpy as np
import pytest

from iclnb.core.errors import IclnbError
from iclnb.metrics import cluster_separation, null_summary, separation_null

N_NODES = 16


def ring_walk(rng, length: int) -> np.ndarray:
    """Node ids of a ±1 random walk on a ring of N_NODES nodes: every node recurs, in runs."""
    steps = rng.choice([-1, 1], size=length - 1)
    return np.concatenate([[0], np.cumsum(steps)]) % N_NODES


def direct_null(reps, nodes, node_cluster, n_perm, seed, variant):
    """The null one permutation at a time, with the permutations the docstring specifies."""
    order = np.random.default_rng(seed).permuted(np.tile(np.arange(len(node_cluster)), (n_perm, 1)), axis=1)
    return np.array([cluster_separation(reps, node_cluster[perm[nodes]], variant=variant) for perm in order])


@pytest.mark.parametrize("variant", ["unbiased", "legacy"])
def test_separation_null_equals_a_loop_over_permutations(variant):
    rng = np.random.default_rng(0)
    # cluster "e" has a single node: when the permutation gives it node 13 (seen once) it has a single row, when it
    # gives it node 14 or 15 (never seen) it is absent
    node_cluster = np.array(list("aaaabbbbccccddde"))
    nodes = ring_walk(rng, 150)
    nodes[nodes >= 13] = 12
    nodes[40] = 13
    vectors = rng.standard_normal((N_NODES, 12)) * 2
    # a large shared offset, as in residual streams
    reps = vectors[nodes] + rng.standard_normal((150, 12)) + 300.0
    got = separation_null(reps, nodes, node_cluster, n_perm=60, rng=np.random.default_rng(7), variant=variant)
    ref = direct_null(reps, nodes, node_cluster, 60, 7, variant)
    assert got.dtype == np.float64 and got.shape == (60,)
    assert np.isfinite(ref).sum() >= 30
    singleton = np.array([node_cluster[perm[13]] == "e" for perm in
                          np.random.default_rng(7).permuted(np.tile(np.arange(N_NODES), (60, 1)), axis=1)])
    assert singleton.any()
    if variant == "legacy":  # a one-row cluster has no unbiased variance
        assert np.isnan(got[singleton]).all()
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))


def test_separation_null_few_clusters_and_equal_points():
    # one node per cluster and every occurrence identical: no within-cluster spread, NaN like cluster_separation
    nodes = np.array([0, 1, 2, 0, 1, 2, 0])
    reps = np.array([[0.0], [1.0], [5.0]])[nodes]
    node_cluster = np.array([0, 1, 2])
    got = separation_null(reps, nodes, node_cluster, n_perm=5, rng=1)
    assert np.isnan(got).all() and np.isnan(direct_null(reps, nodes, node_cluster, 5, 1, "unbiased")).all()
    legacy = separation_null(reps, nodes, node_cluster, n_perm=5, rng=1, variant="legacy")
    np.testing.assert_allclose(legacy, 1000.0)  # the legacy floor
    # all nodes in one cluster: no second cluster to separate from
    assert np.isnan(separation_null(reps, nodes, np.zeros(3), n_perm=3, rng=1)).all()
    assert separation_null(reps, nodes, node_cluster, n_perm=0, rng=1).shape == (0,)


def test_separation_null_bad_input():
    reps, nodes = np.zeros((4, 2)), np.array([0, 1, 2, 3])
    with pytest.raises(IclnbError, match="variant"):
        separation_null(reps, nodes, np.arange(4), rng=0, variant="biased")
    with pytest.raises(IclnbError, match="node ids"):
        separation_null(reps, nodes, np.arange(3), rng=0)
    with pytest.raises(IclnbError, match="nodes"):
        separation_null(reps, nodes[:3], np.arange(4), rng=0)
    with pytest.raises(IclnbError, match="n_perm"):
        separation_null(reps, nodes, np.arange(4), n_perm=-1, rng=0)


def test_without_cluster_structure_the_observed_phi_lies_inside_the_null():
    observed, null_means, p_values, inside = [], [], [], []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        # each node its own random vector, clusters drawn at random: nothing to separate
        node_cluster = rng.permutation(np.repeat(np.arange(4), 4))
        nodes = ring_walk(rng, 200)
        reps = rng.standard_normal((N_NODES, 32))[nodes] + 0.5 * rng.standard_normal((200, 32))
        phi = cluster_separation(reps, node_cluster[nodes])
        summary = null_summary(phi, separation_null(reps, nodes, node_cluster, n_perm=100, rng=rng))
        observed.append(phi)
        null_means.append(summary["null_mean"])
        p_values.append(summary["p_value"])
        inside.append(summary["null_ci_low"] <= phi <= summary["null_ci_high"])
    observed, p_values = np.array(observed), np.array(p_values)
    # repeated nodes make the row-level Φ positive without any structure, which is why a null is needed
    assert observed.mean() > 10 * observed.std() / np.sqrt(observed.size)
    assert np.mean(null_means) == pytest.approx(observed.mean(), rel=0.15)
    # the observed labelling is one more draw of the null: p-values are uniform
    assert 0.42 < p_values.mean() < 0.58
    assert np.mean(p_values <= 0.05) < 0.1
    assert np.mean(inside) > 0.88


def test_with_strong_cluster_structure_the_observed_phi_is_far_above_the_null():
    rng = np.random.default_rng(1)
    node_cluster = np.repeat(np.arange(4), 4)
    nodes = ring_walk(rng, 200)
    centres = 5.0 * rng.standard_normal((4, 32))
    vectors = centres[node_cluster] + rng.standard_normal((N_NODES, 32))
    reps = vectors[nodes] + 0.5 * rng.standard_normal((200, 32))
    phi = cluster_separation(reps, node_cluster[nodes])
    null = separation_null(reps, nodes, node_cluster, n_perm=200, rng=rng)
    summary = null_summary(phi, null)
    assert phi > 10 * summary["null_ci_high"]
    assert phi > np.nanmax(null)
    assert summary["p_value"] == pytest.approx(1 / 201)


def test_null_summary_hand_example_and_vectorised():
    null = np.array([0.0, 1.0, 2.0, 3.0, 4.0, np.nan])
    out = null_summary(3.0, null)
    # five finite draws: mean 2; linear quantiles at positions 4 · 0.025 and 4 · 0.975; two draws ≥ 3
    assert out == pytest.approx({"null_mean": 2.0, "null_ci_low": 0.1, "null_ci_high": 3.9, "p_value": 3 / 6})
    assert all(isinstance(v, float) for v in out.values())
    assert null_summary(3.0, null, alternative="less")["p_value"] == pytest.approx(5 / 6)
    assert null_summary(3.0, null, confidence=0.5)["null_ci_low"] == pytest.approx(1.0)

    stacked = np.column_stack([null, null + 10.0])
    out = null_summary(np.array([3.0, 0.0]), stacked)
    np.testing.assert_allclose(out["null_mean"], [2.0, 12.0])
    np.testing.assert_allclose(out["p_value"], [3 / 6, 6 / 6])
    with pytest.raises(IclnbError, match="null_values"):
        null_summary(np.array([3.0, 0.0]), null)
