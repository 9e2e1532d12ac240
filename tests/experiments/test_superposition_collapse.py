"""superposition_collapse: the per-position metrics against direct loops, the statistics around a step by hand, the
walks' paired design, the refusals, and (slow) bad input and resume through `iclnb run`."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.seeding import stream
from iclnb.experiments.superposition import dual
from iclnb.experiments.superposition import superposition_collapse as exp
from iclnb.metrics.superposition import (hypothesis_distances, residual_norm, superposition_score, velocity,
                                         window_change)


def _params(**kw):
    return exp.PARAMS.validate({"n_boot": 50, "n_perm": 50, "seed": 3, **kw})


# ------------------------------------------------------------------------------------------------ metrics


def _distances_by_loop(x, nodes, la, lb, window, valid):
    """Direct computation, one position at a time."""
    T, n = len(nodes), len(la)
    out = {"d_a": np.full(T, np.nan), "d_b": np.full(T, np.nan), "between": np.full(T, np.nan)}
    for t in range(T):
        if not valid[t]:
            continue
        lo = 0 if window is None else max(0, t + 1 - window)
        rows = [s for s in range(lo, t + 1) if valid[s]]
        means = {u: x[[s for s in rows if nodes[s] == u]].mean(axis=0) for u in range(n)
                 if any(nodes[s] == u for s in rows)}
        cents = []
        for lab in (la, lb):
            mates = [u for u in means if u != nodes[t] and lab[u] == lab[nodes[t]]]
            cents.append(np.mean([means[u] for u in mates], axis=0) if mates else None)
        if cents[0] is None or cents[1] is None:
            if cents[0] is not None:
                out["d_a"][t] = np.linalg.norm(x[t] - cents[0])
            if cents[1] is not None:
                out["d_b"][t] = np.linalg.norm(x[t] - cents[1])
            continue
        out["d_a"][t] = np.linalg.norm(x[t] - cents[0])
        out["d_b"][t] = np.linalg.norm(x[t] - cents[1])
        out["between"][t] = np.linalg.norm(cents[0] - cents[1])
    return out


@pytest.mark.parametrize("window", [None, 7, 1])
def test_hypothesis_distances_match_a_direct_loop(window):
    rng = np.random.default_rng(0)
    la = np.array([0, 0, 0, 1, 1, 1])
    lb = np.array([0, 1, 0, 1, 0, 1])
    nodes = rng.integers(0, 6, size=30)
    x = rng.normal(size=(30, 5))
    valid = np.ones(30, bool)
    valid[0] = False  # the sink word
    got = hypothesis_distances(x, nodes, la, lb, window, valid)
    want = _distances_by_loop(x, nodes, la, lb, window, valid)
    for key in ("d_a", "d_b", "between"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-10, atol=1e-12, err_msg=key)
    assert np.isnan(got["d_a"][0])  # the sink word is never measured
    if window == 1:  # a window of one row holds only the word itself, whose node is left out
        assert np.isnan(got["d_a"]).all()


def test_the_own_node_is_left_out_of_both_centroids():
    # node 0 sits far away; its own occurrences must not pull either centroid
    la, lb = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    nodes = np.array([1, 2, 3, 0, 0])
    x = np.array([[1.0, 0], [0, 1.0], [0, -1.0], [100.0, 0], [100.0, 0]])
    got = hypothesis_distances(x, nodes, la, lb)
    # position 4 (node 0): H-a mates = {1} -> centroid (1, 0); H-b mates = {2} -> centroid (0, 1)
    assert got["d_a"][4] == pytest.approx(99.0)
    assert got["d_b"][4] == pytest.approx(np.hypot(100.0, 1.0))
    assert got["between"][4] == pytest.approx(np.sqrt(2.0))


def test_superposition_score_is_bounded_and_signed():
    assert superposition_score(0.0, 2.0, 2.0) == pytest.approx(1.0)  # at a's centroid
    assert superposition_score(2.0, 0.0, 2.0) == pytest.approx(-1.0)
    assert superposition_score(1.5, 1.5, 2.0) == pytest.approx(0.0)
    assert np.isnan(superposition_score(1.0, 1.0, 0.0))
    rng = np.random.default_rng(1)
    r, ca, cb = rng.normal(size=(3, 200, 4))
    s = superposition_score(np.linalg.norm(r - ca, axis=1), np.linalg.norm(r - cb, axis=1),
                            np.linalg.norm(ca - cb, axis=1))
    assert np.all(np.abs(s) <= 1 + 1e-12)  # the triangle inequality


def test_velocity_residual_norm_and_window_change_by_hand():
    x = np.array([[0.0, 0], [3, 4], [3, 4], [0, 0]])
    np.testing.assert_allclose(velocity(x), [np.nan, 5, 0, 5])
    np.testing.assert_allclose(velocity(x, np.array([False, True, True, True])), [np.nan, np.nan, 0, 5])
    assert residual_norm(x) == pytest.approx(2.5)
    assert residual_norm(x, np.array([False, True, True, False])) == pytest.approx(5.0)
    s = np.array([1.0, 2, 3, 10, 20, 30])
    assert window_change(s, 3, 2) == pytest.approx(15.0 - 2.5)  # mean(10, 20) - mean(2, 3)
    assert window_change(s, 3, 3) == pytest.approx(20.0 - 2.0)
    assert np.isnan(window_change(s, 1, 2))  # the before window does not fit
    assert np.isnan(window_change(s, 5, 2))  # the after window does not fit


# ------------------------------------------------------------------------------------------------ statistics


def _item(d1, d2, between, vel, rho, walk=None):
    return {"walk": walk if walk is not None else [0] * len(d1),
            "layers": {"0": {"d_h1": d1, "d_h2": d2, "between": between, "velocity": vel, "rho": rho}}}


def test_series_orient_to_the_true_hypothesis():
    d1, d2, b = [1.0, 3.0], [3.0, 1.0], [2.0, 2.0]
    items = [_item(d1, d2, b, [np.nan, 4.0], 2.0), _item(d1, d2, b, [np.nan, 4.0], 4.0)]
    s = exp.series(items, 0, np.array(["H1", "H2"]))
    np.testing.assert_allclose(s["score_h1"], [[1, -1], [1, -1]])
    np.testing.assert_allclose(s["score"], [[1, -1], [-1, 1]])
    np.testing.assert_allclose(s["d_true"], [[0.5, 1.5], [0.75, 0.25]])
    np.testing.assert_allclose(s["margin"], [[2, -2], [-2, 2]])
    np.testing.assert_allclose(s["velocity"][:, 1], [2.0, 1.0])
    np.testing.assert_allclose(s["ratio"], [[1 / 3, 3], [3, 1 / 3]])


def test_step_statistics_by_hand():
    T = 8
    margin = np.array([0.0, 0, 1, 1, 5, 5, 5, 5])  # margin = d_false - d_true for a context whose truth is H1
    d1 = np.full(T, 10.0)
    d2 = d1 + margin
    vel = np.array([np.nan, 1, 1, 1, 7, 1, 1, 1])
    items = [_item(d1, d2, np.full(T, 10.0), vel * 2.0, 2.0)]
    s = exp.series(items, 0, np.array(["H1"]))
    got = exp.step_statistics(s, 0, step=4, width=2)
    assert got["collapse_raw"] == pytest.approx(4.0)  # mean(5, 5) - mean(1, 1)
    assert got["collapse"] == pytest.approx(2.0)  # over the residual norm 2
    assert got["velocity_spike"] == pytest.approx(7.0 - 1.0)  # velocity already in residual norms
    assert got["score_change"] == pytest.approx(0.5 - 0.1)


def test_null_steps_are_common_edges_away_from_d():
    graph = dual.make_graph(_params())
    common = (graph.adjacency > 0) & (graph.extra["G2_adjacency"] > 0)
    walk = dual.context_walk(graph, 100, 3, "50", 0)
    for seed in range(5):
        steps = exp.null_steps(graph, walk, 50, 10, 8, stream(seed, "x"))
        assert len(steps) == 8 and len(set(steps)) == 8
        for s in steps:
            assert common[walk[s - 1], walk[s]]
            assert s <= 40 or s > 60
            assert 10 <= s <= 90
    assert not common[walk[49], walk[50]]  # the step at D itself is never common


def test_decoded_correct_by_hand():
    s = {"score_h1": np.array([[9.0, 0.2, 0.4], [9.0, -0.1, -0.3], [9.0, np.nan, np.nan], [9.0, 0.5, -0.5]])}
    got = exp.decoded_correct(s, 1, np.array(["H1", "H1", "H2", "H2"]))
    np.testing.assert_array_equal(got[:2], [1.0, 0.0])
    assert np.isnan(got[2]) and np.isnan(got[3])  # no score / a tie names nothing


# ------------------------------------------------------------------------------------------------ walks and checks


def test_conditions_share_each_contexts_walk_up_to_d():
    p = _params(context_length=40)
    graph = dual.make_graph(p)
    g1, g2 = graph.adjacency > 0, graph.extra["G2_adjacency"] > 0
    for k in range(4):
        h = dual.true_hypothesis(k)
        chosen, other = (g1, g2) if h == "H1" else (g2, g1)
        never = dual.context_walk(graph, 40, p.seed, "never", k)
        assert all(g1[a, b] and g2[a, b] for a, b in zip(never[:-1], never[1:]))
        for c in ("25", "50", "75"):
            d = dual.disambiguate_at(c, 40)
            walk = dual.context_walk(graph, 40, p.seed, c, k)
            np.testing.assert_array_equal(walk[:d], never[:d])
            assert chosen[walk[d - 1], walk[d]] and not other[walk[d - 1], walk[d]]
            assert all(chosen[a, b] for a, b in zip(walk[d:-1], walk[d + 1:]))
    assert [dual.true_hypothesis(k) for k in range(4)] == ["H1", "H2", "H1", "H2"]


def test_a_dual_graph_whose_clusterings_agree_is_refused():
    graph = dual.make_graph(_params())
    same = dataclasses.replace(graph, labelings={"H1": graph.labelings["H1"],
                                                 "H2": (graph.labelings["H1"] + 1) % 3})
    with pytest.raises(IclnbError, match="same partition") as info:
        dual.check_graph(same)
    assert "\n" not in str(info.value)
    dual.check_graph(graph)  # the run's own graph passes


class _Model:
    """What check() asks of a model: a tokenizer for the words, the positions it reads, its layers."""

    def __init__(self, max_positions):
        from tests.test_prompts import _tokenizer

        self.tokenizer, self.max_positions, self.name = _tokenizer(True), max_positions, "stub"

    def resolve_layers(self, layers):
        return [0]


def test_check_refuses_a_d_without_room_for_the_collapse_windows():
    p = _params(context_length=20, collapse_window=10, disambiguation_percent="25,50")
    with pytest.raises(IclnbError, match="disambiguation_percent 25 puts D at word 5") as info:
        exp.check(p, _Model(10_000))
    assert "\n" not in str(info.value)


def test_summarise_on_hand_made_contexts():
    """Two contexts per condition whose margins jump at D by a known amount; the control stays flat."""
    p = _params(n_contexts=2, context_length=20, disambiguation_percent="50", collapse_window=3, null_steps=2)
    graph = dual.make_graph(p)
    T = 20
    data = {}
    for c in ("50", "never"):
        items = []
        for k in range(2):
            h = dual.true_hypothesis(k)
            jump = 3.0 if c == "50" else 0.0
            margin = np.where(np.arange(T) >= 10, jump, 0.0)
            d_true = np.full(T, 10.0)
            d1, d2 = (d_true, d_true + margin) if h == "H1" else (d_true + margin, d_true)
            items.append(_item(d1, d2, np.full(T, 6.0), np.ones(T), 2.0,
                               walk=dual.context_walk(graph, T, p.seed, c, k)))
        data[c] = items
    out = exp.summarise(data, graph, p, [0])
    e = out["condition_50"]["layer_0"]
    assert e["disambiguate_at"] == 10
    assert e["collapse"]["mean"] == pytest.approx(1.5)  # jump 3 over residual norm 2
    assert e["collapse"]["null"]["never_revealed"]["mean"] == pytest.approx(0.0)
    assert e["collapse"]["vs_never_revealed"]["mean"] == pytest.approx(1.5)
    assert e["accuracy"]["mean"] == 1.0 and e["accuracy"]["n"] == 2
    assert e["accuracy"]["p_value"] == pytest.approx(0.5)  # two of two under a fair coin
    assert np.isnan(e["accuracy"]["control"]["mean"])  # a flat margin names no hypothesis
    assert e["velocity_spike"]["mean"] == pytest.approx(0.0)
    np.testing.assert_allclose(e["per_position"]["score"]["mean"][10:], 0.5)
    table = exp.summary_table(out)
    assert list(table["condition"]) == ["50", "never"]


def test_notebook_parameters_cell_is_the_declaration():
    import nbformat

    nb = nbformat.read("notebooks/superposition_collapse.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == exp.PARAMS.parameters_cell()


# ------------------------------------------------------------------------------------------------ end to end


SMALL = ["-p", "n_contexts", "4", "-p", "context_length", "40", "-p", "layers", "0,-1", "-p", "window", "20",
         "-p", "collapse_window", "5", "-p", "null_steps", "2", "-p", "n_boot", "50", "-p", "n_perm", "50",
         "-p", "batch_size", "2"]


def _iclnb(*args):
    import os

    proc = subprocess.run([sys.executable, "-m", "iclnb", *args], capture_output=True, text=True,
                          env={**os.environ, "ICLNB_PROGRESS": "text"})
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.startswith("iclnb: error:")], proc


def _agreeing_seed():
    """A seed whose dual graph (2 clusters of 2 words, any agreement allowed) has H2 = H1 as partitions."""
    for seed in range(200):
        p = _params(seed=seed, n_clusters=2, cluster_size=2, max_agreement=1.0)
        g = dual.make_graph(p)
        if graphs.co_membership_agreement(g.labelings["H1"], g.labelings["H2"]) == 1.0:
            return seed
    raise AssertionError("no seed gives agreeing clusterings")


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (lambda: ["-p", "n_clusters", "2", "-p", "cluster_size", "2", "-p", "max_agreement", "1.0", "-p", "seed",
              str(_agreeing_seed())], "clusterings H1 and H2 are the same partition"),
    (lambda: ["-p", "context_length", "40000"], "more than the 32768 gemma-3-270m can read"),
])
def test_bad_input_gives_one_line(tmp_path, args, message):
    rc, lines, proc = _iclnb("run", "superposition_collapse", *SMALL[:3], *args(), "-o", str(tmp_path / "bad"))
    assert rc != 0 and lines and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_resume_after_a_kill_gives_identical_results(tmp_path):
    from tests.test_resume import killed_and_resumed, same_results

    broken, whole, _, _ = killed_and_resumed("superposition_collapse", SMALL, tmp_path)
    assert same_results(broken, whole)
    assert "condition_never" in whole["results"]
