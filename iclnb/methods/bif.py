"""Bayesian influence functions (Lee et al. 2025) by localised SGLD around a model's weights (docs/methods.md).

The weights vary, the inputs stay fixed. Draws w come from the localised, tempered posterior around the loaded
weights w*::

    p(w) ∝ exp(−nβ L(w) − (γ/2) ||w − w*||²)

with L the mean per-token loss of a fixed sampling set. Stochastic-gradient Langevin dynamics (Welling & Teh 2011,
with Lau et al.'s localisation) moves only the chosen parameters::

    w ← w − (ε/2) (nβ ∇L(w) + γ (w − w*)) + N(0, ε I)

and, every ``thinning`` steps after ``n_burnin`` steps, records observables (per-token losses, a structural metric)
at the current weights. The Bayesian influence of z_i on an observable φ is

    BIF(z_i, φ) = −Cov_w(ℓ_i(w), φ(w))        ("covariance" mode; φ = ℓ_j gives token x token)

and its normalised form is the Pearson correlation of the two traces over the draws ("correlation" mode, unit
diagonal for token x token; the normalisation of the devinterp library). Draws of all chains are pooled ("stacked")
unless a function says otherwise. The local learning coefficient estimate is λ̂ = nβ (E_w[L(w)] − L(w*)).

The sampler is model-agnostic: :func:`run_chain` takes the parameters to move and a closure that evaluates the
sampling loss (with gradients) and the observables; the loaded weights are restored exactly when a chain ends,
also when it fails. Each chain's noise comes from its own ``torch.Generator``, so a chain is reproducible on its own
(resume per chain). For a language model whose last blocks move, :class:`PromptsLoss` is that closure on a fixed
batch of prompts and :class:`TailSampler` runs the chains over a trunk computed once
(:class:`~iclnb.models.trunk.MovingTail`).
"""

from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from iclnb.core.errors import IclnbError
from iclnb.models.hooks import layer_hooks
from iclnb.models.trunk import MovingTail
from iclnb.prompts import pad_batch, pool_words
from iclnb.represent import WordStates, word_losses

__all__ = ["SGLDSettings", "ChainTrace", "moving", "sgld_step", "run_chain", "bif", "llc_estimate",
           "stationary_variance", "chain_generator", "PromptsLoss", "TailSampler"]


@dataclass(frozen=True)
class SGLDSettings:
    """Localised SGLD: step size ε, inverse temperature nβ, localisation γ; per chain ``n_burnin`` steps, then
    ``n_draws`` draws, one every ``thinning`` steps (the first draw is taken right after burn-in)."""

    step_size: float
    n_beta: float
    localization: float
    n_chains: int
    n_draws: int
    n_burnin: int = 0
    thinning: int = 1

    def __post_init__(self):
        if not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise IclnbError(f"the SGLD step size must be a positive number, got {self.step_size}")
        if not (self.n_beta > 0 and math.isfinite(self.n_beta)):
            raise IclnbError(f"n_beta must be a positive number, got {self.n_beta}")
        if not (self.localization >= 0 and math.isfinite(self.localization)):
            raise IclnbError(f"the localisation must be a non-negative number, got {self.localization}")
        for name in ("n_chains", "n_draws", "thinning"):
            if int(getattr(self, name)) < 1:
                raise IclnbError(f"{name} must be at least 1, got {getattr(self, name)}")
        if int(self.n_burnin) < 0:
            raise IclnbError(f"n_burnin must be at least 0, got {self.n_burnin}")

    @property
    def n_steps(self) -> int:
        return int(self.n_burnin) + (int(self.n_draws) - 1) * int(self.thinning) + 1

    def draw_steps(self) -> np.ndarray:
        """The steps (0-based; the weights after that many updates) at which draws are recorded."""
        return int(self.n_burnin) + np.arange(int(self.n_draws)) * int(self.thinning)

    def as_config(self) -> dict:
        return {**asdict(self), "n_steps_per_chain": self.n_steps,
                "update": "w <- w - (step_size/2) * (n_beta * grad L(w) + localization * (w - w*)) + N(0, step_size)"}


@dataclass
class ChainTrace:
    """One chain: ``loss`` (n_steps,) the sampling loss at every step (the weights before that step's update);
    ``observables`` (n_draws, n_obs) recorded at the draw steps; ``distance`` (n_steps,) ||w − w*|| over the moved
    parameters at every step."""

    loss: np.ndarray
    observables: np.ndarray
    distance: np.ndarray


def chain_generator(rng: np.random.Generator, device="cpu") -> torch.Generator:
    """A torch generator seeded from a numpy stream (one per chain)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(rng.integers(0, 2**62)))
    return gen


@contextmanager
def moving(model: torch.nn.Module, names):
    """Let only the parameters ``names`` of ``model`` take gradients; yields (params, anchors) where anchors are
    exact copies of the loaded values. On exit every moved parameter is restored bit for bit, every
    ``requires_grad`` flag is put back and the gradients are cleared."""
    named = dict(model.named_parameters())
    missing = [n for n in names if n not in named]
    if missing:
        raise IclnbError(f"the model has no parameters {missing[:3]}")
    if not names:
        raise IclnbError("no parameters to move; name at least one")
    flags = {n: p.requires_grad for n, p in named.items()}
    params = [named[n] for n in names]
    anchors = [p.detach().clone() for p in params]
    try:
        for n, p in named.items():
            p.requires_grad_(n in names)
        yield params, anchors
    finally:
        with torch.no_grad():
            for p, a in zip(params, anchors):
                p.copy_(a)
                p.grad = None
        for n, p in named.items():
            p.requires_grad_(flags[n])


def sgld_step(params, anchors, settings: SGLDSettings, generator: torch.Generator) -> None:
    """One localised SGLD update of ``params`` in place from their ``.grad`` (a missing gradient counts as 0)."""
    eps = float(settings.step_size)
    noise_scale = math.sqrt(eps)
    with torch.no_grad():
        for p, anchor in zip(params, anchors):
            drift = settings.localization * (p - anchor)
            if p.grad is not None:
                drift = drift + settings.n_beta * p.grad
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float32,
                                device=generator.device).to(device=p.device, dtype=p.dtype)
            p.add_(-0.5 * eps * drift + noise_scale * noise)


def run_chain(params, anchors, evaluate: Callable, settings: SGLDSettings, generator: torch.Generator,
              progress=None) -> ChainTrace:
    """Run one chain from the anchors.

    ``evaluate(step, record)`` returns ``(loss, observables)``: the sampling loss as a scalar tensor that carries
    gradients to ``params``, and, when ``record`` is True, a 1-D array of observables at the current weights (else
    None). The weights start at (and are reset to) the anchors; the caller restores them at the end
    (:func:`moving`). A non-finite loss stops the chain with an IclnbError that says to lower the step size.
    """
    with torch.no_grad():
        for p, a in zip(params, anchors):
            p.copy_(a)
    draw_steps = set(settings.draw_steps().tolist())
    losses, distances, observed = [], [], []
    steps = range(settings.n_steps)
    for step in (progress(steps) if progress else steps):
        for p in params:
            p.grad = None
        record = step in draw_steps
        loss, obs = evaluate(step, record)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise IclnbError(f"the SGLD chain diverged at step {step} (loss {value}); use a smaller step size or a "
                             f"larger localization")
        losses.append(value)
        with torch.no_grad():
            distances.append(math.sqrt(sum(float(((p - a).double() ** 2).sum()) for p, a in zip(params, anchors))))
        if record:
            observed.append(np.asarray(obs, dtype=np.float64).ravel())
        if step < settings.n_steps - 1:
            loss.backward()
            sgld_step(params, anchors, settings, generator)
    return ChainTrace(np.array(losses), np.stack(observed), np.array(distances))


# ---------------------------------------------------------------------------------------------------- language models


class PromptsLoss:
    """The ``evaluate(step, record)`` of :func:`run_chain` for a language model on a fixed batch of prompts.

    The sampling loss is the mean next-token loss over the real tokens of ``encodings`` (:func:`iclnb.prompts.
    encode_walk`'s, run as one right-padded batch), with gradients to whatever parameters move. At a draw, each
    prompt's word-level view at the current weights, a :class:`~iclnb.represent.WordStates` with its word losses and
    the pooled (last-token) residual stream at ``layer`` (a decoder block), goes to ``observe(states)``, which returns
    the 1-D observables recorded. ``input_ids`` and ``attention_mask`` are the batch (on the model's device).
    """

    def __init__(self, model, encodings, layer: int, observe: Callable[[list], np.ndarray]):
        self.model, self.encodings, self.layer, self.observe = model, list(encodings), layer, observe
        pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
        ids, mask = pad_batch([e.input_ids for e in self.encodings], pad_id=pad_id)
        self.input_ids, self.attention_mask = ids.to(model.device), mask.to(model.device)
        self._valid = (self.attention_mask[:, 1:] > 0) & (self.attention_mask[:, :-1] > 0)

    def __call__(self, step: int, record: bool):
        captured = {}
        with layer_hooks(self.model.blocks, [self.layer], lambda k, h: captured.__setitem__(k, h), stop_early=False):
            logits = self.model.hf(input_ids=self.input_ids, attention_mask=self.attention_mask,
                                   use_cache=False).logits.float()
        token_loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                       self.input_ids[:, 1:].reshape(-1),
                                                       reduction="none").view(self._valid.shape)
        loss = token_loss[self._valid].mean()
        if not record:
            return loss, None
        return loss, self.observe(self.word_states(token_loss, captured[self.layer]))

    def word_states(self, token_loss: torch.Tensor, hidden: torch.Tensor) -> list[WordStates]:
        """Each prompt's word losses and pooled residuals from a pass's token losses (batch, tokens − 1) and hidden
        states at :attr:`layer` (batch, tokens, d)."""
        token_loss = token_loss.detach().cpu().numpy()
        hidden = hidden.detach().float()
        states = []
        for row, enc in enumerate(self.encodings):
            n = len(enc)
            reps = {self.layer: pool_words(hidden[row, :n], enc.spans, "last").cpu().numpy()}
            states.append(WordStates(list(enc.words), enc, reps, word_losses(token_loss[row, : n - 1], enc.spans),
                                     None, enc.sink_words()))
        return states


class TailSampler:
    """Localised SGLD chains on the moving tail of a language model (:class:`~iclnb.models.trunk.MovingTail`) with
    the sampling loss of one fixed batch of prompts (:class:`PromptsLoss`).

    Use it as a context manager and call :meth:`chain` once per chain. The first chain puts the model in eval mode,
    lets only the tail's parameters take gradients (:func:`moving`) and computes the trunk's output for the batch once
    (:meth:`~iclnb.models.trunk.MovingTail.frozen_trunk`); the later chains reuse all of it, and a run whose chains
    are all done touches nothing. On exit the loaded weights (bit for bit), the gradient flags, the trunk's blocks
    and the train/eval mode are back as they were, also after an error.
    """

    def __init__(self, model, tail: MovingTail, loss: PromptsLoss, settings: SGLDSettings):
        self.model, self.tail, self.loss, self.settings = model, tail, loss, settings
        self._stack = ExitStack()
        self._moving = None

    def __enter__(self) -> "TailSampler":
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
        self._moving = None

    @contextmanager
    def _session(self):
        hf = self.model.hf
        was_training = hf.training
        hf.eval()
        try:
            with moving(hf, self.tail.parameter_names) as (params, anchors), \
                    self.tail.frozen_trunk(self.loss.input_ids, self.loss.attention_mask):
                yield params, anchors
        finally:
            hf.train(was_training)

    def chain(self, generator: torch.Generator, progress=None) -> ChainTrace:
        """One chain from the loaded weights with the noise of ``generator`` (:func:`run_chain`)."""
        if self._moving is None:
            self._moving = self._stack.enter_context(self._session())
        params, anchors = self._moving
        return run_chain(params, anchors, self.loss, self.settings, generator, progress=progress)


# ---------------------------------------------------------------------------------------------------- estimates


def bif(a, b=None, mode: str = "covariance") -> np.ndarray:
    """Bayesian influence between the columns of two observable traces over the same draws.

    a: (draws, n_a), b: (draws, n_b) (default: a). ``mode="covariance"``: −Cov(a_i, b_j) (population covariance
    over the draws), Lee et al.'s BIF. ``mode="correlation"``: the Pearson correlation Corr(a_i, b_j) (symmetric with
    a unit diagonal when b is a; NaN for a constant column). Returns (n_a, n_b). A column without any finite value
    gives NaN; otherwise a draw with a NaN entry is dropped from both traces.
    """
    x = np.asarray(a, dtype=np.float64)
    y = x if b is None else np.asarray(b, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if x.shape[0] != y.shape[0]:
        raise IclnbError(f"the two traces need the same draws, got {x.shape[0]} and {y.shape[0]}")
    if mode not in ("covariance", "correlation"):
        raise IclnbError(f"mode must be 'covariance' or 'correlation', got {mode!r}")
    # a column with no finite value (a word without a loss) gives NaN; other NaN entries drop their draw
    col_x, col_y = np.isfinite(x).any(0), np.isfinite(y).any(0)
    keep = np.isfinite(x[:, col_x]).all(1) & np.isfinite(y[:, col_y]).all(1)
    x, y = np.where(col_x, x, 0.0)[keep], np.where(col_y, y, 0.0)[keep]
    if x.shape[0] < 2:
        return np.full((x.shape[1], y.shape[1]), np.nan)
    dead = ~col_x[:, None] | ~col_y[None, :]
    xc, yc = x - x.mean(0), y - y.mean(0)
    cov = xc.T @ yc / x.shape[0]
    cov[dead] = np.nan
    if mode == "covariance":
        return -cov
    sx, sy = np.sqrt((xc ** 2).mean(0)), np.sqrt((yc ** 2).mean(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sx, sy)
    corr[~np.isfinite(corr)] = np.nan
    if b is None:
        np.fill_diagonal(corr, np.where((sx > 0) & col_x, 1.0, np.nan))
    return np.clip(corr, -1.0, 1.0)


def llc_estimate(draw_losses, loss_at_anchor: float, n_beta: float) -> float:
    """Local learning coefficient estimate λ̂ = nβ (mean of the sampling loss over draws − the loss at w*)."""
    values = np.asarray(draw_losses, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan")
    return float(n_beta * (values.mean() - float(loss_at_anchor)))


def stationary_variance(precision, step_size: float):
    """Exact stationary variance of the SGLD recursion on a Gaussian target with diagonal ``precision`` p (the
    recursion w ← (1 − εp/2) w + N(0, ε) has variance ε / (1 − (1 − εp/2)²) = 1 / (p (1 − εp/4)); it tends to the
    target's 1/p as ε → 0)."""
    p = np.asarray(precision, dtype=np.float64)
    return 1.0 / (p * (1.0 - step_size * p / 4.0))
