"""Structure per hierarchy level, the paired prefix design, and when a metric first beats its null
(docs/methods.md).

* :func:`phi_by_level`: the cluster separation Φ of one context under each labelling of a hierarchy (``level_1``
  coarsest ...), each beside its own node-shuffled null (cluster labels permuted over nodes, so a level's null keeps
  its number and sizes of clusters).
* :func:`prefix_views`: one walk of the largest context length serves every shorter one (in a causal model the
  states of a prefix do not depend on what follows), so the design is paired across N: the rows of prefix N are the
  first N words, minus the words excluded from geometry (the attention sink).
* :func:`first_exceeding`: the smallest context length at which a per-context difference (a metric minus its null)
  is reliably above 0, with a bootstrap interval over contexts on that length; :func:`level_order` does it for
  several levels from the same resamples and says how often a coarser level separates before a finer one.
* :func:`css_extremes`: max |CSS| and mean |CSS| over positions with bootstrap intervals over contexts and their
  permutation null (Φ shuffled across contexts).
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping

import numpy as np
from scipy import stats as _sps

from iclnb.core.arrays import as_float_array
from iclnb.core.errors import IclnbError
from iclnb.metrics.css import centred_columns, css_inputs
from iclnb.metrics.structure import cluster_separation, coherence, separation_null
from iclnb.stats import as_generator, permutation_pvalue

__all__ = ["phi_by_level", "prefix_views", "first_exceeding", "level_order", "css_extremes", "NOT_REACHED"]

#: The value a bootstrap resample gets when its metric never exceeds the null at any measured length.
NOT_REACHED = np.inf


def phi_by_level(reps, nodes, labelings: Mapping[str, np.ndarray], *, n_null: int = 20,
                 rng: Callable[[str], np.random.Generator] | None = None, with_coherence: bool = False) -> dict:
    """Φ of the rows ``reps`` (T, d) under each labelling of their nodes, with each level's node-shuffled null.

    ``nodes`` (T,) are the node ids of the rows; ``labelings`` maps a level name to the cluster of each node id
    (``graph.labelings``). Returns ``{level: {"phi", "phi_null"}}`` (plus ``"coherence"``, the centred coherence
    under that level's clusters, when ``with_coherence``): ``phi`` = ``cluster_separation(reps, labels[nodes])``,
    ``phi_null`` = the mean of ``n_null`` draws of ``separation_null`` with the generator ``rng(level)`` (one stream
    per level, so adding a level never shifts another's draws); NaN without ``rng``.
    """
    ids = np.asarray(nodes, dtype=np.int64)
    out = {}
    for level, node_cluster in labelings.items():
        node_cluster = np.asarray(node_cluster)
        labels = node_cluster[ids]
        entry = {"phi": cluster_separation(reps, labels)}
        if rng is None or n_null < 1:
            entry["phi_null"] = float("nan")
        else:
            draws = separation_null(reps, ids, node_cluster, n_perm=n_null, rng=rng(level))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                entry["phi_null"] = float(np.nanmean(draws)) if np.isfinite(draws).any() else float("nan")
        if with_coherence:
            entry["coherence"] = coherence(reps, labels)
        out[level] = entry
    return out


def prefix_views(reps, nodes, keep, lengths) -> dict:
    """The rows of every prefix of one walk: ``{N: (reps[:N][keep[:N]], nodes[:N][keep[:N]])}``.

    ``reps`` (T, d) and ``nodes`` (T,) are the word-level states and node ids of the longest walk; ``keep`` (T,)
    marks the words that count (the sink word excluded). Each N in ``lengths`` must be at most T.
    """
    x = as_float_array(reps, "reps", ndim=2)
    ids = np.asarray(nodes)
    mask = np.asarray(keep, dtype=bool)
    if ids.shape != (x.shape[0],) or mask.shape != (x.shape[0],):
        raise IclnbError(f"nodes and keep must have one entry per row of reps ({x.shape[0]}), got {ids.shape} and "
                         f"{mask.shape}")
    out = {}
    for n in lengths:
        n = int(n)
        if not 1 <= n <= x.shape[0]:
            raise IclnbError(f"context length {n} is outside the walk's 1..{x.shape[0]} words")
        m = mask[:n]
        out[n] = (x[:n][m], ids[:n][m])
    return out


def _first_index(above: np.ndarray, sustained: bool) -> np.ndarray:
    """Per row of a boolean (R, L) array, the first column from which it holds (to the end with ``sustained``);
    L where there is none."""
    R, L = above.shape
    if sustained:
        tail = np.flip(np.logical_and.accumulate(np.flip(above, axis=1), axis=1), axis=1)
        hit = tail
    else:
        hit = above
    return np.where(hit.any(axis=1), np.argmax(hit, axis=1), L)


def _above(diff: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    """(R, L): whether the weighted mean of ``diff`` (K, L) over contexts is above 0 by a one-sided t test at level
    ``alpha`` (each row of ``weights`` (R, K) is a resample's count of each context)."""
    finite = np.isfinite(diff)
    d0 = np.where(finite, diff, 0.0)
    n = weights @ finite
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (weights @ d0) / n
        var = (weights @ (d0 * d0)) / n - mean**2
        var = var * n / (n - 1)
        se = np.sqrt(np.maximum(var, 0.0) / n)
        crit = _sps.t.ppf(1.0 - alpha, np.maximum(n - 1, 1))
        ok = (n >= 2) & (mean > 0) & ((se == 0) | (mean > crit * se))
    return ok


def _resample_weights(K: int, n_boot: int, gen) -> np.ndarray:
    idx = gen.integers(0, K, size=(n_boot, K))
    weights = np.zeros((n_boot, K))
    np.add.at(weights, (np.repeat(np.arange(n_boot), K), idx.ravel()), 1.0)
    return weights


def _onset_summary(lengths: np.ndarray, point: int, boot: np.ndarray, confidence: float) -> dict:
    L = len(lengths)
    values = np.where(boot < L, lengths[np.minimum(boot, L - 1)].astype(float), NOT_REACHED)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha], method="inverted_cdf")

    def length(v):
        return None if not np.isfinite(v) else int(v)

    return {
        "n_star": None if point >= L else int(lengths[point]),
        "reached": bool(point < L),
        "ci_low": length(low),
        "ci_high": length(high),
        "fraction_reached": float(np.mean(boot < L)),
    }


def first_exceeding(lengths, diff, *, n_boot: int = 1000, rng=None, alpha: float = 0.05, sustained: bool = True,
                    confidence: float = 0.95) -> dict:
    """The smallest context length at which a metric exceeds its null, with a bootstrap interval on that length.

    ``diff`` is (K contexts, L lengths): per context and length, the metric minus its null (e.g. Φ − its
    node-shuffled null; the design is paired, so the same contexts serve every length). The metric exceeds its null
    at length N when the mean of ``diff[:, N]`` over contexts is above 0 by a one-sided t test at level ``alpha``;
    with ``sustained`` (default) it must also do so at every longer length measured, so that one lucky short length
    does not count. ``n_star`` is the first such length (None: "not reached" within the lengths measured). The
    interval comes from ``n_boot`` resamples of the contexts, each with the same rule: its ``confidence`` quantiles
    (a resample that never exceeds counts as beyond the longest length; a bound there is None, "not reached").
    ``fraction_reached`` is the share of resamples that reach it. Returns a dict.
    """
    out = level_order(lengths, {"metric": diff}, n_boot=n_boot, rng=rng, alpha=alpha, sustained=sustained,
                      confidence=confidence)
    return out["levels"]["metric"]


def level_order(lengths, diffs: Mapping[str, np.ndarray], *, n_boot: int = 1000, rng=None, alpha: float = 0.05,
                sustained: bool = True, confidence: float = 0.95) -> dict:
    """:func:`first_exceeding` for several levels at once, from the same context resamples, and their order.

    ``diffs`` maps level names (coarsest first) to (K, L) arrays over the same contexts and lengths. Returns
    ``{"levels": {level: first_exceeding's dict}, "pairs": [{"coarser", "finer", "p_coarser_first", "p_same",
    "p_finer_first"}, ...], "order": [levels sorted by n_star, unreached last]}``: for each pair of levels, the
    share of resamples in which the coarser level's onset comes strictly before, at the same length as, or after the
    finer one's (two unreached onsets count as the same).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or lengths.size < 1 or np.any(np.diff(lengths) <= 0):
        raise IclnbError(f"lengths must be increasing context lengths, got {lengths.tolist()}")
    if not diffs:
        raise IclnbError("diffs must name at least one level")
    arrays = {}
    for level, d in diffs.items():
        d = as_float_array(d, f"diffs[{level!r}]", ndim=2)
        if d.shape[1] != lengths.size:
            raise IclnbError(f"diffs[{level!r}] must have one column per length ({lengths.size}), got {d.shape}")
        arrays[level] = d
    K = next(iter(arrays.values())).shape[0]
    if any(d.shape[0] != K for d in arrays.values()):
        raise IclnbError("every level's diffs must hold the same contexts (rows)")
    n_boot = int(n_boot)
    if n_boot < 1:
        raise IclnbError(f"n_boot must be positive, got {n_boot}")
    weights = _resample_weights(K, n_boot, as_generator(rng))
    ones = np.ones((1, K))
    points, boots, levels = {}, {}, {}
    for level, d in arrays.items():
        points[level] = int(_first_index(_above(d, ones, alpha), sustained)[0])
        boots[level] = _first_index(_above(d, weights, alpha), sustained)
        levels[level] = _onset_summary(lengths, points[level], boots[level], confidence)
    names = list(arrays)
    pairs = []
    for i, coarse in enumerate(names):
        for fine in names[i + 1:]:
            a, b = boots[coarse], boots[fine]
            pairs.append({"coarser": coarse, "finer": fine, "p_coarser_first": float(np.mean(a < b)),
                          "p_same": float(np.mean(a == b)), "p_finer_first": float(np.mean(a > b))})
    order = sorted(names, key=lambda lv: (points[lv], names.index(lv)))
    return {"levels": levels, "pairs": pairs, "order": order}


def css_extremes(losses, phi, rng=None, *, n_boot: int = 1000, n_perm: int = 1000, confidence: float = 0.95) -> dict:
    """max |CSS| and mean |CSS| over the columns (positions or nodes) of ``losses`` (K, P) against ``phi`` (K,).

    CSS_p = −Cov over contexts of (ℓ[:, p], Φ) (``iclnb.metrics.css``). For each summary S ∈ {max, mean} of |CSS_p|
    over the columns with a defined CSS, returns ``{"value", "ci_low", "ci_high", "null_mean", "p_value"}``: the
    percentile bootstrap interval resamples contexts (pairs of losses and Φ), the null shuffles Φ across contexts
    (``n_perm`` shuffles; ``null_mean`` is the mean of S under them, ``p_value`` one-sided, S at least as large).
    The largest |CSS| over many positions is biased upwards by noise, which is why it carries its null. Keys
    ``"max_abs"`` and ``"mean_abs"``.
    """
    loss, f = css_inputs(losses, phi, "losses")
    gen = as_generator(rng)
    K, P = loss.shape
    mask, n, lc, pc = centred_columns(loss, f)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(n >= 2, -np.sum(lc * pc, axis=0) / n, np.nan)

    def summaries(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.abs(np.atleast_2d(values))
        ok = np.isfinite(a)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mx = np.where(ok.any(axis=1), np.nanmax(np.where(ok, a, -np.inf), axis=1), np.nan)
            mn = np.nanmean(np.where(ok, a, np.nan), axis=1)
        return mx, mn

    point = summaries(score)
    nan = float("nan")
    boot = (np.full(1, nan), np.full(1, nan))
    if n_boot > 0 and K > 0:
        weights = _resample_weights(K, int(n_boot), gen)
        m = mask.astype(np.float64)
        nb = weights @ m
        with np.errstate(invalid="ignore", divide="ignore"):
            cov_b = (weights @ (lc * pc)) / nb - (weights @ lc) * (weights @ pc) / nb**2
        cov_b[nb < 2] = np.nan
        boot = summaries(-cov_b)
    null = (np.full(1, nan), np.full(1, nan))
    if n_perm > 0 and K > 0:
        order = gen.permuted(np.tile(np.arange(K), (int(n_perm), 1)), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            perm = np.where(n >= 2, -(f[order] @ lc) / n, np.nan)
        null = summaries(perm)
    alpha = (1.0 - confidence) / 2.0
    out = {}
    for i, key in enumerate(("max_abs", "mean_abs")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = (np.nanquantile(boot[i], [alpha, 1 - alpha]) if np.isfinite(boot[i]).any()
                         else (nan, nan))
            null_mean = float(np.nanmean(null[i])) if np.isfinite(null[i]).any() else nan
        value = float(point[i][0])
        p = (float(permutation_pvalue(np.float64(value), null[i], alternative="greater"))
             if np.isfinite(null[i]).any() else nan)
        out[key] = {"value": value, "ci_low": float(low), "ci_high": float(high), "null_mean": null_mean,
                    "p_value": p}
    return out
