"""The collapse family against direct computations: chunked reading with the key/value cache equals one plain pass
at every captured layer (sliding-window families included), windows exclude the sink without off-by-one errors,
probes equal the log-probabilities of one plain pass, and the steps from contexts to results.json on a tiny model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from iclnb.core.errors import IclnbError
from iclnb.experiments import find
from iclnb.experiments.collapse import collapse as exp
from iclnb.experiments.collapse import corpus, figures
from iclnb.experiments.collapse.chunked import ChunkedPass, _common_prefix
from iclnb.metrics import collapse_stats
from tests.test_prompts import _tokenizer
from tests.tiny_models import FAMILIES, VOCAB, tiny_model

SLIDING = ("gemma3", "mistral", "gemma2")


def _ids(n, seed=0):
    return torch.randint(2, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))


def _plain_logprobs(model, ids):
    with torch.inference_mode():
        logits = model.hf(torch.as_tensor(ids)[None]).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


# ------------------------------------------------------------------------------------------------ chunked reading


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_chunked_pass_equals_one_plain_pass_at_every_layer(family, chunk):
    model, _ = tiny_model(family)
    ids = _ids(60)  # longer than every tiny sliding window (8, 16)
    layers = model.resolve_layers("embed,0,1,2,-1")
    plain = model.run(ids, layers=layers)
    cp = ChunkedPass(model, layers, window_tokens=100, chunk_tokens=chunk)
    cp.feed(ids)
    assert cp.n_tokens == 60
    for k in layers:
        torch.testing.assert_close(torch.from_numpy(cp.window(k)).float(), plain.resid[k][0, 1:], atol=2e-5,
                                   rtol=1e-4)


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_windows_at_each_stop_exclude_the_sink_without_off_by_one(family):
    model, _ = tiny_model(family)
    ids = _ids(70, seed=1).numpy()
    layers = model.resolve_layers("0,-1")
    plain = model.run(ids, layers=layers)
    w = 10
    stops = [2, 5, 11, 12, 40, 70]  # before and after the first full window (t = w + 1)
    measures, _, _ = exp.read_context(ChunkedPass(model, layers, w, 9), ids, stops)
    for t in stops:
        rows = plain.resid[layers[-1]][0, max(1, t - w) : t].double().numpy()  # positions max(1, t-w) .. t-1
        expected = collapse_stats(rows, window=None)
        got = measures[f"tokens_{t}"][f"layer_{layers[-1]}"]
        assert expected["n"] == min(t - 1, w)
        for name, key in exp.MEASURES.items():
            if np.isnan(expected[key]):
                assert got[name] is None or np.isnan(got[name])
            else:
                assert got[name] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (t, name)


@pytest.mark.parametrize("family", SLIDING + ("gpt2",))
def test_fork_continues_independently(family):
    model, _ = tiny_model(family)
    a, b = _ids(50, seed=2), _ids(50, seed=3)
    layers = model.resolve_layers("1,-1")
    cp = ChunkedPass(model, layers, window_tokens=15, chunk_tokens=8)
    cp.feed(a[:30])
    other = cp.fork()
    cp.feed(a[30:])
    other.feed(b[30:])
    for ids, p in ((a, cp), (torch.cat([a[:30], b[30:]]), other)):
        plain = model.run(ids, layers=layers)
        for k in layers:
            torch.testing.assert_close(torch.from_numpy(p.window(k)).float(), plain.resid[k][0, -15:], atol=2e-5,
                                       rtol=1e-4)


@pytest.mark.parametrize("family", SLIDING + ("gpt2", "llama"))
def test_probe_equals_plain_log_probabilities_and_leaves_the_pass_unchanged(family):
    model, _ = tiny_model(family)
    ctx = _ids(40, seed=4)
    shared = [5, 6, 7, 8]
    probes = [(shared + [9, 10], [11]), (shared + [12], [13, 14, 15]), (shared + [9, 10, 16, 17], [18, 19]),
              (shared + [20, 21], [3])]
    layers = model.resolve_layers("-1")
    cp = ChunkedPass(model, layers, window_tokens=12, chunk_tokens=16)
    cp.feed(ctx)
    correct, logprob = cp.probe(probes)
    for i, (q, a) in enumerate(probes):
        lp = _plain_logprobs(model, torch.cat([ctx, torch.tensor(q + a)]))
        start = len(ctx) + len(q) - 1
        expected = sum(float(lp[start + j, t]) for j, t in enumerate(a))
        assert logprob[i] == pytest.approx(expected, abs=2e-4)
        assert correct[i] == (int(lp[start].argmax()) == a[0])
    # the context is unchanged: reading on gives the states of one plain pass over context + more
    more = _ids(10, seed=5)
    cp.feed(more)
    plain = model.run(torch.cat([ctx, more]), layers=layers)
    torch.testing.assert_close(torch.from_numpy(cp.window(layers[0])).float(), plain.resid[layers[0]][0, -12:],
                               atol=2e-5, rtol=1e-4)


def test_common_prefix_leaves_one_token():
    assert _common_prefix([[1, 2, 3], [1, 2, 4]]) == 2
    assert _common_prefix([[1, 2], [1, 2, 3]]) == 1
    assert _common_prefix([[5], [5]]) == 0
    assert _common_prefix([[1, 2], [3, 2]]) == 0


# ------------------------------------------------------------------------------------------------ points, params


def test_context_points_double_from_64_and_end_at_max_tokens():
    assert exp.context_points(128, 50) == [64, 128]
    assert exp.context_points(1024, 50) == [64, 128, 256, 512, 1024]
    assert exp.context_points(1000, 50) == [64, 128, 256, 512, 1000]
    assert exp.context_points(300, 70) == [128, 256, 300]  # the first point holds a full window after the sink
    assert exp.context_points(60, 50) == [60]
    p = SimpleNamespace(max_tokens=1024, window_tokens=50, switch_fraction=0.5)
    assert exp.switch_token(p) == 512
    assert exp.reversal_points(p) == [576, 640, 768, 1024]


def test_parameters_are_refused_with_one_line():
    decl = find("collapse").params
    values = decl.defaults()
    for name, bad in (("max_tokens", 0), ("n_contexts", 1), ("window_tokens", 2), ("graph", "ring"),
                      ("switch_fraction", 1.5), ("chunk_tokens", 0), ("layers", "foo")):
        with pytest.raises(IclnbError, match=name):
            decl.validate({**values, name: bad})


def _p(**kw):
    base = dict(max_tokens=100, n_contexts=2, layers="0,-1", window_tokens=20, graph="grid", switch_fraction=0.5,
                probe=True, chunk_tokens=32, n_boot=50, output_dir="", dtype="", seed=3, model="tiny")
    base.update(kw)
    return find("collapse").params.validate(base)


@pytest.fixture(scope="module")
def tiny():
    tok = _tokenizer(True)
    model, _ = tiny_model("gemma3", tokenizer=tok)
    model.hf.resize_token_embeddings(len(tok))
    model.name = "tiny-gemma3"
    return model


def test_check_refuses_a_context_beyond_the_model(tiny):
    exp.check(_p(), tiny)
    with pytest.raises(IclnbError, match="max_tokens 300 is beyond the 256 tokens"):
        exp.check(_p(max_tokens=300), tiny)
    with pytest.raises(IclnbError, match="window"):
        exp.check(_p(max_tokens=22, window_tokens=20), tiny)
    with pytest.raises(IclnbError, match="switch_fraction"):
        exp.check(_p(switch_fraction=0.1), tiny)


# ------------------------------------------------------------------------------------------------ contexts


def test_natural_text_is_prose_with_its_source():
    paragraphs = corpus.prose_paragraphs()
    assert len(paragraphs) > 100
    for par in paragraphs:
        assert len(par.split()) >= corpus.MIN_WORDS and ">>>" not in par and "::=" not in par
        assert "\n" not in par and not par.startswith(" ")
    info = corpus.provenance()
    assert info["licence"].startswith("Python Software Foundation") and len(info["sha256"]) == 64


def test_split_paragraphs_drops_code_and_headings():
    text = ("Title\n*****\n\nThe first paragraph is\nwrapped over two lines.\n\n   x = 1\n   y = 2\n\n"
            "A *stressed* read- only word.[1]")
    assert corpus.split_paragraphs(text) == ["The first paragraph is wrapped over two lines.",
                                             "A stressed read-only word."]


def test_contexts_are_fixed_per_index_and_have_their_shape(tiny):
    tok = tiny.tokenizer
    p = _p()
    bos = tok.bos_token_id
    for kind in (*exp.KINDS, *exp.REVERSALS):
        ids = exp.context_ids(kind, tok, p, 0)
        assert len(ids) == p.max_tokens and ids[0] == bos, kind
        np.testing.assert_array_equal(ids, exp.context_ids(kind, tok, p, 0))
        assert not np.array_equal(ids, exp.context_ids(kind, tok, p, 1)), kind
    walk = exp.context_ids("walk", tok, p, 0)
    s = exp.switch_token(p)
    for kind in exp.REVERSALS:
        np.testing.assert_array_equal(exp.context_ids(kind, tok, p, 0)[:s], walk[:s])
    repeated = exp.context_ids("repeated", tok, p, 0)
    assert len(set(repeated[1:].tolist())) == 1
    text = tok.decode(exp.context_ids("natural", tok, p, 0)[1:])
    assert text.split()[0][0].isupper()  # starts at a paragraph
    words = tok.decode(walk[1:]).split()
    assert set(words[:-1]) <= set(exp.make_graph("grid").words)


# ------------------------------------------------------------------------------------------------ end to end (tiny)


def test_steps_from_contexts_to_results(tiny, tmp_path):
    from iclnb.results.io import write_json
    from iclnb.results.run import Run

    p = _p(max_tokens=128)
    layers = tiny.resolve_layers(p.layers)
    run = Run.open(tmp_path / "run", "collapse", dict(p))
    store = exp.collect(run, tiny, p)
    assert len(store) == len(exp.KINDS) * p.n_contexts
    data = exp.per_context(store, p, layers)
    assert data["walk"]["points"] == [64, 128] and exp.reversal_points(p) == [128]
    assert data["natural"]["values"].shape == (2, 2, 2, len(exp.MEASURES))

    # the walk's measures at a point equal a plain pass over the context's first t tokens
    ids = exp.context_ids("walk", tiny.tokenizer, p, 1)
    plain = tiny.run(ids[:64], layers=layers)
    expected = collapse_stats(plain.resid[layers[-1]][0, 44:64], window=None)
    got = store["walk/1"]["measures"]["tokens_64"][f"layer_{layers[-1]}"]
    assert got["participation_ratio"] == pytest.approx(expected["participation_ratio"], rel=1e-4)
    assert got["cosine"] == pytest.approx(expected["mean_cosine"], rel=1e-5)

    kinds, vs = exp.summarise(data, p, layers)
    key = f"layer_{layers[-1]}"
    values = data["walk"]["values"][:, data["walk"]["points"].index(64), 1, 0]
    assert kinds["walk"]["tokens_64"][key]["cosine"]["mean"] == pytest.approx(values.mean())
    ref = data["natural"]["values"][:, 0, 1, 0]
    assert vs["walk"]["tokens_64"][key]["cosine"]["mean"] == pytest.approx(values.mean() - ref.mean())
    # a reversal is compared with natural text read for as many tokens as have passed since the switch (64 + 64)
    assert set(vs["walk_to_natural"]) == {"tokens_128"} and exp.switch_token(p) == 64
    after = data["walk_to_natural"]["values"][:, 0, 1, 0]
    assert vs["walk_to_natural"]["tokens_128"][key]["cosine"]["mean"] == pytest.approx(after.mean() - ref.mean())
    assert "natural" not in vs

    arrays = exp.probe_arrays(store, p)
    assert arrays["walk"]["points"] == [64, 128]
    probing = exp.probing_summary(arrays, exp.baseline_probes(tiny, p), p)
    acc = probing["natural"]["tokens_128"]["accuracy"]
    assert acc["ci_low"] <= acc["mean"] <= acc["ci_high"]
    assert acc["mean"] == pytest.approx(arrays["natural"]["correct"][:, 1].mean())
    correlations = exp.probe_correlations(data, arrays, layers, p)
    doc = exp.results_document(kinds, vs, probing, correlations, layers, p, tiny)
    path = write_json(tmp_path / "results.json", doc)
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert set(loaded["kinds"]) == {"walk", "natural", "repeated", "walk_to_natural", "walk_to_walk"}
    assert set(loaded["kinds"]["repeated"]["tokens_128"][key]) == set(exp.MEASURES)
    assert loaded["natural_text"]["licence"] and loaded["probes"]["source"]

    # resuming from the checkpoint gives the same numbers
    run.close()
    again = Run.open(tmp_path / "run", "collapse", dict(p))
    store2 = exp.collect(again, tiny, p)
    np.testing.assert_array_equal(exp.per_context(store2, p, layers)["walk"]["values"], data["walk"]["values"])
    again.close()

    for fig in (figures.measures_figure(kinds, layers[-1], exp.context_points(128, 20)),
                figures.heatmap_figure(kinds, layers, exp.context_points(128, 20), "cosine"),
                figures.measures_figure(kinds, layers[-1], exp.reversal_points(p), kind_names=exp.REVERSALS,
                                        offset=64, references=[("natural", kinds, "natural", 0)]),
                figures.probing_figure(probing)):
        assert fig.layout.width <= 860
        assert all(tr.mode != "markers" for tr in fig.data if hasattr(tr, "mode"))


def test_spearman_rows_matches_scipy():
    import scipy.stats

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 20)), rng.standard_normal((3, 20))
    x[0, :5] = x[0, 5]  # ties
    got = exp._spearman_rows(x, y)
    for i in range(3):
        assert got[i] == pytest.approx(scipy.stats.spearmanr(x[i], y[i]).statistic)
    assert np.isnan(exp._spearman_rows(np.ones((1, 5)), y[:1, :5])[0])


@pytest.mark.slow
def test_embedded_model_chunked_equals_plain_pass():
    from iclnb.models import load_model

    model = load_model("gemma-3-270m")
    p = _p(max_tokens=600, layers="0,5,-1")
    ids = exp.context_ids("natural", model.tokenizer, p, 0)  # longer than gemma-3's sliding window of 512
    layers = model.resolve_layers(p.layers)
    plain = model.run(ids, layers=layers)
    cp = ChunkedPass(model, layers, window_tokens=50, chunk_tokens=256)
    cp.feed(ids)
    for k in layers:
        ref = plain.resid[k][0, -50:]
        err = (torch.from_numpy(cp.window(k)).float() - ref).abs().max() / ref.abs().max()
        assert float(err) < 1e-4, k
