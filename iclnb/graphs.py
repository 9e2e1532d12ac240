"""Graph families and walk samplers (SPEC section 2).

Every generator returns a :class:`Graph`: ``n`` nodes, a symmetric 0/1 adjacency with zero diagonal, one word per
node, zero or more labelings (cluster ids per node) and, for clustered families, a hierarchy distance used by
cluster-aware walks. Generators and samplers are pure functions: every random draw comes from the
``numpy.random.Generator`` passed in (see :func:`iclnb.seeding.stream`), never from a global seed.

Families: :func:`grid`, :func:`ring`, :func:`hex_lattice` (Park et al.), :func:`sbm`, :func:`hierarchy`,
:func:`semantic_conflict`, :func:`dual`, :func:`days_of_week_ring`.
Walks: :func:`random_walk`, :func:`dual_walk`; walk helpers: :func:`is_bridge`, :func:`is_anchor`,
:func:`walk_words`, :func:`block_permute`, :func:`full_shuffle`, :func:`cluster_runs`, :func:`non_edge_steps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import networkx as nx
import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, shortest_path

from iclnb.errors import IclnbError

__all__ = [
    "GRID_WORDS",
    "NOUNS",
    "SEMANTIC_GROUPS",
    "UNRELATED_GROUPS",
    "WEEKDAYS",
    "Graph",
    "grid",
    "ring",
    "hex_lattice",
    "sbm",
    "hierarchy",
    "semantic_conflict",
    "dual",
    "days_of_week_ring",
    "co_membership_agreement",
    "hypothesis_adjacency",
    "random_walk",
    "dual_walk",
    "is_bridge",
    "is_anchor",
    "walk_words",
    "cluster_runs",
    "block_permute",
    "full_shuffle",
    "non_edge_steps",
]

#: Park et al.'s words for the 4x4 grid, node r*4+c in this order.
GRID_WORDS: tuple[str, ...] = (
    "apple", "bird", "car", "egg", "house", "milk", "plane", "opera",
    "box", "sand", "sun", "mango", "rock", "math", "code", "phone",
)

#: Default vocabulary: common, concrete, single-word English nouns (lowercase, distinct). Families other than the
#: 4x4 grid take their first n words (lattices) or a seeded permutation of it (clustered families).
NOUNS: tuple[str, ...] = (
    # food
    "apple", "banana", "orange", "lemon", "grape", "cherry", "peach", "pear", "plum", "melon",
    "bread", "cheese", "butter", "egg", "milk", "honey", "rice", "soup", "salt", "sugar",
    "cookie", "cake", "pizza", "pasta", "onion", "garlic", "pepper", "corn", "bean", "nut",
    # animals
    "bird", "cat", "dog", "horse", "cow", "sheep", "goat", "pig", "duck", "chicken",
    "rabbit", "mouse", "fish", "frog", "snake", "bear", "lion", "tiger", "wolf", "fox",
    "deer", "monkey", "zebra", "camel", "whale", "shark", "turtle", "spider", "bee", "ant",
    # household
    "chair", "table", "desk", "bed", "lamp", "door", "window", "wall", "floor", "roof",
    "clock", "mirror", "pillow", "blanket", "towel", "cup", "plate", "bowl", "spoon", "fork",
    "knife", "bottle", "glass", "jar", "basket", "box", "bag", "bucket", "brush", "comb",
    # tools and clothing
    "hammer", "nail", "rope", "ladder", "shovel", "key", "lock", "coin", "ring", "watch",
    "hat", "shoe", "sock", "shirt", "coat", "glove", "scarf", "belt", "button", "needle",
    # vehicles
    "car", "bus", "train", "plane", "boat", "ship", "bicycle", "truck", "rocket", "tractor",
    # nature
    "tree", "flower", "grass", "leaf", "rock", "stone", "sand", "river", "lake", "ocean",
    "mountain", "hill", "cloud", "rain", "snow", "moon", "sun", "star", "island", "forest",
    # things
    "book", "pencil", "pen", "paper", "letter", "map", "flag", "ball", "kite", "drum",
    "piano", "guitar", "violin", "bell", "candle", "camera", "phone", "radio", "television", "computer",
    "house", "castle", "bridge", "tower", "tent", "ticket", "wallet", "sofa", "oven", "fridge",
)

#: semantic_conflict word sets: four groups of three; group g's c-th word sits in graph cluster c.
SEMANTIC_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("cat", "dog", "bird"),
    ("computer", "television", "radio"),
    ("tomato", "potato", "carrot"),
    ("chair", "table", "desk"),
)
UNRELATED_GROUPS: tuple[tuple[str, str, str], ...] = (
    ("piano", "river", "hammer"),
    ("cloud", "pencil", "mountain"),
    ("window", "coffee", "bicycle"),
    ("garden", "mirror", "blanket"),
)

#: Calendar order of the weekdays (index = calendar index).
WEEKDAYS: tuple[str, ...] = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


# --------------------------------------------------------------------------------------------------------------
# The Graph type
# --------------------------------------------------------------------------------------------------------------


def _frozen_array(values, dtype) -> np.ndarray:
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
            labelings[str(key)] = _frozen_array(labels, np.int64)
        distance = self.hierarchy_distance
        if distance is not None:
            distance = np.asarray(distance)
            if distance.shape != (n, n):
                raise IclnbError(f"hierarchy_distance must have shape ({n}, {n}), got {distance.shape}")
            distance = _frozen_array(distance, np.int64)
        object.__setattr__(self, "adjacency", _frozen_array(adjacency, np.uint8))
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


# --------------------------------------------------------------------------------------------------------------
# Argument checks and shared construction steps
# --------------------------------------------------------------------------------------------------------------


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise IclnbError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise IclnbError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_probability(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise IclnbError(f"{name} must be a probability in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise IclnbError(f"{name} must be a probability in [0, 1], got {value}")
    return value


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise IclnbError(
            "rng must be a numpy.random.Generator, e.g. iclnb.seeding.stream(seed, 'graph'); "
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


def _default_words(n: int, family: str) -> tuple[str, ...]:
    if n > len(NOUNS):
        raise IclnbError(
            f"{family} with {n} nodes needs more words than the default vocabulary NOUNS holds ({len(NOUNS)}); "
            "pass words=[...] with one distinct word per node"
        )
    return NOUNS[:n]


def _permuted_words(n: int, rng: np.random.Generator, family: str) -> tuple[str, ...]:
    if n > len(NOUNS):
        raise IclnbError(
            f"{family} with {n} nodes needs more words than the default vocabulary NOUNS holds ({len(NOUNS)}); "
            "pass words=[...] with one distinct word per node"
        )
    order = rng.permutation(len(NOUNS))[:n]
    return tuple(NOUNS[i] for i in order)


def _bernoulli_adjacency(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Independent edges i<j with the given probabilities (one uniform draw per ordered cell, upper triangle used)."""
    n = probabilities.shape[0]
    draws = rng.random((n, n))
    upper = np.triu(draws < probabilities, k=1)
    return (upper | upper.T).astype(np.uint8)


def _repair_connectivity(adjacency: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[list[int]]]:
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
    adjacency = _bernoulli_adjacency(np.where(same, p_intra, p_inter), rng)
    return _repair_connectivity(adjacency, rng)


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


# --------------------------------------------------------------------------------------------------------------
# Park's lattices
# --------------------------------------------------------------------------------------------------------------


def grid(rows: int = 4, cols: int = 4, words: Sequence[str] | None = None) -> Graph:
    """``rows x cols`` 4-neighbour lattice; node ``r * cols + c`` sits at row r, column c.

    Default words: :data:`GRID_WORDS` for 4x4 (Park et al.), otherwise the first ``rows * cols`` of :data:`NOUNS`.
    ``extra["positions"]`` holds each node's ``(row, col)``.
    """
    rows = _check_int("rows", rows, 1)
    cols = _check_int("cols", cols, 1)
    n = rows * cols
    if n < 2:
        raise IclnbError("a grid needs at least 2 nodes (rows * cols >= 2)")
    if words is None:
        words = GRID_WORDS if (rows, cols) == (4, 4) else _default_words(n, "grid")
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
    n = _check_int("n", n, 3)
    if words is None:
        words = _default_words(n, "ring")
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
    rows = _check_int("rows", rows, 1)
    cols = _check_int("cols", cols, 1)
    nx_graph = nx.hexagonal_lattice_graph(rows, cols)
    nodes = sorted(nx_graph.nodes())
    if words is None:
        words = _default_words(len(nodes), "hex_lattice")
    return _lattice_graph(
        "hex_lattice", nx_graph, nodes, words, {"rows": rows, "cols": cols, "positions": np.array(nodes)}
    )


# --------------------------------------------------------------------------------------------------------------
# Clustered families
# --------------------------------------------------------------------------------------------------------------


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
    n_clusters = _check_int("n_clusters", n_clusters, 1)
    cluster_size = _check_int("cluster_size", cluster_size, 1)
    p_intra = _check_probability("p_intra", p_intra)
    p_inter = _check_probability("p_inter", p_inter)
    rng = _check_rng(rng)
    n = n_clusters * cluster_size
    if n < 2:
        raise IclnbError("an sbm graph needs at least 2 nodes (n_clusters * cluster_size >= 2)")
    labels = np.arange(n) // cluster_size
    adjacency, repairs = _block_graph(labels, p_intra, p_inter, rng)
    if words is None:
        words = _permuted_words(n, rng, "sbm")
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
    branching = [_check_int("every branching factor", b, 1) for b in branching]
    if not branching:
        raise IclnbError("branching must have at least one level, e.g. [2, 2, 4]")
    p_same = _check_probability("p_same", p_same)
    decay = _check_probability("decay", decay)
    rng = _check_rng(rng)
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
    adjacency = _bernoulli_adjacency(probabilities, rng)
    adjacency, repairs = _repair_connectivity(adjacency, rng)
    if words is None:
        words = _permuted_words(n, rng, "hierarchy")
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
    p_intra = _check_probability("p_intra", p_intra)
    p_inter = _check_probability("p_inter", p_inter)
    rng = _check_rng(rng)
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
    n_words = _check_int("n_words", n_words, 2)
    n_clusters = _check_int("n_clusters", n_clusters, 1)
    if n_clusters > n_words:
        raise IclnbError(f"n_clusters ({n_clusters}) cannot exceed n_words ({n_words})")
    p_intra = _check_probability("p_intra", p_intra)
    p_inter = _check_probability("p_inter", p_inter)
    max_agreement = _check_probability("max_agreement", max_agreement)
    max_redraws = _check_int("max_redraws", max_redraws, 1)
    rng = _check_rng(rng)
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
        words = _permuted_words(n_words, rng, "dual")
    return Graph(
        name="dual",
        adjacency=g1,
        words=words,
        labelings={"H1": h1, "H2": h2},
        hierarchy_distance=None,
        extra={
            "G2_adjacency": _frozen_array(g2, np.uint8),
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
    rng = _check_rng(rng)
    order = rng.permutation(len(WEEKDAYS))
    base = ring(len(WEEKDAYS), words=[WEEKDAYS[i] for i in order])
    return Graph(
        name="days_of_week_ring",
        adjacency=base.adjacency,
        words=base.words,
        extra={"calendar_order": _frozen_array(order, np.int64)},
    )


# --------------------------------------------------------------------------------------------------------------
# Walks
# --------------------------------------------------------------------------------------------------------------


def hypothesis_adjacency(graph: Graph, hypothesis: str) -> np.ndarray:
    """The adjacency of a dual graph under ``hypothesis``: ``"H1"`` -> ``adjacency``, ``"H2"`` -> G2."""
    if "G2_adjacency" not in graph.extra:
        raise IclnbError(f"graph {graph.name!r} has no second graph; hypotheses need a dual graph (iclnb.graphs.dual)")
    if hypothesis == "H1":
        return graph.adjacency
    if hypothesis == "H2":
        return np.asarray(graph.extra["G2_adjacency"])
    raise IclnbError(f"hypothesis must be 'H1' or 'H2', got {hypothesis!r}")


def _check_adjacency_override(graph: Graph, adjacency) -> np.ndarray:
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
    length = _check_int("length", length, 0)
    rng = _check_rng(rng)
    try:
        bridge_penalty = float(bridge_penalty)
    except (TypeError, ValueError):
        raise IclnbError(f"bridge_penalty must be a positive number, got {bridge_penalty!r}") from None
    if not (bridge_penalty > 0 and math.isfinite(bridge_penalty)):
        raise IclnbError(f"bridge_penalty must be a positive finite number, got {bridge_penalty}")
    adjacency = _check_adjacency_override(graph, adjacency)
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
    length = _check_int("length", length, 1)
    rng = _check_rng(rng)
    max_tries = _check_int("max_tries", max_tries, 1)
    chosen = hypothesis_adjacency(graph, hypothesis) > 0
    other = hypothesis_adjacency(graph, "H2" if hypothesis == "H1" else "H1") > 0
    if disambiguate_at is not None:
        disambiguate_at = _check_int("disambiguate_at", disambiguate_at, 1)
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


# --------------------------------------------------------------------------------------------------------------
# Walk helpers
# --------------------------------------------------------------------------------------------------------------


def _check_walk(graph: Graph, walk) -> np.ndarray:
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
    return graph.labelings[labeling][_check_walk(graph, walk)]


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
    return [graph.words[i] for i in _check_walk(graph, walk)]


def cluster_runs(graph: Graph, walk, labeling: str = "cluster") -> list[np.ndarray]:
    """The walk split into maximal runs of consecutive positions in the same cluster."""
    walk = _check_walk(graph, walk)
    if walk.size == 0:
        return []
    starts = np.flatnonzero(is_bridge(graph, walk, labeling))
    return np.split(walk, starts)


def block_permute(graph: Graph, walk, rng: np.random.Generator, labeling: str = "cluster") -> np.ndarray:
    """The walk with its maximal same-cluster runs kept intact and their order shuffled.

    Adjacent runs in the result may share a cluster and junctions need not be graph edges
    (:func:`non_edge_steps` counts them).
    """
    rng = _check_rng(rng)
    runs = cluster_runs(graph, walk, labeling)
    if not runs:
        return np.zeros(0, dtype=np.int64)
    order = rng.permutation(len(runs))
    return np.concatenate([runs[k] for k in order])


def full_shuffle(walk, rng: np.random.Generator) -> np.ndarray:
    """The walk's positions in a uniformly random order."""
    rng = _check_rng(rng)
    walk = np.asarray(walk)
    if walk.ndim != 1:
        raise IclnbError(f"a walk must be a 1-D sequence of node indices, got shape {walk.shape}")
    return rng.permutation(walk)


def non_edge_steps(graph: Graph, walk, adjacency: np.ndarray | None = None) -> int:
    """Number of consecutive position pairs that are not joined by an edge (e.g. junctions of a permuted walk)."""
    walk = _check_walk(graph, walk)
    adjacency = _check_adjacency_override(graph, adjacency)
    if walk.size < 2:
        return 0
    return int(np.sum(adjacency[walk[:-1], walk[1:]] == 0))
