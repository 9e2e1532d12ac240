"""Leave-one-out engine: every influence equals a brute-force recomputation (full and deleted contexts run
separately, no cache), at every layer, for several decoder families (sliding-window caches included)."""

import numpy as np
import pytest
import torch

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.loo import METRICS, LooEngine, map_encoder, metrics_of_vectors, pair_metrics
from iclnb.core.seeding import stream
from tests.tiny_models import tiny_model


def _brute_force(model, encode, words, nodes, graph, layers, dtype=torch.float64):
    """Metrics of one context from a plain forward pass of the whole context (hooks on the blocks, no cache)."""
    enc = encode(words)
    captured = {}
    handles = [model.blocks[k].register_forward_hook(
        lambda m, a, o, k=k: captured.__setitem__(k, (o[0] if isinstance(o, (tuple, list)) else o)[0].to(dtype)))
        for k in layers]
    try:
        with torch.inference_mode():
            model.hf(enc.input_ids[None])
    finally:
        for h in handles:
            h.remove()
    last = torch.as_tensor(enc.spans[:, 1] - 1)
    vectors = np.stack([captured[k][last].numpy() for k in layers])
    return metrics_of_vectors(vectors, nodes, graph.n, graph.extra["semantic_pairs"], graph.extra["graph_pairs"],
                              keep=enc.spans[:, 0] != 0, dtype=dtype)


def _setup(n_words, seed=3):
    graph = graphs.semantic_conflict("semantic", rng=stream(seed, "graph"))
    walk = graphs.random_walk(graph, n_words, stream(seed, "walks"))
    rng = np.random.default_rng(seed)
    # a stand-in tokenizer: each word gets 1 or 2 fixed token ids (multi-token spans exercised)
    word_ids = {w: list(rng.choice(np.arange(3, 97), size=1 + (i % 2), replace=False)) for i, w in enumerate(graph.words)}
    return graph, walk, graphs.walk_words(graph, walk), word_ids


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2", "mistral", "gemma2", "qwen2", "gpt_neox"])
@pytest.mark.parametrize("bos", [None, 1])
def test_every_influence_matches_brute_force(family, bos):
    model, _ = tiny_model(family)
    model.hf.double()
    graph, walk, words, word_ids = _setup(14)  # > the tiny gemma sliding window of 8 tokens
    encode = map_encoder(word_ids, bos)
    layers = list(range(model.n_layers))
    # a small batch budget: several batches of different prefix lengths
    engine = LooEngine(model, encode=encode, batch_tokens=12, work_dtype=torch.float64)
    trial = engine.trial(words, walk, graph.n, graph.extra["semantic_pairs"], graph.extra["graph_pairs"], layers,
                         loss=False)
    full = _brute_force(model, encode, words, walk, graph, layers)
    np.testing.assert_allclose(trial.full, full, rtol=1e-9)
    assert list(trial.positions) == list(range(len(words)))
    for row, p in enumerate(trial.positions):
        deleted = _brute_force(model, encode, words[:p] + words[p + 1:], np.delete(walk, p), graph, layers)
        assert np.array_equal(np.isnan(deleted), np.isnan(trial.loo[row]))
        expected = full - deleted
        np.testing.assert_allclose(trial.influence[row], expected, rtol=1e-4, atol=1e-9 * np.nanmax(np.abs(full)),
                                   err_msg=f"{family} position {p}")


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_float32_agrees_and_batch_size_does_not_matter(family):
    model, _ = tiny_model(family)
    graph, walk, words, word_ids = _setup(12, seed=5)
    encode = map_encoder(word_ids, 1)
    args = (words, walk, graph.n, graph.extra["semantic_pairs"], graph.extra["graph_pairs"], "all")
    small = LooEngine(model, encode=encode, batch_tokens=5).trial(*args, positions=[0, 3, 7, 11])
    large = LooEngine(model, encode=encode, batch_tokens=10_000).trial(*args, positions=[0, 3, 7, 11])
    scale = np.nanmax(np.abs(small.full), axis=0)
    np.testing.assert_allclose(small.loo, large.loo, rtol=1e-5, atol=1e-5 * scale.max())
    full = _brute_force(model, encode, words, walk, graph, list(range(model.n_layers)), dtype=torch.float32)
    np.testing.assert_allclose(small.full, full, rtol=1e-5)


def test_loss_of_the_full_context_matches_model_run():
    model, _ = tiny_model("llama")
    graph, walk, words, word_ids = _setup(10)
    encode = map_encoder(word_ids, 1)
    trial = LooEngine(model, encode=encode).trial(words, walk, graph.n, graph.extra["semantic_pairs"],
                                                  graph.extra["graph_pairs"], [0, -1], positions=[2])
    cap = model.run(encode(words).input_ids, loss=True)
    np.testing.assert_allclose(trial.token_loss, cap.loss[0].numpy(), rtol=1e-5)
    assert np.isnan(trial.word_loss).sum() == 0  # BOS: every word has a predicted first token
    assert trial.layers == [0, model.n_layers - 1]


def test_pair_metrics_by_hand_and_undefined_values():
    means = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 1.0]])
    counts = torch.tensor([1.0, 1.0, 1.0, 0.0])
    cross = torch.tensor([[0, 2], [1, 3]])       # (1, 3) skipped: node 3 absent
    within = torch.tensor([[0, 1], [1, 2]])
    out = pair_metrics(means, counts, cross, within).numpy()
    assert dict(zip(METRICS, out)) == pytest.approx({"cross": 10.0, "within": 5.0, "ratio": 2.0, "energy": 25.0})
    none = pair_metrics(means, counts, torch.tensor([[1, 3]]), within).numpy()
    assert np.isnan(none[0]) and np.isnan(none[2]) and none[1] == 5.0
    # huge residuals (bf16-scale) do not overflow float32
    big = pair_metrics(means * 1e15, counts, cross, within).numpy()
    assert np.isfinite(big).all()


def test_map_encoder_refuses_unknown_words():
    with pytest.raises(IclnbError, match="no token ids"):
        map_encoder({"a": [1]})(["a", "b"])


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])
def test_shorter_context_lengths_from_the_same_passes(family):
    """trial(context_lengths=...) gives, for each n, what a separate trial of the walk's first n words gives."""
    model, _ = tiny_model(family)
    model.hf.double()
    graph, walk, words, word_ids = _setup(14, seed=7)
    engine = LooEngine(model, encode=map_encoder(word_ids, None), batch_tokens=16, work_dtype=torch.float64)
    pairs = (graph.extra["semantic_pairs"], graph.extra["graph_pairs"])
    shared = engine.trial(words, walk, graph.n, *pairs, "all", context_lengths=[4, 9, 14])
    assert sorted(shared) == [4, 9, 14]
    for n, got in shared.items():
        alone = engine.trial(words[:n], walk[:n], graph.n, *pairs, "all")
        assert list(got.positions) == list(range(n))
        np.testing.assert_allclose(got.full, alone.full, rtol=1e-10)
        np.testing.assert_allclose(got.loo, alone.loo, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(got.token_loss, alone.token_loss, rtol=1e-9)
        np.testing.assert_allclose(got.word_loss, alone.word_loss, rtol=1e-9)
        assert got.n_tokens == alone.n_tokens
