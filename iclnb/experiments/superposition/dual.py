"""What the superposition notebooks share: the dual graph of a run, its conditions (where the walk is disambiguated),
the walk of each context, the checks before any work, and the checkpointed forward passes."""

from __future__ import annotations

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.seeding import stream
from iclnb.experiments.kit import measure_contexts
from iclnb.experiments.params import Float, Int
from iclnb.prompts import check_fits

#: The control condition: the walk stays on edges common to both graphs to its end.
NEVER = "never"

GRAPH_PARAMS = (
    Int("n_clusters", 3, "clusters in each of the two clusterings H1, H2", min=2),
    Int("cluster_size", 5, "words per cluster (the dual graph has n_clusters x cluster_size words)", min=2),
    Float("p_intra", 0.8, "edge probability inside a cluster, in each of the graphs G1, G2", min=0.0, max=1.0),
    Float("p_inter", 0.15, "edge probability between clusters, in each of the graphs G1, G2", min=0.0, max=1.0),
    Float("max_agreement", 0.8, "H2 is redrawn while its co-membership agreement with H1 exceeds this (below 1: "
          "the two clusterings must differ)", min=0.0, max=1.0),
)


def make_graph(p) -> graphs.Graph:
    """The run's dual graph, from its own stream (changing the walks never changes it)."""
    return graphs.dual(p.n_clusters * p.cluster_size, p.n_clusters, rng=stream(p.seed, "graph"), p_intra=p.p_intra,
                       p_inter=p.p_inter, max_agreement=p.max_agreement)


def conditions(p) -> list[str]:
    """Condition names: each disambiguation percentage (``"25"``), then ``"never"``."""
    return [str(pct) for pct in p.disambiguation_percent] + [NEVER]


def disambiguate_at(condition: str, context_length: int) -> int | None:
    """The walk position D of a condition's disambiguating step (at least 1; None for ``"never"``)."""
    if condition == NEVER:
        return None
    return max(1, int(round(int(condition) * context_length / 100)))


def true_hypothesis(index: int) -> str:
    """Contexts alternate the true hypothesis, H1 for even indices: balanced for an even number of contexts."""
    return "H1" if index % 2 == 0 else "H2"


def context_walk(graph, context_length: int, seed: int, condition: str, index: int) -> np.ndarray:
    """The walk of context ``index`` in a condition. Its stream depends on the index only, and the walk sampler
    reads one uniform per position, so context k of every condition (the control included) shares its walk up to
    that condition's step D: the conditions form a paired design."""
    return graphs.dual_walk(graph, context_length, stream(seed, "walks", index), true_hypothesis(index),
                            disambiguate_at(condition, context_length))


def check_graph(graph) -> None:
    """Refuse a dual graph whose two clusterings are the same partition (nothing would be disambiguated)."""
    agreement = graphs.co_membership_agreement(graph.labelings["H1"], graph.labelings["H2"])
    if agreement >= 1.0:
        raise IclnbError("the dual graph's clusterings H1 and H2 are the same partition (co-membership agreement "
                         "1.0), so no step can tell them apart; use max_agreement below 1 (default 0.8)")


def common_graph(graph) -> dict:
    """The graph of the edges G1 and G2 share, which the walk follows before D: its edge count and connected
    components. A walk cannot leave the component it starts in before D, so the ambiguous part of a context visits
    only that component's words."""
    from scipy.sparse.csgraph import connected_components

    common = (np.asarray(graph.adjacency) > 0) & (np.asarray(graph.extra["G2_adjacency"]) > 0)
    n, labels = connected_components(common.astype(np.int8), directed=False)
    return {"n_edges": int(common.sum() // 2), "component": labels,
            "component_sizes": np.bincount(labels, minlength=n)}


def check_fit(p, model, graph) -> None:
    """Refuse, before any work, a context that does not fit the model, and layers it does not have; draw one walk
    per condition, so a degenerate graph is refused now rather than mid-run."""
    check_graph(graph)
    check_fits(model, graph.words, p.context_length, what="context_length")
    model.resolve_layers(p.layers)
    for condition in conditions(p):
        for index in (0, 1):
            context_walk(graph, p.context_length, p.seed, condition, index)


def collect(run, model, graph, p, layers, measure, checkpoint: str = "contexts") -> dict:
    """Run every (condition, context) once (all ``layers`` from one pass) and keep what ``measure((condition,
    index), walk, state)`` returns, checkpointed per batch under ``"<condition>/<index>"``: an interrupted run resumes
    where it stopped. Returns ``{condition: [item of context 0, 1, ...]}``; each item holds the walk and the
    measures."""
    units = [(c, k) for c in conditions(p) for k in range(p.n_contexts)]
    # The measures multiply small matrices (tens of rows); threaded BLAS on them is up to 10x slower than one thread
    # on a shared CPU (measured: 1.4 s vs 0.12 s per layer of one graph_adherence context).
    items = measure_contexts(run, model, units, lambda unit: context_walk(graph, p.context_length, p.seed, *unit),
                             lambda unit, walk, state: {"walk": walk, **measure(unit, walk, state)}, layers=layers,
                             batch_size=p.batch_size, words=lambda walk: graphs.walk_words(graph, walk),
                             checkpoint=checkpoint, measure_threads=1)
    return {c: items[i * p.n_contexts : (i + 1) * p.n_contexts] for i, c in enumerate(conditions(p))}
