"""css_basic: Context Sensitivity Scores of word losses against each context's representation geometry.

K contexts are fresh walks on one fixed sbm graph. For each context and layer we measure the cluster separation Φ
(with its node-shuffled null), the scale-invariant Dirichlet energy and the centred coherence of the word
representations; CSS(z, M) = −Cov over contexts of (ℓ(z), M) relates the loss of the word at each position (or of
each node) to that geometry (see docs/methods.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key
from iclnb.core.progress import progress
from iclnb.core.seeding import stream
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, N_PERM, OUTPUT_DIR, SEED, Choice,
                                      Float, Int, Layers, declare)
from iclnb.metrics import (cluster_separation, coherence, css_summary, dirichlet_energy, node_means,
                           separation_null)
from iclnb.represent import represent_walks
from iclnb.results.io import nan_array
from iclnb.stats import bootstrap_ci

PARAMS = declare(
    MODEL,
    Int("n_contexts", 100, "contexts: fresh walks on one fixed graph", min=2, max=MAX_CONTEXTS),
    Int("context_length", 50, "words per context", min=3),
    Layers(),
    Float("bridge_penalty", 0.3, "walk weight of a step into another cluster (1.0: the uniform walk of Park et al.)",
          min=1e-6, max=1e6),
    Choice("label", "own", "\"own\": a word is labelled by its own cluster; \"next\": by the next word's (the "
           "predecessor's alignment)", ("own", "next")),
    N_BOOT,
    N_PERM,
    Int("batch_size", 8, "contexts per forward pass (results do not depend on it)", min=1, max=4096),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

#: Per-context metrics whose CSS is reported; ``energy_raw`` is stored beside them.
METRICS = ("phi", "energy_norm", "coherence")
CLASSES = ("bridge", "anchor")
PER_CONTEXT = (*METRICS, "phi_null", "energy_raw")
#: Each metric's null, reported beside it.
NULLS = {"phi": "phi_null"}
#: Label permutations per context and layer for Φ's null (their mean is the context's phi_null).
N_NULL = 20


def make_graph(seed: int, n_clusters: int = 3, cluster_size: int = 5, p_intra: float = 0.8, p_inter: float = 0.1):
    """The fixed sbm graph of the run (its own random stream, so changing walks never changes the graph)."""
    return graphs.sbm(n_clusters, cluster_size, p_intra, p_inter, rng=stream(seed, "graph"))


def context_walk(graph, context_length: int, seed: int, index: int, bridge_penalty: float) -> np.ndarray:
    """Walk of context ``index``: drawn from its own stream, so context k is the same in every run and on resume."""
    return graphs.random_walk(graph, context_length, stream(seed, "walks", index), bridge_penalty=bridge_penalty)


def check(p, model) -> None:
    """Refuse, before any work, a context that cannot fit the model."""
    from iclnb.prompts import tokenization_report

    graph = make_graph(p.seed)
    longest = max(tokenization_report(model.tokenizer, graph.words).values())
    if p.context_length * longest + 1 > model.max_positions:
        raise IclnbError(
            f"context_length {p.context_length} may need {p.context_length * longest + 1} tokens, more than the "
            f"{model.max_positions} {model.name} can read; use context_length at most "
            f"{(model.max_positions - 1) // longest}")
    model.resolve_layers(p.layers)


def context_metrics(reps: np.ndarray, nodes: np.ndarray, graph, keep: np.ndarray, label: str = "own",
                    null_rng=None) -> dict:
    """Φ (cluster separation) with its null, normalised and raw Dirichlet energy and coherence of one context's word
    representations at one layer.

    reps: (n_words, d); nodes: (n_words,) node of each word; keep: words that count (the sink word excluded).
    label="own" labels each word by its own node's cluster; "next" by the next word's (the predecessor's alignment).
    ``phi_null`` is the mean of Φ over :data:`N_NULL` permutations of the cluster labels over nodes (the node that
    labels a word: its own, or the next one), drawn from ``null_rng``; NaN without a generator.
    """
    clusters = graph.labelings["cluster"]
    if label == "next":
        label_nodes = np.append(nodes[1:], nodes[-1])
        keep = keep & (np.arange(len(nodes)) < len(nodes) - 1)
    else:
        label_nodes = nodes
    x, lab_nodes = reps[keep], label_nodes[keep]
    lab = clusters[lab_nodes]
    means, _ = node_means(x, nodes[keep], graph.n)
    null = (np.nan if null_rng is None else
            float(np.nanmean(separation_null(x, lab_nodes, clusters, n_perm=N_NULL, rng=null_rng))))
    return {
        "phi": cluster_separation(x, lab),
        "phi_null": null,
        "energy_norm": dirichlet_energy(means, graph.adjacency, normalized=True),
        "energy_raw": dirichlet_energy(means, graph.adjacency, normalized=False),
        "coherence": coherence(x, lab),
    }


def collect_contexts(run, model, graph, p) -> "Contexts":
    """Run every context once (all layers and the loss from one pass) and measure it; checkpointed per batch, so an
    interrupted run resumes where it stopped."""
    layers = model.resolve_layers(p.layers)
    store = run.checkpoint("contexts", total=p.n_contexts)
    todo = [k for k in range(p.n_contexts) if str(k) not in store]
    batches = [todo[i : i + p.batch_size] for i in range(0, len(todo), p.batch_size)]
    for batch in progress(batches, desc="contexts (batches)"):
        walks = [context_walk(graph, p.context_length, p.seed, k, p.bridge_penalty) for k in batch]
        states = represent_walks(model, [graphs.walk_words(graph, w) for w in walks], layers, loss=True,
                                 batch_size=p.batch_size)
        for k, walk, state in zip(batch, walks, states):
            keep = ~state.sink
            per_layer = {str(layer): context_metrics(state.reps[layer], walk, graph, keep, p.label,
                                                     stream(p.seed, "phi_null", k, str(layer)))
                         for layer in layers}
            store[str(k)] = {"walk": walk, "word_loss": state.word_loss, "metrics": per_layer}
        store.flush()
    return Contexts.from_store(store, p.n_contexts, layers, graph)


@dataclass
class Contexts:
    """Everything measured per context: walks (K, N), word losses (K, N), metrics[layer][metric] (K,), and which
    positions are bridges (K, N)."""

    layers: list
    walks: np.ndarray
    word_loss: np.ndarray
    metrics: dict
    bridge: np.ndarray

    @classmethod
    def from_store(cls, store, n_contexts: int, layers, graph) -> "Contexts":
        items = [store[str(k)] for k in range(n_contexts)]
        walks = np.array([item["walk"] for item in items], dtype=np.int64)
        loss = nan_array([item["word_loss"] for item in items])
        metrics = {layer: {name: nan_array([item["metrics"][str(layer)][name] for item in items])
                           for name in PER_CONTEXT}
                   for layer in layers}
        bridge = np.array([graphs.is_bridge(graph, w) for w in walks])
        return cls(list(layers), walks, loss, metrics, bridge)


def _node_losses(walks: np.ndarray, word_loss: np.ndarray, n_nodes: int) -> np.ndarray:
    """(K, n_nodes) mean loss over each node's occurrences in each context (NaN where absent or undefined)."""
    k = walks.shape[0]
    valid = ~np.isnan(word_loss)
    sums = np.zeros((k, n_nodes))
    counts = np.zeros((k, n_nodes))
    rows = np.repeat(np.arange(k), walks.shape[1])
    np.add.at(sums, (rows, walks.ravel()), np.where(valid, word_loss, 0.0).ravel())
    np.add.at(counts, (rows, walks.ravel()), valid.ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def _class_losses(word_loss: np.ndarray, bridge: np.ndarray) -> np.ndarray:
    """(K, 2): each context's mean loss over bridge positions and over anchor positions (position 0, which is
    neither, left out)."""
    loss = word_loss[:, 1:]
    out = np.full((loss.shape[0], 2), np.nan)
    for column, mask in enumerate((bridge[:, 1:], ~bridge[:, 1:])):
        m = mask & ~np.isnan(loss)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, column] = np.where(m.sum(1) > 0, np.where(m, loss, 0).sum(1) / m.sum(1), np.nan)
    return out


def css_tables(contexts: Contexts, graph, p) -> dict:
    """Per layer (``layer_<k>``): every context's metrics with their mean and CI, and CSS by position, by node and
    by position class (bridge / anchor), with bootstrap CIs, permutation p-values and FDR q-values."""
    node_loss = _node_losses(contexts.walks, contexts.word_loss, graph.n)
    class_loss = _class_losses(contexts.word_loss, contexts.bridge)
    results = {}
    for layer in contexts.layers:
        entry = {"per_context": {}, "summary": {}, "css_by_position": {}, "css_by_node": {}, "css_by_class": {}}
        for name in PER_CONTEXT:
            values = contexts.metrics[layer][name]
            entry["per_context"][name] = values
            mean, low, high = bootstrap_ci(values, n_resamples=p.n_boot,
                                           rng=stream(p.seed, "bootstrap", "metric", str(layer), name))
            entry["summary"][name] = {"mean": mean, "ci_low": low, "ci_high": high}
        for name in METRICS:
            phi = contexts.metrics[layer][name]
            rng = lambda what: stream(p.seed, "css", what, str(layer), name)  # noqa: E731
            kw = dict(n_boot=p.n_boot, n_perm=p.n_perm)
            entry["css_by_position"][name] = css_summary(contexts.word_loss, phi, rng("position"), **kw)
            entry["css_by_node"][name] = css_summary(node_loss, phi, rng("node"), **kw)
            classes = css_summary(class_loss, phi, rng("class"), **kw)
            entry["css_by_class"][name] = {
                cls: {key: value[i] for key, value in classes.items()} for i, cls in enumerate(CLASSES)
            }
        results[layer_key(layer)] = entry
    return results


def summary_table(tables: dict):
    """One row per (layer, metric): mean metric with CI, max |CSS| over positions, the positions whose CSS survives
    FDR control, CSS of the mean loss at bridge and at anchor positions."""
    import pandas as pd

    rows = []
    for key, entry in tables.items():
        for name in METRICS:
            by_pos = np.asarray(entry["css_by_position"][name]["css"], dtype=float)
            q = np.asarray(entry["css_by_position"][name]["q_value"], dtype=float)
            by_class = entry["css_by_class"][name]
            rows.append({
                "layer": key.removeprefix("layer_"), "metric": name,
                "mean": entry["summary"][name]["mean"], "ci_low": entry["summary"][name]["ci_low"],
                "ci_high": entry["summary"][name]["ci_high"],
                "max_abs_css": np.nanmax(np.abs(by_pos)) if np.isfinite(by_pos).any() else np.nan,
                "positions_q<0.05": int(np.sum(q < 0.05)),
                "css_bridge": by_class["bridge"]["css"], "css_anchor": by_class["anchor"]["css"],
            })
    return pd.DataFrame(rows)


def results_document(contexts: Contexts, tables: dict, graph, model) -> dict:
    """The ``results`` part of results.json: per-layer tables plus what is needed to recompute them."""
    from iclnb.prompts import tokenization_report

    return {
        **tables,
        "layers": contexts.layers,
        "graph": graph.to_dict(),
        "contexts": {
            "walks": contexts.walks,
            "word_loss": contexts.word_loss,
            "is_bridge": contexts.bridge,
        },
        "tokens_per_word": tokenization_report(model.tokenizer, graph.words),
        "metrics": list(METRICS),
    }
