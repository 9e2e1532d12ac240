"""Steps both perturbation experiments share: the graph, the fit check, summaries over contexts, classical MDS."""

from __future__ import annotations

import numpy as np

from iclnb.core.errors import IclnbError
from iclnb.stats import bootstrap_ci

#: The graph of both experiments is css_basic's: the 3 x 5 two-level stochastic block model (3 super-clusters of 5
#: words, p_intra 0.8, p_inter 0.1) drawn from the run's graph stream, so one seed gives the same graph in all three.
from iclnb.experiments.css.css_basic import context_walk, make_graph

__all__ = ["context_walk", "make_graph", "longest_word_tokens", "check_fits", "summary", "classical_mds"]


def longest_word_tokens(model, words) -> int:
    """The most tokens any of ``words`` takes in its leading-space form."""
    from iclnb.prompts import tokenization_report

    return max(tokenization_report(model.tokenizer, words).values())


def check_fits(model, n_words: int, tokens_per_word: int, extra_tokens: int = 0, what: str = "context length"):
    """Refuse, with one line, a context of ``n_words`` words that may not fit the model."""
    need = n_words * tokens_per_word + extra_tokens + 1
    if need > model.max_positions:
        most = (model.max_positions - 1 - extra_tokens) // tokens_per_word
        raise IclnbError(f"{what} {n_words} may need {need} tokens, more than the {model.max_positions} {model.name} "
                         f"can read; use at most {most}")


def summary(values, n_boot: int, rng) -> dict:
    """Mean over contexts with its 95% bootstrap interval (NaN contexts dropped)."""
    values = np.asarray(values, dtype=float)
    if np.isfinite(values).sum() < 2:
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        return {"mean": mean, "ci_low": float("nan"), "ci_high": float("nan"), "n": int(np.isfinite(values).sum())}
    mean, low, high = bootstrap_ci(values, n_resamples=n_boot, rng=rng)
    return {"mean": float(mean), "ci_low": float(low), "ci_high": float(high), "n": int(np.isfinite(values).sum())}


def classical_mds(distances, k: int = 2) -> np.ndarray:
    """Classical (Torgerson) multidimensional scaling: the (n, k) coordinates whose Euclidean distances best match
    ``distances`` (n, n) in the least-squares sense of the double-centred squared distances
    B = −½ J D² J (J = I − 11ᵀ/n): the top-k eigenvectors of B scaled by the square roots of their eigenvalues.
    Deterministic (each axis' sign fixed so that its largest-magnitude coordinate is positive)."""
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise IclnbError(f"distances must be a square matrix, got shape {d.shape}")
    n = d.shape[0]
    j = np.eye(n) - 1.0 / n
    b = -0.5 * j @ (d * d) @ j
    values, vectors = np.linalg.eigh((b + b.T) / 2)
    order = np.argsort(values)[::-1][:k]
    coords = vectors[:, order] * np.sqrt(np.maximum(values[order], 0.0))
    flip = np.sign(coords[np.argmax(np.abs(coords), axis=0), np.arange(coords.shape[1])])
    return coords * np.where(flip == 0, 1.0, flip)
