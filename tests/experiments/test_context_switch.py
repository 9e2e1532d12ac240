"""context_switch: pair classes, windowed distances, the crossing and its bootstrap against direct computations on
hand-made inputs; walks and prefix reuse on a tiny model; bad input, the notebook's results and resume end to end."""

import json
import re
import subprocess
import sys
from itertools import combinations
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iclnb.core.errors import IclnbError
from iclnb.core.layers import resolve_layers
from iclnb.experiments.switching import context_switch as exp
from iclnb.graphs import Graph
from iclnb.graphs.walks import hypothesis_adjacency


def _pair(h1, h2):
    """A dual graph with the given clusterings (complete graphs inside clusters, which is all the tests need)."""
    h1, h2 = np.asarray(h1), np.asarray(h2)
    g1 = (h1[:, None] == h1[None, :]).astype(np.uint8)
    g2 = (h2[:, None] == h2[None, :]).astype(np.uint8)
    np.fill_diagonal(g1, 0)
    np.fill_diagonal(g2, 0)
    return Graph(name="dual", adjacency=g1, words=tuple(f"w{i}" for i in range(len(h1))),
                 labelings={"H1": h1, "H2": h2}, extra={"G2_adjacency": g2, "agreement": 0.5})


def test_pair_classes_by_hand():
    graph = _pair([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])
    got = {k: v.tolist() for k, v in exp.pair_classes(graph).items()}
    assert got["shared"] == [[0, 1], [4, 5]]
    assert got["g1"] == [[0, 2], [1, 2], [3, 4], [3, 5]]
    assert got["g2"] == [[2, 3]]
    assert sorted(map(tuple, sum(got.values(), []))) == list(combinations(range(6), 2))


def _direct(reps, nodes, classes, end, window, perm=None):
    """Node means over rows [end - window, end) and class distances, with explicit loops."""
    rows = range(end - window, end)
    n = int(nodes.max()) + 1
    means = {i: np.mean([reps[t] for t in rows if nodes[t] == i], axis=0)
             for i in range(n) if any(nodes[t] == i for t in rows)}
    if perm is not None:
        means = {i: means[perm[i]] for i in range(n) if perm[i] in means}

    def dist(pairs):
        d = [np.linalg.norm(means[a] - means[b]) for a, b in pairs if a in means and b in means]
        return np.mean(d) if d else np.nan
    return {f"d_{k}": dist(v) for k, v in classes.items()}


def test_switch_measures_match_loops_and_respect_the_window():
    rng = np.random.default_rng(0)
    graph = _pair([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2])
    classes = exp.pair_classes(graph)
    T, window = 60, 12
    nodes = rng.integers(0, 6, T)
    reps = rng.normal(size=(T, 5))
    ends = np.array([30, 35, 60])
    perms = np.stack([rng.permutation(6) for _ in range(4)])
    got = exp.switch_measures(reps, nodes, 6, classes, ends, window, perms)
    for e, end in enumerate(ends):
        want = _direct(reps, nodes, classes, end, window)
        for name in ("d_g1", "d_g2", "d_shared", "d_neither"):
            assert got[name][e] == pytest.approx(want[name], rel=1e-10)
        assert got["ratio"][e] == pytest.approx(want["d_g1"] / want["d_g2"])
        assert got["g2_vs_neither"][e] == pytest.approx(want["d_g2"] / want["d_neither"])
        nulls = [_direct(reps, nodes, classes, end, window, perm) for perm in perms]
        assert got["ratio_null"][e] == pytest.approx(np.nanmean([d["d_g1"] / d["d_g2"] for d in nulls]))
    # the word at the end point itself is not in its window, the first word of the window is
    moved = reps.copy()
    moved[30] += 100.0
    assert exp.switch_measures(moved, nodes, 6, classes, [30], window)["ratio"][0] == got["ratio"][0]
    moved = reps.copy()
    moved[30 - window] += 100.0
    assert exp.switch_measures(moved, nodes, 6, classes, [30], window)["ratio"][0] != got["ratio"][0]


def test_ratio_follows_the_clustering_the_vectors_encode():
    """Vectors clustered by H1 give ratio < 1, by H2 ratio > 1; the node-permuted null sits near 1."""
    rng = np.random.default_rng(1)
    h1, h2 = np.repeat([0, 1, 2], 5), rng.permutation(np.repeat([0, 1, 2], 5))
    graph = _pair(h1, h2)
    nodes = rng.integers(0, 15, 400)
    centres = rng.normal(size=(3, 16)) * 3
    first = centres[h1[nodes[:200]]] + rng.normal(size=(200, 16))
    second = centres[h2[nodes[200:]]] + rng.normal(size=(200, 16))
    perms = np.stack([rng.permutation(15) for _ in range(50)])
    got = exp.switch_measures(np.vstack([first, second]), nodes, 15, exp.pair_classes(graph), [200, 400], 150, perms)
    assert got["ratio"][0] < 0.6 < 1.6 < got["ratio"][1]
    assert abs(got["ratio_null"][0] - 1) < 0.15 and abs(got["ratio_null"][1] - 1) < 0.15
    assert got["shared_vs_neither"][0] < 0.6 and got["shared_vs_neither"][1] < 0.6


def test_crossing_by_hand():
    assert exp.crossing([0.5, 0.8, 1.2], [0, 10, 20]) == pytest.approx(15.0)
    assert exp.crossing([0.5, 1.0, 1.2], [0, 10, 20]) == pytest.approx(10.0)
    assert exp.crossing([0.5, np.nan, 1.5], [0, 10, 20]) == pytest.approx(10.0)
    assert exp.crossing([0.9, 1.1, 0.8, 1.3], [0, 4, 8, 16]) == pytest.approx(2.0)  # the first crossing
    assert np.isnan(exp.crossing([1.0, 0.8, 1.2], [0, 10, 20]))
    assert exp.crossing([0.5, 0.6, 0.7], [0, 10, 20]) == np.inf


def test_resampled_means_draw_contexts_within_each_graph_pair():
    values = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)
    values[1, 2, 1] = np.nan
    rngs = [np.random.default_rng(5), np.random.default_rng(6)]
    got = exp.resampled_means(values, 4, rngs)
    a = np.random.default_rng(5).integers(0, 3, size=(4, 3))
    b = np.random.default_rng(6).integers(0, 3, size=(4, 3))
    drawn = np.concatenate([values[0][a], values[1][b]], axis=1)
    np.testing.assert_allclose(got, np.nanmean(drawn, axis=1))
    assert np.allclose(exp.resampled_means(np.ones((3, 4, 2)), 7, [np.random.default_rng(i) for i in range(3)]), 1)


def test_crossing_summary_times_only_a_switch_that_starts_below_one():
    n2 = [0, 10, 20]
    rng = np.random.default_rng(0)
    values = np.array([0.5, 0.8, 1.2]) + rng.normal(scale=0.02, size=(1, 20, 3))
    resamples = exp.resampled_means(values, 500, [np.random.default_rng(1)])
    low, high = np.percentile(resamples, [2.5, 97.5], axis=0)
    s = exp.crossing_summary(values, n2, resamples, low, high)
    assert s["starts_below"] and s["n2"] == pytest.approx(exp.crossing(values[0].mean(0), n2))
    assert s["ci_low"] <= s["n2"] <= s["ci_high"] and 13 < s["ci_low"] and s["ci_high"] < 17
    assert s["n2_above"] == 20 and s["resamples_crossing"] == 1.0
    flat = np.array([0.99, 1.0, 1.1]) + np.zeros((1, 20, 3))
    flat[0, :, 0] += np.tile([0.2, -0.2], 10)  # a start below 1 whose CI reaches 1: no switch to time
    resamples = exp.resampled_means(flat, 500, [np.random.default_rng(2)])
    low, high = np.percentile(resamples, [2.5, 97.5], axis=0)
    s = exp.crossing_summary(flat, n2, resamples, low, high)
    assert s["n2"] is None and not s["starts_below"] and s["n2_point"] == pytest.approx(10.0)
    never = np.array([0.5, 0.6, 0.7]) + np.zeros((1, 5, 3))
    s = exp.crossing_summary(never, n2, exp.resampled_means(never, 50, [np.random.default_rng(3)]),
                             never[0, 0], never[0, 0])
    assert s["n2"] is None and s["beyond_largest_n2"] and s["ci_high"] is None and s["resamples_crossing"] == 0


def _params(**kw):
    base = {"n1": 30, "n2_values": "0,5,10", "n_contexts": 2, "n_graph_pairs": 2, "window": 10, "n_boot": 50,
            "layers": "0,-1"}
    return exp.PARAMS.validate({**base, **kw})


def test_walks_switch_graphs_and_reuse_prefixes():
    p = _params()
    graph = exp.make_graph_pair(p, 0)
    g1, g2 = graph.adjacency, hypothesis_adjacency(graph, "H2")
    walk1, walk2 = exp.context_walks(graph, 40, 30, p.seed, 0, 1)
    assert len(walk1) == 40 and len(walk2) == 30
    assert all(g1[a, b] for a, b in zip(walk1[:-1], walk1[1:]))
    full = np.concatenate([walk1[-1:], walk2])
    assert all(g2[a, b] for a, b in zip(full[:-1], full[1:]))  # the step across the switch is a G2 edge
    short1, short2 = exp.context_walks(graph, 40, 12, p.seed, 0, 1)
    assert np.array_equal(short1, walk1) and np.array_equal(short2, walk2[:12])
    other1, _ = exp.context_walks(graph, 40, 30, p.seed, 0, 2)
    assert not np.array_equal(other1, walk1)
    assert np.array_equal(exp.make_graph_pair(p, 1).adjacency, exp.make_graph_pair(_params(n_graph_pairs=5), 1).adjacency)


def _fake_model(tokenizer, n_layers=18, max_positions=512):
    return SimpleNamespace(tokenizer=tokenizer, max_positions=max_positions, name="fake", n_layers=n_layers,
                           resolve_layers=lambda spec: resolve_layers(spec, n_layers, "fake"))


def test_check_refuses_bad_input_with_one_line():
    from tests.test_prompts import _tokenizer

    model = _fake_model(_tokenizer(True), max_positions=4096)
    exp.check(_params(), model)
    for kw, message in [
        ({"window": 30}, "parameter window must be at most n1 - 1 (29), got 30"),
        ({"n2_values": "0,5,100000"}, "n1 + the largest n2 100030 may need"),
        ({"n2_values": "0,5,100000"}, "more than the 4096 fake can read; use at most"),
        ({"n_clusters": 15, "max_agreement": 1.0}, "H1 and H2 put the same words together"),
        ({"layers": "0,40"}, "out of range"),
    ]:
        with pytest.raises(IclnbError, match=re.escape(message)) as info:
            exp.check(_params(**kw), model)
        assert "\n" not in str(info.value)
    with pytest.raises(IclnbError, match="parameter n_clusters must be at least 2, got 1"):
        exp.check(_params(n_clusters=1), model)


def test_check_graph_pair_accepts_only_differing_clusterings():
    exp.check_graph_pair(_pair([0, 0, 1, 1], [0, 1, 0, 1]), 0)
    with pytest.raises(IclnbError, match="graph pair 3"):
        exp.check_graph_pair(_pair([0, 0, 1, 1], [1, 1, 0, 0]), 3)


@pytest.fixture(scope="module")
def tiny():
    from tests.test_prompts import _tokenizer
    from tests.tiny_models import tiny_model

    tok = _tokenizer(False)  # no BOS: the first word is the sink; the graph words split into several tokens
    model, _ = tiny_model("gpt2", tokenizer=tok)
    with torch.no_grad():
        model.hf.resize_token_embeddings(len(tok))
    return model


def test_one_pass_serves_every_n2_on_a_tiny_model(tiny):
    """The long pass's measures at n2 equal those of a pass that stops at n1 + n2 (prefix reuse, exact spans)."""
    p = _params(n1=20, n2_values="0,4,9", window=8)
    graph = exp.make_graph_pair(p, 0)
    words = exp.graphs.walk_words(graph, np.concatenate(exp.context_walks(graph, 20, 9, p.seed, 0, 0)))
    from iclnb.prompts import encode_walk
    from iclnb.represent import represent_walks
    assert len(encode_walk(tiny.tokenizer, words)) > len(words)  # multi-token words: no word = token assumption
    layers = tiny.resolve_layers(p.layers)

    def measured(p):
        walk = exp.context_walk(graph, p, 0, 0)
        state = represent_walks(tiny, [exp.graphs.walk_words(graph, walk)], layers)[0]
        return exp.measure_context(state, walk, graph, p, 0, 0, layers)

    long = measured(p)
    for e, n2 in enumerate([0, 4, 9]):
        short = measured(_params(n1=20, n2_values=str(n2), window=8))
        assert short["tokens"][0] == long["tokens"][e]
        for layer in layers:
            for name in exp.METRICS:
                np.testing.assert_allclose(short["metrics"][str(layer)][name][0],
                                           long["metrics"][str(layer)][name][e], rtol=2e-4, atol=1e-6)
    assert long["tokens"][0] == len(encode_walk(tiny.tokenizer, words[:20]))
    assert long["metrics"][str(layers[0])]["ratio"][0] != long["metrics"][str(layers[-1])]["ratio"][0]


def test_tables_document_and_tidy_rows(tiny, tmp_path):
    from iclnb.results.io import write_json
    from iclnb.results.run import Run

    p = _params(n1=20, n2_values="0,4,9", window=8, output_dir=str(tmp_path))
    run = Run.open(tmp_path, "context_switch", dict(p))
    collected = exp.collect(run, tiny, p)
    tables = exp.switch_tables(collected, p)
    doc = exp.results_document(collected, tables, p, tiny)
    run.close()
    cell = doc["graph_pair_1"]["n2_4"]["layer_3"]
    per_context = collected.values[3]["ratio"][1, :, 1]
    assert cell["mean"] == pytest.approx(np.nanmean(per_context)) and len(cell["per_context"]) == 2
    assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    pooled = doc["pooled"]["n2_9"]["layer_0"]
    assert pooled["mean"] == pytest.approx(np.nanmean(collected.values[0]["ratio"][:, :, 2]))
    assert len(pooled["per_context"]) == 4 and "ratio_null" in pooled and "d_shared" in pooled
    assert set(doc["pooled"]["crossing"]) == {"layer_0", "layer_3"}
    path = write_json(tmp_path / "doc.json", {"results": doc})
    assert json.loads(path.read_text(), parse_constant=lambda t: pytest.fail(t))
    rows = exp.tidy_rows(SimpleNamespace(results=doc, params=dict(p)), 50, 0)
    ratio_rows = [r for r in rows if r["metric"] == "switch_ratio"]
    assert len(ratio_rows) == 3 * 3 * 2  # (2 pairs + pooled) x 3 n2 x 2 layers
    first = next(r for r in ratio_rows if r["condition"] == "graph_pair_1" and r["N"] == 24 and r["layer"] == 3)
    assert first["mean"] == pytest.approx(cell["mean"])
    table = exp.summary_table(tables, p.n2_values)
    assert len(table) == 3 * 2
    assert collected.tokens.shape == (2, 2, 3) and (np.diff(collected.tokens, axis=-1) > 0).all()


# ---------------------------------------------------------------------------------------------- end to end (slow)

SMALL = ["-p", "n1", "40", "-p", "n2_values", "0,5,10,20", "-p", "n_contexts", "3", "-p", "n_graph_pairs", "3",
         "-p", "layers", "0,-1", "-p", "window", "15", "-p", "n_boot", "50"]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["-p", "n2_values", "0,40000"], "more than the 32768 gemma-3-270m can read; use at most"),
    (["-p", "n_clusters", "15", "-p", "max_agreement", "1"], "H1 and H2 put the same words together"),
    (["-p", "window", "40"], "parameter window must be at most n1 - 1 (39), got 40"),
])
def test_bad_input_through_iclnb_run(tmp_path, args, message):
    out = tmp_path / "bad"
    proc = subprocess.run([sys.executable, "-m", "iclnb", "run", "context_switch", *SMALL, *args, "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("iclnb: error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not out.exists()  # refused before anything is written or loaded


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results(tmp_path):
    from tests.test_resume import killed_and_resumed, same_results

    a, b, broken, _ = killed_and_resumed("context_switch", SMALL, tmp_path)
    assert same_results(a, b)
    results = a["results"]
    assert {"graph_pair_0", "graph_pair_2", "pooled"} <= set(results)
    cell = results["pooled"]["n2_20"]["layer_17"]
    assert {"mean", "ci_low", "ci_high", "ratio_null", "per_context"} <= set(cell) and len(cell["per_context"]) == 9
    assert (broken / "figures" / "ratio.png").exists()
