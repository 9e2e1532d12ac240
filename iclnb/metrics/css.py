"""Context Sensitivity Score (docs/methods.md): how a token's loss co-varies with a context's structure.

CSS(z, Φ) = −Cov_contexts(ℓ(z), Φ): the population covariance (ddof=0), across K contexts (fresh walks on one fixed
graph), between the loss of token z and the structural metric Φ of that context, negated, so that a positive CSS means
lower loss where the structure is stronger. CSS is correlational: the weights stay frozen.

Two indexings share these functions: by absolute position (``losses`` is (K, P)) and by node (``node_losses`` is
(K, n_nodes), a context's mean loss over the occurrences of each node, NaN where a node was not seen). An entry that is
NaN leaves that context out for that column only; a context whose Φ is NaN is left out everywhere.
"""

from __future__ import annotations

import warnings

import numpy as np

from iclnb.core.errors import IclnbError
from iclnb.core.arrays import as_float_array as _to_numpy
from iclnb.stats import as_generator, check_confidence, fdr, permutation_pvalue

__all__ = ["css", "css_by_node", "css_summary", "node_losses"]


def css_inputs(losses, phi, name: str):
    """``(losses, phi)`` checked (2-D losses, one Φ per context) and kept to the contexts whose Φ is finite."""
    loss = _to_numpy(losses, name)
    if loss.ndim != 2:
        raise IclnbError(f"{name} must be 2-D (contexts x positions), got shape {loss.shape}; "
                         "for one position pass losses.reshape(-1, 1)")
    f = _to_numpy(phi, "phi")
    if f.ndim != 1 or f.shape[0] != loss.shape[0]:
        raise IclnbError(f"phi must be 1-D with one value per context ({loss.shape[0]} rows of {name}), "
                         f"got shape {f.shape}")
    keep = np.isfinite(f)
    return loss[keep], f[keep]


def centred_columns(loss: np.ndarray, phi: np.ndarray):
    """Per column: the mask of usable contexts, their count, and both variables centred over them (0 elsewhere)."""
    mask = np.isfinite(loss)
    n = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        l0 = np.where(mask, loss, 0.0)
        mean_l = l0.sum(axis=0) / n
        p0 = np.where(mask, phi[:, None], 0.0)
        mean_p = p0.sum(axis=0) / n
    lc = np.where(mask, loss - mean_l, 0.0)
    pc = np.where(mask, phi[:, None] - mean_p, 0.0)
    return mask, n, lc, pc


def _neg_cov(n: np.ndarray, lc: np.ndarray, pc: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = -np.sum(lc * pc, axis=0) / n
    return np.where(n >= 2, out, np.nan)


def css(losses, phi) -> np.ndarray:
    """CSS per column: −Cov(ℓ[:, p], Φ) with the population covariance over contexts.

    CSS_p = −(1/n_p) Σ_k (ℓ_kp − ℓ̄_p)(Φ_k − Φ̄_p) over the n_p contexts where ℓ_kp and Φ_k are finite (the means
    are taken over the same contexts). ``losses`` is (K, P), ``phi`` is (K,); returns (P,), NaN where n_p < 2.
    """
    loss, f = css_inputs(losses, phi, "losses")
    _, n, lc, pc = centred_columns(loss, f)
    return _neg_cov(n, lc, pc)


def css_by_node(node_losses, phi) -> np.ndarray:
    """CSS indexed by node: ``css`` of (K, n_nodes) per-context mean node losses (NaN for nodes not seen)."""
    loss, f = css_inputs(node_losses, phi, "node_losses")
    _, n, lc, pc = centred_columns(loss, f)
    return _neg_cov(n, lc, pc)


def node_losses(walks: np.ndarray, word_loss: np.ndarray, n_nodes: int) -> np.ndarray:
    """(K, n_nodes) mean loss over each node's occurrences in each context (NaN where absent or undefined): the
    by-node input of :func:`css_by_node`. ``walks`` and ``word_loss`` are (K, P) node ids and word losses."""
    k = walks.shape[0]
    valid = ~np.isnan(word_loss)
    sums = np.zeros((k, n_nodes))
    counts = np.zeros((k, n_nodes))
    rows = np.repeat(np.arange(k), walks.shape[1])
    np.add.at(sums, (rows, walks.ravel()), np.where(valid, word_loss, 0.0).ravel())
    np.add.at(counts, (rows, walks.ravel()), valid.ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def css_summary(losses, phi, rng=None, *, n_boot: int = 1000, n_perm: int = 1000,
                confidence: float = 0.95) -> dict[str, np.ndarray]:
    """CSS with its uncertainty, per column of ``losses`` (positions or nodes).

    Returns a dict of (P,) arrays:

    * ``css``: as ``css``;
    * ``pearson_r``: the Pearson correlation of ℓ[:, p] and Φ over the same contexts;
    * ``ci_low``, ``ci_high``: percentile bootstrap interval of CSS at ``confidence``, resampling contexts (rows,
      paired: a context's losses and Φ move together). One (n_boot, K) matrix of resample counts serves every
      column, and the weighted covariances are matrix products, so the cost does not grow with a loop over columns;
    * ``p_value``: two-sided permutation p-value of CSS, (1 + #{|CSS_perm| ≥ |CSS|}) / (1 + n_perm), shuffling Φ
      across contexts; one shuffle serves every column;
    * ``q_value``: Benjamini-Hochberg q-values of the finite p-values across columns;
    * ``n_contexts``: the number of contexts used per column.

    ``rng`` is a ``numpy.random.Generator`` (or an int seed); ``n_boot=0`` / ``n_perm=0`` skip that part (NaN).
    """
    loss, f = css_inputs(losses, phi, "losses")
    conf = check_confidence(confidence)
    gen = as_generator(rng)
    n_boot, n_perm = int(n_boot), int(n_perm)
    if n_boot < 0 or n_perm < 0:
        raise IclnbError(f"n_boot and n_perm must be non-negative, got {n_boot} and {n_perm}")
    K, P = loss.shape
    mask, n, lc, pc = centred_columns(loss, f)
    score = _neg_cov(n, lc, pc)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sum(lc * pc, axis=0) / np.sqrt(np.sum(lc * lc, axis=0) * np.sum(pc * pc, axis=0))
    r = np.where((n >= 2) & np.isfinite(r), r, np.nan)

    low = np.full(P, np.nan)
    high = np.full(P, np.nan)
    if n_boot > 0 and K > 0:
        idx = gen.integers(0, K, size=(n_boot, K))
        weights = np.zeros((n_boot, K))
        np.add.at(weights, (np.repeat(np.arange(n_boot), K), idx.ravel()), 1.0)
        m = mask.astype(np.float64)
        nb = weights @ m
        with np.errstate(invalid="ignore", divide="ignore"):
            cov_b = (weights @ (lc * pc)) / nb - (weights @ lc) * (weights @ pc) / nb**2
        cov_b[nb < 2] = np.nan
        alpha = (1.0 - conf) / 2.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            qs = np.nanquantile(-cov_b, [alpha, 1.0 - alpha], axis=0)
        low, high = np.where(n >= 2, qs[0], np.nan), np.where(n >= 2, qs[1], np.nan)

    pvals = np.full(P, np.nan)
    if n_perm > 0 and K > 0:
        order = gen.permuted(np.tile(np.arange(K), (n_perm, 1)), axis=1)
        # lc sums to zero over each column's usable contexts, so the permuted covariance is Σ_k lc_kp Φ_π(k) / n_p
        with np.errstate(invalid="ignore", divide="ignore"):
            null = -(f[order] @ lc) / n
        pvals = np.asarray(permutation_pvalue(score, null), dtype=np.float64).reshape(P)
    return {
        "css": score,
        "pearson_r": r,
        "ci_low": low,
        "ci_high": high,
        "p_value": pvals,
        "q_value": np.asarray(fdr(pvals), dtype=np.float64).reshape(P),
        "n_contexts": n.astype(np.int64),
    }
