"""What both perturbation experiments share: the graph and classical MDS."""

from __future__ import annotations

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.seeding import stream


def make_graph(seed: int) -> graphs.Graph:
    """The run's graph: the 3 x 5 two-level stochastic block model (3 super-clusters of 5 words, p_intra 0.8,
    p_inter 0.1) from the run's graph stream, css_basic's graph at its defaults, so one seed gives the same graph in
    all three experiments."""
    return graphs.sbm(3, 5, 0.8, 0.1, rng=stream(seed, "graph"))


def classical_mds(distances, k: int = 2) -> np.ndarray:
    """Classical (Torgerson) multidimensional scaling: the (n, k) coordinates whose Euclidean distances best match
    ``distances`` (n, n) in the least-squares sense of the double-centred squared distances
    B = −½ J D² J (J = I − 11ᵀ/n): the top-k eigenvectors of B scaled by the square roots of their eigenvalues.
    Deterministic (each axis' sign fixed so that its largest-magnitude coordinate is positive)."""
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise IclnbError(f"distances must be a square matrix, got shape {d.shape}")
    n = d.shape[0]
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (d * d) @ j
    values, vectors = np.linalg.eigh((b + b.T) / 2)
    order = np.argsort(values)[::-1][:k]
    coords = vectors[:, order] * np.sqrt(np.maximum(values[order], 0.0))
    flip = np.sign(coords[np.argmax(np.abs(coords), axis=0), np.arange(coords.shape[1])])
    return coords * np.where(flip == 0, 1.0, flip)
