"""Model.run against plain Hugging Face forwards, for every supported decoder family.

These tests fail if the layer index is off by one (block k output = HF hidden_states[k+1], the last one before the
final norm), if the loss is shifted by a position, or if padding changes any value of a real token.
"""

import numpy as np
import pytest
import torch

from iclnb.core.errors import IclnbError
from tests.tiny_models import FAMILIES, VOCAB, tiny_model


def _ids(length, seed=0, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=g)


def _reference(model, ids, mask=None):
    with torch.no_grad():
        return model.hf(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_match_hf_hidden_states(family):
    model, final_norm = tiny_model(family)
    ids = _ids(20)
    ref = _reference(model, ids)
    cap = model.run(ids, layers=["embed", *range(model.n_layers)])
    torch.testing.assert_close(cap.resid["embed"], ref.hidden_states[0].float())
    for k in range(model.n_layers - 1):
        torch.testing.assert_close(cap.resid[k], ref.hidden_states[k + 1].float())
        # layers are really different from their neighbours, so an off-by-one would be caught
        assert (cap.resid[k] - ref.hidden_states[k + 2]).abs().max() > 1e-3
    last = model.n_layers - 1
    with torch.no_grad():
        torch.testing.assert_close(final_norm(cap.resid[last]), ref.hidden_states[last + 1].float())
    assert (cap.resid[last] - ref.hidden_states[last + 1]).abs().max() > 1e-3  # pre-final-norm, not HF's last


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_and_token_probs_match_logits(family):
    model, _ = tiny_model(family)
    ids = _ids(30, seed=1)
    ref = _reference(model, ids)
    logits = ref.logits[0].float()
    expected = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:], reduction="none")
    watch = [5, 17, 60]
    cap = model.run(ids, loss=True, token_ids=watch)
    torch.testing.assert_close(cap.loss[0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cap.token_probs[0], logits.softmax(-1)[:, watch], rtol=1e-5, atol=1e-6)


def test_loss_is_chunked_without_changing_values(monkeypatch):
    model, _ = tiny_model("llama")
    ids = _ids(40, seed=2, batch=2)
    whole = model.run(ids, loss=True)
    import iclnb.models.hooks

    monkeypatch.setattr(iclnb.models.hooks, "LOGIT_CHUNK_ELEMENTS", 3 * 2 * VOCAB)  # 3 positions per chunk
    chunked = model.run(ids, loss=True)
    torch.testing.assert_close(chunked.loss, whole.loss)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3", "gpt_neox"])
def test_padding_gives_the_same_values_as_separate_runs(family):
    model, _ = tiny_model(family)
    a, b = _ids(25, seed=3)[0], _ids(14, seed=4)[0]
    from iclnb.prompts import pad_batch

    ids, mask = pad_batch([a, b])
    both = model.run(ids, layers=[0, 2, 3], loss=True, attention_mask=mask)
    for row, seq in enumerate([a, b]):
        alone = model.run(seq, layers=[0, 2, 3], loss=True)
        n = len(seq)
        for k in (0, 2, 3):
            torch.testing.assert_close(both.resid[k][row, :n], alone.resid[k][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(both.loss[row, : n - 1], alone.loss[0], rtol=1e-4, atol=1e-5)
        assert torch.isnan(both.loss[row, n - 1 :]).all()


def test_early_stop_skips_later_blocks():
    model, _ = tiny_model("llama")
    calls = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: calls.append(i)) for i, b in enumerate(model.blocks)]
    try:
        ids = _ids(12)
        cap = model.run(ids, layers=[1])
        assert calls == [0, 1]
        calls.clear()
        full = model.run(ids, layers=[1], loss=True)
        assert calls == [0, 1, 2, 3]
        torch.testing.assert_close(cap.resid[1], full.resid[1])
        calls.clear()
        model.run(ids, layers=["embed"])
        assert calls == []
    finally:
        for h in handles:
            h.remove()


def test_positions_keep_only_the_requested_tokens():
    model, _ = tiny_model("qwen2")
    ids = _ids(16)
    keep = [0, 3, 15]
    cap = model.run(ids, layers=[2], positions=keep)
    full = model.run(ids, layers=[2])
    torch.testing.assert_close(cap.resid[2], full.resid[2][:, keep])


def test_layer_resolution_and_errors():
    model, _ = tiny_model("gpt2")
    assert model.resolve_layers("all") == [0, 1, 2, 3]
    assert model.resolve_layers([-1, "embed", 0]) == ["embed", 0, 3]
    assert model.resolve_layers("0, -2") == [0, 2]
    assert model.resolve_layers("default") == [0, 1, 2, 3]
    cap = model.run(_ids(5), layers=[-1])
    assert list(cap.resid) == [3]
    for bad in (4, -5, "x", [0, 9]):
        with pytest.raises(IclnbError, match="out of range|not an integer"):
            model.resolve_layers(bad)


def test_capture_is_float32_for_half_precision_models():
    model, _ = tiny_model("llama")
    model.hf.to(torch.bfloat16)
    cap = model.run(_ids(10), layers=[0, 3], loss=True)
    assert cap.resid[0].dtype == torch.float32 and cap.loss.dtype == torch.float32
    assert torch.isfinite(cap.loss).all()


def test_too_long_input_is_refused():
    model, _ = tiny_model("gpt2")
    with pytest.raises(IclnbError, match="more than the 256 positions"):
        model.run(_ids(300), layers=[0])


def test_word_states_do_not_depend_on_batch_size():
    from iclnb.represent import represent_walks
    from tests.tiny_models import tiny_word_model

    model = tiny_word_model()
    rng = np.random.default_rng(0)
    vocab = ["apple", "bird", "car", "zyxwv", "egg", "house"]
    walks = [[vocab[i] for i in rng.integers(0, 6, n)] for n in (5, 12, 9, 3, 7)]
    one = represent_walks(model, walks, layers=[0, 3], loss=True, token_ids=[5, 6], batch_size=1)
    many = represent_walks(model, walks, layers=[0, 3], loss=True, token_ids=[5, 6], batch_size=3)
    for a, b in zip(one, many):
        assert a.words == b.words
        for k in (0, 3):
            np.testing.assert_allclose(a.reps[k], b.reps[k], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.word_loss, b.word_loss, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.token_probs, b.token_probs, rtol=1e-4, atol=1e-6)
    # word loss = sum of the losses of the word's own tokens; the first word (holding token 0) has none
    first = one[1]
    cap = model.run(first.encoding.input_ids, loss=True)
    token_loss = cap.loss[0].numpy()
    assert np.isnan(first.word_loss[0])
    for i, (s, e) in enumerate(first.encoding.spans[1:], start=1):
        np.testing.assert_allclose(first.word_loss[i], token_loss[s - 1 : e - 1].sum(), rtol=1e-5)


def test_captured_layers_answer_to_every_spelling_and_the_package_exports_the_entry_points():
    import iclnb
    from iclnb.models import load_model
    from iclnb.prompts import encode_walk

    model, _ = tiny_model("llama")
    ids = torch.arange(1, 9)
    cap = model.run(ids, layers=[0, 2, -1])
    last = model.n_layers - 1
    assert torch.equal(cap.resid[-1], cap.resid[last]) and torch.equal(cap.resid["2"], cap.resid[2])
    assert -1 in cap.resid and 1 not in cap.resid
    with pytest.raises(KeyError, match="not captured"):
        cap.resid[1]
    assert iclnb.load_model is load_model and iclnb.encode_walk is encode_walk


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_padding_is_not_mistaken_for_an_overflow(dtype):
    """Padded losses are NaN by design; a model whose activations fit its dtype runs a padded batch without error."""
    from iclnb.prompts import pad_batch

    model, _ = tiny_model("llama")
    model.hf.to(dtype)
    ids, mask = pad_batch([_ids(12, seed=5)[0], _ids(5, seed=6)[0]])
    cap = model.run(ids, layers=[0, 3], loss=True, token_ids=[5], attention_mask=mask)
    assert torch.isfinite(cap.loss[0]).all() and torch.isfinite(cap.loss[1, :4]).all()
    assert torch.isnan(cap.loss[1, 4:]).all() and torch.isnan(cap.token_probs[1, 5:]).all()


def test_the_finiteness_check_looks_only_at_real_tokens_and_advises_by_dtype():
    from types import SimpleNamespace

    from iclnb.models.hooks import check_finite

    values = torch.ones(2, 4, 3)
    values[1, 3] = float("nan")
    valid = torch.tensor([[True] * 4, [True, True, True, False]])
    half = SimpleNamespace(name="m", dtype=torch.float16)
    check_finite(half, values, "at layer 2", valid)  # the NaN sits at padding: fine
    with pytest.raises(IclnbError, match=r"^m's activations overflow float16 at layer 2; run with dtype float32 "
                                         r"\(or bfloat16 on a GPU\)$"):
        check_finite(half, values, "at layer 2")
    values[0, 0, 0] = float("inf")
    with pytest.raises(IclnbError, match=r"overflow float16 at layer 2"):
        check_finite(half, values, "at layer 2", valid)
    # bfloat16 has float32's range: only float32 is suggested; in float32 no dtype helps, so none is suggested
    with pytest.raises(IclnbError, match=r"overflow bfloat16 at layer 2; run with dtype float32$"):
        check_finite(SimpleNamespace(name="m", dtype=torch.bfloat16), values, "at layer 2")
    with pytest.raises(IclnbError, match=r"even in float32, so no other dtype helps") as info:
        check_finite(SimpleNamespace(name="m", dtype=torch.float32), values, "at layer 2")
    assert "run with dtype" not in str(info.value)
    # finite values whose sum leaves float32's range are fine; +inf and -inf together are not
    check_finite(half, torch.full((3, 4), 3e38), "at layer 2")
    with pytest.raises(IclnbError, match="overflow float16"):
        check_finite(half, torch.tensor([1.0, float("inf"), -float("inf")]), "at layer 2")


def test_a_float32_model_with_broken_weights_is_refused_without_dtype_advice():
    model, _ = tiny_model("gpt2")
    with torch.no_grad():
        model.blocks[2].mlp.c_proj.weight[0, 0] = float("inf")
    with pytest.raises(IclnbError, match=r"tiny-gpt2 gives inf/NaN at layer 2 .*even in float32"):
        model.run(_ids(8), layers=[1, 2])
    assert torch.isfinite(model.run(_ids(8), layers=[1]).resid[1]).all()
