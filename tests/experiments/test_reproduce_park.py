"""reproduce_park: the copying baseline, chance, accuracy, the spectral/Procrustes comparison, the per-context
statistics and the controls on hand-made inputs (no model), and every step once end to end on a tiny model."""

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from iclnb import graphs as G
from iclnb.core.errors import IclnbError
from iclnb.core.layers import resolve_layers
from iclnb.core.seeding import stream
from iclnb.experiments.park import per_context as ctx
from iclnb.experiments.park import figures
from iclnb.experiments.park import reproduce_park as exp
from iclnb.metrics import copy_baseline, neighbor_accuracy, procrustes_fit, spectral_embedding
from iclnb.plotting.style import COLUMN_WIDTH

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "reproduce_park.ipynb"


# ------------------------------------------------------------------------------------------------ hand-made inputs


def test_copy_baseline_by_hand():
    # path 0-1-2 (node 1 has neighbours 0 and 2)
    adj = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    walk = [0, 1, 0, 1, 2, 1]
    got = copy_baseline(walk, adj)
    # t=0: nothing recalled, deg(0)/n = 1/3; t=1: nothing from 1 yet -> 2/3; t=2: 0->1 seen -> 1;
    # t=3: 1->0 seen -> 1; t=4: nothing from 2 -> 1/3; t=5: successors of 1 seen: {0, 2} -> 1
    assert np.allclose(got, [1 / 3, 2 / 3, 1, 1, 1 / 3, 1])


def test_copy_baseline_counts_only_transitions_already_in_context():
    adj = G.ring(5).adjacency
    walk = [0, 1, 2, 3, 4, 0, 1]
    got = copy_baseline(walk, adj)
    assert np.allclose(got[:5], 2 / 5)  # no node revisited yet
    assert got[5] == 1.0 and got[6] == 1.0  # 0 -> 1 and 1 -> 2 were seen


def test_accuracy_by_hand():
    adj = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    probs = np.array([[0.1, 0.6, 0.1],  # at node 0: neighbour 1 has 0.6
                      [0.2, 0.1, 0.3],  # at node 1: neighbours 0, 2 -> 0.5 of 0.6
                      [0.0, 0.0, 0.0]])  # no mass on graph words: renormalised undefined
    acc = neighbor_accuracy(probs, [0, 1, 2], adj)
    assert np.allclose(acc["raw"], [0.6, 0.5, 0.0])
    assert np.allclose(acc["renormalized"][:2], [0.6 / 0.8, 0.5 / 0.6])
    assert np.isnan(acc["renormalized"][2])


def _items(walks, adj):
    """Checkpoint items as context_statistics writes them (only what accuracy reads): a model that guesses
    uniformly over the graph words, so its accuracy is chance."""
    n = adj.shape[0]
    out = []
    for w in walks:
        probs = np.full((len(w), n), 1.0 / n)
        acc = neighbor_accuracy(probs, w, adj)
        out.append({"accuracy_raw": acc["raw"], "accuracy_renormalized": acc["renormalized"],
                    "copy_baseline": copy_baseline(w, adj), "word_end_tokens": np.arange(len(w)) + 2})
    return out


def test_chance_is_the_mean_degree_of_the_visited_nodes_by_hand():
    # path 0-1-2-3: degrees 1, 2, 2, 1; mean degree / n = 6/4/4 = 0.375
    graph = G.Graph(name="path", adjacency=np.array([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]]),
                    words=("a", "b", "c", "d"))
    walks = [np.array([0, 1, 2, 3, 2, 1]), np.array([1, 0, 1, 0])]
    # deg(walk[t]) / n: A = [1, 2, 2, 1, 2, 2] / 4, B = [2, 1, 2, 1] / 4
    assert np.allclose(exp.chance_by_position(walks[0], graph.adjacency), [0.25, 0.5, 0.5, 0.25, 0.5, 0.5])
    setup = SimpleNamespace(graph=graph, walks=walks)
    data = SimpleNamespace(items=_items(walks, graph.adjacency))
    acc = exp.accuracy(setup, data, SimpleNamespace(seed=0), bin_words=3)
    # bin [0, 3): A 5/12, B 5/12; bin [3, 6): A (1+2+2)/12 = 5/12, B only position 3: 1/4 -> mean 1/3
    assert np.allclose(acc["chance"], [5 / 12, 1 / 3])
    assert acc["context_words"].tolist() == [3, 6]
    # over all words: A 10/24, B 6/16 -> (5/12 + 3/8) / 2 = 19/48, not the mean degree / n
    assert acc["summary"]["chance_all_words"]["mean"] == pytest.approx(19 / 48)
    assert acc["summary"]["chance_first_50_words"]["mean"] == pytest.approx(19 / 48)
    # a uniform guess over the graph words scores chance exactly, position by position
    assert np.allclose(acc["mean"], acc["chance"])
    assert acc["summary"]["last_200_words"]["mean"] == pytest.approx(19 / 48)


def test_chance_on_the_grid_follows_the_walks_visits():
    graph = exp.make_graph("grid", 4)
    walk = G.random_walk(graph, 20000, stream(0, "walks", 0))
    deg = graph.adjacency.sum(axis=1)
    stationary = float(np.sum(deg ** 2) / np.sum(deg) / graph.n)  # 152 / 48 / 16
    assert stationary == pytest.approx(0.19792, abs=1e-5)
    assert np.mean(exp.chance_by_position(walk, graph.adjacency)) == pytest.approx(stationary, abs=0.005)
    assert deg.mean() / graph.n == pytest.approx(0.1875)  # the old, wrong level


def test_headline_windows_use_each_contexts_own_words():
    x = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, np.nan, np.nan]])
    lengths = np.array([4, 2])
    assert exp._head(x, lengths, 3).tolist() == [2.0, 5.5]
    assert exp._tail(x, lengths, 3).tolist() == [3.0, 5.5]


def test_procrustes_recovers_the_spectral_embedding_of_a_grid():
    adj = G.grid(4, 4).adjacency
    spectral, vals = spectral_embedding(adj, 2)
    assert np.isclose(vals[0], vals[1])  # the grid's x and y modes share an eigenvalue
    rng = np.random.default_rng(0)
    rot, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    moved = 7.0 * spectral @ rot + [3.0, -1.0]
    assert procrustes_fit(moved, spectral)[1] == pytest.approx(1.0)
    # grid coordinates span the same 2-D eigenspace (up to the cosine warp): a high but imperfect fit
    rows_cols = np.asarray(G.grid(4, 4).extra["positions"], dtype=float)
    assert 0.9 < procrustes_fit(rows_cols, spectral)[1] < 1.0
    assert procrustes_fit(rng.normal(size=(16, 2)), spectral)[1] < 0.6


def test_context_geometry_with_bos_and_multi_token_words():
    # BOS at 0, then words of 1, 2, 1, 3 tokens: spans [1,2) [2,4) [4,5) [5,8)
    spans = np.array([[1, 2], [2, 4], [4, 5], [5, 8]])
    geo = ctx.context_geometry(spans, [4, 6, 8], window_tokens=4)
    assert geo["words"].tolist() == [2, 3, 4]  # whole words within the first t tokens
    # t=6: window tokens [2, 6) holds words starting at >= 2 among the first 3: words 1, 2
    assert geo["window_words"].tolist() == [2, 2, 2]
    assert geo["window_has_sink"].tolist() == [True, False, False]


# ------------------------------------------------------------------------------------------------ graphs and walks


class _Tokenizer:
    """Words -> tokens: one token per letter-pair, with a BOS (id 1)."""

    bos_token_id = 1

    def __call__(self, text, add_special_tokens=True):
        body = text.strip()
        ids = [100 + hash(body[i:i + 2]) % 1000 for i in range(0, len(body), 2)] if body else []
        ids = [2000 + len(body)] + ids[1:] if ids else ids  # distinct first tokens for distinct lengths
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def test_make_graph_families():
    assert exp.make_graph("grid", 4).words == G.GRID_WORDS
    assert exp.make_graph("ring", 6).n == 6
    assert exp.make_graph("hex_lattice", 2).n == 16
    days = exp.make_graph("days_of_week_ring", seed=3)
    assert sorted(days.words) == sorted(G.WEEKDAYS)
    assert exp.make_graph("ring", 3, words="x,y,z").words == ("x", "y", "z")
    assert exp.make_graph("ring", 3, words=["x", "y", "z"]).words == ("x", "y", "z")
    assert exp.make_graph("grid", 4, words=[]).words == G.GRID_WORDS
    with pytest.raises(IclnbError):
        exp.make_graph("torus", 4)
    with pytest.raises(IclnbError):
        exp.PARAMS.validate({"graph": "hex"})


def test_sample_walks_fit_the_token_budget():
    graph = G.ring(4, words=["ab", "abcd", "abcdef", "a"])  # 1, 2, 3 and 1 tokens
    tok = _Tokenizer()
    walks = exp.sample_walks(graph, tok, 3, 40, seed=5)
    lengths = {"ab": 1, "abcd": 2, "abcdef": 3, "a": 1}
    for w in walks:
        tokens = 1 + sum(lengths[graph.words[k]] for k in w)
        assert tokens <= 40 and tokens + 3 > 40  # as many whole words as fit
        assert all(graph.adjacency[a, b] for a, b in zip(w[:-1], w[1:]))
    again = exp.sample_walks(graph, tok, 3, 40, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(walks, again))


def _fake_model(tokenizer, n_layers=18, max_positions=512):
    """What check reads of a model."""
    return SimpleNamespace(tokenizer=tokenizer, max_positions=max_positions, name="fake", n_layers=n_layers,
                           resolve_layers=lambda spec: resolve_layers(spec, n_layers, "fake"))


def test_check_refuses_before_any_work():
    from tests.test_prompts import _tokenizer

    tok = _tokenizer(True)  # BOS, and the grid words as one token each
    model = _fake_model(tok)
    exp.check(exp.PARAMS.validate({}), _fake_model(tok, max_positions=2048))
    with pytest.raises(IclnbError, match="more than the 512"):
        exp.check(exp.PARAMS.validate({}), model)  # 1400 tokens
    ok = {"context_lengths_tokens": "20,40"}
    exp.check(exp.PARAMS.validate(ok), model)
    with pytest.raises(IclnbError, match="decoder block"):
        exp.check(exp.PARAMS.validate({**ok, "layers": "embed"}), model)
    with pytest.raises(IclnbError, match="out of range"):
        exp.check(exp.PARAMS.validate({**ok, "layers": "0,18"}), model)
    with pytest.raises(IclnbError, match="fewer than two words"):
        exp.check(exp.PARAMS.validate({"context_lengths_tokens": "2"}), model)
    with pytest.raises(IclnbError):
        exp.check(exp.PARAMS.validate({**ok, "graph": "ring", "graph_size": 4, "words": "a,b,c"}), model)


def test_notebook_parameters_cell_is_the_declaration():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == exp.PARAMS.parameters_cell()
    test_parameters = nb.metadata["iclnb"]["test_parameters"]
    exp.PARAMS.validate(test_parameters)
    assert "SPEC" not in json.dumps(nb.cells)


# ------------------------------------------------------------------------------------------------ per context


def _fake_states(graph, walk, layers, signal, rng, bos=True, d=12, noise=0.05):
    """Word states whose layer-k vectors are signal[k] * (spectral coordinates) + noise, one token per word."""
    spectral = spectral_embedding(graph.adjacency, 2)[0]
    T = len(walk)
    offset = 1 if bos else 0
    spans = np.stack([np.arange(T) + offset, np.arange(T) + offset + 1], axis=1)
    basis = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :2]
    reps = {}
    for k in layers:
        pos = spectral[walk] * signal[k] + rng.normal(size=(T, 2)) * 0.3 * (1 - signal[k])
        reps[k] = (pos @ basis.T + noise * rng.normal(size=(T, d))).astype(np.float32)
    # probabilities: half the mass spread on the true neighbours
    probs = np.full((T, graph.n), 0.5 / graph.n)
    probs += 0.5 * graph.adjacency[walk] / graph.adjacency[walk].sum(axis=1, keepdims=True)
    sink = spans[:, 0] == 0
    return SimpleNamespace(token_probs=probs, encoding=SimpleNamespace(spans=spans), sink=sink, reps=reps)


def test_context_statistics_separates_structure_from_controls():
    graph = G.grid(4, 4)
    walk = G.random_walk(graph, 400, stream(0, "walks", 0))
    layers = [0, 1]
    states = _fake_states(graph, walk, layers, {0: 0.0, 1: 1.0}, np.random.default_rng(1))
    sink_state = {k: np.full(12, 500.0, dtype=np.float32) for k in layers}  # a huge-norm sink
    lengths = np.array([100, 200, 401])
    item, arrays = ctx.context_statistics(states, walk, graph, layers, lengths, 100, sink_state,
                                          np.random.default_rng(2), n_shuffles=5)
    st = item["stats"]
    dc = np.asarray(st["default"]["distance_correlation"])
    assert dc[1, -1] > 0.8 and abs(dc[0, -1]) < 0.3  # structured layer vs noise layer
    assert np.asarray(st["default"]["energy_norm"])[1, -1] < 0.1
    assert np.asarray(st["default"]["procrustes_r2"])[1, -1] > 0.9
    shuffled = np.asarray(st["shuffled_labels"]["distance_correlation"])
    assert abs(shuffled[1, -1]) < 0.3
    assert abs(np.asarray(st["shuffled_labels"]["energy_norm"])[1, -1] - 24 / 120) < 0.1
    # the sink joins only the window that reaches token 0 (t = 100 <= window) and wrecks it there
    sink_dc = np.asarray(st["sink_included"]["distance_correlation"])
    assert sink_dc[1, 0] < dc[1, 0] - 0.2
    assert sink_dc[1, 1:] == pytest.approx(dc[1, 1:])
    assert arrays["sink_context_index"].tolist() == [0]
    assert arrays["means"].shape == (2, 3, 16, 12)
    assert item["context_words"].tolist() == [99, 199, 400]
    acc = np.asarray(item["accuracy_raw"])
    assert np.allclose(acc, 0.5 + 0.5 * graph.adjacency[walk].sum(axis=1) / 16)


def test_sink_word_is_excluded_without_bos():
    graph = G.ring(6)
    walk = G.random_walk(graph, 120, stream(0, "walks", 1))
    states = _fake_states(graph, walk, [0], {0: 1.0}, np.random.default_rng(3), bos=False)
    states.reps[0][0] = 1000.0  # the first word holds token 0: the sink
    item, _ = ctx.context_statistics(states, walk, graph, [0], np.array([60, 120]), 100, None,
                                     np.random.default_rng(4), n_shuffles=2)
    default = np.asarray(item["stats"]["default"]["distance_correlation"])[0]
    with_sink = np.asarray(item["stats"]["sink_included"]["distance_correlation"])[0]
    assert default[0] > 0.7 and with_sink[0] < default[0]
    assert with_sink[1] == pytest.approx(default[1])


def test_days_of_week_pairs_find_calendar_and_ring():
    graph = exp.make_graph("days_of_week_ring", seed=0)
    targets = ctx.pair_targets(graph)
    # PCs 1-2 carry the calendar circle, PCs 3-4 the in-context ring (scaled, rotated, shifted)
    rot = np.array([[0.6, -0.8], [0.8, 0.6]])
    coords = np.concatenate([3.0 * targets["calendar"] @ rot + 1.0, 0.5 * targets["in_context"]], axis=1)
    cal = ctx.pair_r2(coords, targets["calendar"])
    ring = ctx.pair_r2(coords, targets["in_context"])
    assert int(np.argmax(cal)) == 0  # PC1-PC2
    assert int(np.argmax(ring)) == 5  # PC3-PC4
    assert cal[0] > 0.99 and ring[5] > 0.99


# ------------------------------------------------------------------------------------------------ explorer


def test_pca_explorer_static_and_interactive():
    from iclnb.plotting.widgets import current_view, pca_explorer

    graph = G.ring(5)
    coords = {(s, k, t): np.random.default_rng(k + t + s).normal(size=(5, 2))
              for s in (False, True) for k in (0, 3) for t in (10, 20)}
    fig = pca_explorer(coords, graph, [0, 3], [10, 20], interactive=False)
    assert isinstance(fig, go.Figure)
    assert np.allclose(fig.data[1].x, coords[(False, 3, 20)][:, 0])
    assert np.allclose(current_view(fig).data[1].x, coords[(False, 3, 20)][:, 0])
    box = pca_explorer(coords, graph, [0, 3], [10, 20], interactive=True)
    layer, context, sink = box.children[0].children
    layer.value, sink.value = 0, True
    assert np.allclose(box.figure.data[1].x, coords[(True, 0, 20)][:, 0])
    assert "layer 0" in box.figure.layout.title.text and "included" in box.figure.layout.title.text
    # the static copy is the view shown now, and stays so when the sliders move on
    view = current_view(box)
    assert type(view) is go.Figure and "included" in view.layout.title.text
    assert np.allclose(view.data[1].x, coords[(True, 0, 20)][:, 0])
    context.value = 10
    assert np.allclose(view.data[1].x, coords[(True, 0, 20)][:, 0])


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Every step on a tiny random-init GPT-2 that reads the grid words as one token each (the test tokenizer)."""
    from iclnb.results.run import Run
    from tests.test_prompts import _tokenizer
    from tests.tiny_models import tiny_model

    tok = _tokenizer(True)
    model, _ = tiny_model("gpt2", tokenizer=tok)
    with torch.no_grad():
        model.hf.resize_token_embeddings(len(tok))
    p = exp.PARAMS.validate({"n_contexts": 3, "context_lengths_tokens": "30,60,90", "window_tokens": 40,
                             "layers": "0,-1", "n_shuffles": 2, "batch_size": 2})
    exp.check(p, model)
    out = tmp_path_factory.mktemp("park")
    run = Run.open(out, "reproduce_park", dict(p))
    setup = exp.prepare(model, p)
    data = exp.measure(run, model, setup, p)
    acc = exp.accuracy(setup, data, p)
    geo = exp.geometry(setup, data, p)
    ctl = exp.controls(setup, data, p)
    summ = exp.summary(setup, acc, geo, ctl)
    doc = exp.results_document(setup, acc, geo, ctl, exp.days_of_week(setup, data, p), summ)
    path = run.finish(doc)
    return SimpleNamespace(model=model, p=p, out=out, setup=setup, data=data, acc=acc, geo=geo, ctl=ctl,
                           summ=summ, path=path)


def test_steps_end_to_end_on_a_tiny_model(tiny_run):
    r = tiny_run
    assert r.setup.layers == [0, 3]
    assert all(t <= 90 for t in r.setup.tokens_per_context)
    assert r.setup.table["context (words)"].tolist() == [29, 59, 89]  # BOS + one token per word
    assert sorted(p.name for p in (r.out / "raw_data").iterdir()) == [f"node_means_{i}.npz" for i in range(3)]
    document = json.loads(r.path.read_text(), parse_constant=lambda t: pytest.fail(f"non-JSON {t}"))
    results = document["results"]
    assert {"layer_0", "layer_3", "accuracy", "controls", "summary", "graph", "contexts"} <= set(results)
    assert "days_of_week" not in results
    assert len(results["contexts"]) == 3 and len(results["layer_3"]["distance_correlation"]) == 3
    assert results["accuracy"]["summary"]["chance_all_words"]["mean"] == pytest.approx(
        np.mean([exp.chance_by_position(w, r.setup.graph.adjacency).mean() for w in r.setup.walks]))
    assert r.geo["layers"] == [0, 3] and exp.best_layer(r.geo) in (0, 3)


def test_node_means_are_averaged_over_the_contexts_that_visit_each_node(tiny_run):
    r = tiny_run
    per_context = []
    for i in range(3):
        with np.load(r.out / "raw_data" / f"node_means_{i}.npz") as z:
            per_context.append(z["means"].astype(np.float64))
    per_context = np.stack(per_context)
    assert np.isnan(per_context[:, :, 0]).any()  # 29 words do not visit all 16 nodes in every context
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nodes no context visits: all-NaN slices
        expected = np.nanmean(per_context, axis=0)
    np.testing.assert_allclose(r.data.mean_means["default"], expected)
    # the sink changes only the context lengths whose window reaches token 0 (30 tokens <= 40)
    np.testing.assert_allclose(r.data.mean_means["sink_included"][:, 1:], expected[:, 1:])


def test_measure_resumes_from_the_checkpoints(tiny_run):
    from iclnb.results.run import Run

    r = tiny_run
    run = Run.open(r.out, "reproduce_park", dict(r.p))
    again = exp.measure(run, None, r.setup, r.p)  # nothing left to run: the model is never touched
    run.close()
    assert json.dumps(again.items, default=str) == json.dumps(r.data.items, default=str)
    assert np.array_equal(again.mean_means["default"], r.data.mean_means["default"], equal_nan=True)


def test_tables_name_the_layer_apart_from_the_quantity(tiny_run):
    r = tiny_run
    summary = exp.summary_table(r.summ)
    assert list(summary.columns) == ["quantity", "layer", "context (tokens)", "value", "ci_low", "ci_high"]
    assert summary["quantity"].str.len().max() <= 50  # pandas shows 50 characters of a cell
    assert not summary["quantity"].str.contains("layer [0-9]").any()
    assert set(summary["layer"].dropna()) <= {0, 3}
    acc = exp.accuracy_table(r.acc)
    assert set(acc["words"]) == {"first 50", "last 200"}
    controls = exp.controls_table(r.geo, r.ctl)
    assert controls["context (tokens)"].tolist() == [90, 30, 90, 30]  # the largest; the largest reaching the sink
    assert exp.days_of_week_table(None) is None


def test_figures_fit_a_notebook_column(tiny_run):
    r = tiny_run
    built = [figures.accuracy_figure(r.acc), figures.geometry_heatmap(r.geo), figures.geometry_curves(r.geo),
             figures.pca_figure(r.geo, r.setup.graph, exp.best_layer(r.geo))]
    for fig in built:
        assert fig.layout.width <= COLUMN_WIDTH
        for trace in fig.data:  # bands draw no markers of their own
            if getattr(trace, "fill", None) == "toself":
                assert trace.mode == "lines"
        for axis in [a for a in fig.layout if a.startswith(("xaxis", "yaxis"))]:
            a = fig.layout[axis]
            shared = a.matches and a.showticklabels is False
            assert shared or a.visible is False or a.title.text, f"{axis} has no title"
    pca = built[-1]
    assert len(pca.layout.annotations) == 4  # three context lengths and the spectral embedding
    assert all(len(a.text) <= 24 for a in pca.layout.annotations)


def test_days_of_week_steps(tmp_path):
    graph = exp.make_graph("days_of_week_ring", seed=0)
    walks = [G.random_walk(graph, 200, stream(0, "walks", i)) for i in range(3)]
    items, means = [], []
    for i, w in enumerate(walks):
        states = _fake_states(graph, w, [0], {0: 1.0}, np.random.default_rng(i))
        item, arrays = ctx.context_statistics(states, w, graph, [0], np.array([100, 201]), 100, None,
                                              np.random.default_rng(10 + i), n_shuffles=2)
        items.append(json.loads(json.dumps(item, default=lambda a: np.asarray(a).tolist())))
        means.append(arrays["means"])
    setup = SimpleNamespace(graph=graph, layers=[0], context_tokens=np.array([100, 201]))
    data = SimpleNamespace(items=items, mean_means={"default": np.mean(means, axis=0)})
    days = exp.days_of_week(setup, data, SimpleNamespace(seed=0))
    table = exp.days_of_week_table(days)
    assert table.loc[0, "in-context ring: best pair"] == "PC1-PC2"
    assert table.loc[0, "in-context ring: r2"] > table.loc[0, "random ring order: best r2"]


def test_a_truncated_node_means_file_is_measured_again(tiny_run):
    import shutil

    from iclnb.results.run import Run

    r = tiny_run
    copy = r.out.parent / "park_truncated"
    shutil.copytree(r.out, copy)
    damaged = copy / "raw_data" / "node_means_1.npz"
    damaged.write_bytes(damaged.read_bytes()[:100])
    run = Run.open(copy, "reproduce_park", dict(r.p))
    again = exp.measure(run, r.model, r.setup, r.p)  # context 1 only is run again
    run.close()
    assert np.array_equal(again.mean_means["default"], r.data.mean_means["default"], equal_nan=True)
    with np.load(damaged) as z:
        assert z["means"].shape[0] == len(r.setup.layers)
