"""Metrics of a context read under two hypotheses (a dual graph: clusterings H1, H2 and graphs G1, G2 of one word
set; docs/methods.md, Superposition and Graph adherence).

Per position (:func:`hypothesis_distances`): the distance of a word's vector to the centroid of its H1 cluster-mates
and to the centroid of its H2 cluster-mates, each centroid built from the node means of that clustering's mates over
a trailing window of the context (the word's own node left out of both, so neither centroid contains the vector it
is compared with); :func:`superposition_score` (d_H2 − d_H1) / ||c_H1 − c_H2|| lies in [−1, 1] by the triangle
inequality (+1: at the H1 centroid's side, −1: at H2's, 0: equidistant). :func:`velocity` is ||r_t − r_{t−1}||,
:func:`residual_norm` the mean vector norm that makes distances comparable across layers; :func:`window_change` the
mean of a series just after a step minus just before it.

Per window of word positions (graph adherence), each oriented so that a value above 0.5 means H1:
:func:`edge_energy_ratio`, :func:`separation_ratio`, :func:`knn_consistency` (over node means) and
:func:`grouped_probe_accuracy` (a ridge linear probe whose folds never hold one node in both train and test).
"""

from __future__ import annotations

import numpy as np

from iclnb.core.errors import IclnbError
from iclnb.metrics.structure import node_means_prefix

__all__ = ["hypothesis_distances", "superposition_score", "velocity", "residual_norm", "window_change",
           "exclusive_edges", "edge_energy_ratio", "separation", "separation_ratio", "knn_consistency",
           "node_folds", "grouped_probe_accuracy", "oriented_ratio"]


def _reps(reps) -> np.ndarray:
    x = np.asarray(reps, dtype=np.float64)
    if x.ndim != 2:
        raise IclnbError(f"reps must be a 2-D array (positions x dimensions), got shape {x.shape}")
    return x


def _valid(valid, n: int) -> np.ndarray:
    if valid is None:
        return np.ones(n, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (n,):
        raise IclnbError(f"valid must have one entry per position ({n}), got shape {valid.shape}")
    return valid


# ------------------------------------------------------------------------------------------------- per position


def hypothesis_distances(reps, nodes, labels_a, labels_b, window: int | None = None, valid=None) -> dict:
    """Distances of each position's vector to its cluster-mates under two clusterings.

    For position t with node v = nodes[t], the node means μ_u(t) use the rows s with max(0, t + 1 − w) ≤ s ≤ t
    (``window`` w rows; all rows up to t when None) that are ``valid`` (the attention-sink word is not). The
    centroid of v's mates under a labeling L is the unweighted mean of μ_u(t) over the nodes u ≠ v with
    L[u] = L[v] seen in that window::

        c_L(t) = mean_{u ≠ v, L[u] = L[v], u seen} μ_u(t),   d_L(t) = ||r_t − c_L(t)||

    Returns ``{"d_a", "d_b", "between"}``: float arrays (T,) with ``between`` = ||c_a(t) − c_b(t)||; NaN where the
    position is not valid or a labeling has no mate of v in the window.
    """
    x = _reps(reps)
    T = x.shape[0]
    nodes = np.asarray(nodes, dtype=np.int64)
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    n = a.shape[0]
    if nodes.shape != (T,) or b.shape != (n,) or (T and (nodes.min() < 0 or nodes.max() >= n)):
        raise IclnbError(f"nodes must hold one node index in [0, {n}) per row of reps, and both labelings one "
                         "label per node")
    valid = _valid(valid, T)
    ids = np.where(valid, nodes, n)  # invalid rows go to a dummy node that no centroid uses
    means, counts = node_means_prefix(x, ids, n + 1, np.arange(1, T + 1), window)
    means, seen = np.nan_to_num(means[:, :n]), counts[:, :n] > 0
    others = np.arange(n)[None, :] != nodes[:, None]
    centroids = []
    for labels in (a, b):
        mates = (seen & others & (labels[None, :] == labels[nodes][:, None])).astype(np.float64)
        size = mates.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            c = np.einsum("tn,tnd->td", mates, means) / size[:, None]
        c[(size == 0) | ~valid] = np.nan
        centroids.append(c)
    return {"d_a": np.linalg.norm(x - centroids[0], axis=1), "d_b": np.linalg.norm(x - centroids[1], axis=1),
            "between": np.linalg.norm(centroids[0] - centroids[1], axis=1)}


def superposition_score(d_a, d_b, between) -> np.ndarray:
    """(d_b − d_a) / between, in [−1, 1]: +1 at hypothesis a's side, −1 at b's, 0 equidistant (NaN where between
    is 0 or undefined)."""
    d_a, d_b, between = (np.asarray(v, dtype=np.float64) for v in (d_a, d_b, between))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(between > 0, (d_b - d_a) / between, np.nan)


def velocity(reps, valid=None) -> np.ndarray:
    """||r_t − r_{t−1}|| per position (T,); NaN at position 0 and wherever t or t − 1 is not valid."""
    x = _reps(reps)
    valid = _valid(valid, x.shape[0])
    out = np.full(x.shape[0], np.nan)
    if x.shape[0] > 1:
        out[1:] = np.linalg.norm(np.diff(x, axis=0), axis=1)
        out[1:][~(valid[1:] & valid[:-1])] = np.nan
    return out


def residual_norm(reps, valid=None) -> float:
    """The typical residual norm of one context at one layer: the mean of ||r_t|| over the valid positions."""
    x = _reps(reps)
    valid = _valid(valid, x.shape[0])
    return float(np.linalg.norm(x[valid], axis=1).mean()) if valid.any() else float("nan")


def window_change(series, at: int, width: int) -> float:
    """mean(series[at : at + width]) − mean(series[at − width : at]), NaN-aware; NaN when a side has no finite
    value or the windows do not fit."""
    s = np.asarray(series, dtype=np.float64)
    at, width = int(at), int(width)
    if width < 1 or at - width < 0 or at + width > s.shape[0]:
        return float("nan")
    after, before = s[at : at + width], s[at - width : at]
    if not (np.isfinite(after).any() and np.isfinite(before).any()):
        return float("nan")
    return float(np.nanmean(after) - np.nanmean(before))


# ------------------------------------------------------------------------------------------------- per window


def oriented_ratio(for_a, for_b) -> float:
    """for_a / (for_a + for_b) for two non-negative scores (NaN when both are 0 or either is undefined)."""
    total = for_a + for_b
    return float(for_a / total) if np.isfinite(total) and total > 0 else float("nan")


def exclusive_edges(adjacency_a, adjacency_b) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) pairs, i < j, of the edges in a but not b, and in b but not a."""
    a, b = np.asarray(adjacency_a) > 0, np.asarray(adjacency_b) > 0
    return np.argwhere(np.triu(a & ~b, 1)), np.argwhere(np.triu(b & ~a, 1))


def _mean_edge_sq(means: np.ndarray, edges: np.ndarray) -> float:
    if edges.size == 0:
        return float("nan")
    d = means[edges[:, 0]] - means[edges[:, 1]]
    sq = np.einsum("ij,ij->i", d, d)
    sq = sq[np.isfinite(sq)]
    return float(sq.mean()) if sq.size else float("nan")


def edge_energy_ratio(means, adjacency_a, adjacency_b) -> dict:
    """Energy of node means on the edges only one graph has: e_L = mean over edges of G_L not in the other graph
    (both ends seen) of ||μ_i − μ_j||². ``ratio`` = e_b / (e_a + e_b): above 0.5 when a's own edges are shorter
    (the means follow a). Edges both graphs share tell the hypotheses apart no more than a common step does, so
    they are left out."""
    m = np.asarray(means, dtype=np.float64)
    only_a, only_b = exclusive_edges(adjacency_a, adjacency_b)
    e_a, e_b = _mean_edge_sq(m, only_a), _mean_edge_sq(m, only_b)
    return {"a": e_a, "b": e_b, "ratio": oriented_ratio(e_b, e_a)}


def separation(means, labels) -> float:
    """Between/within ratio of node means under a labeling (seen nodes only): the mean squared distance between
    cluster centroids over the pooled within-cluster variance Σ ||μ_i − c_L(i)||² / (n − C). Uncorrected, so
    never negative; NaN with fewer than two clusters or no within-cluster degrees of freedom."""
    m = np.asarray(means, dtype=np.float64)
    seen = np.isfinite(m).all(axis=1)
    m, lab = m[seen], np.asarray(labels)[seen]
    classes, inv = np.unique(lab, return_inverse=True)
    C, n = classes.size, m.shape[0]
    if C < 2 or n <= C:
        return float("nan")
    cent = np.stack([m[inv == c].mean(axis=0) for c in range(C)])
    i, j = np.triu_indices(C, 1)
    between = float(np.mean(np.sum((cent[i] - cent[j]) ** 2, axis=1)))
    within = float(np.sum((m - cent[inv]) ** 2)) / (n - C)
    return between / within if within > 0 else float("nan")


def separation_ratio(means, labels_a, labels_b) -> dict:
    """:func:`separation` under each labeling and ``ratio`` = S_a / (S_a + S_b) (above 0.5: a separates more)."""
    s_a, s_b = separation(means, labels_a), separation(means, labels_b)
    return {"a": s_a, "b": s_b, "ratio": oriented_ratio(s_a, s_b)}


def knn_consistency(means, labels, k: int) -> float:
    """Mean over seen nodes of the fraction of its ``k`` nearest other seen nodes (node means, Euclidean) that
    share its label (k is capped at the number of other seen nodes; NaN with fewer than two seen nodes)."""
    m = np.asarray(means, dtype=np.float64)
    seen = np.flatnonzero(np.isfinite(m).all(axis=1))
    if seen.size < 2:
        return float("nan")
    x, lab = m[seen], np.asarray(labels)[seen]
    d = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=2)
    np.fill_diagonal(d, np.inf)
    k = min(int(k), seen.size - 1)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :k]
    return float(np.mean(lab[nearest] == lab[:, None]))


def node_folds(n_nodes: int, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold of each node: a seeded permutation of the nodes cut into ``n_folds`` nearly equal parts."""
    if not 2 <= int(n_folds) <= int(n_nodes):
        raise IclnbError(f"n_folds must lie in [2, {n_nodes}] (the number of nodes), got {n_folds}")
    folds = np.empty(n_nodes, dtype=np.int64)
    for f, part in enumerate(np.array_split(rng.permutation(n_nodes), int(n_folds))):
        folds[part] = f
    return folds


def grouped_probe_accuracy(x, labelings, nodes, folds, ridge: float = 1.0) -> list[float]:
    """Held-out accuracy of a ridge linear probe for each labeling, with folds of nodes: the rows of the nodes in
    fold f are predicted by a probe trained on the rows of all other nodes, so a node is never in both.

    Each labeling is an array of one class per node; a row's class is its node's. The probe is ridge regression on
    one-hot targets with an intercept (features and targets centred on the training rows), penalty
    ``ridge`` x mean squared norm of the centred training rows (scale-free), predicting the class with the largest
    score; the same predictions as scikit-learn's ``RidgeClassifier`` with that penalty. Chance is about 1 / C.
    Returns one accuracy per labeling (NaN when no fold could be tested).
    """
    x = _reps(x)
    nodes = np.asarray(nodes, dtype=np.int64)
    fold_of_row = np.asarray(folds)[nodes]
    classes = [np.asarray(lab)[nodes] for lab in labelings]
    n_cls = [int(np.asarray(lab).max()) + 1 for lab in labelings]
    Y = np.concatenate([np.eye(c)[y] for c, y in zip(n_cls, classes)], axis=1)
    bounds = np.cumsum([0, *n_cls])
    correct = np.zeros(len(labelings))
    tested = 0
    for f in np.unique(fold_of_row):
        test, train = fold_of_row == f, fold_of_row != f
        if train.sum() < 2:
            continue
        mu, ybar = x[train].mean(axis=0), Y[train].mean(axis=0)
        xtr, xte = x[train] - mu, x[test] - mu
        K = xtr @ xtr.T
        lam = float(ridge) * np.trace(K) / K.shape[0]
        if not lam > 0:
            continue
        alpha = np.linalg.solve(K + lam * np.eye(K.shape[0]), Y[train] - ybar)
        scores = (xte @ xtr.T) @ alpha + ybar
        for i in range(len(labelings)):
            pred = np.argmax(scores[:, bounds[i] : bounds[i + 1]], axis=1)
            correct[i] += np.sum(pred == classes[i][test])
        tested += int(test.sum())
    if tested == 0:
        return [float("nan")] * len(labelings)
    return [float(c / tested) for c in correct]
