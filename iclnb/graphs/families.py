"""Graph families: Park's lattices (grid, ring, hex_lattice), the clustered families (sbm, hierarchy,
semantic_conflict, dual) and the days-of-week ring. Each is one function returning a :class:`Graph`; every random
draw comes from the generator passed in."""

from __future__ import annotations

import math
from typing import Sequence

import networkx as nx
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from iclnb.core.errors import IclnbError
from iclnb.graphs.graph import (Graph, check_int, check_probability, check_rng, default_words,
                                frozen_array, permuted_words)
from iclnb.graphs.vocab import GRID_WORDS, SEMANTIC_GROUPS, UNRELATED_GROUPS, WEEKDAYS

def bernoulli_adjacency(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Independent edges i<j with the given probabilities (one uniform draw per ordered cell, upper triangle used)."""
    n = probabilities.shape[0]
    draws = rng.random((n, n))
    upper = np.triu(draws < probabilities, k=1)
    return (upper | upper.T).astype(np.uint8)


def repair_connectivity(adjacency: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]]]:
    """Link every extra component to the main (largest; lowest label on ties) component by one edge.

    For each extra component, in order of its smallest node, one uniformly drawn node of it is joined to one
    uniformly drawn node of the original main component. Returns the new adjacency and the added edges (i < j).
    """
    count, labels = connected_components(csr_matrix(adjacency), directed=False)
    if count == 1:
        return adjacency, []
    adjacency = adjacency.copy()
    sizes = np.bincount(labels, minlength=count)
    main = int(np.argmax(sizes))
    main_nodes = np.flatnonzero(labels == main)
    added = []
    for component in range(count):  # labels are numbered by first appearance, i.e. by smallest node
        if component == main:
            continue
        nodes = np.flatnonzero(labels == component)
        a = int(nodes[rng.integers(len(nodes))])
        b = int(main_nodes[rng.integers(len(main_nodes))])
        adjacency[a, b] = adjacency[b, a] = 1
        added.append(sorted((a, b)))
    return adjacency, added


def _block_graph(labels: np.ndarray, p_intra: float, p_inter: float, rng: np.random.Generator):
    same = labels[:, None] == labels[None, :]
    adjacency = bernoulli_adjacency(np.where(same, p_intra, p_inter), rng)
    return repair_connectivity(adjacency, rng)


def _two_level_distance(labels: np.ndarray) -> np.ndarray:
    distance = np.where(labels[:, None] == labels[None, :], 1, 2)
    np.fill_diagonal(distance, 0)
    return distance


def _lattice_graph(name: str, nx_graph: nx.Graph, nodes: list, words, extra: dict) -> Graph:
    index = {node: i for i, node in enumerate(nodes)}
    adjacency = np.zeros((len(nodes), len(nodes)), dtype=np.uint8)
    for u, v in nx_graph.edges():
        adjacency[index[u], index[v]] = adjacency[index[v], index[u]] = 1
    return Graph(name=name, adjacency=adjacency, words=words, extra=extra)




def grid(rows: int = 4, cols: int = 4, words: Sequence[str] | None = None) -> Graph:
    """``rows x cols`` 4-neighbour lattice; node ``r * cols + c`` sits at row r, column c.

    Default words: :data:`GRID_WORDS` for 4x4 (Park et al.), otherwise the first ``rows * cols`` of :data:`NOUNS`.
    ``extra["positions"]`` holds each node's ``(row, col)``.
    """
    rows = check_int("rows", rows, 1)
    cols = check_int("cols", cols, 1)
    n = rows * cols
    if n < 2:
        raise IclnbError("a grid needs at least 2 nodes (rows * cols >= 2)")
    if words is None:
        words = GRID_WORDS if (rows, cols) == (4, 4) else default_words(n, "grid")
    index = np.arange(n).reshape(rows, cols)
    adjacency = np.zeros((n, n), dtype=np.uint8)
    right = (index[:, :-1].ravel(), index[:, 1:].ravel())
    down = (index[:-1, :].ravel(), index[1:, :].ravel())
    for a, b in (right, down):
        adjacency[a, b] = adjacency[b, a] = 1
    positions = np.stack(np.divmod(np.arange(n), cols), axis=1)
    return Graph(name="grid", adjacency=adjacency, words=words, extra={"rows": rows, "cols": cols, "positions": positions})


def ring(n: int = 12, words: Sequence[str] | None = None) -> Graph:
    """Cycle of ``n`` nodes; node i is joined to i-1 and i+1 (mod n). Default words: the first n of :data:`NOUNS`."""
    n = check_int("n", n, 3)
    if words is None:
        words = default_words(n, "ring")
    nodes = np.arange(n)
    adjacency = np.zeros((n, n), dtype=np.uint8)
    adjacency[nodes, (nodes + 1) % n] = 1
    adjacency[(nodes + 1) % n, nodes] = 1
    return Graph(name="ring", adjacency=adjacency, words=words)


def hex_lattice(rows: int = 4, cols: int = 4, words: Sequence[str] | None = None) -> Graph:
    """Honeycomb lattice of ``rows x cols`` hexagons (``networkx.hexagonal_lattice_graph(rows, cols)``).

    Node order: networkx's ``(i, j)`` node coordinates sorted lexicographically (``extra["positions"]`` keeps them);
    a 4x4 lattice has 48 nodes. Default words: the first n of :data:`NOUNS`.
    """
    rows = check_int("rows", rows, 1)
    cols = check_int("cols", cols, 1)
    nx_graph = nx.hexagonal_lattice_graph(rows, cols)
    nodes = sorted(nx_graph.nodes())
    if words is None:
        words = default_words(len(nodes), "hex_lattice")
    return _lattice_graph(
        "hex_lattice", nx_graph, nodes, words, {"rows": rows, "cols": cols, "positions": np.array(nodes)}
    )




def sbm(
    n_clusters: int = 3,
    cluster_size: int = 5,
    p_intra: float = 0.8,
    p_inter: float = 0.1,
    *,
    rng: np.random.Generator,
    words: Sequence[str] | None = None,
) -> Graph:
    """Two-level stochastic block model (the predecessor's ``HierarchicalGraph``).

    Node i is in cluster ``i // cluster_size``; each pair i<j is an edge with probability ``p_intra`` (same cluster)
    or ``p_inter``; then components are linked to the largest one (``extra["repair_edges"]``). Draw order from
    ``rng``: edges, repair, then (only when ``words`` is None) a permutation of :data:`NOUNS` whose first n words
    are used, so the edges do not depend on ``words``. Labeling ``"cluster"``; hierarchy distance 1 within a
    cluster and 2 between clusters.
    """
    n_clusters = check_int("n_clusters", n_clusters, 1)
    cluster_size = check_int("cluster_size", cluster_size, 1)
    p_intra = check_probability("p_intra", p_intra)
    p_inter = check_probability("p_inter", p_inter)
    rng = check_rng(rng)
    n = n_clusters * cluster_size
    if n < 2:
        raise IclnbError("an sbm graph needs at least 2 nodes (n_clusters * cluster_size >= 2)")
    labels = np.arange(n) // cluster_size
    adjacency, repairs = _block_graph(labels, p_intra, p_inter, rng)
    if words is None:
        words = permuted_words(n, rng, "sbm")
    return Graph(
        name="sbm",
        adjacency=adjacency,
        words=words,
        labelings={"cluster": labels},
        hierarchy_distance=_two_level_distance(labels),
        extra={
            "n_clusters": n_clusters,
            "cluster_size": cluster_size,
            "p_intra": p_intra,
            "p_inter": p_inter,
            "repair_edges": repairs,
        },
    )


def hierarchy(
    branching: Sequence[int] = (2, 2, 4),
    p_same: float = 0.9,
    decay: float = 0.3,
    *,
    rng: np.random.Generator,
    legacy_distance: bool = False,
    words: Sequence[str] | None = None,
) -> Graph:
    """N-level tree of clusters with ``prod(branching)`` nodes.

    A node's mixed-radix digits in base ``branching`` (most significant = coarsest) are its path down the tree.
    The hierarchy distance between distinct nodes is the number of levels below their deepest common ancestor
    cluster: 1 for two leaves of the same finest group, ``len(branching)`` at most. Each pair is an edge with
    probability ``p_same * decay ** (dist - 1)``. ``legacy_distance=True`` reproduces the predecessor's bug,
    ``p_same * decay ** dist``, which makes the graph far sparser than documented. Components are then linked as
    in :func:`sbm`. Labelings ``"level_1"`` (coarsest) .. ``"level_{D-1}"``; the leaf level is node identity and is
    not a labeling. ``extra["branching"]`` keeps the branching as a list. Words as in :func:`sbm`.
    """
    if isinstance(branching, (int, np.integer)) or isinstance(branching, str):
        raise IclnbError("branching must be a sequence of integers, e.g. [2, 2, 4]")
    branching = [check_int("every branching factor", b, 1) for b in branching]
    if not branching:
        raise IclnbError("branching must have at least one level, e.g. [2, 2, 4]")
    p_same = check_probability("p_same", p_same)
    decay = check_probability("decay", decay)
    rng = check_rng(rng)
    n = math.prod(branching)
    if n < 2:
        raise IclnbError(f"branching {branching} gives {n} node; a hierarchy needs at least 2")
    depth = len(branching)
    nodes = np.arange(n)
    # ancestors[k][i] = id of node i's cluster after k+1 levels (k = depth-1 is the node itself)
    strides = [math.prod(branching[k + 1:]) for k in range(depth)]
    ancestors = [nodes // stride for stride in strides]
    shared_levels = np.zeros((n, n), dtype=np.int64)
    still_shared = np.ones((n, n), dtype=bool)
    for level_ids in ancestors:
        still_shared &= level_ids[:, None] == level_ids[None, :]
        shared_levels += still_shared
    distance = depth - shared_levels  # 0 on the diagonal
    exponent = distance if legacy_distance else distance - 1
    probabilities = p_same * decay ** np.maximum(exponent, 0).astype(float)
    np.fill_diagonal(probabilities, 0.0)
    adjacency = bernoulli_adjacency(probabilities, rng)
    adjacency, repairs = repair_connectivity(adjacency, rng)
    if words is None:
        words = permuted_words(n, rng, "hierarchy")
    labelings = {f"level_{k + 1}": ancestors[k] for k in range(depth - 1)}
    return Graph(
        name="hierarchy",
        adjacency=adjacency,
        words=words,
        labelings=labelings,
        hierarchy_distance=distance,
        extra={
            "branching": branching,
            "p_same": p_same,
            "decay": decay,
            "legacy_distance": bool(legacy_distance),
            "repair_edges": repairs,
        },
    )


def semantic_conflict(
    word_set: str = "semantic",
    *,
    rng: np.random.Generator,
    p_intra: float = 0.8,
    p_inter: float = 0.1,
) -> Graph:
    """12 words in 3 graph clusters of 4 that cut across 4 semantic groups of 3.

    Node ``i = 4 * c + g`` is in graph cluster ``c`` and semantic group ``g`` and carries word ``groups[g][c]`` of
    :data:`SEMANTIC_GROUPS` (``word_set="semantic"``) or :data:`UNRELATED_GROUPS` (``"unrelated"``). The layout and
    the edges (drawn from ``rng`` only) are the same for both word sets, so the same rng state and the same
    node-space walks serve both (paired design). ``extra["semantic_pairs"]``: the 12 pairs i<j of the same group in
    different clusters; ``extra["graph_pairs"]``: the 18 pairs i<j in the same cluster (both ``(m, 2)`` int arrays).
    Labelings ``"cluster"`` and ``"semantic_group"``; hierarchy distance from the clusters.
    """
    sets = {"semantic": SEMANTIC_GROUPS, "unrelated": UNRELATED_GROUPS}
    if word_set not in sets:
        raise IclnbError(f"word_set must be one of {sorted(sets)}, got {word_set!r}")
    p_intra = check_probability("p_intra", p_intra)
    p_inter = check_probability("p_inter", p_inter)
    rng = check_rng(rng)
    groups = sets[word_set]
    n_clusters, n_groups = 3, 4
    nodes = np.arange(n_clusters * n_groups)
    cluster, group = np.divmod(nodes, n_groups)
    words = tuple(groups[g][c] for c, g in zip(cluster, group))
    adjacency, repairs = _block_graph(cluster, p_intra, p_inter, rng)
    i, j = np.triu_indices(len(nodes), k=1)
    same_cluster = cluster[i] == cluster[j]
    same_group = group[i] == group[j]
    return Graph(
        name="semantic_conflict",
        adjacency=adjacency,
        words=words,
        labelings={"cluster": cluster, "semantic_group": group},
        hierarchy_distance=_two_level_distance(cluster),
        extra={
            "word_set": word_set,
            "semantic_pairs": np.stack([i, j], axis=1)[same_group & ~same_cluster],
            "graph_pairs": np.stack([i, j], axis=1)[same_cluster],
            "p_intra": p_intra,
            "p_inter": p_inter,
            "repair_edges": repairs,
        },
    )


def co_membership_agreement(labels_a, labels_b) -> float:
    """Fraction of node pairs i<j on which "same cluster" agrees between two clusterings."""
    a = np.asarray(labels_a)
    b = np.asarray(labels_b)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise IclnbError("co_membership_agreement needs two labelings of the same nodes (at least 2)")
    i, j = np.triu_indices(len(a), k=1)
    return float(np.mean((a[i] == a[j]) == (b[i] == b[j])))


def dual(
    n_words: int = 15,
    n_clusters: int = 3,
    *,
    rng: np.random.Generator,
    p_intra: float = 0.8,
    p_inter: float = 0.15,
    max_agreement: float = 0.8,
    words: Sequence[str] | None = None,
    max_redraws: int = 1000,
) -> Graph:
    """Two interpretations of one word set: clusterings H1, H2 and SBM graphs G1, G2.

    H1 is contiguous blocks (node i in cluster ``i * n_clusters // n_words``, sizes differ by at most one); H2 is a
    random permutation of H1's labels (equally balanced), redrawn while its co-membership agreement with H1
    (:func:`co_membership_agreement`) exceeds ``max_agreement``; after ``max_redraws`` draws an IclnbError says the
    setting is degenerate. G1 (``adjacency``) and G2 (``extra["G2_adjacency"]``) are SBM graphs on H1 and H2
    (``p_intra``/``p_inter``), each repaired to be connected. Draw order: H2, G1, G2, then words (only when
    ``words`` is None). ``hierarchy_distance`` is None (two clusterings give no single distance); use
    :func:`dual_walk` or :func:`random_walk` with ``adjacency=hypothesis_adjacency(graph, "H2")``.
    ``extra["agreement"]`` keeps the final agreement.
    """
    n_words = check_int("n_words", n_words, 2)
    n_clusters = check_int("n_clusters", n_clusters, 1)
    if n_clusters > n_words:
        raise IclnbError(f"n_clusters ({n_clusters}) cannot exceed n_words ({n_words})")
    p_intra = check_probability("p_intra", p_intra)
    p_inter = check_probability("p_inter", p_inter)
    max_agreement = check_probability("max_agreement", max_agreement)
    max_redraws = check_int("max_redraws", max_redraws, 1)
    rng = check_rng(rng)
    h1 = np.arange(n_words) * n_clusters // n_words
    for _ in range(max_redraws):
        h2 = rng.permutation(h1)
        agreement = co_membership_agreement(h1, h2)
        if agreement <= max_agreement:
            break
    else:
        raise IclnbError(
            f"could not draw an H2 clustering with co-membership agreement <= {max_agreement} with H1 in "
            f"{max_redraws} tries (n_words={n_words}, n_clusters={n_clusters}); this setting is degenerate: use "
            "more words, a number of clusters between 2 and n_words - 1, or a larger max_agreement"
        )
    g1, repairs1 = _block_graph(h1, p_intra, p_inter, rng)
    g2, repairs2 = _block_graph(h2, p_intra, p_inter, rng)
    if words is None:
        words = permuted_words(n_words, rng, "dual")
    return Graph(
        name="dual",
        adjacency=g1,
        words=words,
        labelings={"H1": h1, "H2": h2},
        hierarchy_distance=None,
        extra={
            "G2_adjacency": frozen_array(g2, np.uint8),
            "agreement": agreement,
            "p_intra": p_intra,
            "p_inter": p_inter,
            "repair_edges": {"G1": repairs1, "G2": repairs2},
        },
    )


def days_of_week_ring(rng: np.random.Generator) -> Graph:
    """The seven weekday names on a ring in a shuffled order (a semantic-prior test).

    Node k carries ``WEEKDAYS[extra["calendar_order"][k]]`` and is joined to nodes k-1 and k+1 (mod 7).
    """
    rng = check_rng(rng)
    order = rng.permutation(len(WEEKDAYS))
    base = ring(len(WEEKDAYS), words=[WEEKDAYS[i] for i in order])
    return Graph(
        name="days_of_week_ring",
        adjacency=base.adjacency,
        words=base.words,
        extra={"calendar_order": frozen_array(order, np.int64)},
    )
