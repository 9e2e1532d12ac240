"""Steps the hierarchy experiments share: one longest walk per context measured at every context length (paired
prefix design), per-context metrics per level, and their summaries with CIs."""

from __future__ import annotations

import numpy as np

from iclnb import graphs
from iclnb.core.seeding import stream
from iclnb.metrics import css_summary, dirichlet_energy, node_losses, node_means
from iclnb.metrics.levels import css_extremes, phi_by_level, prefix_views
from iclnb.results.io import nan_array
from iclnb.stats import mean_ci

#: Label permutations per context, length, layer and level for Φ's node-shuffled null (their mean is the
#: context's null).
N_NULL = 20


def make_walks(graph, p) -> np.ndarray:
    """(K, N_max) node ids: context k's walk (:func:`iclnb.graphs.context_walk`, its own stream), the same for every
    model, in every run and on resume."""
    return np.stack([graphs.context_walk(graph, max(p.context_lengths), p.seed, k, bridge_penalty=p.bridge_penalty)
                     for k in range(p.n_contexts)])


def levels_of(graph) -> list[str]:
    """The graph's cluster levels, coarsest first (``level_1``, ``level_2``, ...)."""
    return sorted(graph.labelings, key=lambda name: int(name.split("_")[1]))


# ------------------------------------------------------------------------------------------ one context


def null_streams(seed: int, context: int, model_key: str = ""):
    """The generator factory of Φ's null for one context: one stream per (length, layer, level)."""
    return lambda n, layer, level: stream(seed, "phi_null", model_key, context, n, str(layer), level)


def measure_context(state, walk: np.ndarray, graph, lengths, layers, null_rng, sums_layer=None):
    """Every metric of one context at every prefix length and layer, from its one pass over the longest walk.

    Returns ``(metrics, sums)``: ``metrics[str(layer)][str(N)]`` = ``{"levels": {level: {"phi", "phi_null",
    "coherence"}}, "energy_norm", "energy_raw"}`` over the words of the first N (the sink word excluded); node means
    over all of a node's occurrences in the prefix. ``sums`` (only for ``sums_layer``): ``(node sums (L, n, d),
    counts (L, n))`` at that layer, for node means pooled over contexts.
    """
    keep = ~np.asarray(state.sink, dtype=bool)
    metrics, sums = {}, None
    for layer in layers:
        views = prefix_views(state.reps[layer], walk, keep, lengths)
        per_n = {}
        layer_sums, layer_counts = [], []
        for n, (x, ids) in views.items():
            levels = phi_by_level(x, ids, graph.labelings, n_null=N_NULL,
                                  rng=lambda level, n=n: null_rng(n, layer, level), with_coherence=True)
            means, counts = node_means(x, ids, graph.n)
            per_n[str(n)] = {
                "levels": levels,
                "energy_norm": dirichlet_energy(means, graph.adjacency, normalized=True),
                "energy_raw": dirichlet_energy(means, graph.adjacency, normalized=False),
            }
            if layer == sums_layer:
                layer_sums.append(np.where(counts[:, None] > 0, np.nan_to_num(means) * counts[:, None], 0.0))
                layer_counts.append(counts)
        metrics[str(layer)] = per_n
        if layer == sums_layer:
            sums = (np.stack(layer_sums), np.stack(layer_counts))
    return metrics, sums


# ------------------------------------------------------------------------------------------ contexts -> arrays


def metric_arrays(items: list, layers, lengths, levels) -> dict:
    """Stack the per-context metrics of ``items`` (checkpoint entries, in context order) into arrays of shape
    (K contexts, L lengths): ``out[layer]["phi"|"phi_null"|"coherence"][level]`` and ``out[layer]["energy_norm"|
    "energy_raw"]``."""
    out = {}
    for layer in layers:
        entry = {"phi": {}, "phi_null": {}, "coherence": {}}
        for key in ("phi", "phi_null", "coherence"):
            for level in levels:
                entry[key][level] = nan_array([[item["metrics"][str(layer)][str(n)]["levels"][level][key]
                                                for n in lengths] for item in items])
        for key in ("energy_norm", "energy_raw"):
            entry[key] = nan_array([[item["metrics"][str(layer)][str(n)][key] for n in lengths] for item in items])
        out[layer] = entry
    return out


def phi_entry(phi, null, n_boot: int, rng_for) -> dict:
    """Φ of one level at one length and layer: mean with CI, its null's mean with CI, and the paired excess
    Φ − null with CI and a one-sided t-test p-value (contexts are the unit)."""
    from scipy import stats as sps

    phi, null = np.asarray(phi, dtype=float), np.asarray(null, dtype=float)
    main, nul, excess = (mean_ci(phi, n_boot, rng_for("phi")), mean_ci(null, n_boot, rng_for("null")),
                         mean_ci(phi - null, n_boot, rng_for("excess")))
    d = (phi - null)[np.isfinite(phi - null)]
    p = float(sps.ttest_1samp(d, 0.0, alternative="greater").pvalue) if d.size >= 2 and np.ptp(d) > 0 else (
        float("nan") if d.size < 2 else float(d[0] <= 0))
    return {**main, "null_mean": nul["mean"], "null_ci_low": nul["ci_low"], "null_ci_high": nul["ci_high"],
            "excess_mean": excess["mean"], "excess_ci_low": excess["ci_low"], "excess_ci_high": excess["ci_high"],
            "p_value": p}


def css_entry(walks: np.ndarray, word_loss: np.ndarray, phi: np.ndarray, n: int, n_nodes: int, n_boot: int,
              n_perm: int, rng_for, by_position: bool = True) -> dict:
    """CSS of the word losses of the first ``n`` positions against each context's Φ at length ``n``: per position
    and per node (with CIs, p- and q-values) when ``by_position``, and max |CSS| / mean |CSS| over positions with
    CIs and their permutation null."""
    loss = word_loss[:, :n]
    out = {"extremes": css_extremes(loss, phi, rng_for("extremes"), n_boot=n_boot, n_perm=n_perm)}
    if by_position:
        out["by_position"] = css_summary(loss, phi, rng_for("position"), n_boot=n_boot, n_perm=n_perm)
        out["by_node"] = css_summary(node_losses(walks[:, :n], loss, n_nodes), phi, rng_for("node"),
                                     n_boot=n_boot, n_perm=n_perm)
    return out


def energy_chance(graph) -> float:
    """E_norm of node means with no relation to the graph: |edges| / C(n, 2)."""
    return float(len(graph.edges()) / (graph.n * (graph.n - 1) / 2))
