"""Localised SGLD and the Bayesian influence function (iclnb.methods.bif) against known answers; the sampler on a
tiny language model's last blocks."""

import numpy as np
import pytest
import torch

from iclnb.core.errors import IclnbError
from iclnb.methods.bif import (PromptsLoss, SGLDSettings, TailSampler, bif, chain_generator, llc_estimate, moving,
                               run_chain, stationary_variance)


class Quadratic(torch.nn.Module):
    """L(w) = ½ Σ_i a_i (w_i − m_i)²; a second parameter that never moves."""

    def __init__(self, a, m, w0):
        super().__init__()
        self.a = torch.tensor(a, dtype=torch.float64)
        self.m = torch.tensor(m, dtype=torch.float64)
        self.w = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
        self.frozen = torch.nn.Parameter(torch.tensor([3.0, -1.0], dtype=torch.float64))

    def loss(self):
        return 0.5 * (self.a * (self.w - self.m) ** 2).sum() + 0.0 * self.frozen.sum()


def _sample(model, settings, seed=0, observe=None):
    with moving(model, ["w"]) as (params, anchors):
        def evaluate(step, record):
            loss = model.loss()
            obs = None
            if record:
                obs = model.w.detach().numpy().copy() if observe is None else observe()
            return loss, obs
        traces = [run_chain(params, anchors, evaluate, settings, chain_generator(np.random.default_rng([seed, c])))
                  for c in range(settings.n_chains)]
    return traces


def test_gaussian_target_mean_and_exact_stationary_covariance():
    # target ∝ exp(−nβ L − γ/2 ||w − w*||²): precision P = nβ a + γ, mean (nβ a m + γ w*) / P
    a, m, w0 = [1.0, 4.0, 0.25], [1.0, -2.0, 0.5], [0.0, 0.0, 0.0]
    n_beta, gamma, eps = 10.0, 5.0, 0.01
    model = Quadratic(a, m, w0)
    settings = SGLDSettings(step_size=eps, n_beta=n_beta, localization=gamma, n_chains=4, n_draws=6000,
                            n_burnin=300, thinning=1)
    traces = _sample(model, settings)
    draws = np.concatenate([t.observables for t in traces])
    precision = n_beta * np.array(a) + gamma
    mean = (n_beta * np.array(a) * np.array(m) + gamma * np.array(w0)) / precision
    var = stationary_variance(precision, eps)
    # the recursion is linear, so its stationary mean is exact and its variance is stationary_variance
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * np.sqrt(var / 300))
    np.testing.assert_allclose(draws.var(0), var, rtol=0.12)
    # independent coordinates: off-diagonal covariances near 0; BIF = −Cov
    b = bif(draws)
    np.testing.assert_allclose(-np.diag(b), draws.var(0))
    assert np.abs(b - np.diag(np.diag(b))).max() < 0.15 * var.max()
    # the continuous-time answer is 1/P; the discrete one is larger by 1/(1 − εP/4)
    assert np.all(var > 1 / precision)


def test_weights_restored_exactly_and_flags_kept():
    model = Quadratic([1.0, 2.0], [0.3, -0.1], [0.123456789, -9.87654321])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.frozen.requires_grad_(False)
    settings = SGLDSettings(step_size=0.05, n_beta=3.0, localization=1.0, n_chains=2, n_draws=5, n_burnin=3)
    traces = _sample(model, settings)
    assert not np.allclose(traces[0].observables[-1], before["w"].numpy())  # the chain did move
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
        assert p.grad is None
    assert model.w.requires_grad and not model.frozen.requires_grad
    # the frozen parameter never moved during sampling either (no gradient flag)
    assert traces[0].distance[0] == 0.0


def test_weights_restored_after_a_failing_chain():
    model = Quadratic([1.0], [0.0], [0.5])
    before = model.w.detach().clone()
    settings = SGLDSettings(step_size=0.1, n_beta=1.0, localization=0.0, n_chains=1, n_draws=3)
    with pytest.raises(IclnbError, match="diverged"):
        with moving(model, ["w"]) as (params, anchors):
            def evaluate(step, record):
                return model.loss() * (float("nan") if step == 2 else 1.0), np.zeros(1)
            run_chain(params, anchors, evaluate, settings, chain_generator(np.random.default_rng(0)))
    assert torch.equal(model.w.detach(), before)


def test_same_seed_same_chain_and_draw_schedule():
    model = Quadratic([1.0, 1.0], [0.0, 0.0], [1.0, 1.0])
    settings = SGLDSettings(step_size=0.1, n_beta=2.0, localization=1.0, n_chains=1, n_draws=4, n_burnin=2, thinning=3)
    assert settings.draw_steps().tolist() == [2, 5, 8, 11]
    assert settings.n_steps == 12
    a = _sample(model, settings, seed=5)[0]
    b = _sample(model, settings, seed=5)[0]
    c = _sample(model, settings, seed=6)[0]
    np.testing.assert_array_equal(a.observables, b.observables)
    assert not np.array_equal(a.observables, c.observables)
    assert a.loss.shape == (12,) and a.observables.shape == (4, 2)


def test_bif_modes_against_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4))
    x[:, 1] += 0.8 * x[:, 0]
    y = rng.normal(size=(50, 2))
    np.testing.assert_allclose(bif(x, y), -(np.cov(x.T, y.T, ddof=0)[:4, 4:]))
    corr = bif(x, mode="correlation")
    np.testing.assert_allclose(corr, np.corrcoef(x.T), atol=1e-12)
    np.testing.assert_allclose(np.diag(corr), 1.0)
    np.testing.assert_allclose(corr, corr.T)
    # a constant column has no correlation
    z = x.copy()
    z[:, 2] = 1.0
    assert np.isnan(bif(z, mode="correlation")[2]).all()
    with pytest.raises(IclnbError, match="mode"):
        bif(x, mode="cov")


def test_llc_estimate_and_settings_refused():
    assert llc_estimate([1.2, 1.4], 1.0, 10.0) == pytest.approx(3.0)
    with pytest.raises(IclnbError, match="step size"):
        SGLDSettings(step_size=0.0, n_beta=1.0, localization=0.0, n_chains=1, n_draws=1)
    with pytest.raises(IclnbError, match="n_draws"):
        SGLDSettings(step_size=0.1, n_beta=1.0, localization=0.0, n_chains=1, n_draws=0)
    with pytest.raises(IclnbError, match="no parameters"):
        with moving(Quadratic([1.0], [0.0], [0.0]), []):
            pass


def test_bif_column_without_values_is_nan_and_leaves_the_others():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 3))
    x[:, 0] = np.nan  # e.g. a word holding token 0: it has no loss
    out = bif(x, mode="correlation")
    assert np.isnan(out[0]).all() and np.isnan(out[:, 0]).all()
    np.testing.assert_allclose(out[1:, 1:], np.corrcoef(x[:, 1:].T), atol=1e-12)


# ---------------------------------------------------------------------------------------------------- language models


def _tiny_lm():
    from tests.tiny_models import tiny_word_model

    return tiny_word_model()


PROMPTS = [["apple", "bird", "car", "zyxwv", "egg"], ["house", "apple", "bird"]]


def test_prompts_loss_at_the_loaded_weights_is_the_forward_pass_of_represent_walks():
    from iclnb.prompts import encode_walk
    from iclnb.represent import represent_walks

    model = _tiny_lm()
    layer = model.n_layers - 1
    loss = PromptsLoss(model, [encode_walk(model.tokenizer, w) for w in PROMPTS], layer, lambda states: states)
    value, states = loss(0, True)
    reference = represent_walks(model, PROMPTS, [layer], loss=True)
    for got, ref in zip(states, reference):
        np.testing.assert_allclose(got.word_loss, ref.word_loss, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.reps[layer], ref.reps[layer], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got.sink, ref.sink)
    # the sampling loss is the mean next-token loss over the real tokens of both prompts (with gradients)
    assert value.requires_grad
    total = sum(np.nansum(r.word_loss, dtype=np.float64) for r in reference)
    n_predicted = sum(len(e) - 1 for e in loss.encodings)
    assert value.item() == pytest.approx(total / n_predicted, rel=1e-5)
    assert loss(1, False)[1] is None


def test_tail_sampler_moves_the_tail_computes_the_trunk_once_and_restores_everything():
    from iclnb.models import MovingTail
    from iclnb.prompts import encode_walk

    model = _tiny_lm()
    model.hf.train()
    before = {n: p.detach().clone() for n, p in model.hf.named_parameters()}
    blocks = list(model.blocks)
    tail = MovingTail(model, 2)
    layer = model.n_layers - 1
    loss = PromptsLoss(model, [encode_walk(model.tokenizer, w) for w in PROMPTS], layer,
                       lambda states: np.concatenate([s.word_loss for s in states]))
    settings = SGLDSettings(step_size=1e-3, n_beta=10.0, localization=1.0, n_chains=2, n_draws=3, n_burnin=1)
    trunk_passes = []
    trunk_output = tail.trunk_output
    tail.trunk_output = lambda *args: trunk_passes.append(1) or trunk_output(*args)
    with TailSampler(model, tail, loss, settings):
        pass  # no chain asked for: the model is not touched
    assert not trunk_passes and model.hf.training
    with TailSampler(model, tail, loss, settings) as sampler:
        gen = lambda seed: chain_generator(np.random.default_rng(seed))  # noqa: E731
        a, b, c = sampler.chain(gen(0)), sampler.chain(gen(0)), sampler.chain(gen(1))
        assert not model.hf.training
    assert len(trunk_passes) == 1
    np.testing.assert_array_equal(a.observables, b.observables)
    assert not np.array_equal(a.observables, c.observables)
    assert a.distance[0] == 0.0 and a.distance[-1] > 0
    for n, p in model.hf.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
        assert p.grad is None and p.requires_grad
    assert list(model.blocks) == blocks and model.hf.training
