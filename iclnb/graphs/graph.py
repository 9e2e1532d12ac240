"""The one graph type every family returns, and the argument checks the families share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, shortest_path

from iclnb.core.errors import IclnbError
from iclnb.graphs.vocab import NOUNS


def frozen_array(values, dtype) -> np.ndarray:
    """A read-only copy of ``values`` as a numpy array of ``dtype``."""
    arr = np.array(values, dtype=dtype, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Graph:
    """An undirected graph whose nodes carry words.

    Attributes:
        name: the family (``"grid"``, ``"sbm"``, ...).
        adjacency: ``(n, n)`` uint8 0/1, symmetric, zero diagonal (read-only).
        words: the word of each node.
        labelings: labeling name -> int cluster id per node (e.g. ``"cluster"``; ``"level_1"`` (coarsest) ...
            for hierarchies; ``"H1"``/``"H2"`` for dual graphs).
        hierarchy_distance: ``(n, n)`` ints, 0 on the diagonal, 1 between distinct nodes of the same finest
            cluster, up to the number of levels; ``None`` for graphs without clusters (and for dual graphs, whose
            two clusterings give no single distance). Cluster-aware walks weight a step i -> j by
            ``bridge_penalty ** (hierarchy_distance[i, j] - 1)``.
        extra: family-specific data (documented per generator).
    """

    name: str
    adjacency: np.ndarray
    words: tuple[str, ...]
    labelings: dict[str, np.ndarray] = field(default_factory=dict)
    hierarchy_distance: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        adjacency = np.asarray(self.adjacency)
        if adjacency.ndim != 2 or adjacency.shape[0] != adjacency.shape[1]:
            raise IclnbError(f"adjacency must be a square (n, n) matrix, got shape {adjacency.shape}")
        if not np.isin(adjacency, (0, 1)).all():
            raise IclnbError("adjacency must contain only 0 and 1")
        if not np.array_equal(adjacency, adjacency.T):
            raise IclnbError("adjacency must be symmetric (the graph is undirected)")
        if np.any(np.diag(adjacency)):
            raise IclnbError("adjacency must have a zero diagonal (no self-loops)")
        n = adjacency.shape[0]
        words = _check_words(self.words, n)
        labelings = {}
        for key, labels in dict(self.labelings).items():
            labels = np.asarray(labels)
            if labels.shape != (n,):
                raise IclnbError(f"labeling {key!r} must have one cluster id per node ({n}), got shape {labels.shape}")
            labelings[str(key)] = frozen_array(labels, np.int64)
        distance = self.hierarchy_distance
        if distance is not None:
            distance = np.asarray(distance)
            if distance.shape != (n, n):
                raise IclnbError(f"hierarchy_distance must have shape ({n}, {n}), got {distance.shape}")
            distance = frozen_array(distance, np.int64)
        object.__setattr__(self, "adjacency", frozen_array(adjacency, np.uint8))
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "labelings", labelings)
        object.__setattr__(self, "hierarchy_distance", distance)
        object.__setattr__(self, "extra", dict(self.extra))

    @property
    def n(self) -> int:
        """Number of nodes."""
        return int(self.adjacency.shape[0])

    @property
    def word_to_node(self) -> dict[str, int]:
        """Word -> node index."""
        return {word: i for i, word in enumerate(self.words)}

    def edges(self) -> np.ndarray:
        """``(m, 2)`` int array of the edges as pairs ``i < j``, sorted."""
        return np.argwhere(np.triu(self.adjacency, k=1)).astype(np.int64).reshape(-1, 2)

    def neighbors(self, i: int) -> np.ndarray:
        """Node indices adjacent to node ``i``, ascending."""
        if not 0 <= int(i) < self.n:
            raise IclnbError(f"node {i} is out of range for a graph with {self.n} nodes")
        return np.flatnonzero(self.adjacency[int(i)])

    def shortest_path_distances(self) -> np.ndarray:
        """``(n, n)`` float hop distances; ``inf`` between disconnected nodes."""
        return shortest_path(csr_matrix(self.adjacency), method="D", directed=False, unweighted=True)

    def is_connected(self) -> bool:
        return connected_components(csr_matrix(self.adjacency), directed=False)[0] == 1

    def to_dict(self) -> dict:
        """JSON-safe description: ``{"name", "words", "edges", "labelings"}`` (lists of plain ints/strings)."""
        return {
            "name": self.name,
            "words": list(self.words),
            "edges": self.edges().tolist(),
            "labelings": {key: labels.tolist() for key, labels in self.labelings.items()},
        }

    def __repr__(self) -> str:
        return (
            f"Graph(name={self.name!r}, n={self.n}, edges={int(self.adjacency.sum()) // 2}, "
            f"labelings={sorted(self.labelings)})"
        )




def check_int(name: str, value, minimum: int) -> int:
    """``value`` as an int, refused (one IclnbError naming ``name``) unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise IclnbError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise IclnbError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_probability(name: str, value) -> float:
    """``value`` as a float, refused (one IclnbError naming ``name``) unless it lies in [0, 1]."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise IclnbError(f"{name} must be a probability in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise IclnbError(f"{name} must be a probability in [0, 1], got {value}")
    return value


def check_rng(rng) -> np.random.Generator:
    """``rng`` itself, refused unless it is a ``numpy.random.Generator`` (graphs never draw from a global seed)."""
    if not isinstance(rng, np.random.Generator):
        raise IclnbError(
            "rng must be a numpy.random.Generator, e.g. iclnb.core.seeding.stream(seed, 'graph'); "
            f"got {type(rng).__name__}"
        )
    return rng


def _check_words(words, n: int) -> tuple[str, ...]:
    if isinstance(words, str):
        raise IclnbError("words must be a sequence of words, not one string (split it first)")
    words = tuple(words)
    if len(words) != n:
        raise IclnbError(f"the graph has {n} nodes but {len(words)} words were given; pass exactly one word per node")
    for word in words:
        if not isinstance(word, str) or not word or any(ch.isspace() for ch in word):
            raise IclnbError(f"every word must be a non-empty string without whitespace, got {word!r}")
    if len(set(words)) != n:
        repeated = sorted({w for w in words if words.count(w) > 1})
        raise IclnbError(f"words must be distinct; repeated: {', '.join(repeated)}")
    return words


def default_words(n: int, family: str) -> tuple[str, ...]:
    """The first ``n`` words of :data:`NOUNS`, refused when the vocabulary holds fewer."""
    if n > len(NOUNS):
        raise IclnbError(
            f"{family} with {n} nodes needs more words than the default vocabulary NOUNS holds ({len(NOUNS)}); "
            "pass words=[...] with one distinct word per node"
        )
    return NOUNS[:n]


def permuted_words(n: int, rng: np.random.Generator, family: str) -> tuple[str, ...]:
    """``n`` distinct words of :data:`NOUNS` in an order drawn from ``rng``, refused when the vocabulary holds fewer."""
    if n > len(NOUNS):
        raise IclnbError(
            f"{family} with {n} nodes needs more words than the default vocabulary NOUNS holds ({len(NOUNS)}); "
            "pass words=[...] with one distinct word per node"
        )
    order = rng.permutation(len(NOUNS))[:n]
    return tuple(NOUNS[i] for i in order)
