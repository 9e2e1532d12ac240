"""reproduce_lee: influence dynamics in context, and the Bayesian influence function as Lee et al. define it.

Design. One two-level hierarchy (3 super-clusters of 5 nodes, each split into sub-clusters of 2 and 3;
``level_1`` super-clusters, ``level_2`` sub-clusters) drawn from the run's graph stream. Context k is one walk of
the largest context length from its own stream; the context of length N is its first N words (paired prefix design:
in a causal model a word's loss and state do not depend on what follows, so one pass serves every N).

Part A, in context (weights frozen). Per layer, level and N: Φ of the context's word vectors with its node-shuffled
null; CSS(z_p, Φ_N) = −Cov over contexts of (loss of the word at position p, Φ at length N) with bootstrap CIs; sign
flips of CSS_p between consecutive N counted against a permutation null (Φ shuffled across contexts with one
permutation for every N, which keeps each context's Φ trajectory whole); the N at which |CSS_p| peaks with a
bootstrap CI; CSS of each context's mean loss over its own bridge / anchor positions (bridges per context); the
stagewise cluster-pair matrix −Cov(mean loss of cluster c1's words, ||μ_c2 − μ̄||²) per N; and a joint MDS of the
cluster means over N.

Part B, the Bayesian influence function (inputs fixed, weights vary). Localised SGLD (:mod:`iclnb.methods.bif`)
moves only the last ``moved_blocks`` decoder blocks around the loaded weights; the sampling loss is the mean token
loss of the first ``n_bif_contexts`` contexts at length ``bif_context_length`` (the same contexts as Part A), and at
every draw the word losses of those contexts and their Φ (both levels, at the deepest listed layer) are recorded.
BIF(z_i, z_j) = −Cov over draws (covariance mode) or the correlation of the two loss traces (correlation mode);
BIF(z_i, Φ) = −Cov(ℓ_i, Φ) and its normalised form −Corr(ℓ_i, Φ) (same sign as CSS). Compared with leave-one-out
influence on Φ (Φ(full) − Φ(without word i), recomputed exactly) and with CSS on the same contexts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key
from iclnb.core.progress import progress
from iclnb.core.seeding import stream
from iclnb.experiments.kit import measure_contexts, resume_units
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, N_PERM, OUTPUT_DIR, SEED, Float, Int,
                                      IntList, Layers, declare)
from iclnb.metrics import cluster_separation, css, css_summary
from iclnb.metrics.levels import phi_by_level, prefix_views
from iclnb.prompts import check_fits
from iclnb.results.io import nan_array
from iclnb.stats import bootstrap_spearman, mean_ci

PARAMS = declare(
    MODEL,
    Int("n_contexts", 40, "contexts: walks on one fixed two-level hierarchy (the bootstrap unit)", min=4,
        max=MAX_CONTEXTS),
    IntList("context_lengths", "5,10,15,20,30,40", "context lengths N in words (each a prefix of the context's "
            "longest walk)", min=2, max=100_000),
    Layers("-1"),
    Float("bridge_penalty", 1.0, "walk weight of a step across sub-clusters, squared across super-clusters (1: "
          "uniform over neighbours)",
          min=1e-6, max=1e6),
    Int("n_bif_contexts", 2, "contexts whose word losses the SGLD draws record (the first ones of Part A)", min=1,
        max=1000),
    Int("bif_context_length", 15, "length in words of the BIF contexts; one of context_lengths", min=2),
    Int("moved_blocks", 2, "SGLD moves the parameters of the last this many decoder blocks", min=1, max=10_000),
    Int("n_chains", 3, "SGLD chains (each from the loaded weights, its own noise stream)", min=1, max=10_000),
    Int("n_draws", 14, "SGLD draws per chain", min=2, max=1_000_000),
    Int("n_burnin", 6, "SGLD steps per chain before the first draw", min=0, max=1_000_000),
    Int("thinning", 1, "SGLD steps between draws", min=1, max=10_000),
    Float("step_size", 1e-6, "SGLD step size ε", min=1e-12, max=1.0),
    Float("n_beta", 20.0, "SGLD inverse temperature nβ (multiplies the gradient of the mean token loss)", min=1e-6,
          max=1e9),
    Float("localization", 1e5, "SGLD localisation γ: pull toward the loaded weights", min=0.0, max=1e12),
    N_BOOT,
    N_PERM,
    Int("batch_size", 8, "contexts per forward pass (results do not depend on it)", min=1, max=4096),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

LEVELS = ("level_1", "level_2")
#: Label permutations per context, layer, level and N for Φ's null.
N_NULL = 20
CLASSES = ("bridge", "anchor")


# ---------------------------------------------------------------------------------------------------- inputs


def make_graph(seed: int):
    """The run's two-level hierarchy (3 super-clusters of 5 nodes with sub-clusters of 2 and 3)."""
    return graphs.two_level_hierarchy(rng=stream(seed, "graph"))


def context_walk(graph, index: int, p) -> np.ndarray:
    """Context ``index``'s walk of the largest context length (:func:`iclnb.graphs.context_walk`, its own stream)."""
    return graphs.context_walk(graph, max(p.context_lengths), p.seed, index, bridge_penalty=p.bridge_penalty)


def phi_layers(model, p) -> list:
    """The requested layers that are decoder blocks (Φ is measured there; ``embed`` is left out)."""
    return [k for k in model.resolve_layers(p.layers) if k != "embed"]


def bif_layer(model, p) -> int:
    """The deepest requested decoder block: where the SGLD draws record Φ and leave-one-out recomputes it."""
    return max(phi_layers(model, p))


def sgld_settings(p):
    from iclnb.methods.bif import SGLDSettings

    return SGLDSettings(step_size=p.step_size, n_beta=p.n_beta, localization=p.localization, n_chains=p.n_chains,
                        n_draws=p.n_draws, n_burnin=p.n_burnin, thinning=p.thinning)


def check(p, model) -> None:
    """Refuse, before any work, contexts that cannot fit the model, a BIF length that is not measured, too many
    moved blocks or BIF contexts, and a Φ layer that the moved blocks cannot change."""
    check_fits(model, make_graph(p.seed).words, max(p.context_lengths))
    if p.bif_context_length not in p.context_lengths:
        raise IclnbError(f"bif_context_length {p.bif_context_length} must be one of context_lengths "
                         f"{list(p.context_lengths)} (BIF is compared with CSS at that length)")
    if p.n_bif_contexts > p.n_contexts:
        raise IclnbError(f"n_bif_contexts {p.n_bif_contexts} exceeds n_contexts {p.n_contexts}")
    if p.moved_blocks > model.n_layers:
        raise IclnbError(f"moved_blocks {p.moved_blocks} exceeds the {model.n_layers} blocks of {model.name}")
    layers = phi_layers(model, p)
    if not layers:
        raise IclnbError("layers must name at least one decoder block (not only 'embed')")
    if max(layers) < model.n_layers - p.moved_blocks:
        raise IclnbError(f"the deepest layer {max(layers)} lies before the moved blocks "
                         f"({model.n_layers - p.moved_blocks}..{model.n_layers - 1}), so SGLD cannot change its Φ; "
                         f"use a later layer or a larger moved_blocks")
    sgld_settings(p)


# ---------------------------------------------------------------------------------------------------- Part A


@dataclass
class Contexts:
    """Part A's measurements. walks (K, N_max); word_loss (K, N_max); phi[layer][level] and null[layer][level]:
    (K, L) over context_lengths; spread[layer]: (K, L, C1) ||μ_c − μ̄||² per level-1 cluster; sub_means[layer]:
    (K, L, C2, d) level-2 cluster means (NaN when absent) and sub_counts (K, L, C2)."""

    layers: list
    lengths: list
    walks: np.ndarray
    word_loss: np.ndarray
    phi: dict
    null: dict
    spread: dict
    sub_means: dict
    sub_counts: dict


def _cluster_geometry(x: np.ndarray, nodes: np.ndarray, graph):
    """Per level-1 cluster ||μ_c − μ̄||² (μ̄: mean of all rows), and per level-2 cluster the mean and count."""
    top, sub = graph.labelings["level_1"], graph.labelings["level_2"]
    grand = x.mean(0)
    spread = np.full(int(top.max()) + 1, np.nan)
    for c in range(spread.size):
        rows = top[nodes] == c
        if rows.any():
            spread[c] = float(((x[rows].mean(0) - grand) ** 2).sum())
    n_sub = int(sub.max()) + 1
    means = np.full((n_sub, x.shape[1]), np.nan, dtype=np.float32)
    counts = np.zeros(n_sub, dtype=np.int64)
    for c in range(n_sub):
        rows = sub[nodes] == c
        counts[c] = int(rows.sum())
        if rows.any():
            means[c] = x[rows].mean(0)
    return spread, means, counts


def collect_contexts(run, model, graph, p) -> Contexts:
    """One pass per context at the largest N (every requested layer and the loss); every shorter N is its prefix.
    Checkpointed per batch of contexts (``contexts``, one item per context)."""
    layers = phi_layers(model, p)
    lengths = sorted(p.context_lengths)

    def measure(k, walk, state):
        per_layer = {}
        for layer in layers:
            views = prefix_views(state.reps[layer], walk, ~state.sink, lengths)
            rows = {}
            for n, (x, nodes) in views.items():
                levels = phi_by_level(x, nodes, {lv: graph.labelings[lv] for lv in LEVELS}, n_null=N_NULL,
                                      rng=lambda lv: stream(p.seed, "phi_null", k, str(layer), n, lv))
                spread, means, counts = _cluster_geometry(x, nodes, graph)
                rows[str(n)] = {"phi": {lv: levels[lv]["phi"] for lv in LEVELS},
                                "null": {lv: levels[lv]["phi_null"] for lv in LEVELS},
                                "spread": spread, "sub_means": means, "sub_counts": counts}
            per_layer[str(layer)] = rows
        return {"walk": walk, "word_loss": state.word_loss, "metrics": per_layer}

    items = measure_contexts(run, model, list(range(p.n_contexts)), lambda k: context_walk(graph, k, p), measure,
                             layers=layers, batch_size=p.batch_size, words=lambda walk: graphs.walk_words(graph, walk),
                             loss=True)
    return _contexts_from_items(items, layers, lengths)


def _contexts_from_items(items, layers, lengths) -> Contexts:
    walks = np.array([it["walk"] for it in items], dtype=np.int64)
    loss = nan_array([it["word_loss"] for it in items])
    phi, null, spread, means, counts = {}, {}, {}, {}, {}
    for layer in layers:
        m = [[it["metrics"][str(layer)][str(n)] for n in lengths] for it in items]
        phi[layer] = {lv: nan_array([[row["phi"][lv] for row in ctx] for ctx in m]) for lv in LEVELS}
        null[layer] = {lv: nan_array([[row["null"][lv] for row in ctx] for ctx in m]) for lv in LEVELS}
        spread[layer] = nan_array([[row["spread"] for row in ctx] for ctx in m])
        means[layer] = nan_array([[row["sub_means"] for row in ctx] for ctx in m])
        counts[layer] = np.array([[row["sub_counts"] for row in ctx] for ctx in m], dtype=np.int64)
    return Contexts(list(layers), list(lengths), walks, loss, phi, null, spread, means, counts)


def phi_table(contexts: Contexts, p):
    """Per (layer, level, N): Φ and its node-shuffled null (means over contexts with bootstrap CIs) and the paired
    difference Φ − null with its CI."""
    import pandas as pd

    rows = []
    for layer in contexts.layers:
        for lv in LEVELS:
            for j, n in enumerate(contexts.lengths):
                phi, null = contexts.phi[layer][lv][:, j], contexts.null[layer][lv][:, j]
                entry = {"layer": layer, "level": lv, "N": n}
                for name, values in (("phi", phi), ("null", null), ("excess", phi - null)):
                    ci = mean_ci(values, p.n_boot, stream(p.seed, "bootstrap", "phi", str(layer), lv, n, name))
                    entry.update({name: ci["mean"], f"{name}_ci_low": ci["ci_low"], f"{name}_ci_high": ci["ci_high"]})
                rows.append(entry)
    return pd.DataFrame(rows)


def css_trajectories(contexts: Contexts, p) -> dict:
    """CSS of every position against Φ at each N: {layer: {level: {key: (L, N_max) array}}} with the keys of
    ``css_summary`` (NaN where position p >= N)."""
    out = {}
    n_max = contexts.lengths[-1]
    for layer in contexts.layers:
        out[layer] = {}
        for lv in LEVELS:
            table = {}
            for j, n in enumerate(contexts.lengths):
                s = css_summary(contexts.word_loss[:, :n], contexts.phi[layer][lv][:, j],
                                stream(p.seed, "css", str(layer), lv, n), n_boot=p.n_boot, n_perm=p.n_perm)
                for key, values in s.items():
                    table.setdefault(key, np.full((len(contexts.lengths), n_max), np.nan))[j, :n] = values
            out[layer][lv] = table
    return out


def _flip_count(values: np.ndarray) -> np.ndarray:
    """Sign changes between consecutive finite entries along the N axis of (..., L, P) CSS values, per position:
    (..., P). Zeros and NaN are skipped."""
    s = np.sign(values)
    s[~np.isfinite(s)] = 0
    flips = np.zeros(s.shape[:-2] + s.shape[-1:], dtype=np.int64)
    last = np.zeros_like(flips)
    for j in range(s.shape[-2]):
        cur = s[..., j, :]
        flips += (cur != 0) & (last != 0) & (cur != last)
        last = np.where(cur != 0, cur, last)
    return flips


def _css_stack(loss: np.ndarray, phi: np.ndarray, lengths) -> np.ndarray:
    """(L, N_max) CSS per N and position from losses (K, N_max) and Φ (K, L)."""
    out = np.full((len(lengths), loss.shape[1]), np.nan)
    for j, n in enumerate(lengths):
        out[j, :n] = css(loss[:, :n], phi[:, j])
    return out


def sign_flips(contexts: Contexts, layer, level: str, p) -> dict:
    """Sign flips of CSS_p between consecutive context lengths, summed over positions, against a permutation null.

    Observed: the flips of CSS_p(N) over the measured N (positions p < N only). Null: Φ shuffled across contexts,
    one permutation for every N (each context's Φ trajectory stays whole, and each word's loss stays with its
    context), ``n_perm`` times. p-value (one-sided, as many flips or more): (1 + #{null ≥ observed}) / (1 + n_perm).
    """
    loss, phi, lengths = contexts.word_loss, contexts.phi[layer][level], contexts.lengths
    observed_by_position = _flip_count(_css_stack(loss, phi, lengths))
    observed = int(observed_by_position.sum())
    gen = stream(p.seed, "sign_flips", str(layer), level)
    K = loss.shape[0]
    null = np.empty(p.n_perm, dtype=np.int64)
    null_by_position = np.zeros(loss.shape[1])
    for i in range(p.n_perm):
        perm = _flip_count(_css_stack(loss, phi[gen.permutation(K)], lengths))
        null[i] = perm.sum()
        null_by_position += perm
    return {"observed": observed, "null_mean": float(null.mean()), "null_sd": float(null.std()),
            "p_value": float((1 + np.sum(null >= observed)) / (1 + p.n_perm)), "null": null,
            "observed_by_position": observed_by_position, "null_mean_by_position": null_by_position / p.n_perm,
            "n_positions": int(np.sum(np.isfinite(_css_stack(loss, phi, lengths)).sum(0) >= 2))}


def css_peaks(contexts: Contexts, layer, level: str, p):
    """Per position: the context length at which |CSS_p| is largest and that |CSS|, with percentile bootstrap
    intervals that resample contexts (the whole argmax is recomputed in each resample). Positions defined at two
    or more lengths only."""
    import pandas as pd

    loss, phi, lengths = contexts.word_loss, contexts.phi[layer][level], contexts.lengths
    L, P = len(lengths), loss.shape[1]
    point = np.abs(_css_stack(loss, phi, lengths))
    gen = stream(p.seed, "bootstrap", "peaks", str(layer), level)
    K = loss.shape[0]
    peak_n = np.full((p.n_boot, P), np.nan)
    peak_v = np.full((p.n_boot, P), np.nan)
    arr = np.asarray(lengths, dtype=float)
    for b in range(p.n_boot):
        idx = gen.integers(0, K, K)
        a = np.abs(_css_stack(loss[idx], phi[idx], lengths))
        ok = np.isfinite(a).any(0)
        j = np.argmax(np.where(np.isfinite(a), a, -1.0), axis=0)
        peak_n[b] = np.where(ok, arr[j], np.nan)
        peak_v[b] = np.where(ok, a[j, np.arange(P)], np.nan)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for pos in range(P):
            finite = np.isfinite(point[:, pos])
            if finite.sum() < 2:
                continue
            j = int(np.argmax(np.where(finite, point[:, pos], -1.0)))
            rows.append({"layer": layer, "level": level, "position": pos, "peak_N": lengths[j],
                         "peak_N_ci_low": float(np.nanquantile(peak_n[:, pos], 0.025)),
                         "peak_N_ci_high": float(np.nanquantile(peak_n[:, pos], 0.975)),
                         "peak_abs_css": float(point[j, pos]),
                         "peak_abs_css_ci_low": float(np.nanquantile(peak_v[:, pos], 0.025)),
                         "peak_abs_css_ci_high": float(np.nanquantile(peak_v[:, pos], 0.975)),
                         "n_lengths": int(finite.sum())})
    del L
    return pd.DataFrame(rows, columns=["layer", "level", "position", "peak_N", "peak_N_ci_low", "peak_N_ci_high",
                                       "peak_abs_css", "peak_abs_css_ci_low", "peak_abs_css_ci_high", "n_lengths"])


def bridge_masks(contexts: Contexts, graph, level: str = "level_1") -> np.ndarray:
    """(K, N_max): whether each context's word is a bridge (its level cluster differs from the previous word's),
    defined per context."""
    return np.array([graphs.is_bridge(graph, w, level) for w in contexts.walks])


def bridge_report(contexts: Contexts, graph) -> dict:
    """Bridges per context against the union over contexts (a position that is a bridge in any context)."""
    out = {}
    for lv in LEVELS:
        b = bridge_masks(contexts, graph, lv)[:, 1:]
        out[lv] = {"mean_fraction_per_context": float(b.mean()),
                   "union_fraction": float(b.any(0).mean()), "n_positions": int(b.shape[1])}
    return out


def _class_losses(loss: np.ndarray, bridge: np.ndarray, n: int) -> np.ndarray:
    """(K, 2): each context's mean loss over its own bridge and anchor positions 1..n−1."""
    loss, bridge = loss[:, 1:n], bridge[:, 1:n]
    out = np.full((loss.shape[0], 2), np.nan)
    for col, mask in enumerate((bridge, ~bridge)):
        m = mask & np.isfinite(loss)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, col] = np.where(m.sum(1) > 0, np.where(m, loss, 0).sum(1) / m.sum(1), np.nan)
    return out


def class_css_table(contexts: Contexts, graph, p):
    """Per (layer, Φ level, N, class): CSS of each context's mean loss over its own bridge (or anchor) positions
    against Φ of that level (bridges at the level of the Φ), with bootstrap CI and permutation p-value."""
    import pandas as pd

    rows = []
    for lv in LEVELS:
        bridge = bridge_masks(contexts, graph, lv)
        for layer in contexts.layers:
            for j, n in enumerate(contexts.lengths):
                s = css_summary(_class_losses(contexts.word_loss, bridge, n), contexts.phi[layer][lv][:, j],
                                stream(p.seed, "css_class", str(layer), lv, n), n_boot=p.n_boot, n_perm=p.n_perm)
                for i, cls in enumerate(CLASSES):
                    rows.append({"layer": layer, "level": lv, "N": n, "class": cls, "css": s["css"][i],
                                 "ci_low": s["ci_low"][i], "ci_high": s["ci_high"][i], "p_value": s["p_value"][i]})
    return pd.DataFrame(rows)


def cluster_pair_matrices(contexts: Contexts, graph, layer, p) -> dict:
    """Per N: M[c1, c2] = −Cov over contexts of (mean loss of the words of level-1 cluster c1 in the context,
    ||μ_c2 − μ̄||² of that context), with permutation p-values (``css_summary``). Returns {"css": (L, C, C),
    "p_value": (L, C, C), "ci_low", "ci_high"}."""
    top = graph.labelings["level_1"]
    C = int(top.max()) + 1
    L = len(contexts.lengths)
    out = {key: np.full((L, C, C), np.nan) for key in ("css", "p_value", "ci_low", "ci_high")}
    for j, n in enumerate(contexts.lengths):
        loss = contexts.word_loss[:, :n]
        clusters = top[contexts.walks[:, :n]]
        mean_loss = np.full((loss.shape[0], C), np.nan)
        for c in range(C):
            m = (clusters == c) & np.isfinite(loss)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_loss[:, c] = np.where(m.sum(1) > 0, np.where(m, loss, 0).sum(1) / m.sum(1), np.nan)
        for c2 in range(C):
            s = css_summary(mean_loss, contexts.spread[layer][:, j, c2], stream(p.seed, "pairs", str(layer), n, c2),
                            n_boot=p.n_boot, n_perm=p.n_perm)
            for key in out:
                out[key][j, :, c2] = s[key]
    return out


def cluster_mds(contexts: Contexts, graph, layer, seed: int) -> dict:
    """Joint 2-D MDS of the cluster means over N: level-2 cluster means averaged over contexts, level-1 means as
    their count-weighted average, each N's means centred on their (count-weighted) mean. Returns {"N": (L,),
    "level_1": (L, C1, 2), "level_2": (L, C2, 2), "sub_to_top": (C2,)}."""
    from sklearn.manifold import MDS

    sub, top = graph.labelings["level_2"], graph.labelings["level_1"]
    sub_to_top = np.array([top[np.flatnonzero(sub == c)[0]] for c in range(int(sub.max()) + 1)])
    means, counts = contexts.sub_means[layer], contexts.sub_counts[layer].astype(float)    # (K, L, C2, d)
    weights = np.where(np.isfinite(means).all(-1), counts, 0.0)
    total = weights.sum(0)                                                                  # (L, C2)
    with np.errstate(invalid="ignore", divide="ignore"):
        sub_mean = np.einsum("klc,klcd->lcd", weights, np.nan_to_num(means)) / total[..., None]
        C1 = int(top.max()) + 1
        top_w = np.stack([total[:, sub_to_top == c].sum(1) for c in range(C1)], 1)
        top_mean = np.stack([(sub_mean[:, sub_to_top == c] * total[:, sub_to_top == c, None]).sum(1)
                             for c in range(C1)], 1) / top_w[..., None]
        centre = (sub_mean * total[..., None]).sum(1) / total.sum(1)[:, None]
    sub_c, top_c = sub_mean - centre[:, None], top_mean - centre[:, None]
    L, C2, d = sub_c.shape
    points = np.concatenate([top_c.reshape(-1, d), sub_c.reshape(-1, d)])
    ok = np.isfinite(points).all(1)
    coords = np.full((points.shape[0], 2), np.nan)
    if ok.sum() >= 3:
        diff = points[ok][:, None] - points[ok][None]
        dist = np.sqrt((diff ** 2).sum(-1))
        mds = MDS(n_components=2, dissimilarity="precomputed", random_state=seed, n_init=4, normalized_stress="auto")
        coords[ok] = mds.fit_transform(dist)
    return {"N": np.asarray(contexts.lengths), "level_1": coords[: L * C1].reshape(L, C1, 2),
            "level_2": coords[L * C1:].reshape(L, C2, 2), "sub_to_top": sub_to_top}


# ---------------------------------------------------------------------------------------------------- Part B


@dataclass
class BifInputs:
    """The BIF contexts: walks (B, n), words, token encodings, bridge masks (B, n) at level 1."""

    walks: np.ndarray
    words: list
    encodings: list
    bridge: np.ndarray


def bif_inputs(model, graph, p) -> BifInputs:
    from iclnb.prompts import encode_walk

    walks = np.array([context_walk(graph, k, p)[: p.bif_context_length] for k in range(p.n_bif_contexts)])
    words = [graphs.walk_words(graph, w) for w in walks]
    encodings = [encode_walk(model.tokenizer, w, max_tokens=model.max_positions) for w in words]
    bridge = np.array([graphs.is_bridge(graph, w, "level_1") for w in walks])
    return BifInputs(walks, words, encodings, bridge)


def draw_observables(states, walks: np.ndarray, graph, layer: int) -> np.ndarray:
    """What each SGLD draw records of the BIF contexts' word states (:class:`iclnb.methods.bif.PromptsLoss`):
    every context's word losses, then Φ of each context at each level at ``layer`` (context-major)."""
    phi = []
    for state, nodes in zip(states, walks):
        keep = ~state.sink
        phi.append([cluster_separation(state.reps[layer][keep], graph.labelings[lv][nodes[keep]]) for lv in LEVELS])
    word_loss = np.concatenate([state.word_loss for state in states])
    return np.concatenate([word_loss, np.asarray(phi, dtype=float).ravel()])


def sample_bif(run, model, graph, inputs: BifInputs, p) -> dict:
    """Localised SGLD chains on the last ``moved_blocks`` blocks around the loaded weights (the blocks before them
    computed once), one checkpoint item per chain (``sgld``; a chain interrupted midway reruns from its start with
    the same noise stream). Returns {"loss": (C, steps), "distance": (C, steps), "word_loss": (C, draws, B, n),
    "phi": (C, draws, B, levels), "layer", "moved", "n_moved", "settings"}."""
    from iclnb.methods.bif import PromptsLoss, TailSampler, chain_generator
    from iclnb.models import MovingTail

    settings = sgld_settings(p)
    layer = bif_layer(model, p)
    tail = MovingTail(model, p.moved_blocks)
    loss = PromptsLoss(model, inputs.encodings, layer,
                       lambda states: draw_observables(states, inputs.walks, graph, layer))

    with TailSampler(model, tail, loss, settings) as sampler:
        def chains(batch):
            traces = [sampler.chain(chain_generator(stream(p.seed, "sgld", c), device=model.device),
                                    progress=lambda it, c=c: progress(it, desc=f"SGLD chain {c}")) for c in batch]
            return [{"loss": t.loss, "distance": t.distance, "observables": t.observables} for t in traces]

        items = resume_units(run, list(range(p.n_chains)), chains, checkpoint="sgld", every_s=0, desc="SGLD chains")
    B, n = inputs.walks.shape
    obs = np.stack([nan_array(item["observables"]) for item in items])                      # (C, D, B*n + B*lv)
    return {
        "loss": np.stack([nan_array(item["loss"]) for item in items]),
        "distance": np.stack([nan_array(item["distance"]) for item in items]),
        "word_loss": obs[:, :, : B * n].reshape(p.n_chains, -1, B, n),
        "phi": obs[:, :, B * n:].reshape(p.n_chains, -1, B, len(LEVELS)),
        "layer": layer,
        "moved": tail.parameter_names,
        "n_moved": tail.n_parameters,
        "settings": settings.as_config(),
    }


def sgld_config(draws: dict) -> dict:
    """What config.json records about the sampler."""
    return {**draws["settings"], "moved_parameters": draws["moved"], "n_moved_parameters": draws["n_moved"],
            "phi_layer": draws["layer"], "sampling_loss": "mean token loss of the BIF contexts"}


def sgld_diagnostics(draws: dict, p) -> dict:
    """Per chain: the sampling loss at w*, its mean over draws, the LLC estimate nβ (mean − L(w*)); and the LLC
    over chains with a bootstrap CI."""
    from iclnb.methods.bif import llc_estimate

    settings = sgld_settings(p)
    steps = settings.draw_steps()
    per_chain = []
    for c in range(draws["loss"].shape[0]):
        loss = draws["loss"][c]
        per_chain.append({"chain": c, "loss_at_w_star": float(loss[0]), "mean_draw_loss": float(loss[steps].mean()),
                          "llc": llc_estimate(loss[steps], loss[0], p.n_beta),
                          "final_distance": float(draws["distance"][c, -1])})
    llc = np.array([row["llc"] for row in per_chain])
    return {"per_chain": per_chain, "llc": mean_ci(llc, p.n_boot, stream(p.seed, "bootstrap", "llc"))}


def bif_tables(draws: dict, inputs: BifInputs, p) -> dict:
    """BIF from the stored loss traces (draws of all chains pooled).

    token_token: {"correlation", "covariance"}: (B, n, n) per context; token_phi: {"covariance": −Cov(ℓ_i, Φ),
    "correlation": −Corr(ℓ_i, Φ)}: (B, n) against level-1 Φ of the same context; per_chain_token_phi:
    (C, B, n) correlation mode per chain."""
    from iclnb.methods.bif import bif

    C, D, B, n = draws["word_loss"].shape
    pooled = draws["word_loss"].reshape(C * D, B, n)
    phi = draws["phi"].reshape(C * D, B, len(LEVELS))[..., 0]
    tt = {mode: np.stack([bif(pooled[:, b], mode=mode) for b in range(B)]) for mode in ("correlation", "covariance")}
    tp = {"covariance": np.stack([bif(pooled[:, b], phi[:, b])[:, 0] for b in range(B)]),
          "correlation": np.stack([-bif(pooled[:, b], phi[:, b], mode="correlation")[:, 0] for b in range(B)])}
    per_chain = np.stack([np.stack([-bif(draws["word_loss"][c, :, b], draws["phi"][c, :, b, 0],
                                         mode="correlation")[:, 0] for b in range(B)]) for c in range(C)])
    return {"token_token": tt, "token_phi": tp, "per_chain_token_phi": per_chain}


def bridge_anchor_bif(tables: dict, inputs: BifInputs, p) -> dict:
    """BIF(z, Φ) in correlation mode averaged over bridge (and over anchor) words of the BIF contexts, per chain;
    mean over chains with a bootstrap CI over chains (NaN CI with fewer than two finite chain means)."""
    per_chain = tables["per_chain_token_phi"]                                             # (C, B, n)
    out = {}
    positions = np.arange(per_chain.shape[-1])[None, :] > 0
    for cls, mask in (("bridge", inputs.bridge & positions), ("anchor", ~inputs.bridge & positions)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            values = np.array([np.nanmean(per_chain[c][mask]) if mask.any() else np.nan
                               for c in range(per_chain.shape[0])])
        out[cls] = {**mean_ci(values, p.n_boot, stream(p.seed, "bootstrap", "bif", cls)), "per_chain": values,
                    "n_words": int(mask.sum())}
    return out


def loo_influence(run, model, graph, inputs: BifInputs, layer: int, p) -> np.ndarray:
    """Leave-one-out influence of each word of the BIF contexts on Φ (level 1) at ``layer``: Φ(full) − Φ(without
    word i), every variant re-encoded and run in full (the deleted word leaves the geometry; the attention sink
    word is excluded in each variant). (B, n); checkpointed per context.

    (iclnb.methods.loo.LooEngine reuses the key/value cache, but its measures see per-node sums only and Φ needs
    the within-cluster spread, so the few short variants here are run directly.)"""
    from iclnb.represent import represent_walks

    labels = graph.labelings["level_1"]

    def influence(contexts):
        out = []
        for b in contexts:
            words, nodes = inputs.words[b], inputs.walks[b]
            variants = [list(words)] + [list(words[:i]) + list(words[i + 1:]) for i in range(len(words))]
            states = represent_walks(model, variants, [layer], batch_size=p.batch_size)
            phis = []
            for i, state in enumerate(states):
                kept_nodes = nodes if i == 0 else np.delete(nodes, i - 1)
                keep = ~state.sink
                phis.append(cluster_separation(state.reps[layer][keep], labels[kept_nodes[keep]]))
            out.append({"full": phis[0], "without": phis[1:]})
        return out

    items = resume_units(run, list(range(len(inputs.walks))), influence, checkpoint="loo", every_s=0,
                         desc="leave-one-out contexts")
    return np.array([[item["full"] - v for v in nan_array(item["without"])] for item in items])


def rank_correlations(tables: dict, loo: np.ndarray, css_traj: dict, contexts: Contexts, layer, p) -> dict:
    """Spearman correlation (with a bootstrap CI over the paired values) of BIF(z, Φ) (covariance mode) with
    leave-one-out influence on Φ (per context and word) and with CSS(z_p, Φ) at the BIF length (per position,
    BIF averaged over the BIF contexts)."""
    bif_tp = tables["token_phi"]["covariance"]                                              # (B, n)
    j = contexts.lengths.index(p.bif_context_length)
    css_p = css_traj[layer]["level_1"]["css"][j, : p.bif_context_length]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bif_mean = np.nanmean(bif_tp, axis=0)

    def spearman(x, y, what):
        return bootstrap_spearman(x, y, p.n_boot, stream(p.seed, "bootstrap", "spearman", what))

    return {"loo": spearman(bif_tp, loo, "loo"), "css": spearman(bif_mean, css_p, "css"),
            "loo_vs_css": spearman(np.nanmean(loo, axis=0), css_p, "loo_vs_css")}


# ---------------------------------------------------------------------------------------------------- results


def results_document(contexts: Contexts, graph, phi_tab, traj, flips, peaks, class_tab, pairs, mds, bridges,
                     inputs: BifInputs, draws, diagnostics, tables, bridge_anchor, loo, ranks, p) -> dict:
    """The ``results`` part of results.json."""
    layer = draws["layer"]
    per_layer = {}
    for lyr in contexts.layers:
        per_layer[layer_key(lyr)] = {
            "phi": phi_tab[phi_tab["layer"] == lyr].drop(columns="layer").to_dict(orient="records"),
            "css": {lv: {k: v for k, v in traj[lyr][lv].items()} for lv in LEVELS},
            "css_by_class": class_tab[class_tab["layer"] == lyr].drop(columns="layer").to_dict(orient="records"),
        }
    key = layer_key(layer)
    per_layer[key]["sign_flips"] = flips
    per_layer[key]["peaks"] = {lv: t.drop(columns=["layer", "level"]).to_dict(orient="records")
                               for lv, t in peaks.items()}
    per_layer[key]["cluster_pairs"] = pairs
    per_layer[key]["cluster_mds"] = mds
    flips_l1 = flips["level_1"]
    return {
        **per_layer,
        "layers": contexts.layers,
        "context_lengths": contexts.lengths,
        "graph": graph.to_dict(),
        "sign_flips": {"observed": flips_l1["observed"], "null_mean": flips_l1["null_mean"],
                       "p_value": flips_l1["p_value"], "layer": layer, "level": "level_1",
                       "n_perm": p.n_perm},
        "bridges": bridges,
        "bif": {
            "layer": layer,
            "context": 0,
            "words": inputs.words[0],
            "is_bridge": inputs.bridge[0],
            "correlation": tables["token_token"]["correlation"][0],
            "covariance": tables["token_token"]["covariance"][0],
            "token_token_all_contexts": tables["token_token"],
            "token_phi": tables["token_phi"],
            "bridge": {k: v for k, v in bridge_anchor["bridge"].items()},
            "anchor": {k: v for k, v in bridge_anchor["anchor"].items()},
            "loo": loo,
            "rank_correlation": ranks,
            "diagnostics": diagnostics,
            "sgld": sgld_config(draws),
        },
        "contexts": {"walks": contexts.walks, "word_loss": contexts.word_loss},
    }


def tidy_rows(r, n_boot: int, seed: int) -> list:
    """One row per summarised number (iclnb summarize / compare_experiments): Φ per (layer, level, N) beside its
    null; the sign-flip count beside its null mean; BIF at bridge / anchor words; the rank correlations; the LLC."""
    from iclnb.experiments.kit import row

    res = r.results
    nan = float("nan")
    out = []
    for layer in res.get("layers", []):
        for e in res.get(layer_key(layer), {}).get("phi", []):
            out.append(row("phi", layer, e["N"], e["phi"], e["phi_ci_low"], e["phi_ci_high"], e["level"],
                           (e["null"], e["null_ci_low"], e["null_ci_high"])))
    flips = res.get("sign_flips") or {}
    b = res.get("bif") or {}
    layer = b.get("layer")
    if flips:
        out.append(row("css_sign_flips", flips.get("layer"), None, flips["observed"], nan, nan, flips.get("level", ""),
                       (flips["null_mean"], nan, nan)))
    n_bif = (r.params or {}).get("bif_context_length")
    for cls in CLASSES:
        if cls in b:
            out.append(row(f"bif_phi_{cls}", layer, n_bif, b[cls]["mean"], b[cls]["ci_low"], b[cls]["ci_high"]))
    for what, e in (b.get("rank_correlation") or {}).items():
        out.append(row(f"bif_rank_correlation_{what}", layer, n_bif, e["rho"], e["ci_low"], e["ci_high"]))
    llc = (b.get("diagnostics") or {}).get("llc")
    if llc:
        out.append(row("llc", layer, n_bif, llc["mean"], llc["ci_low"], llc["ci_high"]))
    return out


def sign_flip_summary(flips: dict):
    import pandas as pd

    return pd.DataFrame([{"level": lv, "observed": f["observed"], "null_mean": f["null_mean"],
                          "null_sd": f["null_sd"], "p_value": f["p_value"], "positions": f["n_positions"]}
                         for lv, f in flips.items()])


def _finite_mean(x):
    x = np.asarray(x, dtype=float)
    return float(np.nanmean(x)) if np.isfinite(x).any() else math.nan


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {
    "bif_context_length": 5,
    "context_lengths": "5,8",
    "n_bif_contexts": 1,
    "n_boot": 20,
    "n_burnin": 0,
    "n_chains": 2,
    "n_contexts": 4,
    "n_draws": 3,
    "n_perm": 20,
}
