"""block_permutation: does the order of a walk matter, or do the representations only see a bag of words?

Design (paired). Context k is one walk on the run's 3 x 5 sbm graph (stream ``("walks", k)``, bridge_penalty as
set); the natural context of length N is its first N words (prefix reuse: one pass serves every N). From that
N-word walk, two permutations of its own words are drawn: the block permutation (its maximal same-cluster runs kept
intact, their order shuffled; stream ``("block", N, k)``) and the full shuffle (every position shuffled; stream
``("shuffle", N, k)``). So the three conditions of one (k, N) hold exactly the same word occurrences in different
orders, and every comparison is paired within a context.

Per (N, layer, condition): cluster separation Φ of the word vectors with its node-shuffled null, the scale-invariant
Dirichlet energy of the node means, centred coherence (css_basic's per-context metrics, the attention-sink word
excluded); per (N, condition) the per-word perplexity exp(mean word loss over positions 1..N−1). Paired effects: the
mean over contexts of log(Φ_natural / Φ_permuted) with a bootstrap CI (not a ratio of means; contexts where either
Φ is not positive are dropped and counted), and the mean paired difference Φ_natural − Φ_permuted, which needs no
positivity. The block junctions (where two runs meet after permutation) are counted: how many are not graph edges
(steps the natural walk could not take) and how many join two runs of the same cluster (merges, which read as one
longer run). An MDS of node means per condition at the largest N shows the geometry itself.
"""

from __future__ import annotations

import numpy as np

from iclnb import graphs
from iclnb.core.layers import layer_key, parse_layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.kit import resume_units
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, OUTPUT_DIR, SEED, Float, Int, IntList,
                                      Layers, declare)
from iclnb.experiments.perturbation.common import classical_mds, make_graph
from iclnb.metrics import context_metrics, node_means
from iclnb.prompts import check_fits
from iclnb.represent import represent_walks
from iclnb.results.io import nan_array
from iclnb.stats import mean_ci, paired_log_ratio

PARAMS = declare(
    MODEL,
    Int("n_contexts", 50, "contexts: walks on one fixed graph, each with its own permutations", min=2,
        max=MAX_CONTEXTS),
    IntList("context_lengths", "10,20,50,100,200", "context lengths N in words (the natural context is a prefix of "
            "the context's longest walk; each N gets its own permutations)", min=3, max=100_000),
    Layers(),
    Float("bridge_penalty", 0.3, "walk weight of a step into another cluster (1.0: the uniform walk of Park et al.)",
          min=1e-6, max=1e6),
    N_BOOT,
    Int("batch_size", 4, "walks per forward pass (results do not depend on it)", min=1, max=4096),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

CONDITIONS = ("natural", "block", "shuffle")
PERMUTED = ("block", "shuffle")
#: Per-walk metrics at each layer (metrics.context_metrics, as in css_basic); Φ's null is phi_null.
METRICS = ("phi", "phi_null", "energy_norm", "energy_raw", "coherence")
#: Metrics whose paired log-ratio natural / permuted is reported (both are positive by construction or nearly).
RATIO_METRICS = ("phi", "energy_norm")


def check(p, model) -> None:
    """Refuse, before any work, layers the model lacks and a context that cannot fit it."""
    model.resolve_layers(p.layers)
    check_fits(model, make_graph(p.seed).words, max(p.context_lengths))


def context_walks(graph, p_seed: int, k: int, context_lengths, bridge_penalty: float) -> dict:
    """Context k's walks: ``natural`` (the longest walk; N-word contexts are its prefixes) and, per N, the block
    permutation with its junction positions and the full shuffle of the N-word prefix."""
    n_max = max(context_lengths)
    natural = graphs.context_walk(graph, n_max, p_seed, k, bridge_penalty=bridge_penalty)
    out = {"natural": natural}
    for n in context_lengths:
        block, starts = graphs.block_permute(graph, natural[:n], stream(p_seed, "block", n, k), return_starts=True)
        out[("block", n)] = (block, starts)
        out[("shuffle", n)] = graphs.full_shuffle(natural[:n], stream(p_seed, "shuffle", n, k))
    return out


def mean_word_loss(word_loss: np.ndarray) -> float:
    """Mean word loss over positions 1..N−1 (the first word is predicted from nothing in every condition, so it is
    left out of all of them)."""
    loss = np.asarray(word_loss, dtype=float)[1:]
    return float(np.nanmean(loss)) if np.isfinite(loss).any() else float("nan")


def node_distance_matrix(reps: list, walks: list, keeps: list, n_nodes: int) -> np.ndarray:
    """Euclidean distances between the node means of several walks stacked (walk c's node i is row c·n_nodes + i;
    NaN rows and columns for nodes a walk never visits). reps[c]: (n_words, d); walks[c]: (n_words,) nodes;
    keeps[c]: (n_words,) the words that count."""
    means = np.concatenate([node_means(r[k], w[k], n_nodes)[0] for r, w, k in zip(reps, walks, keeps)])
    diff = means[:, None, :] - means[None, :, :]
    return np.sqrt(np.einsum("ijd,ijd->ij", diff, diff))


def measure_context(model, graph, p, k: int, layers) -> dict:
    """Everything measured on context k: per N and condition the walk, the mean word loss and the per-layer metrics;
    per N the block junction counts; per layer the joint node-mean distance matrix of the three conditions at the
    largest N (upper triangle)."""
    lengths = sorted(p.context_lengths)
    n_max = lengths[-1]
    walks = context_walks(graph, p.seed, k, lengths, p.bridge_penalty)
    keys = ["natural"] + [(c, n) for n in lengths for c in PERMUTED]
    node_walks = {key: (walks[key][0] if key[0] == "block" else walks[key]) for key in keys}
    states = represent_walks(model, [graphs.walk_words(graph, node_walks[key]) for key in keys], layers, loss=True,
                             batch_size=p.batch_size)
    state = dict(zip(keys, states))
    item = {}
    for n in lengths:
        entry = {}
        for c in CONDITIONS:
            key = "natural" if c == "natural" else (c, n)
            s, walk = state[key], node_walks[key][:n]
            keep = ~s.sink[:n]
            entry[c] = {
                "walk": walk,
                "mean_loss": mean_word_loss(s.word_loss[:n]),
                "metrics": {str(layer): context_metrics(s.reps[layer][:n], walk, graph, keep, "own",
                                                        stream(p.seed, "phi_null", k, n, c, str(layer)))
                            for layer in layers},
            }
        block, starts = walks[("block", n)]
        entry["junctions"] = graphs.junction_counts(graph, block, starts)
        entry["shuffle_non_edge"] = graphs.non_edge_steps(graph, walks[("shuffle", n)])
        item[f"N_{n}"] = entry
    upper = np.triu_indices(len(CONDITIONS) * graph.n, 1)
    final = ["natural", ("block", n_max), ("shuffle", n_max)]
    item["distances"] = {
        str(layer): node_distance_matrix([state[key].reps[layer][:n_max] for key in final],
                                         [node_walks[key][:n_max] for key in final],
                                         [~state[key].sink[:n_max] for key in final], graph.n)[upper]
        for layer in layers}
    return item


def collect(run, model, graph, p) -> dict:
    """Measure every context once (checkpointed per context, so an interrupted run resumes where it stopped);
    returns {context index (str): its measurements}."""
    layers = model.resolve_layers(p.layers)
    units = range(p.n_contexts)
    items = resume_units(run, units, lambda batch: [measure_context(model, graph, p, k, layers) for k in batch],
                         desc="contexts (natural, block, shuffle at every N)")
    return {str(k): item for k, item in zip(units, items)}


# ---------------------------------------------------------------------------------------------------- tables


def _per_context(contexts: dict, n: int, condition: str, layer, metric: str) -> np.ndarray:
    return nan_array([contexts[str(k)][f"N_{n}"][condition]["metrics"][str(layer)][metric]
                      for k in range(len(contexts))])


def _losses(contexts: dict, n: int, condition: str) -> np.ndarray:
    return nan_array([contexts[str(k)][f"N_{n}"][condition]["mean_loss"] for k in range(len(contexts))])


def _paired(a, b, n_boot: int, rng) -> dict:
    """The paired log-ratio a / b with its CI (``mean`` is the mean log-ratio) and the paired difference a − b."""
    lr = paired_log_ratio(a, b, rng=rng, n_resamples=n_boot)
    diff = mean_ci(np.asarray(a, dtype=float) - np.asarray(b, dtype=float), n_boot, rng)
    return {"mean": lr["mean_log_ratio"], "ci_low": lr["ci_low"], "ci_high": lr["ci_high"], "ratio": lr["ratio"],
            "n": lr["n"], "n_dropped": lr["n_dropped"], "difference": diff["mean"],
            "difference_ci_low": diff["ci_low"], "difference_ci_high": diff["ci_high"]}


def tables(contexts: dict, layers, p) -> dict:
    """``N_<n>`` -> {``layer_<k>``: {condition: {metric: mean/CI, per_context}, ``log_ratio``: {permuted condition:
    paired log(Φ_natural / Φ_condition)}, ``log_ratio_energy``: the same for E_norm}, ``perplexity``: {condition:
    mean/CI of exp(mean word loss)}, ``perplexity_log_ratio``: {permuted condition: paired log(ppl_natural /
    ppl_condition)}, ``junctions``: block junction counts}."""
    out = {}
    for n in sorted(p.context_lengths):
        entry = {}
        for layer in layers:
            le = {}
            for c in CONDITIONS:
                le[c] = {m: mean_ci(_per_context(contexts, n, c, layer, m), p.n_boot,
                                    stream(p.seed, "bootstrap", n, str(layer), c, m), count=True) for m in METRICS}
                le[c]["per_context"] = {m: _per_context(contexts, n, c, layer, m) for m in METRICS}
            for metric, name in zip(RATIO_METRICS, ("log_ratio", "log_ratio_energy")):
                nat = _per_context(contexts, n, "natural", layer, metric)
                le[name] = {c: {"metric": metric, **_paired(nat, _per_context(contexts, n, c, layer, metric),
                                                             p.n_boot, stream(p.seed, "paired", n, str(layer), c,
                                                                              metric))}
                            for c in PERMUTED}
            entry[layer_key(layer)] = le
        entry["perplexity"] = {c: {**mean_ci(np.exp(_losses(contexts, n, c)), p.n_boot,
                                             stream(p.seed, "bootstrap", n, "perplexity", c), count=True),
                                   "per_context": np.exp(_losses(contexts, n, c))} for c in CONDITIONS}
        entry["perplexity_log_ratio"] = {c: _paired(np.exp(_losses(contexts, n, "natural")),
                                                    np.exp(_losses(contexts, n, c)), p.n_boot,
                                                    stream(p.seed, "paired", n, "perplexity", c)) for c in PERMUTED}
        entry["junctions"] = junction_table(contexts, n)
        out[f"N_{n}"] = entry
    return out


def junction_table(contexts: dict, n: int) -> dict:
    """Block junctions at N over all contexts: totals, per-context counts, and the fractions that are not graph
    edges and that merge two same-cluster runs; the full shuffle's non-edge steps for comparison."""
    items = [contexts[str(k)][f"N_{n}"] for k in range(len(contexts))]
    per = {key: [it["junctions"][key] for it in items] for key in ("junctions", "non_edge", "merges")}
    total = sum(per["junctions"])
    shuffle = [it["shuffle_non_edge"] for it in items]
    return {
        "junctions": total, "non_edge": sum(per["non_edge"]), "merges": sum(per["merges"]),
        "non_edge_fraction": sum(per["non_edge"]) / total if total else float("nan"),
        "merge_fraction": sum(per["merges"]) / total if total else float("nan"),
        "per_context": per,
        "shuffle_non_edge_steps": sum(shuffle),
        "shuffle_non_edge_fraction": sum(shuffle) / (len(items) * (n - 1)),
    }


def summary_table(tabs: dict):
    """One row per (N, layer, condition): Φ and its null, E_norm, perplexity, and the paired log-ratios of Φ and
    perplexity natural / condition with their CIs."""
    import pandas as pd

    rows = []
    for n_key, entry in tabs.items():
        for key, le in entry.items():
            if not key.startswith("layer_"):
                continue
            for c in CONDITIONS:
                lr = le["log_ratio"].get(c, {})
                plr = entry["perplexity_log_ratio"].get(c, {})
                rows.append({
                    "N": int(n_key[2:]), "layer": parse_layer_key(key), "condition": c,
                    "phi": le[c]["phi"]["mean"], "phi_ci": (le[c]["phi"]["ci_low"], le[c]["phi"]["ci_high"]),
                    "phi_null": le[c]["phi_null"]["mean"], "energy_norm": le[c]["energy_norm"]["mean"],
                    "perplexity": entry["perplexity"][c]["mean"],
                    "log_ratio_phi": lr.get("mean", np.nan),
                    "log_ratio_phi_ci": (lr.get("ci_low", np.nan), lr.get("ci_high", np.nan)),
                    "log_ratio_ppl": plr.get("mean", np.nan),
                    "log_ratio_ppl_ci": (plr.get("ci_low", np.nan), plr.get("ci_high", np.nan)),
                })
    return pd.DataFrame(rows).round(3)


def junction_summary(tabs: dict):
    """One row per N: block junctions, how many are not graph edges, how many are merges; the full shuffle's
    non-edge steps."""
    import pandas as pd

    return pd.DataFrame([{"N": int(k[2:]), **{key: v for key, v in e["junctions"].items() if key != "per_context"}}
                         for k, e in tabs.items()]).round(3)


def mds_coordinates(contexts: dict, layer, n_nodes: int) -> np.ndarray:
    """(3, n_nodes, 2) joint classical MDS of the node means of the three conditions at the largest N, from the
    node-mean distance matrix averaged over contexts (rows: natural, block, shuffle)."""
    m = len(CONDITIONS) * n_nodes
    upper = np.triu_indices(m, 1)
    stacked = np.stack([nan_array(contexts[str(k)]["distances"][str(layer)]) for k in range(len(contexts))])
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(stacked, axis=0) if np.isfinite(stacked).any() else np.full(stacked.shape[1], np.nan)
    full = np.zeros((m, m))
    full[upper] = mean
    full = full + full.T
    seen = ~np.isnan(full).all(axis=0) | (m == 1)
    coords = np.full((m, 2), np.nan)
    if seen.sum() >= 3:
        sub = full[np.ix_(seen, seen)]
        coords[seen] = classical_mds(np.nan_to_num(sub, nan=np.nanmean(sub)), 2)
    return coords.reshape(len(CONDITIONS), n_nodes, 2)


def results_document(contexts: dict, tabs: dict, graph, layers, model, p) -> dict:
    """The ``results`` part of results.json."""
    from iclnb.prompts import tokenization_report

    n_max = max(p.context_lengths)
    return {
        **tabs,
        "layers": list(layers),
        "conditions": list(CONDITIONS),
        "context_lengths": sorted(p.context_lengths),
        "n_contexts": p.n_contexts,
        "graph": graph.to_dict(),
        "tokens_per_word": tokenization_report(model.tokenizer, graph.words),
        "mds": {layer_key(layer): {c: xy for c, xy in zip(CONDITIONS, mds_coordinates(contexts, layer, graph.n))}
                for layer in layers},
        "contexts": {
            "natural": [contexts[str(k)][f"N_{n_max}"]["natural"]["walk"] for k in range(p.n_contexts)],
            **{f"N_{n}": {c: [contexts[str(k)][f"N_{n}"][c]["walk"] for k in range(p.n_contexts)]
                          for c in PERMUTED} for n in sorted(p.context_lengths)},
        },
        "definitions": {
            "natural": "the context's walk (its first N words)",
            "block": "the N-word walk with its maximal same-cluster runs kept and their order shuffled",
            "shuffle": "the N-word walk's positions uniformly shuffled",
            "phi": "cluster separation of the word vectors (bias-corrected, over pooled within-cluster variance); "
                   "the attention-sink word excluded",
            "phi_null": "mean Φ over 20 permutations of the cluster labels over nodes",
            "energy_norm": "sum over graph edges of squared node-mean distances / sum over all node pairs",
            "perplexity": "exp(mean word loss over positions 1..N-1); a word's loss is the sum of its tokens'",
            "log_ratio": "mean over contexts of log(phi_natural / phi_condition), paired; pairs with a "
                         "non-positive phi dropped (n_dropped); 95% bootstrap CI over contexts",
            "difference": "mean over contexts of phi_natural - phi_condition, with its CI",
            "junctions": "positions where two runs meet in the block permutation; non_edge: not a graph edge; "
                         "merges: both runs in the same cluster",
            "mds": "joint classical MDS of the node means of the three conditions at the largest N, from the "
                   "node-mean distances averaged over contexts",
        },
    }


def tidy_rows(r, n_boot, seed) -> list[dict]:
    """Rows for ``iclnb summarize`` / compare_experiments: per (N, layer, condition) Φ (with its null), E_norm and
    the log-ratio of Φ natural / condition; per (N, condition) the perplexity."""
    from iclnb.experiments.kit import row

    rows = []
    res = r.results
    for n_key, entry in res.items():
        if not (n_key.startswith("N_") and isinstance(entry, dict)):
            continue
        n = int(n_key[2:])
        for key, le in entry.items():
            if not key.startswith("layer_"):
                continue
            layer = parse_layer_key(key)
            for c in CONDITIONS:
                s, null = le[c]["phi"], le[c]["phi_null"]
                rows.append(row("phi", layer, n, s["mean"], s["ci_low"], s["ci_high"], c,
                                (null["mean"], null["ci_low"], null["ci_high"])))
                e = le[c]["energy_norm"]
                rows.append(row("energy_norm", layer, n, e["mean"], e["ci_low"], e["ci_high"], c))
            for c, lr in le["log_ratio"].items():
                rows.append(row("log_ratio_phi", layer, n, lr["mean"], lr["ci_low"], lr["ci_high"], c))
        for c, s in entry["perplexity"].items():
            rows.append(row("perplexity", "", n, s["mean"], s["ci_low"], s["ci_high"], c))
    return rows


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {"context_lengths": "8,16", "layers": "0,-1", "n_boot": 50, "n_contexts": 3}
