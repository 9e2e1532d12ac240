"""The edit engine: every influence equals a brute-force recomputation (the full context and each edited context run
separately as plain passes, no cache), at every layer, for several decoder families (sliding-window caches included),
for deletion and insertion, for the pair distances and for a measure the engine has never seen."""

import numpy as np
import pytest
import torch

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.methods.loo import METRICS, Delete, Insert, LooEngine, PairDistances, map_encoder, metrics_of_vectors
from iclnb.represent import word_losses
from iclnb.core.seeding import stream
from tests.tiny_models import tiny_model

FAMILIES = ["llama", "gemma3", "gpt2", "mistral", "gemma2", "qwen2", "gpt_neox"]
#: A word outside the graph, of three tokens (see _setup).
INTRUDER = "intruder"
N_NODES = 24  # semantic_conflict: 6 clusters of 4 words


def _variant(words, edit, p):
    """The edited walk, and for each of its words the original word index (-1: the inserted word)."""
    original = np.arange(len(words))
    if isinstance(edit, Delete):
        return words[:p] + words[p + 1:], np.delete(original, p)
    return words[:p] + [edit.word] + words[p:], np.insert(original, p, -1)


def _plain_pass(model, ids, layers, dtype):
    """Block outputs (L, T, d) and token losses (T-1,) of one plain forward pass of ids alone (no cache)."""
    captured = {}
    handles = [model.blocks[k].register_forward_hook(
        lambda m, a, o, k=k: captured.__setitem__(k, (o[0] if isinstance(o, (tuple, list)) else o)[0].to(dtype)))
        for k in layers]
    try:
        with torch.inference_mode():
            logits = model.hf(ids[None]).logits[0].double()  # soft-capped by the HF model itself where it caps
    finally:
        for h in handles:
            h.remove()
    token_loss = torch.nn.functional.cross_entropy(logits[:-1], ids[1:], reduction="none")
    return torch.stack([captured[k] for k in layers]), token_loss.numpy()


def _brute_force(model, encode, words, nodes, measure, layers, edit=None, p=None, dtype=torch.float64):
    """(metrics (L, M), word losses (n,) of the original words, the inserted word's loss) of the full context
    (edit None) or of its variant at p, from a plain pass of that context alone. Counted words: the original ones,
    except the word holding token 0 of this context and the full context's sink word."""
    full_sink = encode(words).spans[:, 0] == 0
    words, original = (words, np.arange(len(words))) if edit is None else _variant(words, edit, p)
    enc = encode(words)
    hidden, token_loss = _plain_pass(model, enc.input_ids, layers, dtype)
    kept = original >= 0
    vectors = hidden[:, torch.as_tensor(enc.spans[kept, 1] - 1)].numpy()
    keep = (enc.spans[kept, 0] != 0) & ~full_sink[original[kept]]
    metrics = metrics_of_vectors(vectors, np.asarray(nodes)[original[kept]], N_NODES, measure, keep=keep, dtype=dtype)
    losses = word_losses(token_loss, enc.spans).astype(np.float64)
    return metrics, losses[kept], (losses[~kept][0] if (~kept).any() else None)


def _setup(n_words, seed=3):
    graph = graphs.semantic_conflict("semantic", rng=stream(seed, "graph"))
    walk = graphs.random_walk(graph, n_words, stream(seed, "walks"))
    rng = np.random.default_rng(seed)
    # a stand-in tokenizer: each word gets 1 or 2 fixed token ids (multi-token spans exercised), the intruder 3
    word_ids = {w: list(rng.choice(np.arange(3, 97), size=1 + (i % 2), replace=False)) for i, w in enumerate(graph.words)}
    word_ids[INTRUDER] = [5, 6, 7]
    measure = PairDistances(graph.extra["semantic_pairs"], graph.extra["graph_pairs"])
    return graph, walk, graphs.walk_words(graph, walk), word_ids, measure


def _assert_influences(trial, brute, full, words, walk, edit, family):
    for row, p in enumerate(trial.positions):
        edited = brute(edit, p)[0]
        assert np.array_equal(np.isnan(edited), np.isnan(trial.edited[row])), f"{family} {edit} position {p}"
        np.testing.assert_allclose(trial.influence[row], full - edited, rtol=1e-4,
                                   atol=1e-9 * np.nanmax(np.abs(full)), err_msg=f"{family} {edit} position {p}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("bos", [None, 1])
def test_every_influence_matches_brute_force(family, bos):
    """Deletion (the fast default: no variant loss) and insertion of a 3-token word with its losses, every position
    (insertion: 0..N, N appends), every layer."""
    model, _ = tiny_model(family)
    model.hf.double()
    graph, walk, words, word_ids, measure = _setup(14)  # > the tiny gemma sliding window of 8 tokens
    encode = map_encoder(word_ids, bos)
    layers = list(range(model.n_layers))
    # a small batch budget: several batches of different prefix lengths
    engine = LooEngine(model, encode=encode, batch_tokens=12, work_dtype=torch.float64)

    def brute(edit=None, p=None):
        return _brute_force(model, encode, words, walk, measure, layers, edit, p)

    full, full_losses, _ = brute()
    deleted = engine.trial(words, walk, graph.n, measure, layers, loss=False)
    np.testing.assert_allclose(deleted.full, full, rtol=1e-9)
    assert list(deleted.positions) == list(range(len(words))) and deleted.metrics == METRICS
    assert deleted.inserted_loss is None and deleted.following_loss is None
    _assert_influences(deleted, brute, full, words, walk, Delete(), family)

    inserted = engine.trial(words, walk, graph.n, measure, layers, edit=Insert(INTRUDER), loss=False,
                            variant_loss=True)
    assert list(inserted.positions) == list(range(len(words) + 1)) and inserted.edit == Insert(INTRUDER)
    np.testing.assert_allclose(inserted.full, full, rtol=1e-9)
    _assert_influences(inserted, brute, full, words, walk, Insert(INTRUDER), family)
    for row, p in enumerate(inserted.positions):
        _, losses, own = brute(Insert(INTRUDER), p)
        # losses are float32 on both sides (chunked float32 logits in the engine, float32 word sums here)
        np.testing.assert_allclose(inserted.inserted_loss[row], own, rtol=1e-6, err_msg=f"{family} position {p}")
        following = losses[p:]
        expected = np.nanmean(following) if np.isfinite(following).any() else np.nan
        np.testing.assert_allclose(inserted.following_loss[row], expected, rtol=1e-6, err_msg=f"{family} position {p}")
    # appending after the last word changes no counted word: zero influence wherever the metric is defined
    assert np.nanmax(np.abs(inserted.influence[-1])) == 0.0
    # without BOS the word inserted before word 0 holds token 0: it has no loss
    assert np.isnan(inserted.inserted_loss[0]) == (bos is None)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt_neox"])
def test_loss_of_deletion_variants_matches_plain_passes(family):
    """following_loss of a deletion: mean word loss of the words after p in the variant; a word then holding token
    0 (word 1 when word 0 is deleted without BOS) has none and is left out."""
    model, _ = tiny_model(family)
    model.hf.double()
    graph, walk, words, word_ids, measure = _setup(9, seed=4)
    for bos in (None, 1):
        encode = map_encoder(word_ids, bos)
        trial = LooEngine(model, encode=encode, batch_tokens=10, work_dtype=torch.float64).trial(
            words, walk, graph.n, measure, [1], variant_loss=True)
        assert trial.inserted_loss is None
        for row, p in enumerate(trial.positions):
            _, losses, _ = _brute_force(model, encode, words, walk, measure, [1], Delete(), p)
            following = losses[p:][np.isfinite(losses[p:])]  # losses of the variant's words: p is gone
            expected = following.mean() if following.size else np.nan
            np.testing.assert_allclose(trial.following_loss[row], expected, rtol=1e-6, err_msg=f"{bos} {p}")


class MeanSquaredNorm:
    """A measure the engine has never seen: mean over present nodes of ||μ_n||²."""

    names = ("mean_sq_norm",)

    def __call__(self, sums, counts):
        present = counts > 0
        means = sums / counts.clamp(min=1).to(sums.dtype)[..., None]
        norms = (means * means).sum(-1)
        return (torch.where(present, norms, 0).sum(-1) / present.sum(-1))[..., None]


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])
def test_a_new_measure_needs_no_engine_change(family):
    model, _ = tiny_model(family)
    model.hf.double()
    graph, walk, words, word_ids, _ = _setup(11, seed=6)
    encode = map_encoder(word_ids, None)
    layers = [0, 2, 3]
    engine = LooEngine(model, encode=encode, batch_tokens=9, work_dtype=torch.float64)
    for edit in (Delete(), Insert(words[4])):
        trial = engine.trial(words, walk, graph.n, MeanSquaredNorm(), layers, edit=edit)
        assert trial.metrics == ("mean_sq_norm",) and trial.edited.shape == (len(trial.positions), 3, 1)
        full = _brute_force(model, encode, words, walk, MeanSquaredNorm(), layers)[0]
        np.testing.assert_allclose(trial.full, full, rtol=1e-9)
        for row, p in enumerate(trial.positions):
            edited = _brute_force(model, encode, words, walk, MeanSquaredNorm(), layers, edit, p)[0]
            np.testing.assert_allclose(trial.edited[row], edited, rtol=1e-9, err_msg=f"{edit} position {p}")


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_float32_agrees_and_batch_size_does_not_matter(family):
    model, _ = tiny_model(family)
    graph, walk, words, word_ids, measure = _setup(12, seed=5)
    encode = map_encoder(word_ids, 1)
    args = (words, walk, graph.n, measure, "all")
    for edit in (Delete(), Insert(INTRUDER)):
        small = LooEngine(model, encode=encode, batch_tokens=5).trial(*args, positions=[0, 3, 7, 11], edit=edit)
        large = LooEngine(model, encode=encode, batch_tokens=10_000).trial(*args, positions=[0, 3, 7, 11], edit=edit)
        scale = np.nanmax(np.abs(small.full), axis=0)
        np.testing.assert_allclose(small.edited, large.edited, rtol=1e-5, atol=1e-5 * scale.max())
    full = _brute_force(model, encode, words, walk, measure, list(range(model.n_layers)), dtype=torch.float32)[0]
    np.testing.assert_allclose(small.full, full, rtol=1e-5)


def test_loss_of_the_full_context_matches_model_run():
    model, _ = tiny_model("llama")
    graph, walk, words, word_ids, measure = _setup(10)
    encode = map_encoder(word_ids, 1)
    trial = LooEngine(model, encode=encode).trial(words, walk, graph.n, measure, [0, -1], positions=[2])
    cap = model.run(encode(words).input_ids, loss=True)
    np.testing.assert_allclose(trial.token_loss, cap.loss[0].numpy(), rtol=1e-5)
    assert np.isnan(trial.word_loss).sum() == 0  # BOS: every word has a predicted first token
    assert trial.layers == [0, model.n_layers - 1]


def test_pair_distances_by_hand_and_undefined_values():
    means = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0], [0.0, 1.0]])
    counts = torch.tensor([1.0, 1.0, 1.0, 0.0])
    cross = [[0, 2], [1, 3]]       # (1, 3) skipped: node 3 absent
    within = [[0, 1], [1, 2]]
    out = PairDistances(cross, within)(means, counts).numpy()
    assert METRICS == PairDistances.names == ("cross", "within", "ratio", "within_sq")
    assert dict(zip(METRICS, out)) == pytest.approx({"cross": 10.0, "within": 5.0, "ratio": 2.0, "within_sq": 25.0})
    none = PairDistances([[1, 3]], within)(means, counts).numpy()
    assert np.isnan(none[0]) and np.isnan(none[2]) and none[1] == 5.0
    assert np.isnan(PairDistances(cross, np.zeros((0, 2)))(means, counts).numpy()[1:]).all()
    # huge residuals (bf16-scale) do not overflow float32
    big = PairDistances(cross, within)(means * 1e15, counts).numpy()
    assert np.isfinite(big).all()


def test_map_encoder_refuses_unknown_words():
    with pytest.raises(IclnbError, match="no token ids"):
        map_encoder({"a": [1]})(["a", "b"])


def test_bad_edits_positions_and_measures_are_refused():
    model, _ = tiny_model("llama")
    graph, walk, words, word_ids, measure = _setup(6)
    engine = LooEngine(model, encode=map_encoder(word_ids, 1))
    args = (words, walk, graph.n)
    with pytest.raises(IclnbError, match=r"\[0, 6\)"):
        engine.trial(*args, measure, [0], positions=[6])
    with pytest.raises(IclnbError, match=r"\[0, 7\)"):
        engine.trial(*args, measure, [0], positions=[7], edit=Insert(INTRUDER))
    with pytest.raises(IclnbError, match="no token ids"):
        engine.trial(*args, measure, [0], edit=Insert("stranger"))
    with pytest.raises(IclnbError, match="edit must be"):
        engine.trial(*args, measure, [0], edit="delete")
    with pytest.raises(IclnbError, match="measure must"):
        engine.trial(*args, lambda sums, counts: sums, [0])

    class TwoNamesOneColumn(MeanSquaredNorm):
        names = ("a", "b")

    with pytest.raises(IclnbError, match="expected"):
        engine.trial(*args, TwoNamesOneColumn(), [0])


@pytest.mark.parametrize("family", ["gemma3", "gpt2"])
def test_shorter_context_lengths_from_the_same_passes(family):
    """trial(context_lengths=...) gives, for each n, what a separate trial of the walk's first n words gives (an
    insertion at n appends to the n-word context)."""
    model, _ = tiny_model(family)
    model.hf.double()
    graph, walk, words, word_ids, measure = _setup(14, seed=7)
    engine = LooEngine(model, encode=map_encoder(word_ids, None), batch_tokens=16, work_dtype=torch.float64)
    for edit, extra in ((Delete(), 0), (Insert(INTRUDER), 1)):
        shared = engine.trial(words, walk, graph.n, measure, "all", edit=edit, context_lengths=[4, 9, 14],
                              variant_loss=True)
        assert sorted(shared) == [4, 9, 14]
        for n, got in shared.items():
            alone = engine.trial(words[:n], walk[:n], graph.n, measure, "all", edit=edit, variant_loss=True)
            assert list(got.positions) == list(range(n + extra))
            np.testing.assert_allclose(got.full, alone.full, rtol=1e-10)
            np.testing.assert_allclose(got.edited, alone.edited, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(got.token_loss, alone.token_loss, rtol=1e-9)
            np.testing.assert_allclose(got.word_loss, alone.word_loss, rtol=1e-9)
            np.testing.assert_allclose(got.following_loss, alone.following_loss, rtol=1e-6)  # float32 losses
            if extra:
                np.testing.assert_allclose(got.inserted_loss, alone.inserted_loss, rtol=1e-6)
            assert got.n_tokens == alone.n_tokens
