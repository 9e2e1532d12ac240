"""The css_basic steps against direct computations on small hand-made inputs."""

import numpy as np
import pytest

from iclnb import graphs
from iclnb.experiments.css import css_basic as exp
from iclnb.metrics.structure import CONTEXT_NULL_PERMUTATIONS
from iclnb.metrics import (cluster_separation, coherence, css, dirichlet_energy, node_losses, node_means,
                           separation_null)


def test_node_losses_and_class_losses_by_hand():
    walks = np.array([[0, 1, 0, 2], [2, 2, 1, 1]])
    loss = np.array([[np.nan, 1.0, 3.0, 5.0], [np.nan, 2.0, 4.0, 6.0]])
    node = node_losses(walks, loss, 3)
    np.testing.assert_allclose(node, [[3.0, 1.0, 5.0], [np.nan, 5.0, 2.0]])
    bridge = np.array([[False, True, False, True], [False, False, True, False]])
    np.testing.assert_allclose(exp._class_losses(loss, bridge), [[3.0, 3.0], [4.0, 4.0]])


def test_context_metrics_match_direct_computation():
    graph = exp.make_graph(seed=3)
    walk = graphs.context_walk(graph, 40, seed=3, index=0, bridge_penalty=0.3)
    reps = np.random.default_rng(0).normal(size=(40, 8))
    keep = np.ones(40, bool)
    keep[0] = False  # the sink word
    got = exp.context_metrics(reps, walk, graph, keep, null_rng=np.random.default_rng(5))
    labels = graph.labelings["cluster"][walk]
    assert got["phi"] == pytest.approx(cluster_separation(reps[1:], labels[1:]))
    assert got["coherence"] == pytest.approx(coherence(reps[1:], labels[1:]))
    means, _ = node_means(reps[1:], walk[1:], graph.n)
    assert got["energy_norm"] == pytest.approx(dirichlet_energy(means, graph.adjacency))
    null = separation_null(reps[1:], walk[1:], graph.labelings["cluster"], n_perm=CONTEXT_NULL_PERMUTATIONS,
                           rng=np.random.default_rng(5))
    assert got["phi_null"] == pytest.approx(np.nanmean(null))
    nxt = exp.context_metrics(reps, walk, graph, keep, label="next")
    assert nxt["phi"] == pytest.approx(cluster_separation(reps[1:-1], labels[2:]))
    assert np.isnan(nxt["phi_null"])  # no generator, no null


def test_walks_are_fixed_per_context_index():
    graph = exp.make_graph(seed=1)
    a = graphs.context_walk(graph, 30, 1, 5, bridge_penalty=0.3)
    assert np.array_equal(a, graphs.context_walk(graph, 30, 1, 5, bridge_penalty=0.3))
    assert not np.array_equal(a, graphs.context_walk(graph, 30, 1, 6, bridge_penalty=0.3))
    assert np.array_equal(graph.adjacency, exp.make_graph(seed=1).adjacency)


def test_css_tables_use_the_per_context_metric():
    graph = exp.make_graph(seed=0)
    k, n = 12, 10
    rng = np.random.default_rng(1)
    walks = np.stack([graphs.context_walk(graph, n, 0, i, bridge_penalty=0.3) for i in range(k)])
    loss = rng.normal(size=(k, n))
    loss[:, 0] = np.nan
    metrics = {0: {name: rng.normal(size=k) for name in exp.PER_CONTEXT}}
    contexts = exp.Contexts([0], walks, loss, metrics, np.array([graphs.is_bridge(graph, w) for w in walks]))
    p = exp.PARAMS.validate({"n_boot": 100, "n_perm": 100, "seed": 0})
    tables = exp.css_tables(contexts, graph, p)
    got = np.asarray(tables["layer_0"]["css_by_position"]["energy_norm"]["css"], dtype=float)
    np.testing.assert_allclose(got[1:], css(loss, metrics[0]["energy_norm"])[1:])
    assert np.isnan(got[0])
    assert tables["layer_0"]["summary"]["phi_null"]["mean"] == pytest.approx(metrics[0]["phi_null"].mean())
    summary = exp.summary_table(tables)
    assert list(summary["metric"]) == list(exp.METRICS)
    assert {"css_bridge", "css_anchor"} <= set(summary.columns)
