"""Hierarchies whose clusters need not have equal sizes: a tree of clusters given as nested group sizes.

:func:`iclnb.graphs.hierarchy` builds a mixed-radix tree (every cluster of a level has the same number of children).
Three super-clusters of five nodes each, with sub-clusters inside them, cannot be written that way (5 = 2 + 3);
:func:`nested_hierarchy` takes the tree itself, e.g. ``[[2, 3], [2, 3], [2, 3]]``: three super-clusters, each holding
a sub-cluster of 2 nodes and one of 3. The edges, walks and labelings follow :func:`iclnb.graphs.hierarchy` exactly
(same hierarchy distance, same edge probability ``p_same * decay ** (dist - 1)``, same draw order), so a tree with
equal sizes gives the same graph as the mixed radix with the same generator state.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from iclnb.core.errors import IclnbError
from iclnb.graphs.families import bernoulli_adjacency, repair_connectivity
from iclnb.graphs.graph import Graph, check_int, check_probability, check_rng, permuted_words

__all__ = ["nested_hierarchy", "two_level_hierarchy"]


def _paths(sizes, where: str = "sizes") -> tuple[list[list[int]], int]:
    """Each node's path of child indices down the tree (coarsest first), and the number of cluster levels."""
    if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, bool):
        count = check_int(f"every group size in {where}", sizes, 1)
        return [[] for _ in range(count)], 0
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) == 0:
        raise IclnbError(f"{where} must be a group size (an integer) or a non-empty list of groups, e.g. "
                         f"[[2, 3], [2, 3], [2, 3]]; got {sizes!r}")
    paths, depth = [], None
    for i, child in enumerate(sizes):
        sub, d = _paths(child, f"{where}[{i}]")
        if depth is not None and d != depth:
            raise IclnbError(f"every leaf group of a nested hierarchy must sit at the same depth; {where} mixes "
                             f"depths {depth + 1} and {d + 1}")
        depth = d
        paths += [[i] + path for path in sub]
    return paths, depth + 1


def nested_hierarchy(
    sizes,
    p_same: float = 0.9,
    decay: float = 0.3,
    *,
    rng: np.random.Generator,
    legacy_distance: bool = False,
    words: Sequence[str] | None = None,
    probabilities: Sequence[float] | None = None,
) -> Graph:
    """A tree of clusters given by nested group sizes; its leaves are the nodes.

    ``sizes`` lists the top-level clusters; each is either a list of its sub-clusters or, at the finest level, the
    number of nodes it holds (all finest groups at the same depth): ``[[2, 3], [2, 3], [2, 3]]`` is 3 super-clusters
    of 5 nodes, each split into sub-clusters of 2 and 3. Nodes are numbered depth-first, so the nodes of a cluster
    are contiguous. With D = (cluster levels) + 1, the hierarchy distance of distinct nodes is D minus the number of
    levels whose cluster they share (1 inside a finest group, D across top-level clusters), each pair is an edge
    with probability ``p_same * decay ** (dist - 1)`` (``legacy_distance=True``: ``decay ** dist``), then components
    are linked as in :func:`iclnb.graphs.sbm`. ``probabilities`` (one per distance 1..D, e.g. ``[0.9, 0.5, 0.05]``)
    replaces ``p_same * decay ** (dist - 1)`` when given. Labelings ``"level_1"`` (coarsest) .. ``"level_{D-1}"`` number the
    clusters of each level in node order. ``extra["group_sizes"]`` keeps ``sizes``; the draw order (edges, repair,
    words) is :func:`iclnb.graphs.hierarchy`'s, so equal sizes give its graph.
    """
    paths, levels = _paths(sizes)
    if levels < 1:
        raise IclnbError("a nested hierarchy needs at least one level of clusters above the nodes, e.g. [[2, 3], "
                         "[2, 3]] or [5, 5]")
    p_same = check_probability("p_same", p_same)
    decay = check_probability("decay", decay)
    rng = check_rng(rng)
    n = len(paths)
    if n < 2:
        raise IclnbError(f"group sizes {sizes!r} give {n} node; a hierarchy needs at least 2")
    depth = levels + 1  # cluster levels + the leaf level
    ancestors = []
    for k in range(depth - 1):
        order: dict = {}  # clusters numbered in node order (depth-first numbering keeps each contiguous)
        ancestors.append(np.array([order.setdefault(tuple(path[: k + 1]), len(order)) for path in paths],
                                  dtype=np.int64))
    ancestors.append(np.arange(n))
    shared = np.zeros((n, n), dtype=np.int64)
    still = np.ones((n, n), dtype=bool)
    for ids in ancestors:
        still &= ids[:, None] == ids[None, :]
        shared += still
    distance = depth - shared
    if probabilities is None:
        exponent = distance if legacy_distance else distance - 1
        edge_p = p_same * decay ** np.maximum(exponent, 0).astype(float)
    else:
        if isinstance(probabilities, (str, bytes)) or not isinstance(probabilities, Sequence) \
                or len(probabilities) != depth:
            raise IclnbError(f"probabilities must give one edge probability per hierarchy distance 1..{depth} "
                             f"(finest group first), got {probabilities!r}")
        table = np.array([0.0] + [check_probability("every edge probability", q) for q in probabilities])
        edge_p = table[distance]
    np.fill_diagonal(edge_p, 0.0)
    adjacency = bernoulli_adjacency(edge_p, rng)
    adjacency, repairs = repair_connectivity(adjacency, rng)
    if words is None:
        words = permuted_words(n, rng, "hierarchy")
    return Graph(
        name="hierarchy",
        adjacency=adjacency,
        words=words,
        labelings={f"level_{k + 1}": ancestors[k] for k in range(depth - 1)},
        hierarchy_distance=distance,
        extra={
            "group_sizes": _plain(sizes),
            "p_same": p_same,
            "decay": decay,
            "legacy_distance": bool(legacy_distance),
            "probabilities": None if probabilities is None else [float(q) for q in probabilities],
            "repair_edges": repairs,
        },
    )


def _plain(sizes):
    return int(sizes) if isinstance(sizes, (int, np.integer)) else [_plain(s) for s in sizes]


def two_level_hierarchy(
    n_super: int = 3,
    sub_sizes: Sequence[int] = (2, 3),
    p_same: float = 0.9,
    decay: float = 0.3,
    *,
    rng: np.random.Generator,
    words: Sequence[str] | None = None,
    probabilities: Sequence[float] | None = None,
) -> Graph:
    """``n_super`` super-clusters, each split into sub-clusters of ``sub_sizes`` nodes (default: 3 super-clusters of
    5 nodes with sub-clusters of 2 and 3 inside, 15 nodes). ``"level_1"``: the super-cluster of each node,
    ``"level_2"``: its sub-cluster. Edges and walks as :func:`nested_hierarchy` (within a sub-cluster ``p_same``,
    between sub-clusters of one super-cluster ``p_same * decay``, between super-clusters ``p_same * decay²``; or
    ``probabilities`` = [within a sub-cluster, between sub-clusters of one super-cluster, between super-clusters])."""
    n_super = check_int("n_super", n_super, 1)
    if isinstance(sub_sizes, (int, np.integer)) or isinstance(sub_sizes, str):
        raise IclnbError("sub_sizes must be a list of sub-cluster sizes, e.g. [2, 3]")
    sub = [check_int("every sub-cluster size", s, 1) for s in sub_sizes]
    if not sub:
        raise IclnbError("sub_sizes must name at least one sub-cluster size, e.g. [2, 3]")
    return nested_hierarchy([list(sub) for _ in range(n_super)], p_same, decay, rng=rng, words=words,
                            probabilities=probabilities)
