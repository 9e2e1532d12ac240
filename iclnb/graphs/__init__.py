"""Graph families and walk samplers (docs/methods.md).

Every generator returns a :class:`Graph`: ``n`` nodes, a symmetric 0/1 adjacency with zero diagonal, one word per
node, zero or more labelings (cluster ids per node) and, for clustered families, a hierarchy distance used by
cluster-aware walks. Generators and samplers are pure functions: every random draw comes from the
``numpy.random.Generator`` passed in (see :func:`iclnb.core.seeding.stream`), never from a global seed.

Families: :func:`grid`, :func:`ring`, :func:`hex_lattice` (Park et al.), :func:`sbm`, :func:`hierarchy`,
:func:`nested_hierarchy` (clusters of unequal sizes, e.g. :func:`two_level_hierarchy`), :func:`semantic_conflict`,
:func:`dual`, :func:`days_of_week_ring`.
Walks: :func:`random_walk`, :func:`dual_walk`; walk helpers: :func:`is_bridge`, :func:`is_anchor`,
:func:`walk_words`, :func:`block_permute`, :func:`full_shuffle`, :func:`cluster_runs`, :func:`non_edge_steps`,
:func:`junction_counts`.
"""

from iclnb.graphs.families import (co_membership_agreement, days_of_week_ring, dual, grid, hex_lattice, hierarchy,
                                   ring, sbm, semantic_conflict)
from iclnb.graphs.graph import Graph
from iclnb.graphs.nested import nested_hierarchy, two_level_hierarchy
from iclnb.graphs.perturb import block_permute, cluster_runs, full_shuffle, junction_counts, non_edge_steps
from iclnb.graphs.vocab import GRID_WORDS, NOUNS, SEMANTIC_GROUPS, UNRELATED_GROUPS, WEEKDAYS
from iclnb.graphs.walks import (context_walk, dual_walk, hypothesis_adjacency, is_anchor, is_bridge, random_walk,
                                walk_words)

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
    "nested_hierarchy",
    "two_level_hierarchy",
    "semantic_conflict",
    "dual",
    "days_of_week_ring",
    "co_membership_agreement",
    "hypothesis_adjacency",
    "random_walk",
    "context_walk",
    "dual_walk",
    "is_bridge",
    "is_anchor",
    "walk_words",
    "cluster_runs",
    "block_permute",
    "full_shuffle",
    "non_edge_steps",
    "junction_counts",
]
