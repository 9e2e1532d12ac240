"""Tests of iclnb.metrics: hand-worked values, brute-force references and Monte Carlo expectations."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats

from iclnb.core.errors import IclnbError
from iclnb.metrics import (
    cluster_separation,
    coherence,
    collapse_stats,
    copy_baseline,
    css,
    css_by_node,
    css_summary,
    dirichlet_energy,
    distance_correlation,
    graph_distances,
    neighbor_accuracy,
    node_means,
    node_means_prefix,
    participation_ratio,
    pca,
    procrustes_fit,
    spectral_embedding,
    twonn_dimension,
)


def grid_adjacency(rows: int, cols: int) -> np.ndarray:
    """4-neighbour grid, node index r * cols + c (built here so these tests need no other module)."""
    adj = np.zeros((rows * cols, rows * cols))
    for r in range(rows):
        for c in range(cols):
            i = r * cols + c
            if c + 1 < cols:
                adj[i, i + 1] = adj[i + 1, i] = 1
            if r + 1 < rows:
                adj[i, i + cols] = adj[i + cols, i] = 1
    return adj


def ring_adjacency(n: int) -> np.ndarray:
    adj = np.zeros((n, n))
    i = np.arange(n)
    adj[i, (i + 1) % n] = adj[(i + 1) % n, i] = 1
    return adj


PATH3 = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float)
GRID = grid_adjacency(4, 4)


# ---------------------------------------------------------------------------------------------------- node means


def test_node_means_hand_example_and_window():
    reps = np.array([[0.0, 0], [2, 2], [4, 0], [6, 2], [8, 8]])
    nodes = np.array([0, 1, 0, 1, 0])
    means, counts = node_means(reps, nodes, 3)
    np.testing.assert_allclose(means[0], [4, 8 / 3])
    np.testing.assert_allclose(means[1], [4, 2])
    assert np.isnan(means[2]).all()
    assert counts.tolist() == [3, 2, 0]
    assert means.dtype == np.float64

    means, counts = node_means(reps, nodes, 3, window=2)  # rows 3 and 4 only
    np.testing.assert_allclose(means[0], [8, 8])
    np.testing.assert_allclose(means[1], [6, 2])
    assert counts.tolist() == [1, 1, 0]


def test_node_means_prefix_equals_node_means_on_every_prefix():
    rng = np.random.default_rng(0)
    T, n, d = 120, 7, 5
    reps = rng.standard_normal((T, d)) * 10 + 3
    nodes = rng.integers(0, n, size=T)
    ends = np.array([0, 1, 5, 17, 60, 119, 120])
    for window in (None, 1, 8, 30):
        means, counts = node_means_prefix(reps, nodes, n, ends, window)
        assert means.shape == (len(ends), n, d) and counts.shape == (len(ends), n)
        for e, t in enumerate(ends):
            ref, ref_counts = node_means(reps[:t], nodes[:t], n, window=window)
            np.testing.assert_allclose(means[e], ref, rtol=1e-10, atol=1e-10)
            np.testing.assert_array_equal(np.isnan(means[e]), np.isnan(ref))
            np.testing.assert_array_equal(counts[e], ref_counts)


def test_node_means_accepts_torch_bfloat16():
    torch = pytest.importorskip("torch")
    reps = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.bfloat16)
    means, counts = node_means(reps, torch.tensor([0, 0]), 1)
    np.testing.assert_allclose(means, [[2.0, 3.0]])
    assert means.dtype == np.float64


def test_node_means_shape_errors():
    with pytest.raises(IclnbError, match="nodes"):
        node_means(np.zeros((3, 2)), [0, 1], 2)
    with pytest.raises(IclnbError, match="2-D"):
        node_means(np.zeros(3), [0, 1, 1], 2)
    with pytest.raises(IclnbError, match="node ids"):
        node_means(np.zeros((2, 2)), [0, 5], 2)
    with pytest.raises(IclnbError, match="ends"):
        node_means_prefix(np.zeros((2, 2)), [0, 1], 2, [3], None)


# ---------------------------------------------------------------------------------------------------- Dirichlet energy


def test_dirichlet_energy_hand_example_path():
    means = np.array([[0.0], [1.0], [3.0]])
    # edges (0,1), (1,2): 1 + 4; all pairs: 1 + 4 + 9
    assert dirichlet_energy(means, PATH3, normalized=False) == pytest.approx(5.0)
    assert dirichlet_energy(means, PATH3) == pytest.approx(5.0 / 14.0)
    # node 2 unseen: its edge and pairs go
    means[2] = np.nan
    assert dirichlet_energy(means, PATH3, normalized=False) == pytest.approx(1.0)
    assert dirichlet_energy(means, PATH3) == pytest.approx(1.0)
    means[1] = np.nan
    assert np.isnan(dirichlet_energy(means, PATH3))


def test_dirichlet_energy_normalized_is_translation_and_scale_invariant():
    rng = np.random.default_rng(1)
    means = rng.standard_normal((16, 8))
    e = dirichlet_energy(means, GRID)
    assert dirichlet_energy(3.7 * means + rng.standard_normal(8) * 100, GRID) == pytest.approx(e, rel=1e-10)
    assert dirichlet_energy(2 * means, GRID, normalized=False) == pytest.approx(
        4 * dirichlet_energy(means, GRID, normalized=False))
    assert np.isnan(dirichlet_energy(np.ones((16, 3)), GRID))  # all points equal: 0 / 0


def test_dirichlet_energy_random_and_mixed_on_grid():
    # random vectors: E[E_norm] = |edges| / C(n, 2) = 24 / 120
    rng = np.random.default_rng(2)
    n_draws, d = 400, 16
    z = rng.standard_normal((n_draws, 16, d))
    raw = np.array([dirichlet_energy(zz, GRID) for zz in z])
    assert GRID.sum() / 2 == 24
    assert raw.mean() == pytest.approx(0.20, abs=0.01)

    # one step of neighbour mixing: x = M z with M = D̃⁻¹ (I + A), D̃ = diag(deg + 1) (each node becomes the mean of
    # itself and its neighbours). For large d E_norm concentrates at the ratio of expectations, computed exactly from
    # G = M Mᵀ: E||x_i − x_j||² ∝ G_ii + G_jj − 2 G_ij. It is 0.1193 on the 4x4 grid (the spec's "about 0.11").
    mix = np.eye(16) + GRID
    mix /= mix.sum(axis=1, keepdims=True)
    g = mix @ mix.T
    d2 = np.diag(g)[:, None] + np.diag(g)[None, :] - 2 * g
    exact = (d2 * GRID).sum() / 2 / d2[np.triu_indices(16, 1)].sum()
    assert exact == pytest.approx(0.1193, abs=1e-4)
    mixed = np.array([dirichlet_energy(mix @ zz, GRID) for zz in z])
    assert mixed.mean() == pytest.approx(exact, abs=0.01)
    assert 0.10 < mixed.mean() < 0.13


def test_dirichlet_energy_consecutive_variant():
    reps = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 2.0]])
    assert dirichlet_energy(reps, variant="consecutive", normalized=False) == pytest.approx(1 + 4)
    # all pairs: 1 + 5 + 4
    assert dirichlet_energy(reps, variant="consecutive") == pytest.approx(5 / 10)
    with pytest.raises(IclnbError):
        dirichlet_energy(reps, PATH3, variant="consecutive")
    with pytest.raises(IclnbError):
        dirichlet_energy(reps)  # graph variant without adjacency
    with pytest.raises(IclnbError, match="variant"):
        dirichlet_energy(reps, PATH3, variant="edges")


# ---------------------------------------------------------------------------------------------------- separation


def legacy_reference(reps, labels, ddof=1):
    """The predecessor's Φ written out plainly, cluster by cluster (its variance was torch's default, ddof=1)."""
    clusters = sorted(set(labels.tolist()))
    cents = [reps[labels == c].mean(axis=0) for c in clusters]
    between = np.mean([np.sum((cents[a] - cents[b]) ** 2) for a, b in itertools.combinations(range(len(cents)), 2)])
    within = np.mean([np.mean(np.var(reps[labels == c], axis=0, ddof=ddof)) for c in clusters])
    within = max(within, 1e-3 * between)
    return between / within


def test_cluster_separation_hand_example():
    reps = np.array([[0.0], [2.0], [10.0], [12.0]])
    labels = np.array([0, 0, 1, 1])
    # unbiased: (100 − 2/2 − 2/2) / ((1 + 1 + 1 + 1) / (4 − 2)) = 98 / 2
    assert cluster_separation(reps, labels) == pytest.approx(49.0)
    # legacy: 100 / mean(2, 2), each cluster's variance being ((−1)² + 1²) / (2 − 1)
    assert cluster_separation(reps, labels, variant="legacy") == pytest.approx(50.0)
    assert np.isnan(cluster_separation(reps, np.zeros(4)))
    assert np.isnan(cluster_separation(reps, np.zeros(4), variant="legacy"))
    with pytest.raises(IclnbError, match="labels"):
        cluster_separation(reps, [0, 1])
    with pytest.raises(IclnbError, match="variant"):
        cluster_separation(reps, labels, variant="old")


def test_cluster_separation_legacy_matches_reference_and_floor():
    rng = np.random.default_rng(3)
    for _ in range(5):
        labels = rng.integers(0, 4, size=40)
        reps = rng.standard_normal((40, 6)) + labels[:, None] * rng.uniform(0, 2)
        assert cluster_separation(reps, labels, variant="legacy") == pytest.approx(legacy_reference(reps, labels))
    # identical points within clusters: the floor caps Φ at 1000
    reps = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0]]), 3, axis=0)
    assert cluster_separation(reps, np.repeat([0, 1], 3), variant="legacy") == pytest.approx(1000.0)
    assert np.isnan(cluster_separation(reps, np.repeat([0, 1], 3)))  # within-cluster spread 0


def test_cluster_separation_legacy_uses_the_unbiased_variance():
    # three clusters of 20 rows around centres (0, 0), (3, 0), (0, 4); in each dimension half the rows sit at +1 and
    # half at −1 from the centre, so the per-dimension variance is 20 / 19 with ddof=1 and exactly 1 with ddof=0
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    signs = np.column_stack([np.tile([1.0, -1.0], 10), np.repeat([1.0, -1.0], 10)])
    reps = np.vstack([c + signs for c in centres])
    labels = np.repeat(np.arange(3), 20)
    between = (9 + 16 + 25) / 3
    by_hand = between / (20 / 19)
    assert legacy_reference(reps, labels) == pytest.approx(by_hand, rel=1e-12)
    assert legacy_reference(reps, labels, ddof=0) == pytest.approx(between, rel=1e-12)
    got = cluster_separation(reps, labels, variant="legacy")
    assert got == pytest.approx(by_hand, rel=1e-12)
    assert got != pytest.approx(between, rel=1e-3)  # the ddof=0 value, 5% higher


def test_cluster_separation_legacy_singleton_is_nan():
    # torch's unbiased var of a single row is NaN, and so was the predecessor's Φ
    reps = np.array([[0.0], [2.0], [10.0], [12.0], [50.0]])
    assert np.isnan(cluster_separation(reps, np.array([0, 0, 1, 1, 2]), variant="legacy"))


def test_cluster_separation_noise_unbiased_near_zero_legacy_positive():
    rng = np.random.default_rng(4)
    n_draws, n, d = 300, 45, 10
    unbiased, legacy = [], []
    for _ in range(n_draws):
        reps = rng.standard_normal((n, d))
        labels = rng.permutation(np.repeat(np.arange(3), n // 3))
        unbiased.append(cluster_separation(reps, labels))
        legacy.append(cluster_separation(reps, labels, variant="legacy"))
    unbiased, legacy = np.array(unbiased), np.array(legacy)
    se = unbiased.std() / np.sqrt(n_draws)
    assert abs(unbiased.mean()) < 4 * se + 1e-3
    # legacy: E||μ_a − μ_b||² = 2 d / 15 over a per-dimension variance ≈ 1, so about 1.3
    assert legacy.mean() > 1.0


def test_cluster_separation_does_not_scale_with_dimension():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 10)
    reps = rng.standard_normal((30, 4)) + labels[:, None]
    doubled = np.hstack([reps, reps])
    assert cluster_separation(doubled, labels) == pytest.approx(cluster_separation(reps, labels))
    # the legacy form sums the numerator but averages the denominator over dimensions
    assert cluster_separation(doubled, labels, variant="legacy") == pytest.approx(
        2 * cluster_separation(reps, labels, variant="legacy"))


def test_cluster_separation_unbiased_drops_singletons():
    reps = np.array([[0.0], [2.0], [10.0], [12.0], [50.0]])
    labels = np.array([0, 0, 1, 1, 2])
    assert cluster_separation(reps, labels) == pytest.approx(49.0)


# ---------------------------------------------------------------------------------------------------- coherence


def brute_force_coherence(reps, labels, centre):
    """mean_{i<j} w_ij cos(r_i − c, r_j − c), one pair at a time."""
    total, pairs = 0.0, 0
    n = len(reps)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = reps[i] - centre, reps[j] - centre
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos = 0.0 if na == 0 or nb == 0 else a @ b / (na * nb)
            total += (1.0 if labels[i] == labels[j] else -0.5) * cos
            pairs += 1
    return total / pairs


def test_coherence_matches_brute_force():
    rng = np.random.default_rng(6)
    reps = rng.standard_normal((25, 5)) + 2.0
    reps[3] = 0.0  # no direction: cosine 0 with everything (legacy)
    labels = rng.integers(0, 4, size=25)
    mean = np.mean(reps, axis=0)
    assert coherence(reps, labels) == pytest.approx(brute_force_coherence(reps, labels, mean))
    assert coherence(reps, labels, variant="legacy") == pytest.approx(brute_force_coherence(reps, labels, 0.0))
    assert np.isnan(coherence(reps[:1], labels[:1]))
    assert np.isnan(coherence(reps[:1], labels[:1], variant="legacy"))
    with pytest.raises(IclnbError, match="'centred' or 'legacy'"):
        coherence(reps, labels, variant="centered")


def test_coherence_hand_example():
    reps = np.array([[1.0, 5.0], [1.0, 5.0], [-1.0, 5.0], [-1.0, 5.0]])
    labels = ["a", "a", "b", "b"]
    # centred: (1, 0), (1, 0), (−1, 0), (−1, 0). The two same-label pairs have cos 1 (weight 1), the four others
    # cos −1 (weight −0.5): (2 + 4 · 0.5) / 6
    assert coherence(reps, labels) == pytest.approx(2 / 3)
    # legacy: same-label pairs cos 1, the others cos (−1 + 25) / 26 = 12/13: (2 − 0.5 · 4 · 12/13) / 6 = 1/39
    assert coherence(reps, labels, variant="legacy") == pytest.approx(1 / 39)

    reps = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    # legacy: pairs (0,1) same, cos 1 -> +1; (0,2), (1,2) different, cos 0
    assert coherence(reps, ["a", "a", "b"], variant="legacy") == pytest.approx(1 / 3)
    # centred on (1, 1/3): (0, −1/3), (1, −1/3), (−1, 2/3) of norms 1/3, √10/3, √13/3; cosines 1/√10 (same),
    # −2/√13 and −11/√130 (different)
    expected = (1 / np.sqrt(10) + 0.5 * 2 / np.sqrt(13) + 0.5 * 11 / np.sqrt(130)) / 3
    assert coherence(reps, ["a", "a", "b"]) == pytest.approx(expected)
    # a row equal to the mean has no direction
    line = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])
    # centred: (−1, 0), 0, (1, 0); only the pair (0, 2), cos −1, different labels, counts: 0.5 / 3
    assert coherence(line, ["a", "a", "b"]) == pytest.approx(1 / 6)


def test_coherence_centred_ignores_a_common_offset_legacy_does_not():
    rng = np.random.default_rng(16)
    labels = np.repeat(np.arange(3), 4)
    reps = rng.standard_normal((12, 6)) + 4.0 * np.eye(6)[labels]  # three clusters
    direction = rng.standard_normal(6)
    direction /= np.linalg.norm(direction)
    # when every cosine is 1 the mean is mean_{i<j} w_ij: 18 same-label pairs, 48 others, 66 in all
    all_ones = (18 - 0.5 * 48) / 66
    assert all_ones == pytest.approx(-1 / 11)
    centred = coherence(reps, labels)
    assert centred > 0.2  # the clusters do show
    assert abs(coherence(reps, labels, variant="legacy") - all_ones) > 0.2
    legacy_gap = []
    for offset in (10.0, 100.0, 1e4):
        shifted = reps + offset * direction
        assert coherence(shifted, labels) == pytest.approx(centred, rel=1e-9)
        legacy_gap.append(abs(coherence(shifted, labels, variant="legacy") - all_ones))
    # the legacy value is driven to the all-ones value, which only counts cluster sizes (the defect)
    assert legacy_gap[0] > legacy_gap[1] > legacy_gap[2]
    assert legacy_gap[2] < 1e-5


# ---------------------------------------------------------------------------------------------------- geometry


def test_distance_correlation_ring_circle_grid_and_shuffle():
    n = 12
    angles = 2 * np.pi * np.arange(n) / n
    circle = np.column_stack([np.cos(angles), np.sin(angles)])
    ring = ring_adjacency(n)
    assert distance_correlation(circle, ring) == pytest.approx(1.0)

    coords = np.array([[r, c] for r in range(4) for c in range(4)], dtype=float)
    assert distance_correlation(coords, GRID) > 0.9

    rng = np.random.default_rng(7)
    shuffled = [distance_correlation(coords[rng.permutation(16)], GRID) for _ in range(200)]
    assert abs(np.mean(shuffled)) < 0.05

    # unseen nodes are dropped; fewer than three seen nodes give NaN
    partial = circle.copy()
    partial[[1, 5]] = np.nan
    assert distance_correlation(partial, ring) == pytest.approx(1.0)
    partial[2:] = np.nan
    assert np.isnan(distance_correlation(partial, ring))


def test_graph_distances_path():
    np.testing.assert_array_equal(graph_distances(PATH3), [[0, 1, 2], [1, 0, 1], [2, 1, 0]])


def test_spectral_embedding_of_the_grid():
    emb, vals = spectral_embedding(GRID, k=2)
    lam = 2 - 2 * np.cos(np.pi / 4)  # the smallest non-zero eigenvalue of the 4-node path
    np.testing.assert_allclose(vals, [lam, lam], atol=1e-10)
    # the eigenspace is spanned by the separable x and y cosine modes
    mode = np.cos(np.pi * (np.arange(4) + 0.5) / 4)
    x_mode = np.tile(mode, 4)  # varies with the column
    y_mode = np.repeat(mode, 4)  # varies with the row
    basis, _ = np.linalg.qr(np.column_stack([x_mode, y_mode]))
    np.testing.assert_allclose(basis @ (basis.T @ emb), emb, atol=1e-10)
    np.testing.assert_allclose(emb.T @ emb, np.eye(2), atol=1e-10)
    # the embedding is a similarity copy of the grid coordinates up to the 2-D mode shape: good Procrustes fit
    coords = np.array([[c, r] for r in range(4) for c in range(4)], dtype=float)
    _, r2 = procrustes_fit(emb, coords)
    assert r2 > 0.95
    with pytest.raises(IclnbError):
        spectral_embedding(GRID, k=16)


def test_pca_matches_svd_and_handles_unseen_rows():
    rng = np.random.default_rng(8)
    means = rng.standard_normal((10, 6)) * np.array([5, 3, 1, 0.5, 0.1, 0.01])
    coords, ratio, comps = pca(means, k=3)
    assert coords.shape == (10, 3) and ratio.shape == (3,) and comps.shape == (3, 6)
    centred = means - means.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(ratio, s[:3] ** 2 / np.sum(s**2))
    np.testing.assert_allclose(np.abs(coords), np.abs(centred @ comps.T))
    np.testing.assert_allclose(comps @ comps.T, np.eye(3), atol=1e-12)
    # coords reconstruct the centred data in the full basis
    full, _, full_comps = pca(means, k=6)
    np.testing.assert_allclose(full @ full_comps, centred, atol=1e-10)

    means[4] = np.nan
    coords, _, _ = pca(means, k=2)
    assert np.isnan(coords[4]).all() and np.isfinite(np.delete(coords, 4, axis=0)).all()
    coords, ratio, _ = pca(means[3:6], k=3)  # 2 seen rows: one component only
    assert np.isfinite(ratio[0]) and np.isnan(ratio[1:]).all()


def test_procrustes_exact_copy_and_random():
    rng = np.random.default_rng(9)
    source = rng.standard_normal((16, 3))
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    target = 2.5 * source @ q + np.array([1.0, -4.0, 7.0])
    aligned, r2 = procrustes_fit(source, target)
    assert r2 == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(aligned, target, atol=1e-10)

    r2s = [procrustes_fit(rng.standard_normal((16, 2)), rng.standard_normal((16, 2)))[1] for _ in range(50)]
    assert np.mean(r2s) < 0.3
    with pytest.raises(IclnbError, match="same shape"):
        procrustes_fit(source, target[:, :2])


# ---------------------------------------------------------------------------------------------------- rule following


def test_neighbor_accuracy_hand_example():
    probs = np.array([[0.1, 0.6, 0.2], [0.3, 0.0, 0.3], [0.0, 0.0, 0.0]])
    out = neighbor_accuracy(probs, [0, 1, 2], PATH3)
    np.testing.assert_allclose(out["raw"], [0.6, 0.6, 0.0])
    np.testing.assert_allclose(out["renormalized"][:2], [0.6 / 0.9, 1.0])
    assert np.isnan(out["renormalized"][2])
    with pytest.raises(IclnbError):
        neighbor_accuracy(probs[:, :2], [0, 1, 2], PATH3)


def test_copy_baseline_hand_example():
    # path 0-1-2 walked 0 1 2 1 0 1
    walk = [0, 1, 2, 1, 0, 1]
    got = copy_baseline(walk, PATH3)
    # t=0: node 0 unseen before -> uniform over 3 nodes, 1 neighbour: 1/3
    # t=1: node 1 has no recorded successor yet -> 2/3
    # t=2: node 2 unseen -> 1/3
    # t=3: node 1 seen with successor 2 -> 1
    # t=4: node 0 seen with successor 1 -> 1
    # t=5: node 1 seen with successors {2, 0} -> 1
    np.testing.assert_allclose(got, [1 / 3, 2 / 3, 1 / 3, 1, 1, 1])
    # scored against another graph: recalled successors that are not neighbours there count as misses
    other = np.array([[0, 0, 1], [0, 0, 1], [1, 1, 0]], dtype=float)
    got = copy_baseline(walk, other)
    # t=3: node 1 recalls {2}, a neighbour -> 1; t=4: node 0 recalls {1}, not a neighbour -> 0;
    # t=5: node 1 recalls {2, 0}: one of two -> 0.5
    np.testing.assert_allclose(got, [1 / 3, 1 / 3, 2 / 3, 1, 0, 0.5])


# ---------------------------------------------------------------------------------------------------- collapse


def test_participation_ratio_isotropic():
    rng = np.random.default_rng(10)
    for k in (1, 3, 7):
        x = np.zeros((2000, 20))
        x[:, :k] = rng.standard_normal((2000, k))
        assert participation_ratio(x) == pytest.approx(k, rel=0.05)
    assert np.isnan(participation_ratio(np.ones((5, 3))))


def test_twonn_on_a_plane_in_10d():
    rng = np.random.default_rng(11)
    basis, _ = np.linalg.qr(rng.standard_normal((10, 2)))
    x = rng.uniform(0, 1, size=(800, 2)) @ basis.T + 3.0
    assert twonn_dimension(x) == pytest.approx(2.0, abs=0.25)
    cube = rng.uniform(0, 1, size=(800, 5))
    assert twonn_dimension(cube) == pytest.approx(5.0, abs=0.8)


def test_collapse_stats_hand_values_and_window():
    reps = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    out = collapse_stats(np.vstack([np.full((5, 2), 99.0), reps]), window=3)
    assert out["n"] == 3
    cos = (0 + 1 / np.sqrt(2) + 1 / np.sqrt(2)) / 3
    assert out["mean_cosine"] == pytest.approx(cos)
    assert out["mean_l2"] == pytest.approx((np.sqrt(2) + 1 + 1) / 3)
    assert out["spread"] == pytest.approx(np.trace(np.cov(reps.T)))
    centred = reps - reps.mean(axis=0)
    cc = [centred[i] @ centred[j] / np.linalg.norm(centred[i]) / np.linalg.norm(centred[j])
          for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert out["mean_cosine_centered"] == pytest.approx(np.mean(cc))
    assert out["participation_ratio"] == pytest.approx(participation_ratio(reps))
    assert set(out) == {"n", "mean_cosine", "mean_cosine_centered", "mean_l2", "spread", "participation_ratio",
                        "twonn_dimension"}
    single = collapse_stats(reps[:1])
    assert np.isnan(single["mean_l2"])


# ---------------------------------------------------------------------------------------------------- CSS


def test_css_equals_negative_population_covariance():
    rng = np.random.default_rng(12)
    losses = rng.standard_normal((30, 7)) + 5
    phi = rng.standard_normal(30)
    expected = [-np.cov(losses[:, p], phi, bias=True)[0, 1] for p in range(7)]
    np.testing.assert_allclose(css(losses, phi), expected)
    np.testing.assert_allclose(css_by_node(losses, phi), expected)


def test_css_ignores_nan_entries_per_column():
    rng = np.random.default_rng(13)
    losses = rng.standard_normal((20, 3))
    phi = rng.standard_normal(20)
    losses[[2, 5], 1] = np.nan
    losses[:19, 2] = np.nan
    phi_nan = phi.copy()
    phi_nan[7] = np.nan
    got = css(losses, phi_nan)
    keep0 = np.arange(20) != 7
    assert got[0] == pytest.approx(-np.cov(losses[keep0, 0], phi[keep0], bias=True)[0, 1])
    keep1 = keep0 & np.isfinite(losses[:, 1])
    assert got[1] == pytest.approx(-np.cov(losses[keep1, 1], phi[keep1], bias=True)[0, 1])
    assert np.isnan(got[2])  # a single context
    with pytest.raises(IclnbError, match="phi"):
        css(losses, phi[:5])
    with pytest.raises(IclnbError, match="2-D"):
        css(losses[:, 0], phi)


def test_css_summary_matches_a_loop_over_the_same_draws():
    rng = np.random.default_rng(14)
    K, P = 25, 4
    phi = rng.standard_normal(K)
    losses = rng.standard_normal((K, P))
    losses[:, 0] -= 2 * phi  # a strong positive CSS at position 0
    losses[3, 2] = np.nan
    n_boot, n_perm = 200, 300
    out = css_summary(losses, phi, np.random.default_rng(99), n_boot=n_boot, n_perm=n_perm)

    # the same draws, done one at a time
    gen = np.random.default_rng(99)
    idx = gen.integers(0, K, size=(n_boot, K))
    order = gen.permuted(np.tile(np.arange(K), (n_perm, 1)), axis=1)
    np.testing.assert_allclose(out["css"], css(losses, phi))
    for p in range(P):
        ok = np.isfinite(losses[:, p])
        boots = []
        for b in range(n_boot):
            rows = idx[b][ok[idx[b]]]
            boots.append(-np.cov(losses[rows, p], phi[rows], bias=True)[0, 1])
        low, high = np.quantile(boots, [0.025, 0.975])
        assert out["ci_low"][p] == pytest.approx(low, abs=1e-10)
        assert out["ci_high"][p] == pytest.approx(high, abs=1e-10)
        null = np.array([-np.cov(losses[ok, p], phi[o][ok], bias=True)[0, 1] for o in order])
        p_loop = (1 + np.sum(np.abs(null) >= np.abs(out["css"][p]) * (1 - 1e-9))) / (1 + n_perm)
        assert out["p_value"][p] == pytest.approx(p_loop)
        assert out["pearson_r"][p] == pytest.approx(scipy.stats.pearsonr(losses[ok, p], phi[ok]).statistic)
    assert out["n_contexts"].tolist() == [K, K, K - 1, K]
    assert out["p_value"][0] == pytest.approx(1 / (n_perm + 1))
    assert out["ci_low"][0] <= out["css"][0] <= out["ci_high"][0]
    np.testing.assert_allclose(out["q_value"], scipy.stats.false_discovery_control(out["p_value"]))


def test_css_summary_null_pvalues_are_not_small_and_nan_passes_through():
    rng = np.random.default_rng(15)
    K, P = 40, 200
    losses = rng.standard_normal((K, P))
    losses[:, 7] = np.nan
    out = css_summary(losses, rng.standard_normal(K), rng, n_boot=100, n_perm=200)
    p = out["p_value"]
    assert np.isnan(p[7]) and np.isnan(out["q_value"][7]) and np.isnan(out["ci_low"][7])
    finite = p[np.isfinite(p)]
    assert 0.4 < finite.mean() < 0.6  # uniform under the null
    assert np.mean(finite < 0.05) < 0.12


# ------------------------------------------------------------------------------ collapse: independent references


def _twonn_reference(x):
    """TwoNN by brute force: all pairwise distances, each point's two nearest other points."""
    from scipy.spatial.distance import cdist

    d = cdist(x, x)
    np.fill_diagonal(d, np.inf)
    r = np.sort(d, axis=1)[:, :2]
    return len(x) / np.sum(np.log(r[:, 1] / r[:, 0]))


def test_participation_ratio_equals_covariance_eigenvalue_formula():
    rng = np.random.default_rng(20)
    x = rng.standard_normal((60, 12)) * np.linspace(0.1, 3.0, 12) + 5.0
    lam = np.linalg.eigvalsh(np.cov(x.T))
    assert participation_ratio(x) == pytest.approx(lam.sum() ** 2 / np.sum(lam ** 2), rel=1e-10)
    assert participation_ratio(7.0 * x - 2.0) == pytest.approx(participation_ratio(x), rel=1e-10)
    # two orthogonal directions with equal variance: exactly 2; one direction: exactly 1
    assert participation_ratio([[1, 0], [-1, 0], [0, 1], [0, -1]]) == pytest.approx(2.0)
    assert participation_ratio([[0, 0, 1], [0, 0, 2], [0, 0, 4]]) == pytest.approx(1.0)
    assert np.isnan(participation_ratio(x[:1]))


def test_twonn_hand_worked_and_brute_force():
    # points 0, 1, 3 on a line: mu = 3/1, 2/1, 3/2, so d = 3 / ln(3 * 2 * 1.5) = 3 / ln 9
    line = np.array([[0.0], [1.0], [3.0]])
    assert twonn_dimension(line) == pytest.approx(3 / np.log(9.0))
    rng = np.random.default_rng(21)
    x = rng.standard_normal((200, 6))
    assert twonn_dimension(x) == pytest.approx(_twonn_reference(x), rel=1e-10)
    # exact duplicates are dropped before the neighbours are found
    assert twonn_dimension(np.vstack([x, x[:20]])) == pytest.approx(_twonn_reference(x), rel=1e-10)
    assert np.isnan(twonn_dimension(x[:2]))
    assert np.isnan(twonn_dimension(np.ones((10, 3))))


def test_collapse_stats_against_brute_force_pairs():
    from scipy.spatial.distance import pdist as brute_pdist

    rng = np.random.default_rng(22)
    x = rng.standard_normal((30, 5)) + np.array([4.0, 0, 0, 0, 0])
    out = collapse_stats(x, window=None)
    pairs = list(itertools.combinations(range(30), 2))
    cos = [x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j]) for i, j in pairs]
    c = x - x.mean(axis=0)
    cos_c = [c[i] @ c[j] / np.linalg.norm(c[i]) / np.linalg.norm(c[j]) for i, j in pairs]
    assert out["mean_cosine"] == pytest.approx(np.mean(cos), rel=1e-10)
    assert out["mean_cosine_centered"] == pytest.approx(np.mean(cos_c), rel=1e-10)
    assert out["mean_l2"] == pytest.approx(np.mean([np.linalg.norm(x[i] - x[j]) for i, j in pairs]), rel=1e-10)
    assert out["mean_l2"] == pytest.approx(brute_pdist(x).mean(), rel=1e-10)
    assert out["spread"] == pytest.approx(np.trace(np.cov(x.T)), rel=1e-10)
    assert out["twonn_dimension"] == pytest.approx(_twonn_reference(x), rel=1e-10)
    assert out["n"] == 30


def test_collapse_stats_identical_vectors_and_window_edges():
    same = np.tile([3.0, 4.0, 0.0], (6, 1))
    out = collapse_stats(same, window=None)
    assert out["mean_cosine"] == pytest.approx(1.0)
    assert out["mean_l2"] == 0.0 and out["spread"] == 0.0
    assert np.isnan(out["participation_ratio"]) and np.isnan(out["twonn_dimension"])
    # the window is the last rows exactly: a window of 4 never sees row 5 from the end
    rng = np.random.default_rng(23)
    x = rng.standard_normal((10, 3))
    assert collapse_stats(x, window=4)["mean_l2"] == pytest.approx(collapse_stats(x[-4:], window=None)["mean_l2"])
    assert collapse_stats(x, window=4)["n"] == 4
    assert collapse_stats(x, window=50)["n"] == 10  # a window longer than the data takes every row
    with pytest.raises(IclnbError):
        collapse_stats(x, window=0)
    # centred cosine of two rows is -1 (they sit on opposite sides of their mean)
    assert collapse_stats(x[:2], window=None)["mean_cosine_centered"] == pytest.approx(-1.0)


def test_normalized_dirichlet_energy_never_steps_past_its_bound_of_one():
    """On the complete graph every pair is an edge, so E_norm is 1 by definition; summed in floating point the ratio
    comes out a few ulps above 1 for some vectors (seed 3 here: 1.0000000000000002 before the clip). A weighted graph
    whose edges exceed 1 has no such bound and is left alone."""
    complete = np.ones((7, 7)) - np.eye(7)
    values = [dirichlet_energy(np.random.default_rng(seed).normal(size=(7, 5)), complete) for seed in range(50)]
    assert max(values) == 1.0 and min(values) == pytest.approx(1.0)
    assert dirichlet_energy(np.random.default_rng(3).normal(size=(7, 5)), complete) == 1.0
    assert dirichlet_energy(np.random.default_rng(3).normal(size=(7, 5)), 2 * complete) == pytest.approx(2.0)
