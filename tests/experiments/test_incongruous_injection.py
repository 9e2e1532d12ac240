"""incongruous_injection: Φ of the edit engine, the inserted words, and the whole measurement of one context against
plain passes of each edited context."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.experiments.perturbation import incongruous_injection as exp
from iclnb.experiments.perturbation.common import make_graph
from iclnb.methods.loo import LooEngine, map_encoder, metrics_of_vectors
from iclnb.methods.word_separation import WordSeparation
from iclnb.metrics import cluster_separation
from iclnb.represent import word_losses
from tests.tiny_models import tiny_model


def test_word_separation_equals_cluster_separation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)) + 40.0  # a large common offset, as in residual streams
    labels = rng.integers(0, 3, 30)
    labels[:6] = [0, 0, 1, 1, 2, 2]
    x[labels == 2] += 1.5
    keep = rng.random(30) > 0.25
    keep[:6] = True
    measure = WordSeparation(labels)
    got = metrics_of_vectors(x, np.arange(30), 30, measure, keep=keep, dtype=torch.float64)
    assert got[0] == pytest.approx(cluster_separation(x[keep], labels[keep]), rel=1e-10)
    # leading dimensions (layers): each its own Φ
    stacked = np.stack([x, 2 * x[::-1]])
    got = metrics_of_vectors(stacked, np.arange(30), 30, measure, keep=keep, dtype=torch.float64)
    assert got[1, 0] == pytest.approx(cluster_separation(2 * x[::-1][keep], labels[keep]), rel=1e-10)
    # a cluster with one counted word drops out (unbiased variant); fewer than two clusters left: NaN
    only = keep & (labels != 2) | (np.arange(30) == 4)
    assert metrics_of_vectors(x, np.arange(30), 30, measure, keep=only, dtype=torch.float64)[0] == pytest.approx(
        cluster_separation(x[only], labels[only]), rel=1e-10)
    one = np.isin(np.arange(30), [0, 1, 2])
    assert np.isnan(metrics_of_vectors(x, np.arange(30), 30, measure, keep=one)[0])


def test_word_separation_refuses_node_sums():
    measure = WordSeparation([0, 0, 1, 1])
    with pytest.raises(IclnbError, match="one node per word position"):
        measure(torch.zeros(4, 3), torch.tensor([2, 0, 1, 1]))
    with pytest.raises(IclnbError, match="built for 4 word positions"):
        measure(torch.zeros(5, 3), torch.ones(5))


def _params(**over):
    values = {"context_lengths": "8,12", "positions": "1,3,10", "n_contexts": 2, "layers": "0,-1", "n_boot": 50,
              "random_vocab_words": "water,people", "semantic_outlier_words": "enzyme",
              "out_of_vocab_words": "xqzvbt,blorftag"}
    values.update(over)
    return exp.PARAMS.validate(values)


def test_inserted_words_by_kind():
    p = _params()
    g = make_graph(p.seed)
    clusters = g.labelings["cluster"]
    for k in range(5):
        walk = graphs.context_walk(g, 12, p.seed, k, bridge_penalty=p.bridge_penalty)
        positions = [1, 3, 10]
        wrong = exp.inserted_words(g, walk, positions, "wrong_cluster", p, k)
        for q, w in zip(positions, wrong):
            c = clusters[g.words.index(w)]
            assert c != clusters[walk[q - 1]] and c != clusters[walk[q]]
        assert wrong == exp.inserted_words(g, walk, positions, "wrong_cluster", p, k)
        # at most one graph word per cluster in a context
        assert len({w for w in wrong}) <= len({clusters[g.words.index(w)] for w in wrong})
        vocab = exp.inserted_words(g, walk, positions, "random_vocab", p, k)
        assert len(set(vocab)) == 1 and vocab[0] in ("water", "people")
        assert exp.inserted_words(g, walk, positions, "out_of_vocab", p, k)[0] in ("xqzvbt", "blorftag")


def test_bad_inputs_are_refused_with_one_line():
    g = make_graph(42)
    with pytest.raises(IclnbError, match="insertion position 250 is not below any context length"):
        exp.check_inputs(_params(positions="1,250"), g)
    with pytest.raises(IclnbError, match="must lie outside the graph"):
        exp.check_inputs(_params(random_vocab_words=f"water,{g.words[3]}"), g)


def _word_ids(graph, p):
    """A stand-in tokenizer: graph words take 1 or 2 ids, common words and science terms 1, nonsense strings 3."""
    rng = np.random.default_rng(7)
    ids = iter(rng.permutation(np.arange(3, 97)))
    table = {w: [int(next(ids)) for _ in range(1 + i % 2)] for i, w in enumerate(graph.words)}
    for name in ("random_vocab_words", "semantic_outlier_words"):
        for w in p[name]:
            table[w] = [int(next(ids))]
    for w in p.out_of_vocab_words:
        table[w] = [int(next(ids)) for _ in range(3)]
    return table


def _plain(model, encode, words, layers):
    """Word vectors (L, n_words, d) at the last token of each span and word losses of one plain pass."""
    enc = encode(words)
    captured = {}
    handles = [model.blocks[k].register_forward_hook(
        lambda m, a, o, k=k: captured.__setitem__(k, (o[0] if isinstance(o, (tuple, list)) else o)[0].double()))
        for k in layers]
    try:
        with torch.inference_mode():
            logits = model.hf(enc.input_ids[None]).logits[0].double()
    finally:
        for h in handles:
            h.remove()
    loss = torch.nn.functional.cross_entropy(logits[:-1], enc.input_ids[1:], reduction="none").numpy()
    last = torch.as_tensor(enc.spans[:, 1] - 1)
    return np.stack([captured[k][last].numpy() for k in layers]), word_losses(loss, enc.spans).astype(float)


def test_one_context_matches_plain_passes_of_every_edited_context():
    """ΔΦ over the original words (inserted span excluded, labels exact), the inserted word's surprisal and the
    loss after it, for every kind, position below N and N, against a plain pass of each edited walk alone."""
    model, _ = tiny_model("llama")
    model.hf.double()
    p = _params()
    g = make_graph(p.seed)
    encode = map_encoder(_word_ids(g, p), bos_id=1)
    layers = [0, 3]
    engine = LooEngine(model, encode=encode, batch_tokens=24, work_dtype=torch.float64)
    item = exp.measure_context(engine, g, p, 1, layers)
    walk = graphs.context_walk(g, 12, p.seed, 1, bridge_penalty=p.bridge_penalty)
    words = graphs.walk_words(g, walk)
    clusters = g.labelings["cluster"][walk]
    assert np.array_equal(item["walk"], walk)
    for kind in exp.KINDS:
        for n in (8, 12):
            rec = item["kinds"][kind][f"N_{n}"]
            expected_positions = [q for q in (1, 3, 10) if q < n]
            assert list(rec["positions"]) == expected_positions
            vectors, full_loss = _plain(model, encode, words[:n], layers)
            full_phi = [cluster_separation(vectors[i], clusters[:n]) for i in range(len(layers))]
            np.testing.assert_allclose(rec["phi_full"], full_phi, rtol=1e-6)
            for row, q in enumerate(expected_positions):
                word = rec["words"][row]
                edited = words[:q] + [word] + words[q:n]
                vecs, losses = _plain(model, encode, edited, layers)
                original = np.delete(np.arange(n + 1), q)  # the inserted word is left out, labels stay exact
                phi = [cluster_separation(vecs[i][original], clusters[:n]) for i in range(len(layers))]
                np.testing.assert_allclose(rec["phi_edited"][row], phi, rtol=1e-6, err_msg=f"{kind} N={n} p={q}")
                assert rec["inserted_loss"][row] == pytest.approx(losses[q], rel=1e-5)
                assert rec["following_loss"][row] == pytest.approx(np.mean(losses[q + 1:]), rel=1e-5)
                assert rec["baseline_loss"][row] == pytest.approx(np.mean(full_loss[q:n]), rel=1e-5)
    contexts = {"0": item, "1": item}
    from iclnb.results.io import to_jsonable

    contexts = to_jsonable(contexts)
    tabs = exp.tables(contexts, layers, p)
    rec = item["kinds"]["out_of_vocab"]["N_12"]
    cell = tabs["out_of_vocab"]["N_12"]["p_3"]
    assert cell["layer_3"]["delta_phi"]["mean"] == pytest.approx(rec["phi_edited"][1][1] - rec["phi_full"][1])
    assert cell["layer_3"]["delta_phi"]["median"] == pytest.approx(cell["layer_3"]["delta_phi"]["mean"])
    assert cell["loss_at"]["mean"] == pytest.approx(rec["inserted_loss"][1])
    assert cell["loss_after_delta"]["mean"] == pytest.approx(rec["following_loss"][1] - rec["baseline_loss"][1])
    assert set(tabs["wrong_cluster"]["N_8"]) == {"p_1", "p_3"}


def _fake_contexts(k=5, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for c in range(k):
        kinds = {}
        for kind in exp.KINDS:
            kinds[kind] = {"N_20": {"positions": [1, 5], "words": ["a", "a"], "phi_full": rng.normal(size=2).tolist(),
                                    "phi_edited": rng.normal(size=(2, 2)).tolist(),
                                    "inserted_loss": rng.uniform(5, 9, 2).tolist(),
                                    "following_loss": rng.uniform(2, 3, 2).tolist(),
                                    "baseline_loss": rng.uniform(2, 3, 2).tolist()}}
        out[str(c)] = {"walk": [0] * 20, "word_loss": [1.0] * 20, "kinds": kinds, "seconds": 1.0}
    return out


def test_tables_summarise_over_contexts():
    contexts = _fake_contexts()
    p = _params(context_lengths="20", positions="1,5", layers="0,3")
    tabs = exp.tables(contexts, [0, 3], p)
    d = np.array([np.array(contexts[str(c)]["kinds"]["random_vocab"]["N_20"]["phi_edited"])[1, 0]
                  - contexts[str(c)]["kinds"]["random_vocab"]["N_20"]["phi_full"][0] for c in range(5)])
    cell = tabs["random_vocab"]["N_20"]["p_5"]["layer_0"]["delta_phi"]
    assert cell["mean"] == pytest.approx(d.mean()) and cell["median"] == pytest.approx(np.median(d))
    assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"] and cell["n"] == 5
    by_layer = exp.delta_phi_by_layer(contexts, [0, 3], p)
    per_context = [np.mean(np.array(contexts[str(c)]["kinds"]["random_vocab"]["N_20"]["phi_edited"])[:, 1]
                           - contexts[str(c)]["kinds"]["random_vocab"]["N_20"]["phi_full"][1]) for c in range(5)]
    assert by_layer["random_vocab"]["N_20"]["layer_3"]["mean"] == pytest.approx(np.mean(per_context))
    rows = exp.tidy_rows(SimpleNamespace(results={"kinds": tabs, "delta_phi_by_layer": by_layer}), 50, 0)
    assert any(r["metric"] == "delta_phi_p5" and r["condition"] == "random_vocab" and r["layer"] == 0 for r in rows)
    assert len(exp.summary_table(tabs, 3)) == 4 * 2


@pytest.mark.slow
def test_the_embedded_model_tokenises_the_inserted_words_as_claimed():
    """With gemma-3-270m's tokenizer: every out_of_vocab default is several tokens; the science terms and common
    words are one token each (so out_of_vocab is the only multi-token kind and its effect is not one of length)."""
    import iclnb

    model = iclnb.load_model("gemma-3-270m")
    p = exp.PARAMS.validate({})
    tokens = exp.inserted_token_counts(model, p)
    assert all(tokens[w] >= 2 for w in p.out_of_vocab_words)
    assert all(tokens[w] == 1 for w in p.semantic_outlier_words + p.random_vocab_words)


def _cli(*args):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "iclnb", *args], capture_output=True, text=True,
                          env={**os.environ, "ICLNB_PROGRESS": "text"})


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["-p", "context_lengths", "20,50", "-p", "positions", "1,60"],
     "insertion position 60 is not below any context length (the largest is 50)"),
    (["-p", "out_of_vocab_words", "water"], "out_of_vocab word 'water' is a single token for gemma-3-270m"),
    (["-p", "layers", "embed"], "needs at least one decoder block"),
])
def test_bad_input_through_iclnb_run_gives_one_line(args, message, tmp_path):
    done = _cli("run", "incongruous_injection", "-p", "n_contexts", "2", *args, "-o", str(tmp_path / "bad"))
    assert done.returncode == 2, done.stderr  # refused before anything is written or loaded
    lines = [line for line in done.stderr.splitlines() if line.startswith("iclnb: error:")]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_killed_run_resumes_to_identical_results(tmp_path):
    from tests.test_resume import killed_and_resumed, same_results

    params = ["-p", "n_contexts", "3", "-p", "context_lengths", "8,12", "-p", "positions", "1,5", "-p", "layers", "-1",
              "-p", "n_boot", "20", "-p", "kinds", "wrong_cluster,out_of_vocab"]
    a, b, broken, _ = killed_and_resumed("incongruous_injection", params, tmp_path)
    assert same_results(a, b)
    cell = a["results"]["kinds"]["out_of_vocab"]["N_12"]["p_5"]
    assert {"median", "mean", "ci_low", "ci_high"} <= set(cell["layer_17"]["delta_phi"])
    assert {"loss_at", "loss_after"} <= set(cell["layer_17"])
    assert a["results"]["inserted_tokens"]["xqzvbt"] >= 2
    assert (broken / "figures" / "delta_phi_position.png").exists()
