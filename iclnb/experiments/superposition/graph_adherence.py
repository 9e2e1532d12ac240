"""graph_adherence: which of two graphs a long context's representations follow, window by window.

The dual graph and walks of superposition_collapse, over a longer context: ambiguous (edges common to G1 and G2) up
to step D, one step valid only under the true hypothesis, then that hypothesis's graph; D at 0, 10, 25, 50, 75, 90 %
of the context or never (the control). Contexts alternate the true hypothesis; context k of every condition shares
its walk up to that condition's D.

For every trailing window of ``window`` word positions (ends every ``stride`` words) and layer, four measures, each a
ratio oriented so that above 0.5 means H1 (:mod:`iclnb.metrics.superposition`):

* energy ratio e_G2 / (e_G1 + e_G2), e_G the mean squared distance between node means over the edges only G has;
* separation ratio S_H1 / (S_H1 + S_H2), S the between/within ratio of node means under each clustering;
* probe ratio a_H1 / (a_H1 + a_H2), a the held-out accuracy of a ridge linear probe for each clustering with folds of
  nodes (no node in both train and test; chance 1 / n_clusters);
* kNN ratio k_H1 / (k_H1 + k_H2), k the share of each node's ``knn_k`` nearest nodes in its own cluster.

Summaries orient each context to its true hypothesis (value, or 1 − value when the truth is H2), with bootstrap CIs
over contexts; the windows after D are compared with the same windows of the never-revealed control (paired by
context).
"""

from __future__ import annotations

import warnings

import numpy as np

from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key, parse_layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, N_PERM, OUTPUT_DIR, SEED, Float, Int,
                                      IntList, Layers, declare)
from iclnb.experiments.superposition import dual
from iclnb.experiments.superposition.dual import NEVER, conditions, disambiguate_at, true_hypothesis
from iclnb.metrics.structure import node_means_prefix
from iclnb.metrics.superposition import (edge_energy_ratio, grouped_probe_accuracy, knn_consistency, node_folds,
                                         oriented_ratio, separation_ratio)
from iclnb.results.io import nan_array
from iclnb.stats import mean_ci, paired_difference

PARAMS = declare(
    MODEL,
    Int("n_contexts", 20, "contexts per condition (the true hypothesis alternates: H1, H2, H1, ...)", min=2,
        max=MAX_CONTEXTS),
    Int("context_length", 400, "words per context (N)", min=8),
    IntList("disambiguation_percent", "0,10,25,50,75,90", "the disambiguating step D of each condition, in percent "
            "of context_length (0: from the first step); a control that is never disambiguated is always added",
            min=0, max=99),
    Layers(),
    Int("window", 50, "word positions per window", min=4),
    Int("stride", 25, "word positions between the ends of consecutive windows", min=1),
    Int("knn_k", 4, "nearest nodes per node for the kNN consistency", min=1),
    Int("probe_folds", 5, "folds of nodes for the linear probe (a node is never in train and test)", min=2),
    Float("probe_ridge", 1.0, "ridge penalty of the probe, relative to the mean squared norm of its training rows",
          min=1e-6, max=1e6),
    *dual.GRAPH_PARAMS,
    N_BOOT,
    N_PERM,
    Int("batch_size", 4, "contexts per forward pass (results do not depend on it)", min=1, max=4096),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

#: The four measures and their combination, each a ratio with > 0.5 meaning H1.
METRICS = ("energy_ratio", "separation_ratio", "probe_ratio", "knn_ratio")
SUMMARY_METRICS = (*METRICS, "mean")
#: The H1 and H2 parts of each measure, as stored per window.
PARTS = {"energy_ratio": ("energy_g1", "energy_g2"), "separation_ratio": ("separation_h1", "separation_h2"),
         "probe_ratio": ("probe_h1", "probe_h2"), "knn_ratio": ("knn_h1", "knn_h2")}

make_graph = dual.make_graph


def window_ends(context_length: int, window: int, stride: int) -> list[int]:
    """Ends (exclusive word positions) of the windows: window, window + stride, ..., and context_length."""
    ends = list(range(window, context_length + 1, stride))
    if ends[-1] != context_length:
        ends.append(context_length)
    return ends


def check(p, model) -> None:
    """Refuse, before any work: a window longer than the context, more probe folds than words, a kNN with no
    neighbours to look at, a dual graph whose clusterings agree, a context the model cannot read."""
    n = p.n_clusters * p.cluster_size
    if p.window > p.context_length:
        raise IclnbError(f"window {p.window} is longer than context_length {p.context_length}; use a window of at "
                         f"most {p.context_length} words")
    if p.probe_folds > n:
        raise IclnbError(f"probe_folds {p.probe_folds} exceeds the {n} words of the graph; use at most {n}")
    if p.knn_k >= n:
        raise IclnbError(f"knn_k {p.knn_k} leaves no node outside the neighbours among {n} words; use at most {n - 1}")
    dual.check_fit(p, model, make_graph(p))


def window_measures(x, walk, valid, graph, ends, window: int, knn_k: int, folds, ridge: float) -> dict:
    """The H1 and H2 parts of the four measures in every window ending at ``ends`` (one layer of one context):
    ``{part: [value per window]}`` (see :data:`PARTS`)."""
    walk = np.asarray(walk)
    n = graph.n
    h1, h2 = graph.labelings["H1"], graph.labelings["H2"]
    g1, g2 = graph.adjacency, graph.extra["G2_adjacency"]
    ids = np.where(valid, walk, n)
    means_all, _ = node_means_prefix(x, ids, n + 1, ends, window)
    out = {part: [] for pair in PARTS.values() for part in pair}
    for e, means in zip(ends, means_all[:, :n]):
        energy = edge_energy_ratio(means, g1, g2)
        sep = separation_ratio(means, h1, h2)
        rows = np.arange(max(0, e - window), e)
        rows = rows[valid[rows]]
        probe = grouped_probe_accuracy(x[rows], [h1, h2], walk[rows], folds, ridge)
        values = {"energy_g1": energy["a"], "energy_g2": energy["b"], "separation_h1": sep["a"],
                  "separation_h2": sep["b"], "probe_h1": probe[0], "probe_h2": probe[1],
                  "knn_h1": knn_consistency(means, h1, knn_k), "knn_h2": knn_consistency(means, h2, knn_k)}
        for part, value in values.items():
            out[part].append(value)
    return out


def context_measures(state, walk, graph, layers, p, index: int) -> dict:
    """Every layer's window measures of one context; the probe's folds depend on the context index only, so
    context k is cut the same way in every condition."""
    valid = ~np.asarray(state.sink, dtype=bool)
    ends = window_ends(p.context_length, p.window, p.stride)
    folds = node_folds(graph.n, p.probe_folds, stream(p.seed, "probe_folds", index))
    return {"layers": {str(layer): window_measures(state.reps[layer], walk, valid, graph, ends, p.window, p.knn_k,
                                                   folds, p.probe_ridge)
                       for layer in layers}}


def collect_contexts(run, model, graph, p) -> dict:
    """Every (condition, context) once, checkpointed: ``{condition: [item, ...]}``."""
    layers = model.resolve_layers(p.layers)
    return dual.collect(run, model, graph, p, layers,
                        lambda unit, walk, state: context_measures(state, walk, graph, layers, p, unit[1]))


def ratios(items: list, layer) -> dict:
    """(K, n_windows) arrays of each measure oriented to H1, and their mean (``mean``), for one condition."""
    per = [item["layers"][str(layer)] for item in items]
    out = {}
    for metric, (a, b) in PARTS.items():
        pa, pb = nan_array([q[a] for q in per]), nan_array([q[b] for q in per])
        if metric == "energy_ratio":  # a shorter G1 edge means H1: the ratio puts G2's energy on top
            pa, pb = pb, pa
        out[metric] = np.vectorize(oriented_ratio)(pa, pb)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out["mean"] = np.nanmean(np.stack([out[m] for m in METRICS]), axis=0)
    return out


def _windows_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per context, the mean over the windows in ``mask`` (NaN when none is defined)."""
    if not mask.any():
        return np.full(values.shape[0], np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values[:, mask], axis=1)


def summarise(data: dict, p, layers) -> dict:
    """``condition_<c>`` -> ``layer_<k>`` -> ``metrics`` -> each measure: per window, the mean and CI toward the
    true hypothesis (``toward_truth``) and oriented to H1 for the contexts whose truth is H1 (``H1_true``) and H2
    (``H2_true``); ``before`` and ``after`` D (per-context means over the windows entirely before D / with at least half
    their positions from D on; for the control, split at the middle of the context) and ``after_vs_never`` (paired difference from the control's same
    windows, with a sign-flip p-value); and the probe's raw accuracies toward the truth (chance 1 / n_clusters)."""
    truth = np.array([true_hypothesis(k) for k in range(p.n_contexts)])
    is_h1 = truth == "H1"
    ends = np.array(window_ends(p.context_length, p.window, p.stride))
    out = {}
    for layer in layers:
        never = {m: np.where(is_h1[:, None], v, 1 - v) for m, v in ratios(data[NEVER], layer).items()}
        for c in conditions(p):
            d = disambiguate_at(c, p.context_length)
            split = p.context_length // 2 if d is None else d
            before, after = ends <= split, ends - split >= p.window / 2
            r = ratios(data[c], layer)
            rng = lambda *what: stream(p.seed, "summary", c, str(layer), *what)  # noqa: E731
            entry = {"disambiguate_at": d, "window_ends": ends, "metrics": {}}
            for metric in SUMMARY_METRICS:
                toward = np.where(is_h1[:, None], r[metric], 1 - r[metric])
                m = {}
                for name, values in (("toward_truth", toward), ("H1_true", r[metric][is_h1]),
                                     ("H2_true", r[metric][~is_h1])):
                    m[name] = mean_ci(values, p.n_boot, rng(metric, name))
                m["before"] = mean_ci(_windows_mean(toward, before), p.n_boot, rng(metric, "before"))
                m["after"] = mean_ci(_windows_mean(toward, after), p.n_boot, rng(metric, "after"))
                if c != NEVER:
                    diff = _windows_mean(toward, after) - _windows_mean(never[metric], after)
                    m["after_vs_never"] = paired_difference(diff, p.n_boot, rng(metric, "vs_never"),
                                                            rng(metric, "vs_never_p"), p.n_perm)
                entry["metrics"][metric] = m
            per = [item["layers"][str(layer)] for item in data[c]]
            probe = {h: nan_array([q[f"probe_{h.lower()}"] for q in per]) for h in ("H1", "H2")}
            true_acc = np.where(is_h1[:, None], probe["H1"], probe["H2"])
            false_acc = np.where(is_h1[:, None], probe["H2"], probe["H1"])
            entry["probe_accuracy"] = {"chance": 1.0 / p.n_clusters}
            for name, values in (("true", true_acc), ("false", false_acc)):
                entry["probe_accuracy"][name] = mean_ci(values, p.n_boot, rng("probe", name))
            out.setdefault(f"condition_{c}", {})[layer_key(layer)] = entry
    return out


def best_layer(summary: dict) -> str:
    """The layer whose mean adherence toward the truth after D, averaged over the disambiguated conditions, is
    highest (the one the notebook draws window by window)."""
    keys = [k for k in summary if not k.endswith(NEVER)]
    layers = list(summary[keys[0]])
    scores = [np.nanmean([summary[k][lk]["metrics"]["mean"]["after"]["mean"] for k in keys]) for lk in layers]
    scores = [s if np.isfinite(s) else -np.inf for s in scores]
    return layers[int(np.argmax(scores))]


def summary_table(summary: dict):
    """One row per (condition, layer): each measure toward the true hypothesis before and after D with 95% CIs,
    and the difference from the never-revealed control after D."""
    import pandas as pd

    def fmt(s):
        return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]" if np.isfinite(s["mean"]) else "n/a"

    rows = []
    for ckey, by_layer in summary.items():
        for lkey, e in by_layer.items():
            row = {"condition": ckey.removeprefix("condition_"), "layer": parse_layer_key(lkey),
                   "D": e["disambiguate_at"]}
            for metric in SUMMARY_METRICS:
                m = e["metrics"][metric]
                row[f"{metric} before"] = fmt(m["before"])
                row[f"{metric} after"] = fmt(m["after"])
                if "after_vs_never" in m:
                    row[f"{metric} after - never"] = fmt(m["after_vs_never"])
            rows.append(row)
    return pd.DataFrame(rows)


def results_document(data: dict, summary: dict, graph, p, model, layers) -> dict:
    """The ``results`` part of results.json: per-condition, per-layer summaries plus what recomputes them (every
    context's per-window parts)."""
    from iclnb import graphs
    from iclnb.prompts import tokenization_report

    return {
        **summary,
        "layers": list(layers),
        "conditions": {c: disambiguate_at(c, p.context_length) for c in conditions(p)},
        "window_ends": window_ends(p.context_length, p.window, p.stride),
        "graph": graph.to_dict(),
        "agreement": graphs.co_membership_agreement(graph.labelings["H1"], graph.labelings["H2"]),
        "common_graph": dual.common_graph(graph),
        "contexts": {c: {"walks": np.array([item["walk"] for item in items]),
                         "true_hypothesis": [true_hypothesis(k) for k in range(len(items))],
                         "parts": {layer_key(layer): {part: nan_array([item["layers"][str(layer)][part]
                                                                       for item in items])
                                                      for pair in PARTS.values() for part in pair}
                                   for layer in layers}}
                     for c, items in data.items()},
        "tokens_per_word": tokenization_report(model.tokenizer, graph.words),
    }


def tidy_rows(r, n_boot, seed) -> list[dict]:
    """Rows for ``iclnb summarize`` / compare_experiments: each measure toward the true hypothesis after D per
    condition and layer (null: the never-revealed control's second half at that layer)."""
    from iclnb.experiments.kit import row

    rows = []
    n_words = r.params.get("context_length")
    never = r.results.get(f"condition_{NEVER}") or {}
    for ckey, by_layer in r.results.items():
        if not ckey.startswith("condition_") or not isinstance(by_layer, dict):
            continue
        for lkey, e in by_layer.items():
            layer = parse_layer_key(lkey)
            for metric, m in e["metrics"].items():
                ctl = ((never.get(lkey) or {}).get("metrics") or {}).get(metric, {}).get("after", {})
                a = m["after"]
                rows.append(row(metric, layer, n_words, a["mean"], a["ci_low"], a["ci_high"],
                                ckey.removeprefix("condition_"),
                                (ctl.get("mean", np.nan), ctl.get("ci_low", np.nan), ctl.get("ci_high", np.nan))))
    return rows


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {
    "context_length": 60,
    "disambiguation_percent": "0,50",
    "layers": "0,-1",
    "n_boot": 50,
    "n_contexts": 2,
    "n_perm": 50,
    "stride": 20,
    "window": 20,
}
