"""The hierarchical steps and the shared level metrics against direct computations on small hand-made inputs; the
notebook's bad input, its multi-model provenance and its resume through `iclnb run` (slow)."""

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.seeding import stream
from iclnb.experiments.hierarchy import common
from iclnb.experiments.hierarchy import hierarchical as exp
from iclnb.metrics import cluster_separation, coherence, css, dirichlet_energy, node_means, separation_null
from iclnb.metrics.levels import css_extremes, first_exceeding, level_order, phi_by_level, prefix_views

# ------------------------------------------------------------------------------------------ the graph


def test_nested_hierarchy_with_equal_sizes_is_the_mixed_radix_hierarchy():
    a = graphs.nested_hierarchy([[4, 4], [4, 4]], rng=stream(3, "g"))
    b = graphs.hierarchy([2, 2, 4], rng=stream(3, "g"))
    assert np.array_equal(a.adjacency, b.adjacency) and a.words == b.words
    assert np.array_equal(a.hierarchy_distance, b.hierarchy_distance)
    assert all(np.array_equal(a.labelings[k], b.labelings[k]) for k in ("level_1", "level_2"))


def test_two_level_hierarchy_labels_distances_and_edge_probabilities():
    g = graphs.two_level_hierarchy(3, [2, 3], rng=stream(0, "g"), probabilities=[1.0, 0.0, 0.0])
    assert g.n == 15
    assert g.labelings["level_1"].tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert g.labelings["level_2"].tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4, 5, 5, 5]
    d = g.hierarchy_distance
    assert d[0, 1] == 1 and d[0, 2] == 2 and d[2, 4] == 1 and d[0, 5] == 3 and d[4, 14] == 3
    # probability 1 inside a sub-cluster, 0 elsewhere: the sub-clusters are cliques, linked only by repair edges
    within = d == 1
    assert np.all(g.adjacency[within] == 1)
    assert int(g.adjacency[~within].sum()) // 2 == len(g.extra["repair_edges"]) == 5


def test_nested_hierarchy_refuses_mixed_depths_and_wrong_probabilities():
    with pytest.raises(IclnbError, match="same depth"):
        graphs.nested_hierarchy([[2, 3], 4], rng=stream(0, "g"))
    with pytest.raises(IclnbError, match="one edge probability per hierarchy distance"):
        graphs.nested_hierarchy([[2, 3], [2, 3]], rng=stream(0, "g"), probabilities=[0.9, 0.1])


# ------------------------------------------------------------------------------------------ level metrics


def test_phi_by_level_is_cluster_separation_and_its_null_per_level():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6))
    nodes = rng.integers(0, 6, 60)
    labelings = {"level_1": np.array([0, 0, 0, 1, 1, 1]), "level_2": np.array([0, 0, 1, 2, 3, 3])}
    got = phi_by_level(x, nodes, labelings, n_null=15, rng=lambda level: stream(1, level), with_coherence=True)
    for level, lab in labelings.items():
        assert got[level]["phi"] == pytest.approx(cluster_separation(x, lab[nodes]))
        assert got[level]["coherence"] == pytest.approx(coherence(x, lab[nodes]))
        null = separation_null(x, nodes, lab, n_perm=15, rng=stream(1, level))
        assert got[level]["phi_null"] == pytest.approx(np.mean(null))
    assert np.isnan(phi_by_level(x, nodes, labelings)["level_1"]["phi_null"])


def test_prefix_views_take_the_first_n_words_without_the_sink():
    x = np.arange(20, dtype=float).reshape(10, 2)
    nodes = np.arange(10) % 3
    keep = np.ones(10, bool)
    keep[0] = False
    views = prefix_views(x, nodes, keep, [3, 10])
    assert views[3][0].tolist() == [[2.0, 3.0], [4.0, 5.0]] and views[3][1].tolist() == [1, 2]
    assert len(views[10][0]) == 9
    with pytest.raises(IclnbError, match="outside"):
        prefix_views(x, nodes, keep, [11])


def test_first_exceeding_by_hand():
    lengths = [10, 20, 30, 50]
    K = 20
    zero = np.zeros(K)  # never above 0, in any resample
    big = np.full(K, 5.0) + np.tile([-0.1, 0.1], K // 2)
    diff = np.stack([zero, big, big, big], axis=1)
    got = first_exceeding(lengths, diff, n_boot=200, rng=0)
    assert got["n_star"] == 20 and got["reached"]
    assert got["ci_low"] == 20 and got["ci_high"] == 20 and got["fraction_reached"] == 1.0
    # above at 10, not at 20, above after: "sustained" waits for 30, the plain rule takes 10
    flicker = np.stack([big, zero, big, big], axis=1)
    assert first_exceeding(lengths, flicker, n_boot=50, rng=0)["n_star"] == 30
    assert first_exceeding(lengths, flicker, n_boot=50, rng=0, sustained=False)["n_star"] == 10
    never = np.stack([zero] * 4, axis=1)
    none = first_exceeding(lengths, never, n_boot=50, rng=0)
    assert none["n_star"] is None and not none["reached"] and none["ci_high"] is None
    assert none["fraction_reached"] == 0.0


def test_level_order_counts_which_level_comes_first_in_the_same_resamples():
    lengths = [10, 20, 30]
    rng = np.random.default_rng(2)
    coarse = np.stack([rng.normal(3, 1, 25), rng.normal(3, 1, 25), rng.normal(3, 1, 25)], axis=1)
    fine = np.stack([rng.normal(0, 1, 25), rng.normal(0, 1, 25), rng.normal(3, 1, 25)], axis=1)
    out = level_order(lengths, {"level_1": coarse, "level_2": fine}, n_boot=300, rng=1)
    assert out["levels"]["level_1"]["n_star"] == 10 and out["levels"]["level_2"]["n_star"] == 30
    pair = out["pairs"][0]
    assert pair["coarser"] == "level_1" and pair["p_coarser_first"] > 0.9
    assert pair["p_coarser_first"] + pair["p_same"] + pair["p_finer_first"] == pytest.approx(1.0)
    assert out["order"] == ["level_1", "level_2"]


def test_css_extremes_against_css():
    rng = np.random.default_rng(4)
    loss = rng.normal(size=(30, 12))
    loss[:, 0] = np.nan
    phi = rng.normal(size=30)
    loss[:, 5] += 2 * phi  # one position strongly tied to Φ
    got = css_extremes(loss, phi, rng=0, n_boot=300, n_perm=300)
    ref = np.abs(css(loss, phi))
    assert got["max_abs"]["value"] == pytest.approx(np.nanmax(ref))
    assert got["mean_abs"]["value"] == pytest.approx(np.nanmean(ref))
    assert got["max_abs"]["ci_low"] <= got["max_abs"]["value"] <= got["max_abs"]["ci_high"]
    assert got["max_abs"]["p_value"] < 0.01 and got["max_abs"]["null_mean"] < got["max_abs"]["value"]


# ------------------------------------------------------------------------------------------ the experiment's steps


def _params(**kw):
    base = {"models": "gemma-3-270m", "context_lengths": "5,8", "n_contexts": 6, "n_boot": 50, "n_perm": 50,
            "seed": 3}
    return exp.PARAMS.validate({**base, **kw})


def test_walks_are_shared_by_models_and_fixed_per_context():
    p = _params()
    graph = exp.make_graph(p)
    walks = exp.make_walks(graph, p)
    assert walks.shape == (6, 8)
    assert np.array_equal(walks[4], graphs.context_walk(graph, 8, 3, 4, bridge_penalty=p.bridge_penalty))
    more = exp.make_walks(graph, _params(n_contexts=9))
    assert np.array_equal(more[:6], walks)  # separate streams: adding contexts never changes earlier ones


def test_measure_context_matches_direct_computation_per_prefix():
    p = _params()
    graph = exp.make_graph(p)
    walk = graphs.context_walk(graph, 8, 3, 0, bridge_penalty=p.bridge_penalty)
    rng = np.random.default_rng(0)
    reps = {0: rng.normal(size=(8, 5)), 3: rng.normal(size=(8, 5))}
    sink = np.zeros(8, bool)
    sink[0] = True
    state = SimpleNamespace(reps=reps, sink=sink)
    metrics, _ = common.measure_context(state, walk, graph, [5, 8], [0, 3], common.null_streams(3, 0))
    for layer in (0, 3):
        for n in (5, 8):
            x, ids = reps[layer][1:n], walk[1:n]
            got = metrics[str(layer)][str(n)]
            for level in ("level_1", "level_2"):
                lab = graph.labelings[level]
                ref = cluster_separation(x, lab[ids])
                assert got["levels"][level]["phi"] == pytest.approx(ref, nan_ok=True)
                null = separation_null(x, ids, lab, n_perm=common.N_NULL,
                                       rng=stream(3, "phi_null", "", 0, n, str(layer), level))
                if np.isfinite(null).any():
                    assert got["levels"][level]["phi_null"] == pytest.approx(np.nanmean(null))
            means, _ = node_means(x, ids, graph.n)
            assert got["energy_norm"] == pytest.approx(dirichlet_energy(means, graph.adjacency), nan_ok=True)


def _synthetic(p, graph, walks, layers=(0, 5)):
    rng = np.random.default_rng(1)
    K, L = walks.shape[0], len(p.context_lengths)
    arr = {}
    for layer in layers:
        arr[layer] = {"phi": {}, "phi_null": {}, "coherence": {},
                      "energy_norm": rng.uniform(size=(K, L)), "energy_raw": rng.uniform(size=(K, L))}
        for level in ("level_1", "level_2"):
            arr[layer]["phi"][level] = rng.normal(1.0, 0.2, size=(K, L)) + (layer > 0)
            arr[layer]["phi_null"][level] = rng.normal(0.1, 0.05, size=(K, L))
            arr[layer]["coherence"][level] = rng.normal(size=(K, L))
    loss = rng.normal(size=walks.shape)
    loss[:, 0] = np.nan
    return {"m": {"layers": list(layers), "word_loss": loss, "metrics": arr}}


def test_tables_summarise_the_per_context_metrics():
    p = _params()
    graph = exp.make_graph(p)
    walks = exp.make_walks(graph, p)
    measured = _synthetic(p, graph, walks)
    tab = exp.tables(measured, graph, walks, p)
    arr = measured["m"]["metrics"][5]
    e = tab["m"]["N_8"]["layer_5"]
    assert e["phi"]["level_2"]["mean"] == pytest.approx(arr["phi"]["level_2"][:, 1].mean())
    assert e["phi"]["level_2"]["null_mean"] == pytest.approx(arr["phi_null"]["level_2"][:, 1].mean())
    assert e["phi"]["level_2"]["excess_mean"] == pytest.approx(
        (arr["phi"]["level_2"][:, 1] - arr["phi_null"]["level_2"][:, 1]).mean())
    ref = css(measured["m"]["word_loss"][:, :8], arr["phi"]["level_1"][:, 1])
    np.testing.assert_allclose(np.asarray(e["css_by_position"]["level_1"]["css"], dtype=float), ref)
    assert e["css_max_abs"]["level_1"]["value"] == pytest.approx(np.nanmax(np.abs(ref)))
    # the first 5 positions at N = 5: a length off by one would change the CSS of position 4
    ref5 = css(measured["m"]["word_loss"][:, :5], measured["m"]["metrics"][5]["phi"]["level_1"][:, 0])
    np.testing.assert_allclose(np.asarray(tab["m"]["N_5"]["layer_5"]["css_by_position"]["level_1"]["css"],
                                          dtype=float), ref5)
    assert tab["m"]["onset"]["layer_5"]["levels"]["level_1"]["n_star"] == 5
    assert tab["m"]["figure_layer"] == 5  # the larger excess
    assert e["energy_norm"]["chance"] == pytest.approx(len(graph.edges()) / (15 * 14 / 2))
    table = exp.summary_table(tab, ["level_1", "level_2"])
    assert len(table) == 4


def test_bad_sub_cluster_list_is_refused_in_one_line():
    p = _params(sub_cluster_sizes="5")
    with pytest.raises(IclnbError, match="at least 2 sub-clusters"):
        exp.check(p, None)


# ------------------------------------------------------------------------------------------ through iclnb run (slow)


def _iclnb(*args):
    import os

    proc = subprocess.run([sys.executable, "-m", "iclnb", *args], capture_output=True, text=True,
                          env={**os.environ, "ICLNB_PROGRESS": "text"})
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.startswith("iclnb: error:")], proc


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["-p", "models", "gemma-3-270m,no-such-model-anywhere"], "cannot load model 'no-such-model-anywhere'"),
    (["-p", "context_lengths", "10,40000"], "more than the 32768 gemma-3-270m can read"),
    (["-p", "models", "gemma-3-270m,smollm2-135m", "-p", "layers", "0,25"], "layer 25 is out of range"),
])
def test_bad_input_gives_one_line_before_any_work(tmp_path, args, message):
    rc, lines, proc = _iclnb("run", "hierarchical", *args, "-p", "n_contexts", "2", "-o", str(tmp_path / "bad"))
    assert rc == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bad").exists()  # refused on the models' files, before anything is written or loaded


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results_with_two_models(tmp_path):
    from iclnb.results.io import read_json
    from tests.test_resume import killed_and_resumed, same_results

    params = ["-p", "models", "smollm2-135m,gemma-3-270m", "-p", "context_lengths", "6,10", "-p", "n_contexts", "4",
              "-p", "layers", "0,-1", "-p", "batch_size", "1", "-p", "n_boot", "20", "-p", "n_perm", "20"]
    a, b, broken, _ = killed_and_resumed("hierarchical", params, tmp_path)
    assert same_results(a, b)
    models = a["results"]["models"]
    assert set(models) == {"smollm2-135m", "gemma-3-270m"}
    assert set(models["gemma-3-270m"]["N_10"]["layer_17"]["phi"]) == {"level_1", "level_2"}
    assert len(a["results"]["walks"]) == 4 and len(a["results"]["walks"][0]) == 10
    config = read_json(broken / "config.json")
    assert {"smollm2-135m", "gemma-3-270m"} <= set(config["model"]["models"])
    assert config["model"]["models"]["smollm2-135m"]["n_layers"] == 30
