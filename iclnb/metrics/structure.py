"""Structural metrics of word representations (docs/methods.md, Metrics).

Pure functions over arrays, in the style of ``sklearn.metrics``: inputs are float arrays (torch tensors are accepted
and converted), every computation runs in float64, and a value that is undefined for the given input (fewer than two
clusters, a zero denominator, too few nodes seen) is returned as NaN, never inf.

Conventions shared by the functions here:

* ``reps`` is a ``(T, d)`` array, one row per word occurrence, in walk order.
* ``means`` is a ``(n_nodes, d)`` array of node means; a row of NaN marks a node not seen in the window, and such
  nodes are dropped (with their edges and pairs) by every metric that takes node means.
* ``adjacency`` is a symmetric ``(n_nodes, n_nodes)`` 0/1 array without self-loops; node ``i`` is row ``i``.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats as _sps
from scipy.sparse.csgraph import shortest_path
from scipy.spatial.distance import pdist

from iclnb.core.arrays import as_float_array as _to_numpy
from iclnb.core.errors import IclnbError
from iclnb.stats import as_generator, check_confidence, permutation_pvalue

__all__ = [
    "node_means",
    "node_means_prefix",
    "dirichlet_energy",
    "cluster_separation",
    "separation_null",
    "null_summary",
    "coherence",
    "graph_distances",
    "distance_correlation",
    "spectral_embedding",
    "pca",
    "procrustes_fit",
    "neighbor_accuracy",
    "copy_baseline",
    "participation_ratio",
    "twonn_dimension",
    "collapse_stats",
]


# ----------------------------------------------------------------------------------------------------------------
# input checking


def _reps(x, name: str = "reps") -> np.ndarray:
    return _to_numpy(x, name, ndim=2)


def _labels(labels, n: int, name: str = "labels") -> np.ndarray:
    lab = np.asarray(labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels)
    if lab.ndim != 1 or lab.shape[0] != n:
        raise IclnbError(f"{name} must be 1-D with one entry per row of reps ({n}), got shape {lab.shape}")
    return lab


def _adjacency(adjacency, n: int | None = None) -> np.ndarray:
    adj = _to_numpy(adjacency, "adjacency", ndim=2)
    if adj.shape[0] != adj.shape[1]:
        raise IclnbError(f"adjacency must be square, got shape {adj.shape}")
    if n is not None and adj.shape[0] != n:
        raise IclnbError(f"adjacency has {adj.shape[0]} nodes but the node array has {n} rows")
    if not np.array_equal(adj, adj.T):
        raise IclnbError("adjacency must be symmetric (an undirected graph)")
    return adj


def _node_ids(nodes, T: int, n_nodes: int) -> np.ndarray:
    ids = np.asarray(nodes.detach().cpu().numpy() if hasattr(nodes, "detach") else nodes)
    if ids.ndim != 1 or ids.shape[0] != T:
        raise IclnbError(f"nodes must be 1-D with one node id per row of reps ({T}), got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        if not np.all(np.equal(np.mod(ids, 1), 0)):
            raise IclnbError("nodes must hold integer node ids")
        ids = ids.astype(np.int64)
    ids = ids.astype(np.int64, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= n_nodes):
        raise IclnbError(f"node ids must lie in [0, {n_nodes}), got range [{ids.min()}, {ids.max()}]")
    return ids


def _seen_rows(means: np.ndarray) -> np.ndarray:
    """Rows without any NaN (nodes seen in the window)."""
    return ~np.isnan(means).any(axis=1)


def _sum_sq_all_pairs(x: np.ndarray) -> float:
    """Σ_{i<j} ||x_i − x_j||² = n Σ_i ||x_i − x̄||², in O(n d) instead of O(n² d)."""
    centred = x - x.mean(axis=0)
    return float(x.shape[0] * np.sum(centred * centred))


def _sq_dists(x: np.ndarray) -> np.ndarray:
    """The (n, n) matrix of squared Euclidean distances (exact zeros on the diagonal, never negative)."""
    sq = np.einsum("ij,ij->i", x, x)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(d2, 0.0)
    return np.maximum(d2, 0.0)


# ----------------------------------------------------------------------------------------------------------------
# node means


def node_means(reps, nodes, n_nodes: int, window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean representation of each node over its occurrences, optionally within a trailing window.

    μ_i = (1/|S_i|) Σ_{t ∈ S_i} r_t,  S_i = {t ≥ T − w : nodes[t] = i}  (all t when ``window`` is None).

    The window counts word positions (rows of ``reps``), not occurrences of each node: ``window=200`` keeps the last
    200 rows and averages each node over its occurrences among them.

    Returns ``(means, counts)``: ``means`` is ``(n_nodes, d)`` float64 with a NaN row for each node not seen in the
    window, ``counts`` is ``(n_nodes,)`` int, the number of occurrences used.
    """
    x = _reps(reps)
    n_nodes = int(n_nodes)
    if n_nodes < 1:
        raise IclnbError(f"n_nodes must be at least 1, got {n_nodes}")
    ids = _node_ids(nodes, x.shape[0], n_nodes)
    if window is not None:
        if int(window) < 1:
            raise IclnbError(f"window must be a positive number of word positions or None, got {window}")
        start = max(0, x.shape[0] - int(window))
        x, ids = x[start:], ids[start:]
    counts = np.bincount(ids, minlength=n_nodes)
    sums = np.zeros((n_nodes, x.shape[1]))
    np.add.at(sums, ids, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[counts == 0] = np.nan
    return means, counts


def node_means_prefix(reps, nodes, n_nodes: int, ends, window: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Node means at several context lengths at once (prefix reuse).

    For each context length t in ``ends``, the means use only rows s with max(0, t − w) ≤ s < t, so that
    ``node_means_prefix(reps, nodes, n, [t], w)[0][0]`` equals ``node_means(reps[:t], nodes[:t], n, w)[0]``.
    Computed from per-node cumulative sums: O(T d) memory whatever the number of context lengths.

    Returns ``(means, counts)`` of shapes ``(len(ends), n_nodes, d)`` and ``(len(ends), n_nodes)``.
    """
    x = _reps(reps)
    n_nodes = int(n_nodes)
    if n_nodes < 1:
        raise IclnbError(f"n_nodes must be at least 1, got {n_nodes}")
    ids = _node_ids(nodes, x.shape[0], n_nodes)
    ends_arr = np.asarray(ends)
    if ends_arr.ndim != 1:
        raise IclnbError(f"ends must be a 1-D list of context lengths, got shape {ends_arr.shape}")
    ends_arr = ends_arr.astype(np.int64)
    T = x.shape[0]
    if ends_arr.size and (ends_arr.min() < 0 or ends_arr.max() > T):
        raise IclnbError(f"context lengths in ends must lie in [0, {T}] (the number of rows), got {ends_arr.tolist()}")
    if window is not None and int(window) < 1:
        raise IclnbError(f"window must be a positive number of word positions or None, got {window}")
    starts = np.zeros_like(ends_arr) if window is None else np.maximum(0, ends_arr - int(window))

    means = np.full((ends_arr.size, n_nodes, x.shape[1]), np.nan)
    counts = np.zeros((ends_arr.size, n_nodes), dtype=np.int64)
    for node in range(n_nodes):
        rows = np.flatnonzero(ids == node)
        if rows.size == 0:
            continue
        csum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x[rows], axis=0)])
        hi = np.searchsorted(rows, ends_arr, side="left")  # occurrences at rows < t
        lo = np.searchsorted(rows, starts, side="left")  # occurrences at rows < start
        cnt = hi - lo
        counts[:, node] = cnt
        ok = cnt > 0
        means[ok, node] = (csum[hi[ok]] - csum[lo[ok]]) / cnt[ok, None]
    return means, counts


# ----------------------------------------------------------------------------------------------------------------
# Dirichlet energy


def dirichlet_energy(x, adjacency=None, *, normalized: bool = True, variant: str = "graph") -> float:
    """Dirichlet energy of node means over a graph, or of consecutive representations.

    ``variant="graph"`` (``x`` = node means, ``adjacency`` required)::

        E = Σ_{(i,j) ∈ edges, i<j} ||μ_i − μ_j||²,   E_norm = E / Σ_{all pairs i<j} ||μ_i − μ_j||²

    over the nodes seen (rows without NaN); unseen nodes are dropped with their edges. E_norm is invariant to
    translation and scale; for i.i.d. random vectors its expectation is |edges| / C(n, 2) (0.2 on the 4x4 grid).

    ``variant="consecutive"`` (the predecessor's; ``x`` = one row per word occurrence in walk order, no adjacency)::

        E = Σ_t ||r_t − r_{t+1}||²

    and with ``normalized=True`` the same ratio as above with the T − 1 consecutive pairs as edges (NaN rows are
    not allowed here). Pass ``normalized=False`` to reproduce the predecessor's raw number.

    Returns NaN when fewer than two rows are usable or the denominator is zero.
    """
    arr = _reps(x, "x")
    if variant == "consecutive":
        if adjacency is not None:
            raise IclnbError("variant='consecutive' uses walk order, not a graph: leave adjacency as None")
        if np.isnan(arr).any():
            raise IclnbError("variant='consecutive' needs one finite row per word occurrence; x contains NaN")
        if arr.shape[0] < 2:
            return float("nan")
        diff = np.diff(arr, axis=0)
        energy = float(np.sum(diff * diff))
    elif variant == "graph":
        if adjacency is None:
            raise IclnbError("variant='graph' needs the graph's adjacency matrix (n_nodes x n_nodes)")
        adj = _adjacency(adjacency, arr.shape[0])
        seen = _seen_rows(arr)
        arr, adj = arr[seen], adj[np.ix_(seen, seen)]
        if arr.shape[0] < 2:
            return float("nan")
        energy = float(np.sum(np.triu(adj, 1) * _sq_dists(arr)))
    else:
        raise IclnbError(f"variant must be 'graph' or 'consecutive', got {variant!r}")
    if not normalized:
        return energy
    total = _sum_sq_all_pairs(arr)
    if total <= 0:
        return float("nan")
    ratio = energy / total
    # Edges of weight at most 1 are a subset of all pairs (consecutive pairs too), so E_norm lies in [0, 1]; the
    # sums' rounding can step past 1 by a few ulps (1.0000000000000058), which the definition rules out.
    bounded = variant == "consecutive" or float(np.max(adj, initial=0.0)) <= 1.0
    return min(max(ratio, 0.0), 1.0) if bounded else ratio


# ----------------------------------------------------------------------------------------------------------------
# cluster separation and coherence


def _cluster_stats(x: np.ndarray, lab: np.ndarray):
    """Per-cluster (sizes, centroids, sum of squared distances to the centroid), one row per distinct label."""
    _, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(-1)
    n_clusters = int(inv.max()) + 1 if inv.size else 0
    sizes = np.bincount(inv, minlength=n_clusters)
    sums = np.zeros((n_clusters, x.shape[1]))
    np.add.at(sums, inv, x)
    cent = sums / np.maximum(sizes, 1)[:, None]
    resid = x - cent[inv]
    ss = np.bincount(inv, weights=np.einsum("ij,ij->i", resid, resid), minlength=n_clusters)
    return sizes, cent, ss


def cluster_separation(reps, labels, *, variant: str = "unbiased") -> float:
    """Cluster separation Φ: between-centroid distance over within-cluster spread.

    ``variant="unbiased"`` (default). With clusters a of size n_a ≥ 2, centroid μ_a, unbiased
    (ddof=1) covariance Σ_a, C clusters and N points among them::

        B = mean_{a<b} ( ||μ_a − μ_b||² − tr Σ_a / n_a − tr Σ_b / n_b )
        W = Σ_a Σ_{i ∈ a} ||r_i − μ_a||² / (N − C)      (pooled within-cluster variance, summed over dimensions)
        Φ = B / W

    B is an unbiased estimate of the mean squared distance between the true cluster means (so Φ ≈ 0 on average for
    labels unrelated to the data, and can be slightly negative), W an unbiased estimate of the point-weighted mean
    total within-cluster variance; both are summed over dimensions, so Φ does not change when dimensions are
    duplicated. Clusters with a single member have no variance estimate and are left out.

    ``variant="legacy"`` (the predecessor's). Over all clusters present, with D dimensions::

        B = mean_{a<b} ||μ_a − μ_b||²                            (summed over dimensions)
        W = mean_a ( Σ_{i ∈ a} ||r_i − μ_a||² / ((n_a − 1) D) )  (ddof=1 variance averaged over dimensions)
        Φ = B / max(W, 1e-3 B)                                   (so Φ ≤ 1000)

    The variance is torch's default ``var`` (unbiased), which is NaN for a single row, so a cluster with one member
    makes the legacy Φ NaN, as it did for the predecessor.

    Returns NaN with fewer than two clusters or a zero denominator.
    """
    x = _reps(reps)
    lab = _labels(labels, x.shape[0])
    if variant not in ("unbiased", "legacy"):
        raise IclnbError(f"variant must be 'unbiased' or 'legacy', got {variant!r}")
    sizes, cent, ss = _cluster_stats(x, lab)
    if variant == "unbiased":
        keep = sizes >= 2
        sizes, cent, ss = sizes[keep], cent[keep], ss[keep]
    n_clusters = sizes.size
    if n_clusters < 2:
        return float("nan")
    n_pairs = n_clusters * (n_clusters - 1) / 2
    mean_pair = _sum_sq_all_pairs(cent) / n_pairs
    if variant == "unbiased":
        # Σ_{a<b} (c_a + c_b) = (C − 1) Σ_a c_a, so the mean over pairs is 2 mean_a c_a
        corr = (ss / (sizes - 1)) / sizes
        between = mean_pair - 2.0 * corr.mean()
        within = ss.sum() / (sizes.sum() - n_clusters)
    else:
        between = mean_pair
        if np.any(sizes < 2):
            return float("nan")
        within = float(np.mean(ss / (sizes - 1))) / x.shape[1]
        within = max(within, 1e-3 * between)
    if not within > 0:
        return float("nan")
    return float(between / within)


def separation_null(reps, nodes, node_cluster, *, n_perm: int = 100, rng,
                    variant: str = "unbiased") -> np.ndarray:
    """Null distribution of the cluster separation Φ for walk data: cluster labels permuted over nodes.

    Rows that repeat a node are not independent draws, so Φ of ``cluster_separation`` is not centred on 0 for labels
    unrelated to the data; the null keeps each node's occurrences together. With n = ``len(node_cluster)`` nodes,
    draw K = ``n_perm`` permutations π_k of the node ids 0..n−1 (the rows of
    ``rng.permuted(np.tile(np.arange(n), (K, 1)), axis=1)``) and return::

        Φ_k = cluster_separation(reps, [node_cluster[π_k[nodes[t]]] for t in rows], variant=variant)

    as a (K,) float64 array (NaN where Φ_k is undefined). The observed value is
    ``cluster_separation(reps, node_cluster[nodes], variant=variant)``.

    Φ depends on the rows only through the Gram matrix of the per-node sums s_v (after centring on the mean row), the
    node counts c_v and the per-node sums of squares, so with C clusters each permutation costs O(n² C) after an
    O(T d + n² d) precomputation, however many rows (T) and dimensions (d) there are. With S_a = Σ_{v ∈ a} s_v,
    n_a = Σ_{v ∈ a} c_v: μ_a · μ_b = S_a · S_b / (n_a n_b), and Σ_{i ∈ a} ||r_i − μ_a||² is the within-node sum of
    squares over the nodes of a plus Σ_{v ∈ a} ||s_v||² / c_v − ||S_a||² / n_a.

    ``nodes`` (T,) are the node ids of the rows, ``node_cluster`` (n,) the cluster of each node id; ``rng`` is a
    ``numpy.random.Generator`` or an int seed.
    """
    x = _reps(reps)
    if variant not in ("unbiased", "legacy"):
        raise IclnbError(f"variant must be 'unbiased' or 'legacy', got {variant!r}")
    clusters = np.asarray(node_cluster.detach().cpu().numpy() if hasattr(node_cluster, "detach") else node_cluster)
    if clusters.ndim != 1 or clusters.size < 1:
        raise IclnbError(f"node_cluster must be 1-D with one cluster per node id, got shape {clusters.shape}")
    n_nodes = clusters.size
    ids = _node_ids(nodes, x.shape[0], n_nodes)
    n_perm = int(n_perm)
    if n_perm < 0:
        raise IclnbError(f"n_perm must be non-negative, got {n_perm}")
    gen = as_generator(rng)
    order = gen.permuted(np.tile(np.arange(n_nodes), (n_perm, 1)), axis=1)
    if n_perm == 0:
        return np.zeros(0)
    _, cluster_of = np.unique(clusters, return_inverse=True)
    cluster_of = cluster_of.reshape(-1)
    n_clusters = int(cluster_of.max()) + 1

    # Φ is translation invariant; centring keeps the sums small, so the differences below lose no precision
    x = x - x.mean(axis=0) if x.shape[0] else x
    counts = np.bincount(ids, minlength=n_nodes)
    seen = np.flatnonzero(counts)
    sums = np.zeros((n_nodes, x.shape[1]))
    np.add.at(sums, ids, x)
    node_resid = x - (sums / np.maximum(counts, 1)[:, None])[ids]
    node_ss = np.bincount(ids, weights=np.einsum("ij,ij->i", node_resid, node_resid), minlength=n_nodes)
    c, s, w = counts[seen].astype(np.float64), sums[seen], node_ss[seen]
    gram = s @ s.T
    own = np.diag(gram) / c  # ||s_v||² / c_v = c_v ||m_v||²

    member = np.zeros((n_perm, n_clusters, seen.size))  # member[k, a, v]: node v in cluster a under π_k
    member[np.arange(n_perm)[:, None], cluster_of[order[:, seen]], np.arange(seen.size)[None, :]] = 1.0
    sizes = member @ c  # (K, C)
    cross = member @ gram @ member.transpose(0, 2, 1)  # (K, C, C): S_a · S_b
    sq_sums = np.diagonal(cross, axis1=1, axis2=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        between_nodes = member @ own - sq_sums / sizes
        # rounding leaves a tiny residue where a cluster's node means coincide: that spread is 0
        between_nodes = np.where(between_nodes > 1e-12 * (member @ own), between_nodes, 0.0)
        ss = member @ w + between_nodes
        keep = sizes >= (2 if variant == "unbiased" else 1)
        n_kept = keep.sum(axis=1)
        inv_n = np.where(keep, 1.0 / sizes, 0.0)
        # Σ_{a<b} ||μ_a − μ_b||² = K Σ_a ||μ_a||² − ||Σ_a μ_a||² over the K kept clusters
        norms = np.sum(sq_sums * inv_n**2, axis=1)
        total = np.einsum("ka,kab,kb->k", inv_n, cross, inv_n)
        mean_pair = (n_kept * norms - total) / (n_kept * (n_kept - 1) / 2.0)
        if variant == "unbiased":
            corr = np.where(keep, ss / (sizes - 1) / sizes, 0.0)
            between = mean_pair - 2.0 * corr.sum(axis=1) / n_kept
            within = np.sum(np.where(keep, ss, 0.0), axis=1) / (np.sum(np.where(keep, sizes, 0.0), axis=1) - n_kept)
        else:
            between = mean_pair
            within = np.sum(np.where(keep, ss / (sizes - 1), 0.0), axis=1) / n_kept / x.shape[1]
            within = np.where(np.any(sizes == 1, axis=1), np.nan, np.maximum(within, 1e-3 * between))
        phi = between / within
    return np.where((n_kept >= 2) & (within > 0), phi, np.nan)


def null_summary(observed, null_values, *, confidence: float = 0.95, alternative: str = "greater") -> dict:
    """A statistic against its permutation null (first axis of ``null_values`` = draws; NaN draws ignored).

    Returns ``null_mean`` (mean of the draws), ``null_ci_low`` and ``null_ci_high`` (the central ``confidence``
    interval of the draws: their (1 − c)/2 and (1 + c)/2 quantiles) and ``p_value`` =
    (1 + #{draws at least as extreme}) / (1 + #draws), one-sided "greater" by default (``iclnb.stats.
    permutation_pvalue``). Floats for a scalar ``observed``, arrays of its shape otherwise.
    """
    conf = check_confidence(confidence)
    obs = _to_numpy(observed, "observed")
    nul = _to_numpy(null_values, "null_values")
    if nul.ndim != obs.ndim + 1 or nul.shape[1:] != obs.shape:
        raise IclnbError(f"null_values must have shape (n_draws, *observed.shape) = (n, *{obs.shape}), "
                         f"got {nul.shape}")
    p = permutation_pvalue(obs, nul, alternative=alternative)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column of NaN draws gives NaN, not a warning
        mean = np.nanmean(nul, axis=0) if nul.shape[0] else np.full(obs.shape, np.nan)
        low, high = (np.nanquantile(nul, [(1 - conf) / 2, (1 + conf) / 2], axis=0) if nul.shape[0]
                     else np.full((2, *obs.shape), np.nan))

    def out(a):
        a = np.asarray(a, dtype=np.float64)
        return float(a) if a.ndim == 0 else a

    return {"null_mean": out(mean), "null_ci_low": out(low), "null_ci_high": out(high), "p_value": out(p)}


def coherence(reps, labels, *, variant: str = "centred") -> float:
    """Label coherence of directions: mean over pairs i<j of w_ij · cos(r_i − r̄, r_j − r̄).

    w_ij = +1 when i and j share a label, −0.5 otherwise; r̄ = (1/n) Σ_i r_i is the mean of the rows given (the
    context's mean word vector). ``variant="legacy"`` (the predecessor's) takes r̄ = 0: uncentred cosines.

    Residual streams share a dominant direction (uncentred cosines of 0.9 and above between unrelated words), so the
    legacy form is close to mean_{i<j} w_ij, a function of the cluster sizes only; centring removes that direction.

    Computed from per-label sums of unit vectors (no n x n matrix): Σ_{i<j same} cos = Σ_c (||Σ_{i∈c} u_i||² −
    Σ_{i∈c} ||u_i||²) / 2, likewise over all pairs. A zero vector (after centring: a row equal to the mean) has no
    direction and counts as cosine 0 with everything. NaN with fewer than two rows.
    """
    if variant not in ("centred", "legacy"):
        raise IclnbError(f"variant must be 'centred' or 'legacy', got {variant!r}")
    x = _reps(reps)
    lab = _labels(labels, x.shape[0])
    n = x.shape[0]
    if n < 2:
        return float("nan")
    tiny = 0.0
    if variant == "centred":
        # a row equal to the mean up to rounding is a zero vector, not a direction made of rounding noise
        tiny = 1e-12 * float(np.linalg.norm(x, axis=1).max())
        x = x - x.mean(axis=0)
    norms = np.linalg.norm(x, axis=1)
    u = np.divide(x, norms[:, None], out=np.zeros_like(x), where=norms[:, None] > tiny)
    self_dot = np.einsum("ij,ij->i", u, u)
    total = u.sum(axis=0)
    all_pairs = (total @ total - self_dot.sum()) / 2.0
    _, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(-1)
    csum = np.zeros((int(inv.max()) + 1, x.shape[1]))
    np.add.at(csum, inv, u)
    same = (np.sum(csum * csum) - self_dot.sum()) / 2.0
    other = all_pairs - same
    return float((same - 0.5 * other) / (n * (n - 1) / 2.0))


# ----------------------------------------------------------------------------------------------------------------
# geometry


def graph_distances(adjacency) -> np.ndarray:
    """All-pairs shortest-path lengths (hops) of an unweighted graph; inf between disconnected nodes."""
    adj = _adjacency(adjacency)
    return shortest_path(adj != 0, method="D", directed=False, unweighted=True)


def distance_correlation(means, adjacency) -> float:
    """Spearman correlation between graph distance and node-mean distance over node pairs.

    ρ = Spearman( {d_G(i, j)}, {||μ_i − μ_j||} ) over pairs i<j of seen nodes (rows without NaN) that are connected
    in the graph. Shortest paths are taken in the whole graph, whether or not the nodes on the path were seen.
    Node-mean distances that agree to 12 significant digits (of the largest) count as ties.
    NaN with fewer than three pairs or when either distance is constant.
    """
    mu = _reps(means, "means")
    adj = _adjacency(adjacency, mu.shape[0])
    dg = graph_distances(adj)
    seen = np.flatnonzero(_seen_rows(mu))
    if seen.size < 3:
        return float("nan")
    iu, ju = np.triu_indices(seen.size, 1)
    g = dg[seen[iu], seen[ju]]
    e = pdist(mu[seen])
    ok = np.isfinite(g)
    g, e = g[ok], e[ok]
    if e.size and e.max() > 0:
        # distances equal up to rounding (e.g. the equal chords of a regular polygon) are ties
        e = np.round(e / e.max(), 12)
    if g.size < 3 or np.ptp(g) == 0 or np.ptp(e) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = _sps.spearmanr(g, e).statistic
    return float(rho)


def spectral_embedding(adjacency, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The graph's Laplacian eigenmap: eigenvectors 2..k+1 of L = D − A.

    Returns ``(embedding, eigenvalues)`` of shapes ``(n, k)`` and ``(k,)``, eigenvalues ascending, skipping the
    constant eigenvector (eigenvalue 0). Columns have unit norm; the sign of each is fixed so that its largest-magnitude
    entry is positive. Within a repeated eigenvalue (e.g. the grid's x and y modes) any orthonormal basis of the
    eigenspace may come back: compare subspaces (``procrustes_fit``), not columns.
    """
    adj = _adjacency(adjacency)
    n = adj.shape[0]
    k = int(k)
    if not 1 <= k <= n - 1:
        raise IclnbError(f"k must lie in [1, n_nodes − 1] = [1, {n - 1}], got {k}")
    lap = np.diag(adj.sum(axis=1)) - adj
    vals, vecs = np.linalg.eigh(lap)
    emb = vecs[:, 1 : k + 1]
    flip = np.sign(emb[np.argmax(np.abs(emb), axis=0), np.arange(k)])
    return emb * np.where(flip == 0, 1.0, flip), vals[1 : k + 1]


def pca(means, k: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal components of node means (NaN rows ignored).

    Centres the seen rows and takes the SVD X_c = U S Vᵀ. Returns ``(coords, explained_variance_ratio, components)``:
    ``coords`` (n, k) = X_c V_k with NaN rows for unseen nodes, ratio (k,) = S_j² / Σ S², components (k, d) = V_kᵀ.
    Signs follow scikit-learn's convention (largest-magnitude loading of each component positive). Components beyond
    the rank the data allow (min(seen − 1, d)) are NaN.
    """
    mu = _reps(means, "means")
    k = int(k)
    if k < 1:
        raise IclnbError(f"k must be at least 1, got {k}")
    seen = _seen_rows(mu)
    x = mu[seen]
    n, d = mu.shape
    coords = np.full((n, k), np.nan)
    ratio = np.full(k, np.nan)
    comps = np.full((k, d), np.nan)
    if x.shape[0] < 2:
        return coords, ratio, comps
    xc = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    flip = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
    flip[flip == 0] = 1.0
    vt = vt * flip[:, None]
    total = np.sum(s**2)
    m = min(k, x.shape[0] - 1, d)
    comps[:m] = vt[:m]
    coords[np.flatnonzero(seen), :m] = xc @ vt[:m].T
    if total > 0:
        ratio[:m] = s[:m] ** 2 / total
    return coords, ratio, comps


def procrustes_fit(source, target) -> tuple[np.ndarray, float]:
    """Similarity Procrustes: the best map of ``source`` onto ``target`` by translation, rotation/reflection, scale.

    With both centred (X, Y), R = U Vᵀ from the SVD XᵀY = U S Vᵀ and s = tr S / ||X||²; aligned = s X R + ȳ.
    Returns ``(aligned, r2)`` with r2 = 1 − ||aligned − target||² / ||target − ȳ||² (fraction of the target's variance
    explained; 1 for an exact similarity copy). Rows with NaN in either input are left out of the fit and come back
    as NaN. NaN r2 with fewer than two usable rows or a constant target.
    """
    src = _to_numpy(source, "source", ndim=2)
    tgt = _to_numpy(target, "target", ndim=2)
    if src.shape != tgt.shape:
        raise IclnbError(f"source and target must have the same shape, got {src.shape} and {tgt.shape}")
    ok = ~(np.isnan(src).any(axis=1) | np.isnan(tgt).any(axis=1))
    aligned = np.full_like(src, np.nan)
    if ok.sum() < 2:
        return aligned, float("nan")
    x, y = src[ok], tgt[ok]
    xm, ym = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - xm, y - ym
    u, s, vt = np.linalg.svd(xc.T @ yc)
    rot = u @ vt
    xx = np.sum(xc * xc)
    scale = s.sum() / xx if xx > 0 else 0.0
    fitted = scale * xc @ rot + ym
    aligned[ok] = fitted
    total = np.sum(yc * yc)
    if not total > 0:
        return aligned, float("nan")
    return aligned, float(1.0 - np.sum((fitted - y) ** 2) / total)


# ----------------------------------------------------------------------------------------------------------------
# rule following


def neighbor_accuracy(probs, current_nodes, adjacency) -> dict[str, np.ndarray]:
    """Park et al.'s rule-following accuracy at each word position.

    ``probs[t, j]`` is the next-token probability of the first token of node j's word at word position t.
    raw_t = Σ_j A[c_t, j] probs[t, j] (mass on the current node's neighbours); renormalized_t = raw_t / Σ_j probs[t, j]
    (NaN where the total is 0). Returns ``{"raw": (T,), "renormalized": (T,)}``.
    """
    p = _to_numpy(probs, "probs", ndim=2)
    adj = _adjacency(adjacency, p.shape[1])
    cur = _node_ids(current_nodes, p.shape[0], p.shape[1])
    raw = np.sum(p * (adj[cur] != 0), axis=1)
    total = p.sum(axis=1)
    renorm = np.full_like(raw, np.nan)
    np.divide(raw, total, out=renorm, where=total > 0)
    return {"raw": raw, "renormalized": renorm}


def copy_baseline(walk, adjacency) -> np.ndarray:
    """Accuracy of an ideal recaller of transitions already in the context.

    At word position t the recaller knows the transitions (walk[s], walk[s+1]) with s + 1 ≤ t. It spreads its mass
    uniformly over the distinct successors of walk[t] among them; when walk[t] has none yet it spreads its mass
    uniformly over all n nodes. Its score (comparable to ``neighbor_accuracy(...)["raw"]``) is the mass on true
    neighbours of walk[t]: the fraction of recalled successors that are neighbours (1 for a walk on this graph), or
    deg(walk[t]) / n when nothing is recalled. Returns a (T,) float array.
    """
    adj = _adjacency(adjacency)
    n = adj.shape[0]
    w = np.asarray(walk.detach().cpu().numpy() if hasattr(walk, "detach") else walk)
    if w.ndim != 1:
        raise IclnbError(f"walk must be a 1-D sequence of node ids, got shape {w.shape}")
    w = _node_ids(w, w.shape[0], n)
    T = w.size
    # first_seen[u, v]: the first position t at which the transition u -> v is in the context (t = s + 1)
    first_seen = np.full((n, n), np.iinfo(np.int64).max, dtype=np.int64)
    if T > 1:
        np.minimum.at(first_seen, (w[:-1], w[1:]), np.arange(1, T))
    recalled = first_seen[w] <= np.arange(T)[:, None]
    n_recalled = recalled.sum(axis=1)
    neighbours = adj[w] != 0
    hits = np.sum(recalled & neighbours, axis=1)
    fallback = neighbours.sum(axis=1) / n
    out = fallback.astype(np.float64)
    has = n_recalled > 0
    out[has] = hits[has] / n_recalled[has]
    return out


# ----------------------------------------------------------------------------------------------------------------
# collapse


def participation_ratio(reps) -> float:
    """Participation-ratio dimension (Σλ)² / Σλ² of the centred representations.

    λ are the eigenvalues of the n x n Gram matrix K = X_c X_cᵀ (the same non-zero spectrum as the covariance), so
    PR = (tr K)² / ||K||_F², with no eigendecomposition. NaN with fewer than two rows or all rows equal.
    """
    x = _reps(reps)
    if x.shape[0] < 2:
        return float("nan")
    xc = x - x.mean(axis=0)
    gram = xc @ xc.T
    frob = np.sum(gram * gram)
    if not frob > 0:
        return float("nan")
    return float(np.trace(gram) ** 2 / frob)


def twonn_dimension(reps) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017), maximum-likelihood form.

    For each point, μ_i = r₂ / r₁, the ratio of its second- to first-nearest-neighbour distances; d = N / Σ_i log μ_i
    over the N points with r₁ > 0 (exact duplicates are dropped). NaN with fewer than three distinct points.
    """
    x = _reps(reps)
    x = np.unique(x, axis=0)
    n = x.shape[0]
    if n < 3:
        return float("nan")
    d2 = _sq_dists(x)
    np.fill_diagonal(d2, np.inf)
    nearest = np.partition(d2, 1, axis=1)[:, :2]
    r1, r2 = np.sqrt(nearest[:, 0]), np.sqrt(nearest[:, 1])
    ok = r1 > 0
    log_mu = np.log(r2[ok] / r1[ok])
    s = log_mu.sum()
    if not s > 0:
        return float("nan")
    return float(ok.sum() / s)


def collapse_stats(reps, window: int | None = 50) -> dict[str, float]:
    """Collapse statistics of the last ``window`` representations (all rows when ``window`` is None).

    Returns a dict of floats:

    * ``mean_cosine``: mean over pairs i<j of cos(r_i, r_j);
    * ``mean_cosine_centered``: the same after subtracting the window mean;
    * ``mean_l2``: mean over pairs i<j of ||r_i − r_j||;
    * ``spread``: tr Cov(r) (unbiased, ddof=1);
    * ``participation_ratio``: see ``participation_ratio``;
    * ``twonn_dimension``: see ``twonn_dimension``;
    * ``n``: the number of rows used.
    """
    x = _reps(reps)
    if window is not None:
        if int(window) < 1:
            raise IclnbError(f"window must be a positive number of positions or None, got {window}")
        x = x[-int(window) :]
    n = x.shape[0]
    out = {"n": float(n)}
    if n < 2:
        nan = float("nan")
        out.update(mean_cosine=nan, mean_cosine_centered=nan, mean_l2=nan, spread=nan,
                   participation_ratio=nan, twonn_dimension=nan)
        return out

    def mean_cos(v):
        norms = np.linalg.norm(v, axis=1)
        u = np.divide(v, norms[:, None], out=np.zeros_like(v), where=norms[:, None] > 0)
        tot = u.sum(axis=0)
        return float((tot @ tot - np.sum(u * u)) / (n * (n - 1)))

    xc = x - x.mean(axis=0)
    out["mean_cosine"] = mean_cos(x)
    out["mean_cosine_centered"] = mean_cos(xc)
    out["mean_l2"] = float(pdist(x).mean())
    out["spread"] = float(np.sum(xc * xc) / (n - 1))
    out["participation_ratio"] = participation_ratio(x)
    out["twonn_dimension"] = twonn_dimension(x)
    return out


#: Label permutations per context and layer for the null of Φ in :func:`context_metrics` (their mean is the
#: context's ``phi_null``).
CONTEXT_NULL_PERMUTATIONS = 20


def context_metrics(reps: np.ndarray, nodes: np.ndarray, graph, keep: np.ndarray, label: str = "own",
                    null_rng=None, n_null: int = CONTEXT_NULL_PERMUTATIONS) -> dict:
    """Φ (cluster separation) with its null, normalised and raw Dirichlet energy and coherence of one context's word
    representations at one layer.

    reps: (n_words, d); nodes: (n_words,) node of each word; keep: words that count (the sink word excluded).
    label="own" labels each word by its own node's cluster; "next" by the next word's (the predecessor's alignment).
    ``phi_null`` is the mean of Φ over ``n_null`` permutations of the cluster labels over nodes (the node that
    labels a word: its own, or the next one), drawn from ``null_rng``; NaN without a generator.
    """
    clusters = graph.labelings["cluster"]
    if label == "next":
        label_nodes = np.append(nodes[1:], nodes[-1])
        keep = keep & (np.arange(len(nodes)) < len(nodes) - 1)
    else:
        label_nodes = nodes
    x, lab_nodes = reps[keep], label_nodes[keep]
    lab = clusters[lab_nodes]
    means, _ = node_means(x, nodes[keep], graph.n)
    null = (np.nan if null_rng is None else
            float(np.nanmean(separation_null(x, lab_nodes, clusters, n_perm=n_null, rng=null_rng))))
    return {
        "phi": cluster_separation(x, lab),
        "phi_null": null,
        "energy_norm": dirichlet_energy(means, graph.adjacency, normalized=True),
        "energy_raw": dirichlet_energy(means, graph.adjacency, normalized=False),
        "coherence": coherence(x, lab),
    }
