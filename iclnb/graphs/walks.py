"""Walks over a graph: the cluster-aware random walk, the ambiguous walk of a dual graph, and per-position
helpers (bridge / anchor, words)."""

from __future__ import annotations

import math

import numpy as np

from iclnb.core.errors import IclnbError
from iclnb.graphs.graph import Graph, check_int, check_rng

def hypothesis_adjacency(graph: Graph, hypothesis: str) -> np.ndarray:
    """The adjacency of a dual graph under ``hypothesis``: ``"H1"`` -> ``adjacency``, ``"H2"`` -> G2."""
    if "G2_adjacency" not in graph.extra:
        raise IclnbError(f"graph {graph.name!r} has no second graph; hypotheses need a dual graph (iclnb.graphs.dual)")
    if hypothesis == "H1":
        return graph.adjacency
    if hypothesis == "H2":
        return np.asarray(graph.extra["G2_adjacency"])
    raise IclnbError(f"hypothesis must be 'H1' or 'H2', got {hypothesis!r}")


def check_adjacency_override(graph: Graph, adjacency) -> np.ndarray:
    """The adjacency a walk follows: ``graph``'s own if ``adjacency`` is None, else ``adjacency``, checked (n, n)."""
    if adjacency is None:
        return graph.adjacency
    adjacency = np.asarray(adjacency)
    if adjacency.shape != (graph.n, graph.n):
        raise IclnbError(f"adjacency must have shape ({graph.n}, {graph.n}), got {adjacency.shape}")
    return adjacency


def random_walk(
    graph: Graph,
    length: int,
    rng: np.random.Generator,
    start: int | None = None,
    bridge_penalty: float = 1.0,
    adjacency: np.ndarray | None = None,
) -> np.ndarray:
    """A walk of ``length`` node indices.

    Start uniformly at random unless ``start`` is given; each next node is a neighbour j of the current node i
    drawn with weight ``bridge_penalty ** (hierarchy_distance[i, j] - 1)`` (1 inside a finest cluster;
    ``bridge_penalty=1`` is Park's uniform walk; graphs without a hierarchy distance ignore it). ``adjacency``
    replaces the graph's own (e.g. a dual graph's G2). Draw order: the start (when not given), then one uniform
    per step.
    """
    length = check_int("length", length, 0)
    rng = check_rng(rng)
    try:
        bridge_penalty = float(bridge_penalty)
    except (TypeError, ValueError):
        raise IclnbError(f"bridge_penalty must be a positive number, got {bridge_penalty!r}") from None
    if not (bridge_penalty > 0 and math.isfinite(bridge_penalty)):
        raise IclnbError(f"bridge_penalty must be a positive finite number, got {bridge_penalty}")
    adjacency = check_adjacency_override(graph, adjacency)
    weights = (adjacency > 0).astype(float)
    if graph.hierarchy_distance is not None and bridge_penalty != 1.0:
        exponent = np.maximum(graph.hierarchy_distance - 1, 0)
        weights *= bridge_penalty ** exponent.astype(float)
    totals = weights.sum(axis=1)
    isolated = np.flatnonzero(totals == 0)
    if isolated.size:
        names = ", ".join(f"{i} ({graph.words[i]})" for i in isolated[:5])
        raise IclnbError(f"node(s) {names} have no neighbours, so a walk cannot leave them; use a connected graph")
    if start is None:
        current = int(rng.integers(graph.n))
    else:
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < graph.n:
            raise IclnbError(f"start must be a node index in [0, {graph.n}), got {start!r}")
        current = int(start)
    if length == 0:
        return np.zeros(0, dtype=np.int64)
    # Per node, the cumulative weights of its neighbours normalised to 1: a step is one binary search.
    neighbours = [np.flatnonzero(row) for row in weights]
    row_cumulative = []
    for i, nbrs in enumerate(neighbours):
        cumulative = np.cumsum(weights[i, nbrs]) / totals[i]
        cumulative[-1] = np.inf  # rounding must never let a uniform fall past the last neighbour
        row_cumulative.append(cumulative)
    uniforms = rng.random(length - 1)
    walk = np.empty(length, dtype=np.int64)
    walk[0] = current
    for t in range(1, length):
        k = int(np.searchsorted(row_cumulative[current], uniforms[t - 1], side="right"))
        current = int(neighbours[current][k])
        walk[t] = current
    return walk


def dual_walk(
    graph: Graph,
    length: int,
    rng: np.random.Generator,
    hypothesis: str,
    disambiguate_at: int | None = None,
    max_tries: int = 100,
) -> np.ndarray:
    """An ambiguous walk on a dual graph that is resolved at step ``disambiguate_at`` (D) in favour of ``hypothesis``.

    Position 0 is uniform. For positions 1 .. D-1 the next node is uniform over neighbours valid in both G1 and G2;
    position D is uniform over neighbours valid only under ``hypothesis``; positions after D follow that
    hypothesis's graph uniformly. ``disambiguate_at=None`` keeps the walk ambiguous throughout. When some step has
    no valid choice, the whole walk is redrawn (up to ``max_tries`` times) and then an IclnbError explains that the
    setting is degenerate. Returns node indices.
    """
    length = check_int("length", length, 1)
    rng = check_rng(rng)
    max_tries = check_int("max_tries", max_tries, 1)
    chosen = hypothesis_adjacency(graph, hypothesis) > 0
    other = hypothesis_adjacency(graph, "H2" if hypothesis == "H1" else "H1") > 0
    if disambiguate_at is not None:
        disambiguate_at = check_int("disambiguate_at", disambiguate_at, 1)
        if disambiguate_at >= length:
            raise IclnbError(
                f"disambiguate_at must be a walk position in [1, {length - 1}] for a walk of length {length}, "
                f"got {disambiguate_at}; use None for a walk that stays ambiguous"
            )
    both = [np.flatnonzero(row) for row in chosen & other]
    only = [np.flatnonzero(row) for row in chosen & ~other]
    follow = [np.flatnonzero(row) for row in chosen]
    D = length if disambiguate_at is None else disambiguate_at
    for _ in range(max_tries):
        uniforms = rng.random(length)
        walk = np.empty(length, dtype=np.int64)
        current = min(int(uniforms[0] * graph.n), graph.n - 1)
        walk[0] = current
        ok = True
        for t in range(1, length):
            choices = both[current] if t < D else only[current] if t == D else follow[current]
            if choices.size == 0:
                ok = False
                break
            current = int(choices[min(int(uniforms[t] * choices.size), choices.size - 1)])
            walk[t] = current
        if ok:
            return walk
    raise IclnbError(
        f"dual_walk found no valid walk in {max_tries} tries (length={length}, disambiguate_at={disambiguate_at}, "
        f"hypothesis={hypothesis}): G1 and G2 share too few edges or no node has an edge only under {hypothesis}; "
        "this setting is degenerate: draw another dual graph, lower p_intra/p_inter overlap, or disambiguate earlier"
    )




def check_walk(graph: Graph, walk) -> np.ndarray:
    """``walk`` as int64 node indices of ``graph``, refused unless it is 1-D with every index in range."""
    walk = np.asarray(walk)
    if walk.ndim != 1:
        raise IclnbError(f"a walk must be a 1-D sequence of node indices, got shape {walk.shape}")
    if walk.size and (not np.issubdtype(walk.dtype, np.integer) or walk.min() < 0 or walk.max() >= graph.n):
        raise IclnbError(f"a walk must hold node indices in [0, {graph.n})")
    return walk.astype(np.int64, copy=False)


def _walk_labels(graph: Graph, walk, labeling: str) -> np.ndarray:
    if labeling not in graph.labelings:
        available = ", ".join(sorted(graph.labelings)) or "none"
        raise IclnbError(f"graph {graph.name!r} has no labeling {labeling!r}; available: {available}")
    return graph.labelings[labeling][check_walk(graph, walk)]


def is_bridge(graph: Graph, walk, labeling: str = "cluster") -> np.ndarray:
    """Bool per position: True where the node's cluster differs from the previous position's (position 0: False)."""
    labels = _walk_labels(graph, walk, labeling)
    out = np.zeros(labels.shape, dtype=bool)
    out[1:] = labels[1:] != labels[:-1]
    return out


def is_anchor(graph: Graph, walk, labeling: str = "cluster") -> np.ndarray:
    """Bool per position: True where the node's cluster equals the previous position's (position 0: False)."""
    labels = _walk_labels(graph, walk, labeling)
    out = np.zeros(labels.shape, dtype=bool)
    out[1:] = labels[1:] == labels[:-1]
    return out


def walk_words(graph: Graph, walk) -> list[str]:
    """The words of a walk's nodes."""
    return [graph.words[i] for i in check_walk(graph, walk)]


def context_walk(graph: Graph, length: int, seed: int, index, *, bridge_penalty: float = 1.0) -> np.ndarray:
    """The walk of context ``index`` of a run with ``seed``: a :func:`random_walk` of ``length`` steps from the
    stream ``("walks", *index)``, so context k is the same in every run, for every model, on resume, and
    whatever else the run draws. ``index`` is an int or a tuple (``(graph_pair, context)``)."""
    from iclnb.core.seeding import stream

    parts = index if isinstance(index, tuple) else (index,)
    return random_walk(graph, length, stream(seed, "walks", *parts), bridge_penalty=bridge_penalty)
