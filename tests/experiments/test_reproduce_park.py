"""reproduce_park: the copying baseline, accuracy, the spectral/Procrustes comparison, the per-sequence statistics
and the controls, on hand-made inputs (no model)."""

from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest

from iclnb import graphs as G
from iclnb.core.errors import IclnbError
from iclnb.experiments import park
from iclnb.metrics import copy_baseline, neighbor_accuracy, procrustes_fit, spectral_embedding
from iclnb.core.seeding import stream


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
    geo = park.context_geometry(spans, [4, 6, 8], window_tokens=4)
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
    assert park.make_graph("grid", 4).words == G.GRID_WORDS
    assert park.make_graph("ring", 6).n == 6
    assert park.make_graph("hex", 2).n == 16
    days = park.make_graph("days_of_week_ring", seed=3)
    assert sorted(days.words) == sorted(G.WEEKDAYS)
    assert park.make_graph("ring", 3, words="x,y,z").words == ("x", "y", "z")
    with pytest.raises(IclnbError):
        park.make_graph("torus", 4)


def test_sample_walks_fit_the_token_budget():
    graph = G.ring(4, words=["ab", "abcd", "abcdef", "a"])  # 1, 2, 3 and 1 tokens
    tok = _Tokenizer()
    walks = park.sample_walks(graph, tok, 3, 40, seed=5)
    lengths = {"ab": 1, "abcd": 2, "abcdef": 3, "a": 1}
    for w in walks:
        tokens = 1 + sum(lengths[graph.words[k]] for k in w)
        assert tokens <= 40 and tokens + 3 > 40  # as many whole words as fit
        assert all(graph.adjacency[a, b] for a, b in zip(w[:-1], w[1:]))
    again = park.sample_walks(graph, tok, 3, 40, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(walks, again))


# ------------------------------------------------------------------------------------------------ per sequence


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


def test_sequence_statistics_separates_structure_from_controls():
    graph = G.grid(4, 4)
    walk = G.random_walk(graph, 400, stream(0, "walks", 0))
    layers = [0, 1]
    states = _fake_states(graph, walk, layers, {0: 0.0, 1: 1.0}, np.random.default_rng(1))
    sink_state = {k: np.full(12, 500.0, dtype=np.float32) for k in layers}  # a huge-norm sink
    ctx = np.array([100, 200, 401])
    item, arrays = park.sequence_statistics(states, walk, graph, layers, ctx, 100, sink_state,
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
    item, _ = park.sequence_statistics(states, walk, graph, [0], np.array([60, 120]), 100, None,
                                       np.random.default_rng(4), n_shuffles=2)
    default = np.asarray(item["stats"]["default"]["distance_correlation"])[0]
    with_sink = np.asarray(item["stats"]["sink_included"]["distance_correlation"])[0]
    assert default[0] > 0.7 and with_sink[0] < default[0]
    assert with_sink[1] == pytest.approx(default[1])


def test_days_of_week_pairs_find_calendar_and_ring():
    graph = park.make_graph("days_of_week_ring", seed=0)
    targets = park.pair_targets(graph)
    # PCs 1-2 carry the calendar circle, PCs 3-4 the in-context ring (scaled, rotated, shifted)
    rot = np.array([[0.6, -0.8], [0.8, 0.6]])
    coords = np.concatenate([3.0 * targets["calendar"] @ rot + 1.0, 0.5 * targets["in_context"]], axis=1)
    cal = park._pair_r2(coords, targets["calendar"])
    ring = park._pair_r2(coords, targets["in_context"])
    assert int(np.argmax(cal)) == 0  # PC1-PC2
    assert int(np.argmax(ring)) == 5  # PC3-PC4
    assert cal[0] > 0.99 and ring[5] > 0.99


# ------------------------------------------------------------------------------------------------ explorer


def test_pca_explorer_static_and_interactive():
    from iclnb.plotting.widgets import pca_explorer

    graph = G.ring(5)
    coords = {(s, k, t): np.random.default_rng(k + t + s).normal(size=(5, 2))
              for s in (False, True) for k in (0, 3) for t in (10, 20)}
    fig = pca_explorer(coords, graph, [0, 3], [10, 20], interactive=False)
    assert isinstance(fig, go.Figure)
    assert np.allclose(fig.data[1].x, coords[(False, 3, 20)][:, 0])
    box = pca_explorer(coords, graph, [0, 3], [10, 20], interactive=True)
    layer, context, sink = box.children[0].children
    layer.value, sink.value = 0, True
    assert np.allclose(box.figure.data[1].x, coords[(True, 0, 20)][:, 0])
    assert "layer 0" in box.figure.layout.title.text and "included" in box.figure.layout.title.text
