"""The deep_hierarchy steps against direct computations: the branching checks, the per-level tables, the pooled node
means of the animation and their frame-to-frame alignment, the GIF copy; bad input, resume and the animation through
`iclnb run` (slow)."""

import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import pytest

from iclnb.core.errors import IclnbError
from iclnb.experiments.hierarchy import deep_hierarchy as exp
from iclnb.experiments.hierarchy import figures
from iclnb.metrics import css


def _params(**kw):
    base = {"context_lengths": "6,10", "n_contexts": 8, "n_boot": 50, "n_perm": 50, "seed": 5}
    return exp.PARAMS.validate({**base, **kw})


@pytest.mark.parametrize("branching, message", [
    ("4", "has no cluster level"),
    ("2,1", "parameter branching must be at least 2, got 1"),  # the declaration: every number is at least 2
    ("1,4", "parameter branching must be at least 2, got 1"),
    ("10,10,10", "more than the"),
])
def test_branching_without_a_hierarchy_is_refused_in_one_line(branching, message):
    with pytest.raises(IclnbError, match=message):
        exp.check_branching(exp.PARAMS.validate({"branching": branching}).branching)


def test_default_graph_is_the_2_2_4_hierarchy_and_legacy_is_sparser():
    g = exp.make_graph(_params())
    assert g.n == 16 and sorted(g.labelings) == ["level_1", "level_2"]
    assert len(set(g.labelings["level_1"])) == 2 and len(set(g.labelings["level_2"])) == 4
    dense = [len(exp.make_graph(_params(seed=s)).edges()) for s in range(5)]
    sparse = [len(exp.make_graph(_params(seed=s, legacy_distance=True)).edges()) for s in range(5)]
    assert np.mean(sparse) < np.mean(dense)


def _measured(p, graph, walks, layers=(0, 7)):
    rng = np.random.default_rng(3)
    K, L = walks.shape[0], len(p.context_lengths)
    arr = {}
    for layer in layers:
        arr[layer] = {"phi": {}, "phi_null": {}, "coherence": {}, "energy_norm": rng.uniform(size=(K, L)),
                      "energy_raw": rng.uniform(size=(K, L))}
        # level 1 far above its null from the first length on, level 2 only at the second
        arr[layer]["phi"]["level_1"] = rng.normal(2.0, 0.2, size=(K, L))
        arr[layer]["phi"]["level_2"] = np.stack([rng.normal(0.0, 0.2, K), rng.normal(2.0, 0.2, K)], axis=1)
        for level in ("level_1", "level_2"):
            arr[layer]["phi_null"][level] = np.zeros((K, L))
            arr[layer]["coherence"][level] = rng.normal(size=(K, L))
    loss = rng.normal(size=walks.shape)
    loss[:, 0] = np.nan
    return {"layers": list(layers), "word_loss": loss, "metrics": arr, "animation_layer": layers[-1]}


def test_tables_separation_onset_order_and_css_per_level():
    p = _params()
    graph = exp.make_graph(p)
    walks = exp.make_walks(graph, p)
    measured = _measured(p, graph, walks)
    tab = exp.tables(measured, graph, walks, p)
    arr = measured["metrics"][7]
    s = tab["levels"]["level_2"]["N_10"]["layer_7"]["separation"]
    assert s["mean"] == pytest.approx(arr["phi"]["level_2"][:, 1].mean())
    assert s["null_mean"] == 0.0 and s["ci_low"] <= s["mean"] <= s["ci_high"]
    on = tab["onset"]["layer_7"]
    assert on["levels"]["level_1"]["n_star"] == 6 and on["levels"]["level_2"]["n_star"] == 10
    assert on["order"] == ["level_1", "level_2"] and on["pairs"][0]["p_coarser_first"] > 0.9
    ref = css(measured["word_loss"][:, :10], arr["phi"]["level_2"][:, 1])
    np.testing.assert_allclose(np.asarray(tab["css_by_position"]["level_2"]["layer_7"]["css"], dtype=float), ref)
    assert tab["levels"]["level_2"]["N_10"]["layer_7"]["css_max_abs"]["value"] == pytest.approx(
        np.nanmax(np.abs(ref)))
    assert "layer_7" not in tab["css_by_position"]["level_2"] or len(
        tab["css_by_position"]["level_2"]["layer_7"]["css"]) == 10  # only at the largest N
    table = exp.onset_table(tab, ["level_1", "level_2"])
    assert list(table["onset_N"][:2]) == [6, 10]


def test_animation_frames_are_node_means_over_occurrences_and_aligned():
    # two contexts, three nodes, d = 2: node 0 seen 3 times in context 0 and once in context 1
    sums = np.zeros((2, 3, 2))
    counts = np.zeros((2, 3), dtype=int)
    sums[0] = [[3.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]
    counts[0] = [3, 1, 1]
    # frame 2: the same node means rotated by 90 degrees about their centre (and a scale of 2)
    means0 = sums[0] / counts[0][:, None]
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    centre = means0.mean(axis=0)
    means1 = 2 * (means0 - centre) @ rot + centre
    counts[1] = [2, 2, 2]
    sums[1] = means1 * 2
    frames, ratio = exp.animation_frames(sums, counts, [10, 20])
    f0, f1 = frames[10], frames[20]
    np.testing.assert_allclose(f1, 2 * f0, atol=1e-9)  # rotation removed, scale kept
    np.testing.assert_allclose(np.linalg.norm(f0 - f0.mean(0), axis=1),
                               np.linalg.norm(means0 - centre, axis=1), rtol=1e-9)
    assert ratio.shape == (2,)


def test_animation_figure_has_one_frame_per_length_a_slider_and_play():
    p = _params()
    graph = exp.make_graph(p)
    frames = {n: np.random.default_rng(n).normal(size=(16, 2)) for n in (6, 10)}
    fig = figures.animation_figure(frames, graph.words, graph.labelings, ["level_1", "level_2"], 7, [0.3, 0.2])
    assert [f.name for f in fig.frames] == ["6", "10"]
    assert fig.layout.sliders[0].steps[1].label == "10"
    assert fig.layout.updatemenus[0].buttons[0].label.endswith("play")
    assert sum(len(t.x) for t in fig.frames[1].data) == 16


def test_gif_is_skipped_with_one_line_without_a_browser(tmp_path, monkeypatch, capsys):
    from iclnb.plotting import animation, save

    monkeypatch.setattr(save, "find_browser", lambda: None)
    fig = go.Figure(data=[go.Scatter(x=[0], y=[0])], frames=[go.Frame(data=[go.Scatter(x=[1], y=[1])], name="a")])
    assert animation.save_gif(fig, tmp_path / "a.gif") is None
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "skipped" in out[0] and not (tmp_path / "a.gif").exists()


# ------------------------------------------------------------------------------------------ through iclnb run (slow)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["-p", "branching", "2,1"], "parameter branching must be at least 2, got 1"),
    (["-p", "context_lengths", "10,40000"], "more than the 32768 gemma-3-270m can read"),
    (["-p", "animation_layer", "40"], "layer 40 is out of range"),
])
def test_bad_input_gives_one_line(tmp_path, args, message):
    import os

    proc = subprocess.run([sys.executable, "-m", "iclnb", "run", "deep_hierarchy", *args, "-p", "n_contexts", "2",
                           "-o", str(tmp_path / "bad")], capture_output=True, text=True,
                          env={**os.environ, "ICLNB_PROGRESS": "text"})
    lines = [line for line in proc.stderr.splitlines() if line.startswith("iclnb: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "bad").exists()  # refused before anything is written or loaded
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results_and_animation(tmp_path):
    from tests.test_resume import killed_and_resumed, same_results

    params = ["-p", "context_lengths", "6,10", "-p", "n_contexts", "4", "-p", "layers", "0,-1", "-p", "batch_size",
              "1", "-p", "n_boot", "20", "-p", "n_perm", "20"]
    a, b, broken, _ = killed_and_resumed("deep_hierarchy", params, tmp_path)
    assert same_results(a, b)
    r = a["results"]
    assert set(r["levels"]) == {"level_1", "level_2"}
    sep = r["levels"]["level_1"]["N_10"]["layer_17"]["separation"]
    assert {"mean", "ci_low", "ci_high", "null_mean"} <= set(sep)
    assert set(r["graph"]) >= {"words", "edges", "labelings"}
    assert set(r["animation"]["frames"]) == {"N_6", "N_10"}
    assert (broken / "figures" / "node_means_animation.html").exists()
