"""The experiment kit: the one resumable loop, the forward-pass loop built on it, one model at a time; and the small
shared pieces moved under it (mean_ci, paired_difference, bootstrap_spearman, check_fits, context_walk,
parse_layer_key, model_spec)."""

import numpy as np
import pytest
import torch

from iclnb.core.errors import IclnbError
from iclnb.experiments.kit import LazyModel, checkpoint_key, each_model, measure_contexts, resume_units
from iclnb.results.io import nan_array
from iclnb.results.run import Run
from tests.tiny_models import tiny_word_model

VOCAB = ["apple", "bird", "car", "zyxwv", "egg", "house"]


def _model():
    return tiny_word_model()


def _walk(unit):
    rng = np.random.default_rng(unit if isinstance(unit, int) else sum(unit))
    return rng.integers(0, len(VOCAB), 6)


def test_resume_units_computes_each_unit_once_and_resumes_after_an_interruption(tmp_path):
    calls = []

    def compute(batch):
        calls.append(list(batch))
        if len(calls) == 2 and fail["now"]:
            raise KeyboardInterrupt
        return [{"square": u * u} for u in batch]

    fail = {"now": True}
    run = Run.open(tmp_path / "run", "demo", {"n": 5})
    with pytest.raises(KeyboardInterrupt):
        resume_units(run, list(range(5)), compute, batch_size=2, every_s=0)
    run.close()
    assert calls == [[0, 1], [2, 3]]
    fail["now"] = False
    run = Run.open(tmp_path / "run", "demo", {"n": 5})
    items = resume_units(run, list(range(5)), compute, batch_size=2, every_s=0)
    run.close()
    assert calls[2:] == [[2, 3], [4]]  # the first batch was checkpointed and is not computed again
    assert [item["square"] for item in items] == [0, 1, 4, 9, 16]


def test_checkpoint_keys_keep_each_experiments_spelling():
    assert checkpoint_key(3) == "3"
    assert checkpoint_key(("25", 4)) == "25/4"
    assert checkpoint_key(7, tag="random") == "random|7"


def test_measure_contexts_matches_one_pass_per_context_and_does_not_depend_on_batch_size(tmp_path):
    from iclnb.represent import represent_walks

    model = _model()
    units = list(range(5))

    def measure(unit, walk, state):
        return {"walk": walk, "rep": state.reps[2].mean(axis=0), "loss": state.word_loss}

    out = {}
    for batch_size in (1, 3):
        run = Run.open(tmp_path / f"b{batch_size}", "demo", {"b": batch_size})
        out[batch_size] = measure_contexts(run, model, units, _walk, measure, layers=[2], batch_size=batch_size,
                                           words=lambda w: [VOCAB[i] for i in w], loss=True)
        run.close()
    for unit in units:
        ref = represent_walks(model, [[VOCAB[i] for i in _walk(unit)]], [2], loss=True, batch_size=1)[0]
        for batch_size in (1, 3):
            item = out[batch_size][unit]
            np.testing.assert_array_equal(item["walk"], _walk(unit))
            np.testing.assert_allclose(item["rep"], ref.reps[2].mean(axis=0), rtol=1e-4, atol=1e-5)
            # items come back as the checkpoint holds them (strict JSON: NaN as null)
            np.testing.assert_allclose(nan_array(item["loss"]), ref.word_loss, rtol=1e-4, atol=1e-5)


def test_a_second_model_runs_the_same_units_under_its_tag_and_a_finished_one_is_never_loaded(tmp_path):
    model = _model()
    twin = _model()
    with torch.no_grad():
        for p in twin.hf.parameters():
            p.mul_(0.5)
    loads = []

    def load_twin():
        loads.append(1)
        return twin

    def measure(unit, walk, state):
        return {"rep": state.reps[1].sum()}

    words = lambda w: [VOCAB[i] for i in w]  # noqa: E731
    run = Run.open(tmp_path / "run", "demo", {"n": 3})
    first = measure_contexts(run, model, [0, 1, 2], _walk, measure, layers=[1], batch_size=2, words=words,
                             total=6)
    second = measure_contexts(run, LazyModel(load_twin), [0, 1, 2], _walk, measure, layers=[1], batch_size=2,
                              words=words, tag="twin", total=6)
    run.close()
    assert loads == [1]
    assert all(a["rep"] != b["rep"] for a, b in zip(first, second))
    run = Run.open(tmp_path / "run", "demo", {"n": 3})
    again = measure_contexts(run, LazyModel(load_twin), [0, 1, 2], _walk, measure, layers=[1], batch_size=2,
                             words=words, tag="twin", total=6)
    store = run.checkpoint("contexts")
    assert sorted(store) == ["0", "1", "2", "twin|0", "twin|1", "twin|2"]
    run.close()
    assert loads == [1]  # every twin unit was checkpointed: the twin is not loaded again
    assert [a["rep"] for a in again] == [b["rep"] for b in second]


def test_each_model_holds_one_model_at_a_time_and_loads_only_on_use():
    live, loaded = [], []

    class Fake:
        def __init__(self, name):
            self.name = name
            live.append(name)

        def __del__(self):
            live.remove(self.name)

    def load(name):
        loaded.append(name)
        return Fake(name)

    for name, holder in each_model(["a", "b", "c"], load):
        if name != "b":
            assert holder.get().name == name
            assert live == [name]  # the previous model was freed before this one was loaded
    assert loaded == ["a", "c"] and live == []


def test_mean_ci_paired_difference_and_spearman_against_hand_and_scipy_values():
    from scipy import stats as sps

    from iclnb.stats import bootstrap_spearman, mean_ci, paired_difference

    entry = mean_ci([1.0, 2.0, np.nan, 3.0, 6.0], 200, np.random.default_rng(0), count=True)
    assert entry["mean"] == pytest.approx(3.0) and entry["n"] == 4
    assert entry["ci_low"] <= 3.0 <= entry["ci_high"]
    d = paired_difference([1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 100, np.random.default_rng(0), np.random.default_rng(1),
                          1000)
    assert d["mean"] == 1.0 and d["ci_low"] == d["ci_high"] == 1.0
    assert d["p_value"] == pytest.approx(2 / 2**6, abs=0.03)  # all signs agree: 2 of the 64 sign patterns
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    s = bootstrap_spearman(x, y, 200, np.random.default_rng(0))
    assert s["rho"] == pytest.approx(sps.spearmanr(x, y).statistic) and s["n"] == 30
    assert s["ci_low"] < s["rho"] < s["ci_high"]
    assert np.isnan(bootstrap_spearman([1.0, 2.0], [2.0, 1.0], 10, np.random.default_rng(0))["rho"])


def test_check_fits_refuses_a_context_that_may_not_fit_with_the_most_that_does():
    from iclnb.prompts import check_fits

    model = _model()  # 256 positions; "zyxwv" takes several tokens
    report = check_fits(model, VOCAB, 10)
    longest = max(report.values())
    most = (model.max_positions - 1) // longest
    check_fits(model, VOCAB, most)
    with pytest.raises(IclnbError, match=f"context length {most + 1} may need .* use at most {most}$"):
        check_fits(model, VOCAB, most + 1)


def test_context_walk_is_the_walk_of_its_own_stream():
    from iclnb import graphs
    from iclnb.core.seeding import stream

    graph = graphs.sbm(3, 4, 0.8, 0.1, rng=np.random.default_rng(0))
    walk = graphs.context_walk(graph, 20, 5, 3, bridge_penalty=0.3)
    ref = graphs.random_walk(graph, 20, stream(5, "walks", 3), bridge_penalty=0.3)
    np.testing.assert_array_equal(walk, ref)
    np.testing.assert_array_equal(graphs.context_walk(graph, 20, 5, (1, 3)),
                                  graphs.random_walk(graph, 20, stream(5, "walks", 1, 3)))
    assert not np.array_equal(walk, graphs.context_walk(graph, 20, 5, 4, bridge_penalty=0.3))


def test_parse_layer_key_inverts_layer_key():
    from iclnb.core.layers import layer_key, parse_layer_key

    for layer in (0, 7, 31, "embed"):
        assert parse_layer_key(layer_key(layer)) == layer
    with pytest.raises(IclnbError, match="not a layer key"):
        parse_layer_key("block_3")
