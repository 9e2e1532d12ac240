"""graph_adherence: the four window measures against hand-worked values and independent computations (scikit-learn
for the probe), their orientation (> 0.5 means H1), the node-grouped folds, the summaries, and (slow) bad input and
resume through `iclnb run`."""

import numpy as np
import pytest

from iclnb.core.errors import IclnbError
from iclnb.core.seeding import stream
from iclnb.experiments.superposition import dual
from iclnb.experiments.superposition import graph_adherence as exp
from iclnb.metrics import node_means
from iclnb.metrics.superposition import (edge_energy_ratio, exclusive_edges, grouped_probe_accuracy,
                                         knn_consistency, node_folds, separation, separation_ratio)


def _params(**kw):
    return exp.PARAMS.validate({"n_boot": 50, "n_perm": 50, "seed": 5, **kw})


def test_edge_energy_ratio_uses_only_the_edges_one_graph_has():
    means = np.array([[0.0, 0], [1, 0], [0, 2], [5, 5]])
    a = np.zeros((4, 4), int)
    b = np.zeros((4, 4), int)
    for i, j in ((0, 1), (2, 3)):
        a[i, j] = a[j, i] = 1
    for i, j in ((0, 2), (2, 3)):
        b[i, j] = b[j, i] = 1
    only_a, only_b = exclusive_edges(a, b)
    assert only_a.tolist() == [[0, 1]] and only_b.tolist() == [[0, 2]]
    got = edge_energy_ratio(means, a, b)
    assert got["a"] == pytest.approx(1.0) and got["b"] == pytest.approx(4.0)
    assert got["ratio"] == pytest.approx(4.0 / 5.0)  # a's own edges are shorter: above 0.5
    means[1] = np.nan  # node 1 unseen: a has no usable edge of its own
    assert np.isnan(edge_energy_ratio(means, a, b)["ratio"])


def test_separation_by_hand():
    means = np.array([[0.0, 0], [2, 0], [10, 0], [12, 0], [np.nan, np.nan]])
    lab = np.array([0, 0, 1, 1, 1])
    # centroids 1 and 11: between 100; within (1+1+1+1) / (4 - 2) = 2
    assert separation(means, lab) == pytest.approx(50.0)
    other = np.array([0, 1, 0, 1, 0])  # centroids 5 and 7: between 4; within (25+25+25+25)/2 = 50
    assert separation(means, other) == pytest.approx(0.08)
    assert separation_ratio(means, lab, other)["ratio"] == pytest.approx(50 / 50.08)
    assert np.isnan(separation(means, np.zeros(5, int)))  # one cluster


def test_knn_consistency_by_hand():
    means = np.array([[0.0], [1.0], [10.0], [11.0], [30.0]])
    lab = np.array([0, 0, 1, 1, 0])
    assert knn_consistency(means, lab, 1) == pytest.approx(4 / 5)  # node 4's nearest, node 3, is in another cluster
    assert knn_consistency(means, np.array([0, 1, 0, 1, 0]), 1) == pytest.approx(0.0)
    assert knn_consistency(means, lab, 10) == pytest.approx((2 + 2 + 1 + 1 + 2) / 20)  # k capped at the 4 others
    means[2] = np.nan  # unseen nodes are neither counted nor neighbours
    assert knn_consistency(means, lab, 1) == pytest.approx(2 / 4)  # 3 -> 1 and 4 -> 3 cross clusters


def test_probe_matches_scikit_learn_fold_by_fold():
    from sklearn.linear_model import RidgeClassifier

    rng = np.random.default_rng(0)
    n_nodes, d = 9, 12
    la, lb = np.arange(n_nodes) % 3, np.array([0, 1, 2, 1, 2, 0, 2, 0, 1])
    nodes = rng.integers(0, n_nodes, size=60)
    x = rng.normal(size=(60, d)) + 2.0 * np.eye(3, d)[la[nodes]]
    folds = node_folds(n_nodes, 3, stream(0, "folds"))
    got = grouped_probe_accuracy(x, [la, lb], nodes, folds, ridge=0.7)
    for labels, acc in zip((la, lb), got):
        correct = 0
        for f in range(3):
            test, train = folds[nodes] == f, folds[nodes] != f
            xc = x[train] - x[train].mean(axis=0)
            lam = 0.7 * np.sum(xc * xc) / train.sum()
            clf = RidgeClassifier(alpha=lam).fit(x[train], labels[nodes[train]])
            correct += np.sum(clf.predict(x[test]) == labels[nodes[test]])
        assert acc == pytest.approx(correct / len(nodes))


def test_the_probe_never_sees_a_test_node_in_training():
    """Each node a tight random blob, clusters unrelated to the blobs: a probe that had seen the node would be
    perfect; with node-grouped folds it can only guess."""
    rng = np.random.default_rng(1)
    n_nodes = 15
    centres = rng.normal(size=(n_nodes, 40)) * 10
    nodes = np.repeat(np.arange(n_nodes), 8)
    x = centres[nodes] + 0.01 * rng.normal(size=(nodes.size, 40))
    labels = np.arange(n_nodes) % 3
    grouped = grouped_probe_accuracy(x, [labels], nodes, node_folds(n_nodes, 5, stream(1, "f")))[0]
    rows = np.arange(nodes.size)  # each row its own group: rows of one node fall in train and test
    leaky = grouped_probe_accuracy(x, [labels[nodes]], rows, rows % 5)[0]
    assert leaky > 0.95
    assert grouped < 0.6


def test_node_folds_cover_every_node_once():
    folds = node_folds(15, 4, stream(0, "f"))
    assert sorted(np.bincount(folds).tolist()) == [3, 4, 4, 4]
    with pytest.raises(IclnbError, match="n_folds"):
        node_folds(3, 5, stream(0, "f"))


def test_window_ends():
    assert exp.window_ends(100, 50, 25) == [50, 75, 100]
    assert exp.window_ends(110, 50, 25) == [50, 75, 100, 110]


def test_window_measures_match_direct_computation():
    p = _params()
    graph = dual.make_graph(p)
    walk = dual.context_walk(graph, 60, p.seed, "50", 0)
    x = np.random.default_rng(2).normal(size=(60, 6))
    valid = np.ones(60, bool)
    valid[0] = False
    folds = node_folds(graph.n, 5, stream(0, "f"))
    got = exp.window_measures(x, walk, valid, graph, [30, 60], 30, 4, folds, 1.0)
    h1, h2 = graph.labelings["H1"], graph.labelings["H2"]
    for i, e in enumerate((30, 60)):
        rows = np.arange(e - 30, e)
        rows = rows[valid[rows]]
        means, _ = node_means(x[rows], walk[rows], graph.n)
        energy = edge_energy_ratio(means, graph.adjacency, graph.extra["G2_adjacency"])
        assert got["energy_g1"][i] == pytest.approx(energy["a"])
        assert got["separation_h2"][i] == pytest.approx(separation(means, h2))
        assert got["knn_h1"][i] == pytest.approx(knn_consistency(means, h1, 4))
        assert got["probe_h2"][i] == pytest.approx(grouped_probe_accuracy(x[rows], [h2], walk[rows], folds)[0])


def test_ratios_are_above_half_for_representations_that_follow_h1():
    """Node vectors built from H1 (cluster centre + noise): every measure says H1; from H2: every one says H2."""
    p = _params(n_contexts=2)
    graph = dual.make_graph(p)
    rng = np.random.default_rng(3)
    folds = node_folds(graph.n, 5, stream(0, "f"))
    for name in ("H1", "H2"):
        walk = dual.context_walk(graph, 120, p.seed, "never", 0)
        centre = 5.0 * rng.normal(size=(3, 16))
        x = centre[graph.labelings[name][walk]] + rng.normal(size=(120, 16))
        parts = exp.window_measures(x, walk, np.ones(120, bool), graph, [60, 120], 60, 4, folds, 1.0)
        r = exp.ratios([{"layers": {"0": parts}}], 0)
        for metric in exp.SUMMARY_METRICS:
            values = r[metric][0]
            assert np.all(values > 0.5) if name == "H1" else np.all(values < 0.5), (name, metric, values)


def test_summaries_orient_each_context_to_its_truth():
    p = _params(n_contexts=2, context_length=100, window=50, stride=25, disambiguation_percent="50")
    ends = exp.window_ends(100, 50, 25)  # 50, 75, 100

    def item(h1_value):  # every measure equal to h1_value in every window (parts chosen to give that ratio)
        a, b = [h1_value] * len(ends), [1 - h1_value] * len(ends)
        return {"layers": {"0": {"energy_g1": b, "energy_g2": a, "separation_h1": a, "separation_h2": b,
                                 "probe_h1": a, "probe_h2": b, "knn_h1": a, "knn_h2": b}}}

    data = {"50": [item(0.8), item(0.2)], "never": [item(0.5), item(0.5)]}  # context 1's truth is H2
    out = exp.summarise(data, p, [0])
    e = out["condition_50"]["layer_0"]
    for metric in exp.SUMMARY_METRICS:
        m = e["metrics"][metric]
        np.testing.assert_allclose(m["toward_truth"]["mean"], 0.8)
        np.testing.assert_allclose(m["H1_true"]["mean"], 0.8)
        np.testing.assert_allclose(m["H2_true"]["mean"], 0.2)
        assert m["before"]["mean"] == pytest.approx(0.8)  # the window ending at 50
        assert m["after"]["mean"] == pytest.approx(0.8)  # windows with half their words from 50 on: 75, 100
        assert m["after_vs_never"]["mean"] == pytest.approx(0.3)
    assert out["condition_never"]["layer_0"]["metrics"]["mean"]["after"]["mean"] == pytest.approx(0.5)
    np.testing.assert_allclose(e["probe_accuracy"]["true"]["mean"], 0.8)
    assert exp.best_layer(out) == "layer_0"
    assert "energy_ratio after - never" in exp.summary_table(out).columns


def test_check_refuses_before_any_work():
    from tests.experiments.test_superposition_collapse import _Model

    for kw, message in (({"window": 500, "context_length": 400}, "window 500 is longer than context_length 400"),
                        ({"probe_folds": 16}, "probe_folds 16 exceeds the 15 words"),
                        ({"knn_k": 15}, "knn_k 15 leaves no node"),
                        ({"context_length": 400}, "context_length 400 may need .* tokens, more than the 300")):
        with pytest.raises(IclnbError, match=message) as info:
            exp.check(_params(**kw), _Model(300))
        assert "\n" not in str(info.value)


def test_notebook_parameters_cell_is_the_declaration():
    import nbformat

    nb = nbformat.read("notebooks/graph_adherence.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == exp.PARAMS.parameters_cell()


# ------------------------------------------------------------------------------------------------ end to end

SMALL = ["-p", "n_contexts", "2", "-p", "context_length", "60", "-p", "disambiguation_percent", "0,50", "-p",
         "layers", "0,-1", "-p", "window", "20", "-p", "stride", "20", "-p", "n_boot", "50", "-p", "n_perm", "50",
         "-p", "batch_size", "1"]


@pytest.mark.slow
def test_bad_input_gives_one_line(tmp_path):
    from tests.experiments.test_superposition_collapse import _iclnb

    rc, lines, proc = _iclnb("run", "graph_adherence", *SMALL, "-p", "max_agreement", "0.0", "-o", str(tmp_path))
    assert rc != 0 and lines and "could not draw an H2 clustering" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_resume_after_a_kill_gives_identical_results(tmp_path):
    from tests.test_resume import killed_and_resumed, same_results

    broken, whole, _, _ = killed_and_resumed("graph_adherence", SMALL, tmp_path)
    assert same_results(broken, whole)
    assert set(whole["results"]["conditions"]) == {"0", "50", "never"}
