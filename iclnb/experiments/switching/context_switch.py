"""context_switch: how fast word representations reorganise when the walk moves to another graph on the same words.

A graph pair is a dual graph: one set of words, two clusterings H1 and H2, and an SBM graph on each (G1, G2). Each
context is n1 words of a walk on G1 followed by n2 words of a walk on G2 that continues from walk1's last word. walk1
is fixed per context, and one forward pass over walk1 + the longest walk2 serves every n2 (a causal model's states
of a prefix do not depend on what follows), so the n2 values form a paired design.

At each end point n1 + n2 the node means are taken over the last ``window`` words (the same window for every n2;
token-exact word positions). Node pairs fall in four classes: same cluster in H1 only ("g1"), in H2 only ("g2"), in
both ("shared") and in neither. The switch ratio is

    ratio = mean over g1 pairs of ||μ_a − μ_b|| / mean over g2 pairs of ||μ_a − μ_b||,

below 1 while the representation follows G1's clusters and above 1 once it follows G2's; shared pairs say nothing
about which graph is followed and are reported apart. Each ratio has a null (node identities permuted, which makes
both pair classes random pair sets), and the n2 at which the mean ratio crosses 1 is reported with a bootstrap
interval over contexts. See docs/methods.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key, parse_layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.kit import measure_contexts
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, OUTPUT_DIR, SEED, Float, Int, IntList,
                                      Layers, declare)
from iclnb.graphs.walks import hypothesis_adjacency
from iclnb.methods.loo import PairDistances
from iclnb.metrics import node_means_prefix
from iclnb.prompts import check_fits
from iclnb.results.io import nan_array

PARAMS = declare(
    MODEL,
    Int("n1", 1000, "words of the walk on G1 before the switch (walk1, fixed per context)", min=2),
    IntList("n2_values", "0,5,10,20,50,100,200,300,500,750,1000",
            "words of the walk on G2 after the switch; one pass over walk1 + the longest walk2 serves every value",
            min=0),
    Int("n_contexts", 10, "contexts (walk pairs) per graph pair; the bootstrap unit", min=2, max=MAX_CONTEXTS),
    Int("n_graph_pairs", 5, "graph pairs (G1, G2), each drawn from its own graph seed", min=1, max=10_000),
    Layers(),
    Int("window", 50, "node means over the last `window` words before each end point, the same for every n2",
        min=1, max="n1 - 1"),
    Int("n_words", 15, "words (nodes) of each graph pair", min=4, max=10_000),
    Int("n_clusters", 3, "clusters of each clustering (H1: contiguous blocks, H2: a random balanced relabelling)",
        min=2, max="n_words"),
    Float("p_intra", 0.8, "edge probability inside a cluster (G1 on H1, G2 on H2)", min=0.0, max=1.0),
    Float("p_inter", 0.15, "edge probability between clusters", min=0.0, max=1.0),
    Float("max_agreement", 0.8, "H2 is redrawn while its co-membership agreement with H1 exceeds this", min=0.0,
          max=1.0),
    N_BOOT,
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

#: Per-context measurements at every end point; see :func:`switch_measures`.
METRICS = ("ratio", "ratio_null", "d_g1", "d_g2", "d_shared", "d_neither", "g1_vs_neither", "g2_vs_neither",
           "shared_vs_neither")
#: Node pair classes: same cluster under H1 only, H2 only, both, neither.
PAIR_CLASSES = ("g1", "g2", "shared", "neither")
#: Node permutations per context for the ratio's null (their mean is the context's ``ratio_null``).
N_NULL = 20

DEFINITIONS = {
    "ratio": "mean node-mean distance over g1 pairs / over g2 pairs in the window (< 1: G1's clusters, > 1: G2's)",
    "ratio_null": f"the ratio with node identities permuted (mean over {N_NULL} permutations per context)",
    "d_g1": "mean Euclidean distance between node means over pairs in one H1 cluster but different H2 clusters",
    "d_g2": "the same over pairs in one H2 cluster but different H1 clusters",
    "d_shared": "the same over pairs in one cluster under both H1 and H2 (uninformative about the switch)",
    "d_neither": "the same over pairs in different clusters under both",
    "g1_vs_neither": "d_g1 / d_neither per context (< 1: G1's same-cluster pairs closer than unrelated pairs)",
    "g2_vs_neither": "d_g2 / d_neither per context",
    "shared_vs_neither": "d_shared / d_neither per context",
    "crossing": "the n2 at which the mean ratio first reaches 1 (linear between measured n2), from below; CI: "
                "percentile bootstrap over contexts (stratified by graph pair when pooled); null unless the ratio's "
                "CI at the first n2 lies below 1 (n2_point keeps the raw value); ci_high null where more than 2.5% "
                "of resamples never reach 1",
    "n2_above": "the first n2 whose ratio CI lies entirely above 1",
    "window": "node means over the last `window` word positions before n1 + n2 (the sink word never inside)",
}


# ------------------------------------------------------------------------------------------------ graphs and walks


def make_graph_pair(p, index: int):
    """Graph pair ``index``: a dual graph drawn from its own stream (so adding pairs never changes earlier ones)."""
    return graphs.dual(p.n_words, p.n_clusters, rng=stream(p.seed, "graph", index), p_intra=p.p_intra,
                       p_inter=p.p_inter, max_agreement=p.max_agreement)


def pair_classes(graph) -> dict:
    """Node pairs i < j of a dual graph by class: ``g1`` (same H1 cluster, different H2 clusters), ``g2`` (the
    reverse), ``shared`` (same under both), ``neither``; each an (m, 2) int array."""
    h1, h2 = np.asarray(graph.labelings["H1"]), np.asarray(graph.labelings["H2"])
    i, j = np.triu_indices(len(h1), k=1)
    s1, s2 = h1[i] == h1[j], h2[i] == h2[j]
    pairs = np.stack([i, j], axis=1).astype(np.int64)
    masks = {"g1": s1 & ~s2, "g2": ~s1 & s2, "shared": s1 & s2, "neither": ~s1 & ~s2}
    return {name: pairs[masks[name]] for name in PAIR_CLASSES}


def check_graph_pair(graph, index: int) -> None:
    """Refuse a graph pair on which the switch cannot be seen: no pair that is same-cluster under one clustering
    only."""
    classes = pair_classes(graph)
    if len(classes["g1"]) == 0 or len(classes["g2"]) == 0:
        raise IclnbError(
            f"graph pair {index}: H1 and H2 put the same words together (co-membership agreement "
            f"{graph.extra['agreement']:.2f}), so a switch from G1 to G2 cannot be seen; use max_agreement below 1 "
            f"and n_clusters between 2 and n_words - 1")


def second_graph(graph):
    """G2 of a graph pair as a graph of its own (G2's edges, the same words and labelings), e.g. for drawing."""
    return type(graph)(name="dual G2", adjacency=hypothesis_adjacency(graph, "H2"), words=graph.words,
                       labelings=dict(graph.labelings))


def graph_pairs_table(p):
    """One row per graph pair: its co-membership agreement between H1 and H2 and the number of node pairs in each
    class (H1-only, H2-only, shared and unrelated same-cluster pairs)."""
    import pandas as pd

    rows = []
    for g in range(p.n_graph_pairs):
        graph = make_graph_pair(p, g)
        rows.append({"graph_pair": g, "agreement": graph.extra["agreement"],
                     **{f"pairs_{name}": len(v) for name, v in pair_classes(graph).items()},
                     "G1_edges": int(graph.adjacency.sum() // 2),
                     "G2_edges": int(hypothesis_adjacency(graph, "H2").sum() // 2)})
    return pd.DataFrame(rows)


def context_walks(graph, n1: int, n2_max: int, seed: int, pair: int, context: int) -> tuple[np.ndarray, np.ndarray]:
    """walk1 (n1 nodes on G1) and walk2 (n2_max nodes on G2, continuing from walk1's last node, so the step across
    the switch is a G2 edge). Each walk has its own stream per (pair, context): walk1 does not depend on n2_max,
    and the walk2 of a smaller n2_max is a prefix of this one."""
    walk1 = graphs.random_walk(graph, n1, stream(seed, "walk1", pair, context))
    walk2 = graphs.random_walk(graph, n2_max + 1, stream(seed, "walk2", pair, context), start=int(walk1[-1]),
                               adjacency=hypothesis_adjacency(graph, "H2"))[1:]
    return walk1, walk2


def null_permutations(n_nodes: int, seed: int, pair: int, context: int) -> np.ndarray:
    """(N_NULL, n_nodes) node permutations of one context's null (shared by its layers and end points)."""
    rng = stream(seed, "ratio_null", pair, context)
    return np.stack([rng.permutation(n_nodes) for _ in range(N_NULL)])


def check(p, model) -> None:
    """Refuse, before any work, a context that cannot fit the model and a graph pair whose clusterings agree (the
    declaration keeps the window inside walk1, so that every n2 gets the same window and the first word, the
    attention sink, is never in it)."""
    words = []
    for g in range(p.n_graph_pairs):
        graph = make_graph_pair(p, g)
        check_graph_pair(graph, g)
        words += graph.words
    check_fits(model, words, p.n1 + max(p.n2_values), what="n1 + the largest n2")
    model.resolve_layers(p.layers)


# ------------------------------------------------------------------------------------------------ measurement


def switch_measures(reps, nodes, n_nodes: int, classes: dict, ends, window: int,
                    perms: np.ndarray | None = None) -> dict:
    """Pair-class distances of the node means over the last ``window`` words before each end point.

    reps: (T, d) word vectors of one pass; nodes: (T,) node of each word (ids below n_nodes); ends: end points (context lengths in
    words); perms: (P, n_nodes) node permutations for ``ratio_null`` (NaN without them). Returns metric -> (E,)
    float64 arrays for every name in :data:`METRICS`.
    """
    means, counts = node_means_prefix(reps, nodes, n_nodes, ends, window)
    sums = torch.from_numpy(np.where(counts[..., None] > 0, np.nan_to_num(means) * counts[..., None], 0.0))
    counts_t = torch.from_numpy(counts.astype(np.float64))
    switch = PairDistances(classes["g1"], classes["g2"])(sums, counts_t).numpy()  # (E, 4): cross, within, ratio
    other = PairDistances(classes["shared"], classes["neither"])(sums, counts_t).numpy()
    out = {"d_g1": switch[:, 0], "d_g2": switch[:, 1], "ratio": switch[:, 2], "d_shared": other[:, 0],
           "d_neither": other[:, 1]}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name in ("g1", "g2", "shared"):
            out[f"{name}_vs_neither"] = np.where(out["d_neither"] > 0, out[f"d_{name}"] / out["d_neither"], np.nan)
    if perms is None or len(perms) == 0:
        out["ratio_null"] = np.full(len(out["ratio"]), np.nan)
    else:
        index = torch.from_numpy(np.asarray(perms, dtype=np.int64))
        permuted = PairDistances(classes["g1"], classes["g2"])(sums[:, index].transpose(0, 1),
                                                               counts_t[:, index].transpose(0, 1))
        out["ratio_null"] = _nanmean(permuted[..., 2].numpy(), axis=0)
    return {name: np.asarray(out[name], dtype=np.float64) for name in METRICS}


def ends_of(p) -> np.ndarray:
    """The end points n1 + n2 (in words) of every n2 value."""
    return p.n1 + np.asarray(p.n2_values, dtype=np.int64)


def context_walk(graph, p, pair: int, context: int) -> np.ndarray:
    """The nodes of one context's single pass: walk1 followed by the longest walk2."""
    return np.concatenate(context_walks(graph, p.n1, max(p.n2_values), p.seed, pair, context))


def measure_context(state, walk, graph, p, pair: int, context: int, layers) -> dict:
    """One context from its pass over walk1 + the longest walk2 (``state``, the
    :class:`~iclnb.represent.WordStates` of ``walk``): :func:`switch_measures` at every end point for every layer.
    Returns ``{"metrics": {layer: {metric: [per n2]}}, "tokens": [per n2]}``."""
    ends = ends_of(p)
    if state.sink[ends.min() - p.window:].any():
        raise IclnbError("internal: the attention-sink word fell inside a window")  # excluded by check()
    classes = pair_classes(graph)
    perms = null_permutations(graph.n, p.seed, pair, context)
    metrics = {str(layer): switch_measures(state.reps[layer], walk, graph.n, classes, ends, p.window, perms)
               for layer in layers}
    return {"metrics": metrics, "tokens": state.encoding.spans[ends - 1, 1]}


@dataclass
class Collected:
    """Every context's measurements: values[layer][metric] is (n_graph_pairs, n_contexts, n_n2); tokens
    (n_graph_pairs, n_contexts, n_n2) is the prompt length in tokens (BOS included) at each end point."""

    layers: list
    n2_values: list
    values: dict
    tokens: np.ndarray
    graphs: list

    @classmethod
    def from_items(cls, items: list, p, layers, graph_list) -> "Collected":
        """From the per-context items of every graph pair, ``items[g][c]``."""
        values = {layer: {name: nan_array([[item["metrics"][str(layer)][name] for item in row] for row in items])
                          for name in METRICS}
                  for layer in layers}
        tokens = np.array([[item["tokens"] for item in row] for row in items], dtype=np.int64)
        return cls(list(layers), list(p.n2_values), values, tokens, graph_list)


def collect(run, model, p) -> Collected:
    """Measure every context of every graph pair, checkpointed per context (one pass each), so an interrupted run
    resumes where it stopped with identical results."""
    layers = model.resolve_layers(p.layers)
    graph_list = [make_graph_pair(p, g) for g in range(p.n_graph_pairs)]
    for g, graph in enumerate(graph_list):
        check_graph_pair(graph, g)

    def prompt(unit):  # the unit's graph pair and the nodes of its pass
        graph = graph_list[unit[0]]
        return graph, context_walk(graph, p, *unit)

    def measure(unit, prompt, state):
        graph, walk = prompt
        return measure_context(state, walk, graph, p, *unit, layers)

    units = [(g, c) for g in range(p.n_graph_pairs) for c in range(p.n_contexts)]
    items = measure_contexts(run, model, units, prompt, measure, layers=layers, batch_size=1,
                             words=lambda prompt: graphs.walk_words(*prompt), every_s=0,
                             desc="contexts (one pass each)")
    by_pair = [items[g * p.n_contexts : (g + 1) * p.n_contexts] for g in range(p.n_graph_pairs)]
    return Collected.from_items(by_pair, p, layers, graph_list)


# ------------------------------------------------------------------------------------------------ statistics


def resampled_means(values: np.ndarray, n_boot: int, rngs) -> np.ndarray:
    """Bootstrap means over contexts, stratified by graph pair: values (G, C, E) -> (n_boot, E).

    In each resample, every graph pair's C contexts are drawn with replacement from its own (generator ``rngs[g]``)
    and the mean is taken over all G x C drawn contexts, ignoring NaN.
    """
    values = np.asarray(values, dtype=np.float64)
    g_count, c_count, _ = values.shape
    drawn = np.concatenate([values[g][rngs[g].integers(0, c_count, size=(n_boot, c_count))]
                            for g in range(g_count)], axis=1)  # (n_boot, G*C, E)
    return _nanmean(drawn, axis=1)


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; NaN (without a warning) where a column holds none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def crossing(curve, n2_values) -> float:
    """The n2 at which ``curve`` first reaches 1 from below, linear between measured points.

    NaN when the curve starts at or above 1 (or is NaN there: nothing to switch from); inf when it stays below 1 up
    to the largest n2. NaN points are skipped.
    """
    y = np.asarray(curve, dtype=np.float64)
    x = np.asarray(n2_values, dtype=np.float64)
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    if y.size == 0 or y[0] >= 1:
        return float("nan")
    above = np.flatnonzero(y >= 1)
    if above.size == 0:
        return float("inf")
    i = int(above[0])
    return float(x[i - 1] + (1.0 - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))


def crossing_summary(values: np.ndarray, n2_values, resamples: np.ndarray, low: np.ndarray,
                     high: np.ndarray) -> dict:
    """The crossing of the mean ratio curve with its bootstrap interval.

    values: (G, C, E) per-context ratios; resamples: (n_boot, E) resampled mean curves; low, high: (E,) the ratio's
    CI. ``n2_point`` is :func:`crossing` of the mean curve; ``n2`` (with ``ci_low``/``ci_high``) repeats it only
    where there is a switch to time: the ratio's CI at the first n2 lies below 1 (``starts_below``) and the mean
    curve reaches 1 (else ``beyond_largest_n2``). Resamples that start at or above 1 count as crossing at the first
    n2, those that never reach 1 as crossing beyond the largest n2 (then ``ci_high`` is null);
    ``resamples_crossing`` is the share that reach 1. ``n2_above`` is the first n2 whose ratio CI lies above 1.
    """
    curve = _nanmean(values.reshape(-1, values.shape[-1]), axis=0)
    estimate = crossing(curve, n2_values)
    boots = np.array([crossing(r, n2_values) for r in resamples])
    boots = np.where(np.isnan(boots), float(n2_values[0]), boots)
    lo = float(np.quantile(boots, 0.025, method="lower"))
    hi = float(np.quantile(boots, 0.975, method="higher"))
    starts_below = bool(np.isfinite(high[0]) and high[0] < 1)
    timed = starts_below and bool(np.isfinite(estimate))
    above = [n for n, v in zip(n2_values, low) if np.isfinite(v) and v > 1]
    return {
        "n2": estimate if timed else None,
        "ci_low": lo if timed else None,
        "ci_high": hi if timed and np.isfinite(hi) else None,
        "n2_point": estimate if np.isfinite(estimate) else None,
        "starts_below": starts_below,
        "beyond_largest_n2": bool(estimate == np.inf),
        "resamples_crossing": float(np.mean(np.isfinite(boots))),
        "n2_above": above[0] if above else None,
    }


def _cell(resamples: np.ndarray, estimate: np.ndarray, e: int) -> dict:
    column = resamples[:, e]
    column = column[np.isfinite(column)]
    if column.size < 2 or not np.isfinite(estimate[e]):
        return {"mean": float(estimate[e]), "ci_low": float("nan"), "ci_high": float("nan")}
    low, high = np.percentile(column, [2.5, 97.5])
    return {"mean": float(estimate[e]), "ci_low": float(low), "ci_high": float(high)}


def _summaries(collected: Collected, pairs: list[int], n_boot: int, seed: int, label: str) -> dict:
    """``n2_<n>`` -> ``layer_<k>`` -> the ratio (mean, ci_low, ci_high, per_context) and every other metric's mean
    with its CI, plus ``crossing`` -> ``layer_<k>``, over the contexts of the given graph pairs."""
    out = {f"n2_{n}": {} for n in collected.n2_values}
    out["crossing"] = {}
    for layer in collected.layers:
        key = layer_key(layer)
        stats = {}
        for name in METRICS:
            v = collected.values[layer][name][pairs]  # (G, C, E)
            rngs = [stream(seed, "bootstrap", label, key, name, g) for g in pairs]
            resamples = resampled_means(v, n_boot, rngs)
            estimate = _nanmean(v.reshape(-1, v.shape[-1]), axis=0)
            stats[name] = (v, resamples, estimate)
        v, resamples, estimate = stats["ratio"]
        cells = [_cell(resamples, estimate, e) for e in range(len(collected.n2_values))]
        for e, n in enumerate(collected.n2_values):
            entry = {**cells[e], "per_context": v[..., e].reshape(-1)}
            for name in METRICS[1:]:
                entry[name] = _cell(stats[name][1], stats[name][2], e)
            out[f"n2_{n}"][key] = entry
        out["crossing"][key] = crossing_summary(v, collected.n2_values, resamples,
                                                np.array([c["ci_low"] for c in cells]),
                                                np.array([c["ci_high"] for c in cells]))
    return out


def switch_tables(collected: Collected, p) -> dict:
    """Per graph pair (``graph_pair_<g>``) and pooled over pairs (``pooled``): the ratio and the other pair-class
    metrics at every n2 and layer with 95% bootstrap CIs over contexts, and the crossing n2 per layer."""
    tables = {}
    for g in range(len(collected.graphs)):
        tables[f"graph_pair_{g}"] = _summaries(collected, [g], p.n_boot, p.seed, f"graph_pair_{g}")
    tables["pooled"] = _summaries(collected, list(range(len(collected.graphs))), p.n_boot, p.seed, "pooled")
    return tables


def summary_table(tables: dict, n2_values):
    """One row per (graph pair or pooled, layer): the ratio at the first and the last n2 with CIs, the crossing n2
    with its CI, and the first n2 whose ratio CI lies above 1."""
    import pandas as pd

    rows = []
    first, last = f"n2_{n2_values[0]}", f"n2_{n2_values[-1]}"
    for name, table in tables.items():
        for key, cross in table["crossing"].items():
            a, b = table[first][key], table[last][key]
            rows.append({
                "graph_pair": name.removeprefix("graph_pair_"), "layer": parse_layer_key(key),
                f"ratio@{first}": a["mean"], "ci_low@first": a["ci_low"], "ci_high@first": a["ci_high"],
                f"ratio@{last}": b["mean"], "ci_low@last": b["ci_low"], "ci_high@last": b["ci_high"],
                "crossing_n2": cross["n2"], "crossing_ci_low": cross["ci_low"], "crossing_ci_high": cross["ci_high"],
                "n2_above": cross["n2_above"],
            })
    return pd.DataFrame(rows)


def results_document(collected: Collected, tables: dict, p, model) -> dict:
    """The ``results`` part of results.json: the tables plus each graph pair's description, the token lengths and
    what is needed to recompute everything."""
    from iclnb.prompts import tokenization_report

    doc = {}
    for g, graph in enumerate(collected.graphs):
        classes = pair_classes(graph)
        doc[f"graph_pair_{g}"] = {
            **tables[f"graph_pair_{g}"],
            "graph": {**graph.to_dict(), "G2_edges": np.argwhere(np.triu(hypothesis_adjacency(graph, "H2"), 1)),
                      "agreement": graph.extra["agreement"]},
            "pairs": {name: classes[name] for name in PAIR_CLASSES},
            "tokens_per_word": tokenization_report(model.tokenizer, graph.words),
        }
    doc["pooled"] = tables["pooled"]
    doc.update({
        "layers": collected.layers,
        "n1": p.n1,
        "n2_values": collected.n2_values,
        "window": p.window,
        "tokens_at_end": {f"n2_{n}": float(collected.tokens[..., e].mean())
                          for e, n in enumerate(collected.n2_values)},
        "definitions": DEFINITIONS,
    })
    return doc


def raw_arrays(collected: Collected) -> dict:
    """Per-context arrays for raw_data: ``<metric>_layer_<k>`` (G, C, n_n2) and ``tokens`` (G, C, n_n2)."""
    arrays = {"n2_values": np.asarray(collected.n2_values), "tokens": collected.tokens}
    for layer in collected.layers:
        for name in METRICS:
            arrays[f"{name}_{layer_key(layer)}"] = collected.values[layer][name]
    return arrays


def tidy_rows(r, n_boot, seed) -> list[dict]:
    """Rows for ``iclnb summarize`` / compare_experiments: per (graph pair or pooled, n2, layer) the ratio with its
    node-permuted null and the normalised pair-class distances; per (graph pair or pooled, layer) the crossing n2.
    N is the context length in words, n1 + n2; condition names the graph pair."""
    from iclnb.experiments.kit import row

    res = r.results
    n1 = res.get("n1") or r.params.get("n1") or 0
    rows = []
    for condition, table in res.items():
        if not (isinstance(table, dict) and (condition == "pooled" or condition.startswith("graph_pair_"))):
            continue
        for n_key, entry in table.items():
            if not n_key.startswith("n2_"):
                continue
            n_words = n1 + int(n_key[3:])
            for key, cell in entry.items():
                layer = parse_layer_key(key)
                null = cell.get("ratio_null") or {}
                rows.append(row("switch_ratio", layer, n_words, cell.get("mean"), cell.get("ci_low"),
                                cell.get("ci_high"), condition,
                                (null.get("mean"), null.get("ci_low"), null.get("ci_high"))))
                for name in ("g1_vs_neither", "g2_vs_neither", "shared_vs_neither"):
                    s = cell.get(name) or {}
                    rows.append(row(name, layer, n_words, s.get("mean"), s.get("ci_low"), s.get("ci_high"),
                                    condition))
        for key, cross in (table.get("crossing") or {}).items():
            layer = parse_layer_key(key)
            rows.append(row("crossing_n2", layer, float("nan"), cross.get("n2"), cross.get("ci_low"),
                            cross.get("ci_high"), condition))
    return rows


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {
    "layers": "0,-1",
    "n1": 30,
    "n2_values": "0,10,20",
    "n_boot": 50,
    "n_contexts": 2,
    "n_graph_pairs": 1,
    "window": 10,
}
