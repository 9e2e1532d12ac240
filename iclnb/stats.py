"""Uncertainty for every reported number (docs/methods.md, Statistics): a thin layer over ``scipy.stats``.

* ``bootstrap_ci``: bootstrap confidence intervals (``scipy.stats.bootstrap``) vectorised over all but one axis,
  with NaN samples dropped column by column.
* ``mean_ci``: the entry every table holds for a mean over contexts, ``{"mean", "ci_low", "ci_high"}``.
* ``paired_difference``: mean of paired differences with its interval and a sign-flip permutation p-value.
* ``bootstrap_spearman``: Spearman's rho of paired values with a bootstrap interval over the pairs.
* ``paired_log_ratio``: the paired-design summary, mean log(a / b) with its interval.
* ``permutation_pvalue``: a p-value from an observed statistic and its permutation null draws.
* ``fdr``: Benjamini-Hochberg q-values (``scipy.stats.false_discovery_control``) that let NaN through.

Random draws always come from a ``numpy.random.Generator`` passed by the caller (``iclnb.core.seeding.stream``), so a
result is reproducible; ``rng=None`` draws fresh entropy and is not.
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
from scipy import stats as _sps

from iclnb.core.arrays import as_float_array
from iclnb.core.errors import IclnbError

__all__ = ["bootstrap_ci", "mean_ci", "paired_difference", "bootstrap_spearman", "paired_log_ratio",
           "permutation_pvalue", "fdr"]

# scipy >= 1.15 takes the generator as `rng`, older releases as `random_state`
_RNG_KW = "rng" if "rng" in inspect.signature(_sps.bootstrap).parameters else "random_state"
# values per bootstrap batch (resamples x samples x columns) to bound memory
_BATCH_VALUES = 20_000_000


def as_generator(rng) -> np.random.Generator:
    """``rng`` as a ``numpy.random.Generator``: a Generator itself, an int seed or None through ``default_rng``."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise IclnbError(f"rng must be a numpy.random.Generator, an int seed or None, got {type(rng).__name__}")


def check_confidence(confidence: float) -> float:
    """``confidence`` as a float, refused unless it lies strictly between 0 and 1."""
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise IclnbError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence}")
    return c


def _scalar_or_array(a: np.ndarray):
    return a.item() if a.ndim == 0 else a


def bootstrap_ci(
    samples,
    *,
    axis: int = 0,
    statistic=np.mean,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    rng=None,
    method: str = "percentile",
):
    """Bootstrap confidence interval of ``statistic`` over ``axis``, vectorised over the other axes.

    Resamples the samples along ``axis`` with replacement (``scipy.stats.bootstrap``; ``method`` is "percentile"
    (default: defined for constant data, where it gives a zero-width interval), "basic" or "BCa"). ``statistic`` must
    accept an ``axis`` keyword (numpy reductions do). NaN samples are dropped column by column: a column with fewer
    than two finite samples gets a NaN interval (and a NaN estimate when it has none).

    Returns ``(estimate, low, high)``, each of the input's shape without ``axis`` (floats for 1-D input); the
    estimate is ``statistic`` of the finite samples.
    """
    x = as_float_array(samples, "samples")
    if x.ndim == 0:
        raise IclnbError("samples must have at least one axis to resample over")
    conf = check_confidence(confidence)
    if int(n_resamples) < 1:
        raise IclnbError(f"n_resamples must be positive, got {n_resamples}")
    gen = as_generator(rng)
    try:
        x = np.moveaxis(x, axis, 0)
    except np.exceptions.AxisError:
        raise IclnbError(f"axis {axis} is out of range for samples of shape {x.shape}") from None
    out_shape = x.shape[1:]
    cols = x.reshape(x.shape[0], -1)
    n, m = cols.shape
    est = np.full(m, np.nan)
    low = np.full(m, np.nan)
    high = np.full(m, np.nan)
    finite = np.isfinite(cols)
    counts = finite.sum(axis=0)
    kw = {_RNG_KW: gen, "n_resamples": int(n_resamples), "confidence_level": conf, "method": method,
          "vectorized": True}

    whole = np.flatnonzero(counts == n)
    if whole.size and n >= 1:
        block = cols[:, whole]
        est[whole] = statistic(block, axis=0)
        if n >= 2:
            batch = max(1, _BATCH_VALUES // (n * whole.size))
            res = _sps.bootstrap((block,), statistic, axis=0, batch=batch, **kw)
            low[whole] = res.confidence_interval.low
            high[whole] = res.confidence_interval.high
    for j in np.flatnonzero((counts < n) & (counts > 0)):
        v = cols[finite[:, j], j]
        est[j] = statistic(v, axis=0)
        if v.size >= 2:
            res = _sps.bootstrap((v,), statistic, axis=0, batch=max(1, _BATCH_VALUES // v.size), **kw)
            low[j] = res.confidence_interval.low
            high[j] = res.confidence_interval.high
    shape = lambda a: _scalar_or_array(a.reshape(out_shape))  # noqa: E731
    return shape(est), shape(low), shape(high)


def mean_ci(values, n_boot: int, rng, *, axis: int = 0, statistic=np.mean, count: bool = False) -> dict:
    """``{"mean", "ci_low", "ci_high"}`` of ``values`` over ``axis`` (contexts): ``statistic`` of the finite values
    with its 95% percentile bootstrap interval (:func:`bootstrap_ci`; NaN values dropped; fewer than two finite
    values give a NaN interval). ``count=True`` adds ``"n"``, the number of finite values. Arrays of more than one
    axis give arrays."""
    x = as_float_array(values, "values")
    mean, low, high = bootstrap_ci(x, axis=axis, statistic=statistic, n_resamples=n_boot, rng=rng)
    out = {"mean": mean, "ci_low": low, "ci_high": high}
    if count:
        out["n"] = _scalar_or_array(np.isfinite(x).sum(axis=axis))
    return out


def paired_difference(differences, n_boot: int, rng_ci, rng_perm, n_perm: int) -> dict:
    """The paired design's summary of per-context differences d_i = a_i − b_i: mean with its bootstrap interval
    (:func:`mean_ci`) and a two-sided sign-flip permutation p-value (each d_i's sign flipped at random, ``n_perm``
    draws, :func:`permutation_pvalue`). NaN differences are dropped; none left gives NaN everywhere."""
    d = as_float_array(differences, "differences").ravel()
    d = d[np.isfinite(d)]
    if not d.size:
        return {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
    out = mean_ci(d, n_boot, rng_ci)
    flips = rng_perm.choice([-1.0, 1.0], size=(n_perm, d.size))
    out["p_value"] = float(permutation_pvalue(d.mean(), (flips * d).mean(axis=1)))
    return out


def bootstrap_spearman(x, y, n_boot: int, rng, confidence: float = 0.95) -> dict:
    """Spearman's rho of paired values ``x``, ``y`` (pairs with a NaN dropped) with its percentile bootstrap
    interval over pairs, scipy's p-value and ``n``; NaN everywhere for fewer than 3 pairs."""
    x, y = as_float_array(x, "x").ravel(), as_float_array(y, "y").ravel()
    if x.shape != y.shape:
        raise IclnbError(f"x and y must be paired (the same size), got {x.size} and {y.size} values")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3:
        return {"rho": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p_value": float("nan"),
                "n": int(x.size)}
    gen = as_generator(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a resample of constant values has no rho (NaN, dropped below)
        res = _sps.spearmanr(x, y)
        boots = []
        for _ in range(int(n_boot)):
            idx = gen.integers(0, x.size, x.size)
            boots.append(_sps.spearmanr(x[idx], y[idx]).statistic)
    boots = np.asarray(boots, dtype=float)
    tail = round((1 - check_confidence(confidence)) / 2, 12)  # 0.95 -> exactly 0.025
    return {"rho": float(res.statistic), "ci_low": float(np.nanquantile(boots, tail)),
            "ci_high": float(np.nanquantile(boots, 1 - tail)), "p_value": float(res.pvalue), "n": int(x.size)}


def paired_log_ratio(a, b, *, axis: int = 0, rng=None, confidence: float = 0.95, n_resamples: int = 2000,
                     method: str = "percentile") -> dict:
    """Mean log-ratio of paired measurements with a bootstrap interval: mean_i log(a_i / b_i).

    Pairs where either value is NaN, inf or not positive are dropped (per column, for arrays of more than one axis).
    Returns a dict: ``mean_log_ratio``, ``ci_low``, ``ci_high`` (bootstrap over pairs, see ``bootstrap_ci``),
    ``ratio`` = exp(mean_log_ratio) (the geometric-mean ratio), ``n`` (pairs used) and ``n_dropped``.
    """
    x = as_float_array(a, "a")
    y = as_float_array(b, "b")
    if x.shape != y.shape:
        raise IclnbError(f"a and b must be paired (the same shape), got {x.shape} and {y.shape}")
    if x.ndim == 0:
        raise IclnbError("a and b must be arrays of paired measurements, got scalars")
    valid = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = np.where(valid, np.log(np.where(valid, x, 1.0)) - np.log(np.where(valid, y, 1.0)), np.nan)
    est, low, high = bootstrap_ci(lr, axis=axis, confidence=confidence, n_resamples=n_resamples, rng=rng,
                                  method=method)
    n_used = valid.sum(axis=axis)
    n_dropped = x.shape[axis] - n_used
    return {
        "mean_log_ratio": est,
        "ci_low": low,
        "ci_high": high,
        "ratio": _scalar_or_array(np.exp(np.asarray(est))),
        "n": _scalar_or_array(np.asarray(n_used)),
        "n_dropped": _scalar_or_array(np.asarray(n_dropped)),
    }


def permutation_pvalue(observed, null, *, alternative: str = "two-sided"):
    """P-value of ``observed`` against permutation draws ``null`` (first axis = draws), with the +1 correction.

    p = (1 + #{draws at least as extreme}) / (1 + #draws), where "as extreme" is |null| ≥ |observed| for
    "two-sided", null ≥ observed for "greater", null ≤ observed for "less" (ties count, with a relative tolerance of
    1e-12 for rounding). Vectorised over the remaining axes, which must match ``observed``'s shape; NaN draws are
    ignored per column; NaN observed values give NaN.
    """
    obs = as_float_array(observed, "observed")
    nul = as_float_array(null, "null")
    if nul.ndim != obs.ndim + 1 or nul.shape[1:] != obs.shape:
        raise IclnbError(f"null must have shape (n_draws, *observed.shape) = (n, *{obs.shape}), got {nul.shape}")
    if alternative == "two-sided":
        o, d = np.abs(obs), np.abs(nul)
    elif alternative == "greater":
        o, d = obs, nul
    elif alternative == "less":
        o, d = -obs, -nul
    else:
        raise IclnbError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")
    tol = 1e-12 * np.maximum(np.abs(o), np.finfo(np.float64).tiny)
    with np.errstate(invalid="ignore"):
        extreme = np.sum((d >= o - tol) & np.isfinite(d), axis=0)
    n_draws = np.isfinite(nul).sum(axis=0)
    p = (1.0 + extreme) / (1.0 + n_draws)
    p = np.where(np.isfinite(obs), p, np.nan)
    return _scalar_or_array(np.asarray(p, dtype=np.float64))


def fdr(pvalues, *, method: str = "bh"):
    """False-discovery-rate adjusted p-values (q-values) over all finite entries, any shape.

    Wraps ``scipy.stats.false_discovery_control`` ("bh": Benjamini-Hochberg; "by": Benjamini-Yekutieli). NaN entries
    are left out of the adjustment and come back as NaN.
    """
    p = as_float_array(pvalues, "pvalues")
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        vals = p[ok]
        if vals.min() < 0 or vals.max() > 1:
            raise IclnbError("p-values must lie in [0, 1]")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q[ok] = _sps.false_discovery_control(vals, method=method)
    return _scalar_or_array(q)
