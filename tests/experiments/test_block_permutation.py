"""block_permutation: the permutations, junction counts, paired statistics and MDS against direct computations."""

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.seeding import stream
from iclnb.experiments.perturbation import block_permutation as exp
from iclnb.experiments.perturbation.common import classical_mds, make_graph
from iclnb.metrics import node_means


def _toy():
    """Nodes 0-1 in cluster 0, 2-3 in cluster 1, 4 in cluster 2; edges 0-1, 1-2, 2-3, 3-4."""
    adjacency = np.zeros((5, 5), dtype=np.int64)
    for i, j in [(0, 1), (1, 2), (2, 3), (3, 4)]:
        adjacency[i, j] = adjacency[j, i] = 1
    return graphs.Graph(name="toy", adjacency=adjacency, words=list("abcde"),
                        labelings={"cluster": np.array([0, 0, 1, 1, 2])})


def test_the_graph_and_walks_are_css_basics():
    """One seed gives css_basic's graph, and context k's natural walk is the run's context walk k (stream
    ("walks", k)), as in css_basic: the experiments compare."""
    from iclnb.experiments.css import css_basic

    ours, theirs = make_graph(11), css_basic.make_graph(11)
    assert np.array_equal(ours.adjacency, theirs.adjacency) and ours.words == theirs.words
    assert np.array_equal(exp.context_walks(ours, 11, 4, [30], 0.3)["natural"],
                          graphs.random_walk(ours, 30, stream(11, "walks", 4), bridge_penalty=0.3))


def test_junction_counts_by_hand():
    g = _toy()
    # runs of the walk 0 1 | 2 3 | 4 | 1 0 in the order [2 3] [1 0] [4] [0 1]
    permuted = np.array([2, 3, 1, 0, 4, 0, 1])
    got = graphs.junction_counts(g, permuted, [2, 4, 5])
    # junctions 3->1 (not an edge, clusters 1/0), 0->4 (not an edge, 0/2), 4->0 (not an edge, 2/0): no merges
    assert got == {"junctions": 3, "non_edge": 3, "merges": 0}
    # runs [0 1] [1 0] [2 3]: 1->1 merges (and is no edge: no self loops), 0->2 is no edge either
    merged = np.array([0, 1, 1, 0, 2, 3])
    assert graphs.junction_counts(g, merged, [2, 4]) == {"junctions": 2, "non_edge": 2, "merges": 1}
    assert graphs.junction_counts(g, np.array([0, 1, 2, 3]), [2]) == {"junctions": 1, "non_edge": 0, "merges": 0}
    with pytest.raises(IclnbError):
        graphs.junction_counts(g, merged, [0])


def test_block_permute_starts_are_its_run_boundaries_and_draws_are_unchanged():
    g = make_graph(3)
    walk = graphs.random_walk(g, 120, np.random.default_rng(0), bridge_penalty=0.3)
    plain = graphs.block_permute(g, walk, np.random.default_rng(9))
    permuted, starts = graphs.block_permute(g, walk, np.random.default_rng(9), return_starts=True)
    assert np.array_equal(plain, permuted)
    pieces = np.split(permuted, starts)
    runs = graphs.cluster_runs(g, walk)
    assert Counter(tuple(r) for r in pieces) == Counter(tuple(r) for r in runs)
    counts = graphs.junction_counts(g, permuted, starts)
    # every non-edge step of the permuted walk sits at a junction (inside a run the natural walk's edges remain)
    assert counts["non_edge"] == graphs.non_edge_steps(g, permuted)
    labels = g.labelings["cluster"]
    assert counts["merges"] == int(np.sum(labels[permuted[starts - 1]] == labels[permuted[starts]]))


def test_each_permutation_is_a_permutation_of_its_own_natural_prefix():
    g = make_graph(5)
    walks = exp.context_walks(g, 5, 2, [10, 40], 0.3)
    assert len(walks["natural"]) == 40
    for n in (10, 40):
        natural = walks["natural"][:n]
        block, starts = walks[("block", n)]
        shuffle = walks[("shuffle", n)]
        assert Counter(block.tolist()) == Counter(natural.tolist()) == Counter(shuffle.tolist())
        assert len(starts) == len(graphs.cluster_runs(g, natural)) - 1
    again = exp.context_walks(g, 5, 2, [10, 40], 0.3)
    assert np.array_equal(again[("block", 40)][0], walks[("block", 40)][0])
    other = exp.context_walks(g, 5, 3, [10, 40], 0.3)
    assert not np.array_equal(other["natural"], walks["natural"])
    # another set of lengths leaves the permutations at a shared N unchanged (independent streams)
    assert np.array_equal(exp.context_walks(g, 5, 2, [40], 0.3)[("shuffle", 40)], walks[("shuffle", 40)])


def test_mean_word_loss_leaves_out_the_first_word():
    assert exp.mean_word_loss(np.array([100.0, 1.0, 3.0, np.nan])) == pytest.approx(2.0)
    assert np.isnan(exp.mean_word_loss(np.array([1.0, np.nan])))


def test_node_distance_matrix_against_numpy():
    rng = np.random.default_rng(0)
    reps = [rng.normal(size=(12, 4)) for _ in range(2)]
    walks = [rng.integers(0, 3, 12), np.array([0, 1] * 6)]
    keeps = [np.arange(12) > 0, np.ones(12, bool)]
    d = exp.node_distance_matrix(reps, walks, keeps, 3)
    means = np.concatenate([node_means(r[k], w[k], 3)[0] for r, w, k in zip(reps, walks, keeps)])
    for i in range(6):
        for j in range(6):
            expected = np.linalg.norm(means[i] - means[j])
            assert (np.isnan(d[i, j]) and np.isnan(expected)) or d[i, j] == pytest.approx(expected)
    assert np.isnan(d[5]).all()  # node 2 never visited by the second walk


def test_classical_mds_recovers_a_planar_configuration():
    rng = np.random.default_rng(1)
    xy = rng.normal(size=(9, 2)) * [3.0, 1.0]
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    coords = classical_mds(d, 2)
    np.testing.assert_allclose(np.linalg.norm(coords[:, None] - coords[None], axis=-1), d, atol=1e-9)
    np.testing.assert_allclose(classical_mds(d, 2), coords)  # deterministic signs


def _synthetic_contexts(k=6, lengths=(10, 20), layers=(0, 3), seed=0):
    rng = np.random.default_rng(seed)
    contexts = {}
    for c in range(k):
        item = {}
        for n in lengths:
            entry = {}
            for cond in exp.CONDITIONS:
                entry[cond] = {"walk": list(range(n)), "mean_loss": float(rng.uniform(1, 3)),
                               "metrics": {str(layer): {m: float(rng.uniform(0.1, 2)) for m in exp.METRICS}
                                           for layer in layers}}
            entry["junctions"] = {"junctions": 4, "non_edge": int(rng.integers(0, 5)), "merges": 1}
            entry["shuffle_non_edge"] = int(rng.integers(0, n))
            item[f"N_{n}"] = entry
        item["distances"] = {str(layer): rng.uniform(1, 2, size=45 * 44 // 2) for layer in layers}
        contexts[str(c)] = item
    return contexts


def test_tables_use_paired_log_ratios_not_ratios_of_means():
    contexts = _synthetic_contexts()
    p = exp.PARAMS.validate({"context_lengths": "10,20", "n_boot": 200, "n_contexts": 6})
    tabs = exp.tables(contexts, [0, 3], p)
    nat = np.array([contexts[str(c)]["N_20"]["natural"]["metrics"]["3"]["phi"] for c in range(6)])
    blk = np.array([contexts[str(c)]["N_20"]["block"]["metrics"]["3"]["phi"] for c in range(6)])
    lr = tabs["N_20"]["layer_3"]["log_ratio"]["block"]
    assert lr["mean"] == pytest.approx(np.mean(np.log(nat / blk)))
    assert lr["mean"] != pytest.approx(np.log(nat.mean() / blk.mean()))
    assert lr["ci_low"] <= lr["mean"] <= lr["ci_high"]
    assert lr["difference"] == pytest.approx(np.mean(nat - blk))
    cell = tabs["N_20"]["layer_3"]["natural"]["phi"]
    assert cell["mean"] == pytest.approx(nat.mean()) and cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    loss = np.array([contexts[str(c)]["N_10"]["shuffle"]["mean_loss"] for c in range(6)])
    assert tabs["N_10"]["perplexity"]["shuffle"]["mean"] == pytest.approx(np.exp(loss).mean())
    nat_loss = np.array([contexts[str(c)]["N_10"]["natural"]["mean_loss"] for c in range(6)])
    assert tabs["N_10"]["perplexity_log_ratio"]["shuffle"]["mean"] == pytest.approx(np.mean(nat_loss - loss))
    j = tabs["N_10"]["junctions"]
    assert j["junctions"] == 24
    assert j["non_edge"] == sum(contexts[str(c)]["N_10"]["junctions"]["non_edge"] for c in range(6))
    assert j["shuffle_non_edge_fraction"] == pytest.approx(
        sum(contexts[str(c)]["N_10"]["shuffle_non_edge"] for c in range(6)) / (6 * 9))
    table = exp.summary_table(tabs)
    assert len(table) == 2 * 2 * 3
    assert exp.mds_coordinates(contexts, 3, 15).shape == (3, 15, 2)


def test_a_non_positive_phi_is_dropped_from_the_log_ratio_and_counted():
    contexts = _synthetic_contexts()
    contexts["0"]["N_10"]["block"]["metrics"]["0"]["phi"] = -0.2
    p = exp.PARAMS.validate({"context_lengths": "10,20", "n_boot": 100, "n_contexts": 6})
    lr = exp.tables(contexts, [0, 3], p)["N_10"]["layer_0"]["log_ratio"]["block"]
    assert lr["n"] == 5 and lr["n_dropped"] == 1


def test_tidy_rows_read_the_results():
    contexts = _synthetic_contexts()
    p = exp.PARAMS.validate({"context_lengths": "10,20", "n_boot": 100, "n_contexts": 6})
    tabs = exp.tables(contexts, [0, 3], p)
    rows = exp.tidy_rows(SimpleNamespace(results={**tabs, "layers": [0, 3]}), 100, 0)
    phi = [r for r in rows if r["metric"] == "phi" and r["condition"] == "shuffle" and r["N"] == 20 and r["layer"] == 3]
    assert len(phi) == 1 and phi[0]["mean"] == pytest.approx(tabs["N_20"]["layer_3"]["shuffle"]["phi"]["mean"])
    assert phi[0]["null"] == pytest.approx(tabs["N_20"]["layer_3"]["shuffle"]["phi_null"]["mean"])
    assert {r["metric"] for r in rows} == {"phi", "energy_norm", "log_ratio_phi", "perplexity"}


@pytest.mark.slow
def test_measured_context_matches_a_direct_pass():
    """One real context: the natural contexts are prefixes of one pass, the permuted ones are their own passes, and
    the metrics equal css_basic's per-context metrics of a separate represent_walks call."""
    import iclnb
    from iclnb.metrics import context_metrics
    from iclnb.represent import represent_walks

    model = iclnb.load_model("gemma-3-270m")
    p = exp.PARAMS.validate({"context_lengths": "8,16", "n_contexts": 2, "layers": "-1", "batch_size": 2})
    g = make_graph(p.seed)
    item = exp.measure_context(model, g, p, 1, [17])
    walks = exp.context_walks(g, p.seed, 1, [8, 16], p.bridge_penalty)
    for n, cond, walk in [(8, "natural", walks["natural"][:8]), (16, "block", walks[("block", 16)][0])]:
        state = represent_walks(model, [graphs.walk_words(g, walk)], [17], loss=True)[0]
        got = item[f"N_{n}"][cond]
        assert np.array_equal(got["walk"], walk)
        direct = context_metrics(state.reps[17], walk, g, ~state.sink, "own")
        assert got["metrics"]["17"]["phi"] == pytest.approx(direct["phi"], rel=1e-4)
        assert got["metrics"]["17"]["energy_norm"] == pytest.approx(direct["energy_norm"], rel=1e-4)
        assert got["mean_loss"] == pytest.approx(exp.mean_word_loss(state.word_loss), rel=1e-4)


def _cli(*args):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "iclnb", *args], capture_output=True, text=True,
                          env={**os.environ, "ICLNB_PROGRESS": "text"})


@pytest.mark.parametrize("args, message", [
    (["-p", "context_lengths", "2,10"], "parameter context_lengths"),
    (["-p", "n_contexts", "1"], "parameter n_contexts must be at least 2"),
])
def test_bad_values_are_refused_with_one_line(args, message, tmp_path, capsys):
    from iclnb import cli

    out = tmp_path / "out"
    assert cli.main(["run", "block_permutation", *args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iclnb: error: ") and message in err[0], err
    assert not out.exists()


@pytest.mark.slow
def test_a_context_too_long_for_the_model_is_refused_with_one_line(tmp_path):
    done = _cli("run", "block_permutation", "-p", "context_lengths", "10,40000", "-p", "n_contexts", "2", "-o",
                str(tmp_path / "bad"))
    assert done.returncode == 2  # refused on the model's config, before anything is written or loaded
    lines = [line for line in done.stderr.splitlines() if line.startswith("iclnb: error:")]
    assert lines and "more than the 32768 gemma-3-270m can read" in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results(tmp_path):
    from tests.test_resume import killed_and_resumed, same_results

    params = ["-p", "n_contexts", "4", "-p", "context_lengths", "6,12", "-p", "layers", "-1", "-p", "n_boot", "20",
              "-p", "batch_size", "1"]
    a, b, broken, _ = killed_and_resumed("block_permutation", params, tmp_path)
    assert same_results(a, b)
    r = a["results"]
    assert {"mean", "ci_low", "ci_high"} <= set(r["N_12"]["layer_17"]["log_ratio"]["block"])
    assert set(r["N_12"]["perplexity"]) == set(exp.CONDITIONS)
    assert {"junctions", "non_edge", "merges"} <= set(r["N_12"]["junctions"])
    assert (broken / "figures" / "mds.png").exists()
