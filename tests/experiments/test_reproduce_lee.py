"""reproduce_lee: Part A's steps against direct computations, what each SGLD draw records, and the BIF on the embedded
model against the stored loss traces (slow). The frozen trunk is tested in tests/test_trunk.py, the sampler in
tests/test_bif.py."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from iclnb.core.errors import IclnbError
from iclnb.experiments.lee import reproduce_lee as exp


class P(dict):
    __getattr__ = dict.__getitem__


def _contexts(K=30, lengths=(4, 6, 8), seed=0, signal=0.0):
    """Synthetic Part A data: losses (K, 8) and Φ per level (K, L) with an optional loss-Φ coupling."""
    rng = np.random.default_rng(seed)
    n_max = max(lengths)
    loss = rng.normal(size=(K, n_max))
    phi = {lv: rng.normal(size=(K, len(lengths))) + signal * loss[:, 1:2] for lv in exp.LEVELS}
    walks = rng.integers(0, 15, size=(K, n_max))
    return exp.Contexts([0], list(lengths), walks, loss, {0: phi}, {0: {lv: np.zeros_like(phi[lv]) for lv in phi}},
                        {0: rng.random((K, len(lengths), 3))}, {}, {})


def test_flip_count_by_hand():
    css = np.array([[1.0, -2.0, np.nan],
                    [-1.0, 0.0, 3.0],
                    [2.0, 1.0, -3.0],
                    [np.nan, -1.0, 2.0]])          # (L=4, P=3)
    # position 0: + - + (nan) -> 2 flips; position 1: - 0 + - -> 0 skipped: -, +, - -> 2 flips;
    # position 2: nan 3 -3 2 -> 2 flips
    np.testing.assert_array_equal(exp._flip_count(css), [2, 2, 2])


def test_css_stack_matches_direct_covariance_and_is_nan_beyond_n():
    c = _contexts()
    stack = exp._css_stack(c.word_loss, c.phi[0]["level_1"], c.lengths)
    j = 1  # N = 6
    direct = -np.mean((c.word_loss[:, 3] - c.word_loss[:, 3].mean()) * (c.phi[0]["level_1"][:, j] -
                                                                         c.phi[0]["level_1"][:, j].mean()))
    assert stack[j, 3] == pytest.approx(direct)
    assert np.isnan(stack[0, 4:]).all() and np.isfinite(stack[2]).all()


def test_sign_flips_null_and_p_value():
    p = P(seed=1, n_perm=200, n_boot=50)
    out = exp.sign_flips(_contexts(), 0, "level_1", p)
    assert out["observed"] == int(exp._flip_count(exp._css_stack(_contexts().word_loss,
                                                                 _contexts().phi[0]["level_1"], [4, 6, 8])).sum())
    assert out["null"].shape == (200,)
    assert out["p_value"] == pytest.approx((1 + np.sum(out["null"] >= out["observed"])) / 201)
    # noise: the observed count is typical of the null
    assert 0.01 < out["p_value"] <= 1.0
    # the same seed gives the same null
    assert exp.sign_flips(_contexts(), 0, "level_1", p)["null"].tolist() == out["null"].tolist()


def test_peaks_find_the_planted_length():
    c = _contexts(K=60, signal=0.0)
    # plant a strong loss-Φ coupling for position 1 at N = 8 only
    c.phi[0]["level_1"][:, 2] = -3.0 * c.word_loss[:, 1] + 0.1 * np.random.default_rng(3).normal(size=60)
    t = exp.css_peaks(c, 0, "level_1", P(seed=0, n_boot=100))
    row = t[t["position"] == 1].iloc[0]
    assert row["peak_N"] == 8 and row["peak_N_ci_low"] == 8 and row["peak_N_ci_high"] == 8
    assert row["peak_abs_css"] == pytest.approx(3.0 * c.word_loss[:, 1].var(), rel=0.1)


def test_cluster_pair_matrix_against_numpy():
    c = _contexts(K=25)
    from iclnb.experiments.lee.reproduce_lee import make_graph

    graph = make_graph(0)
    c.walks = np.random.default_rng(4).integers(0, graph.n, size=c.walks.shape)
    out = exp.cluster_pair_matrices(c, graph, 0, P(seed=0, n_boot=20, n_perm=20))
    j, n, c1, c2 = 2, 8, 1, 2
    top = graph.labelings["level_1"][c.walks[:, :n]]
    ml = np.array([c.word_loss[k, :n][top[k] == c1].mean() if (top[k] == c1).any() else np.nan
                   for k in range(25)])
    ok = np.isfinite(ml)
    spread = c.spread[0][:, j, c2]
    expected = -np.mean((ml[ok] - ml[ok].mean()) * (spread[ok] - spread[ok].mean()))
    assert out["css"][j, c1, c2] == pytest.approx(expected)


def test_class_losses_use_each_contexts_own_bridges():
    loss = np.array([[np.nan, 1.0, 2.0, 3.0], [np.nan, 5.0, 6.0, 7.0]])
    bridge = np.array([[False, True, False, False], [False, False, False, True]])
    np.testing.assert_allclose(exp._class_losses(loss, bridge, 4), [[1.0, 2.5], [7.0, 5.5]])


def test_draw_observables_are_word_losses_then_phi_per_context_and_level():
    from iclnb.metrics import cluster_separation
    from iclnb.represent import WordStates

    graph = exp.make_graph(0)
    rng = np.random.default_rng(0)
    n = 12
    walks = np.stack([exp.context_walk(graph, k, P(context_lengths=[n], seed=0, bridge_penalty=1.0))
                      for k in range(2)])
    sink = np.arange(n) == 0
    states = [WordStates(graph.words, None, {3: rng.normal(size=(n, 4))}, rng.normal(size=n).astype(np.float32),
                         None, sink) for _ in walks]
    obs = exp.draw_observables(states, walks, graph, 3)
    assert obs.shape == (2 * n + 2 * len(exp.LEVELS),)
    np.testing.assert_array_equal(obs[: 2 * n], np.concatenate([s.word_loss for s in states]))
    phi = [[cluster_separation(state.reps[3][1:], graph.labelings[lv][walk[1:]]) for lv in exp.LEVELS]
           for state, walk in zip(states, walks)]
    assert np.isfinite(phi).all()
    np.testing.assert_allclose(obs[2 * n:], np.ravel(phi))


# ---------------------------------------------------------------------------------------------------- slow

SMALL = ["-p", "n_contexts", "4", "-p", "context_lengths", "5,8", "-p", "bif_context_length", "8", "-p",
         "n_bif_contexts", "1", "-p", "n_chains", "2", "-p", "n_draws", "4", "-p", "n_burnin", "0", "-p", "n_boot",
         "20", "-p", "n_perm", "20"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lee") / "run"
    proc = subprocess.run([sys.executable, "-m", "iclnb", "run", "reproduce_lee", *SMALL, "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_bif_correlation_is_symmetric_unit_diagonal_and_equals_the_stored_traces(small_run):
    doc = json.loads((small_run / "results.json").read_text())["results"]
    corr = np.array(doc["bif"]["correlation"], dtype=float)
    ok = np.isfinite(np.diag(corr))
    assert ok.sum() >= 3
    sub = corr[np.ix_(ok, ok)]
    np.testing.assert_allclose(sub, sub.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(sub), 1.0)
    ck = json.loads((small_run / "checkpoint_sgld.json").read_text())["items"]
    obs = np.concatenate([np.array(ck[str(c)]["observables"], dtype=float) for c in range(2)])
    n = 8
    traces = obs[:, :n]
    np.testing.assert_allclose(sub, np.corrcoef(traces[:, ok].T), atol=1e-9)
    cov = np.array(doc["bif"]["covariance"], dtype=float)
    np.testing.assert_allclose(cov[np.ix_(ok, ok)], -np.cov(traces[:, ok].T, ddof=0), atol=1e-9)
    # draw 0 is at the loaded weights (no burn-in): its word losses are Part A's for the same context
    np.testing.assert_allclose(np.array(ck["0"]["observables"][0][:n], dtype=float),
                               np.array(doc["contexts"]["word_loss"][0][:n], dtype=float), rtol=1e-4, atol=1e-4)
    config = json.loads((small_run / "config.json").read_text())["sgld"]
    for key in ("step_size", "n_beta", "localization", "n_chains", "n_draws", "n_burnin", "moved_parameters"):
        assert key in config
    assert all(".layers.16." in n or ".layers.17." in n for n in config["moved_parameters"])
    for key in ("observed", "null_mean", "p_value"):
        assert key in doc["sign_flips"]
    for key in ("bridge", "anchor"):
        assert set(doc["bif"][key]) >= {"mean", "ci_low", "ci_high"}
    assert set(doc["bif"]["rank_correlation"]) >= {"loo", "css"}


@pytest.mark.slow
def test_sampling_restores_the_loaded_weights_exactly():
    import iclnb
    from iclnb.results.run import Run

    model = iclnb.load_model("gemma-3-270m")
    before = {n: t.detach().clone() for n, t in model.hf.named_parameters()}
    p = exp.PARAMS.validate({**exp.PARAMS.defaults(), "n_contexts": 4, "context_lengths": "5", "bif_context_length": 5,
                             "n_bif_contexts": 1, "n_chains": 1, "n_draws": 2, "n_burnin": 1})
    graph = exp.make_graph(p.seed)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run = Run.open(d, "reproduce_lee", dict(p))
        draws = exp.sample_bif(run, model, graph, exp.bif_inputs(model, graph, p), p)
        run.close()
    assert draws["distance"][0, -1] > 0
    for n, t in model.hf.named_parameters():
        assert torch.equal(t.detach(), before[n]), n
        assert t.grad is None
    assert all(isinstance(b, type(model.blocks[0])) for b in model.blocks)


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["-p", "bif_context_length", "7"], "bif_context_length 7 must be one of context_lengths"),
    (["-p", "context_lengths", "5,40000", "-p", "bif_context_length", "5"], "more than the 32768 gemma-3-270m"),
    (["-p", "layers", "3"], "lies before the moved blocks"),
    (["-p", "n_bif_contexts", "50"], "n_bif_contexts 50 exceeds n_contexts"),
])
def test_bad_input_gives_one_line(args, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "iclnb", "run", "reproduce_lee", "-p", "n_contexts", "4", *args, "-o",
                           str(tmp_path / "out")], capture_output=True, text=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("iclnb: error:")]
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-1500:]
    assert not (tmp_path / "out").exists()  # refused before anything is written or loaded


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results(tmp_path):
    from tests.test_resume import killed_and_resumed, same_results

    a, b, _, _ = killed_and_resumed("reproduce_lee", SMALL, tmp_path)
    assert same_results(a, b)


def test_sgld_settings_refused_in_params():
    with pytest.raises(IclnbError):
        exp.PARAMS.validate({**exp.PARAMS.defaults(), "step_size": 0.0})
