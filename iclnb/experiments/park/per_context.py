"""reproduce_park, per context: every statistic of one context from its word states.

From one forward pass over a context (the states of a prefix do not depend on what follows), for each layer and
context length: node means over a trailing window of tokens, their E_norm, distance correlation, PCA and Procrustes
fit to the graph's spectral embedding, for three variants (the default with the attention sink excluded, the sink
included, node identities shuffled); and the rule-following accuracy and copying baseline at every word position.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from iclnb import graphs as G
from iclnb.core.seeding import stream
from iclnb.metrics import (copy_baseline, dirichlet_energy, distance_correlation, graph_distances, neighbor_accuracy,
                           node_means_prefix, pca, procrustes_fit, spectral_embedding)

__all__ = ["N_PCS", "VARIANTS", "N_RING_NULL", "context_geometry", "pair_r2", "pair_targets", "context_statistics"]

#: PCs kept per (layer, context length): the days-of-week test looks at PCs 1-4.
N_PCS = 4
#: The default (sink excluded) and the two negative controls.
VARIANTS = ("default", "sink_included", "shuffled_labels")
#: Random ring orders: the null for "this PC pair carries that ring".
N_RING_NULL = 20


def context_geometry(spans: np.ndarray, context_tokens, window_tokens: int) -> dict:
    """Convert context lengths and the window from tokens to word positions for one encoding.

    For a context of t tokens, the context holds the words whose span ends at or before t; the window holds those
    of them whose span starts at or after t - window_tokens; the sink (token 0) lies in the window when
    t <= window_tokens. Returns arrays ``words``, ``window_words`` and ``window_has_sink`` (one entry per context
    length).
    """
    spans = np.asarray(spans)
    t = np.asarray(context_tokens, dtype=np.int64)
    words = np.searchsorted(spans[:, 1], t, side="right")
    first = np.searchsorted(spans[:, 0], t - int(window_tokens), side="left")
    window_words = np.maximum(words - first, 0)
    return {"words": words, "window_words": window_words, "window_has_sink": t <= int(window_tokens)}


def _means_at(reps: np.ndarray, nodes: np.ndarray, n: int, ends: np.ndarray, windows: np.ndarray):
    """Node means (len(ends), n, d) with a window per context length (rows), grouped so that each distinct window is
    one ``node_means_prefix`` call. Rows whose node id is n are ignored (the excluded sink)."""
    out = np.full((len(ends), n, reps.shape[1]), np.nan)
    counts = np.zeros((len(ends), n), dtype=np.int64)
    for w in np.unique(windows):
        idx = np.flatnonzero(windows == w)
        if w < 1:
            continue
        m, c = node_means_prefix(reps, nodes, n + 1, ends[idx], window=int(w))
        out[idx], counts[idx] = m[:, :n], c[:, :n]
    return out, counts


def pair_r2(coords: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Procrustes r2 of every pair of PCs (i < j among the columns of coords) onto a 2-D target."""
    pairs = list(combinations(range(coords.shape[1]), 2))
    return np.array([procrustes_fit(coords[:, [i, j]], target)[1] for i, j in pairs])


def _geometry_stats(means: np.ndarray, adjacency: np.ndarray, spectral: np.ndarray, targets: dict,
                    coords=None, ratio=None) -> dict:
    """Scalar geometry of one node-means matrix (n, d); ``coords``/``ratio``: its PCA when already computed."""
    if coords is None:
        coords, ratio, _ = pca(means, k=N_PCS)
    out = {
        "energy_norm": dirichlet_energy(means, adjacency),
        "energy_raw": dirichlet_energy(means, adjacency, normalized=False),
        "distance_correlation": distance_correlation(means, adjacency),
        "procrustes_r2": procrustes_fit(coords[:, :2], spectral)[1],
        "explained_variance": ratio,
    }
    for name, target in targets.items():
        out[f"pc_pairs_r2_{name}"] = pair_r2(coords, target)
    return out


def _shuffled_stats(means: np.ndarray, coords: np.ndarray, perms, adjacency: np.ndarray,
                    spectral: np.ndarray) -> dict:
    """E_norm, distance correlation and Procrustes r2 with node identities permuted, averaged over ``perms``.

    Permuting node identities permutes the rows of the means, of their pairwise distances and of their PCA
    coordinates, so those are computed once. Falls back to the plain metrics when some node is unseen.
    """
    keys = ("energy_norm", "distance_correlation", "procrustes_r2")
    if np.isnan(means).any():
        vals = [_geometry_stats(means[p], adjacency, spectral, {}, coords[p], None) for p in perms]
        return {k: float(np.nanmean([v[k] for v in vals])) for k in keys}
    from scipy.spatial.distance import pdist, squareform
    from scipy.stats import rankdata

    n = means.shape[0]
    dist = squareform(pdist(means))
    iu = np.triu_indices(n, 1)
    total = float(np.sum(dist[iu] ** 2))
    g = graph_distances(adjacency)[iu]
    g_rank = rankdata(g)
    edges = np.triu(adjacency, 1)[iu] != 0
    scale = dist.max() if dist.max() > 0 else 1.0
    out = {k: [] for k in keys}
    for p in perms:
        e = dist[np.ix_(p, p)][iu]
        out["energy_norm"].append(float(np.sum(e[edges] ** 2) / total) if total > 0 else np.nan)
        r = rankdata(np.round(e / scale, 12))
        out["distance_correlation"].append(float(np.corrcoef(g_rank, r)[0, 1]) if np.ptp(r) > 0 else np.nan)
        out["procrustes_r2"].append(procrustes_fit(coords[p][:, :2], spectral)[1])
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else np.nan for k, v in out.items()}


def _circle(angles_index: np.ndarray, n: int) -> np.ndarray:
    a = 2 * np.pi * np.asarray(angles_index) / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def pair_targets(graph: G.Graph) -> dict:
    """2-D targets whose location among PCs 1-4 is reported: for days_of_week_ring the calendar circle, the
    in-context ring, and ``null_<i>``: rings through the nodes in random orders (a stream fixed by the graph), whose
    best-pair fit is the level a ring with no relation to the representation reaches. Empty for other graphs."""
    if graph.name != "days_of_week_ring":
        return {}
    order = np.asarray(graph.extra["calendar_order"])
    targets = {"calendar": _circle(order, graph.n), "in_context": _circle(np.arange(graph.n), graph.n)}
    rng = stream(0, "random_ring_orders", *order.tolist())
    for i in range(N_RING_NULL):
        targets[f"null_{i}"] = _circle(rng.permutation(graph.n), graph.n)
    return targets


def context_statistics(states, walk: np.ndarray, graph: G.Graph, layers, context_tokens, window_tokens: int,
                       sink_state: dict | None, rng: np.random.Generator, n_shuffles: int = 10):
    """All statistics of one context from its word states (``iclnb.represent.WordStates``).

    sink_state: layer -> (d,) residual at token 0 (BOS) for models with BOS, else None (then the sink is the first
    word's own state). Returns ``(item, arrays)``: ``item`` is the JSON-safe checkpoint entry (per-position accuracy,
    (layer, context length) statistics for each variant), ``arrays`` the node means to keep on disk (``means`` of
    the default variant, ``sink_means`` for the context lengths whose window holds the sink).
    """
    n = graph.n
    adj = np.asarray(graph.adjacency, dtype=np.float64)
    spectral = spectral_embedding(adj, 2)[0]
    targets = pair_targets(graph)
    walk = np.asarray(walk)
    acc = neighbor_accuracy(states.token_probs, walk, adj)
    geo = context_geometry(states.encoding.spans, context_tokens, window_tokens)
    ends, windows, has_sink = geo["words"], geo["window_words"], geo["window_has_sink"]
    nodes_default = np.where(states.sink, n, walk)  # the sink word (models without BOS) is excluded by default
    bos = sink_state is not None
    perms = [rng.permutation(n) for _ in range(n_shuffles)]

    n_l, n_c = len(layers), len(ends)
    stats = {v: {} for v in VARIANTS}
    means_all = np.full((n_l, n_c, n, states.reps[layers[0]].shape[1]), np.nan, dtype=np.float32)
    sink_idx = np.flatnonzero(has_sink)
    sink_means = np.full((n_l, len(sink_idx), n, means_all.shape[-1]), np.nan, dtype=np.float32)

    def put(variant, li, ci, values):
        for key, val in values.items():
            arr = stats[variant].setdefault(key, np.full((n_l, n_c) + np.shape(val), np.nan))
            arr[li, ci] = val

    for li, k in enumerate(layers):
        reps = states.reps[k]
        means, _ = _means_at(reps, nodes_default, n, ends, windows)
        means_all[li] = means
        # the sink included: its state joins the node means as an occurrence of the first word's node
        if bos:
            reps_s = np.concatenate([np.asarray(sink_state[k], dtype=reps.dtype)[None], reps])
            nodes_s = np.concatenate([walk[:1], walk])
            ends_s, windows_s = ends + 1, windows + has_sink.astype(np.int64)
        else:
            reps_s, nodes_s, ends_s, windows_s = reps, walk, ends, windows
        means_s, _ = _means_at(reps_s, nodes_s, n, ends_s, windows_s)
        sink_means[li] = means_s[sink_idx]
        for ci in range(n_c):
            coords, ratio, _ = pca(means[ci], k=N_PCS)
            put("default", li, ci, _geometry_stats(means[ci], adj, spectral, targets, coords, ratio))
            if has_sink[ci]:
                put("sink_included", li, ci, _geometry_stats(means_s[ci], adj, spectral, targets))
            else:  # the window does not reach token 0: the same node means
                put("sink_included", li, ci, _geometry_stats(means[ci], adj, spectral, targets, coords, ratio))
            # node identities permuted: the means stay, their assignment to graph nodes is random
            put("shuffled_labels", li, ci, _shuffled_stats(means[ci], coords, perms, adj, spectral))
    item = {
        "accuracy_raw": acc["raw"],
        "accuracy_renormalized": acc["renormalized"],
        "copy_baseline": copy_baseline(walk, adj),
        "word_end_tokens": states.encoding.spans[:, 1],
        "context_words": ends,
        "window_words": windows,
        "stats": stats,
    }
    return item, {"means": means_all, "sink_means": sink_means, "sink_context_index": sink_idx}
