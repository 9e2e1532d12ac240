"""Perturbations of a walk: block permutation (same-cluster runs kept, their order shuffled), full shuffle, and
the count of steps that are not graph edges."""

from __future__ import annotations

import numpy as np

from iclnb.core.errors import IclnbError
from iclnb.graphs.graph import Graph, check_rng
from iclnb.graphs.walks import check_adjacency_override, check_walk, is_bridge

def cluster_runs(graph: Graph, walk, labeling: str = "cluster") -> list[np.ndarray]:
    """The walk split into maximal runs of consecutive positions in the same cluster."""
    walk = check_walk(graph, walk)
    if walk.size == 0:
        return []
    starts = np.flatnonzero(is_bridge(graph, walk, labeling))
    return np.split(walk, starts)


def block_permute(graph: Graph, walk, rng: np.random.Generator, labeling: str = "cluster",
                  return_starts: bool = False):
    """The walk with its maximal same-cluster runs kept intact and their order shuffled.

    Adjacent runs in the result may share a cluster and junctions need not be graph edges
    (:func:`non_edge_steps` and :func:`junction_counts` count them). ``return_starts=True`` also returns the
    positions where each run after the first starts in the result (its junctions), as ``(walk, starts)``.
    """
    rng = check_rng(rng)
    runs = cluster_runs(graph, walk, labeling)
    if not runs:
        empty = np.zeros(0, dtype=np.int64)
        return (empty, empty.copy()) if return_starts else empty
    order = rng.permutation(len(runs))
    permuted = np.concatenate([runs[k] for k in order])
    if not return_starts:
        return permuted
    return permuted, np.cumsum([len(runs[k]) for k in order])[:-1].astype(np.int64)


def junction_counts(graph: Graph, walk, starts, labeling: str = "cluster") -> dict:
    """At the junctions of a block-permuted walk (``starts``: positions where a new run begins): how many there
    are, how many are not graph edges (``non_edge``: walk[s − 1] and walk[s] not adjacent), and how many join two
    runs of the same cluster (``merges``: they read as one longer run)."""
    walk = check_walk(graph, walk)
    starts = np.asarray(starts, dtype=np.int64)
    if starts.size and (starts.min() < 1 or starts.max() >= walk.size):
        raise IclnbError(f"junction positions must lie in [1, {walk.size}), got {starts.tolist()}")
    before, after = walk[starts - 1], walk[starts]
    labels = graph.labelings[labeling]
    return {"junctions": int(starts.size), "non_edge": int(np.sum(graph.adjacency[before, after] == 0)),
            "merges": int(np.sum(labels[before] == labels[after]))}


def full_shuffle(walk, rng: np.random.Generator) -> np.ndarray:
    """The walk's positions in a uniformly random order."""
    rng = check_rng(rng)
    walk = np.asarray(walk)
    if walk.ndim != 1:
        raise IclnbError(f"a walk must be a 1-D sequence of node indices, got shape {walk.shape}")
    return rng.permutation(walk)


def non_edge_steps(graph: Graph, walk, adjacency: np.ndarray | None = None) -> int:
    """Number of consecutive position pairs that are not joined by an edge (e.g. junctions of a permuted walk)."""
    walk = check_walk(graph, walk)
    adjacency = check_adjacency_override(graph, adjacency)
    if walk.size < 2:
        return 0
    return int(np.sum(adjacency[walk[:-1], walk[1:]] == 0))
