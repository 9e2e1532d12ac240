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
from iclnb.core.layers import layer_key, parse_layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.kit import measure_contexts
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, N_PERM, OUTPUT_DIR, SEED, Choice,
                                      Float, Int, Layers, declare)
from iclnb.metrics import context_metrics, css_summary, node_losses
from iclnb.prompts import check_fits, tokenization_report
from iclnb.results.io import nan_array
from iclnb.stats import mean_ci

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


def make_graph(seed: int, n_clusters: int = 3, cluster_size: int = 5, p_intra: float = 0.8, p_inter: float = 0.1):
    """The fixed sbm graph of the run (its own random stream, so changing walks never changes the graph)."""
    return graphs.sbm(n_clusters, cluster_size, p_intra, p_inter, rng=stream(seed, "graph"))


def check(p, model) -> None:
    """Refuse, before any work, a context that cannot fit the model and layers it does not have."""
    check_fits(model, make_graph(p.seed).words, p.context_length, what="context_length")
    model.resolve_layers(p.layers)


def collect_contexts(run, model, graph, p) -> "Contexts":
    """Run every context once (all layers and the loss from one pass) and measure it (:func:`context_metrics` per
    layer); checkpointed per batch (``contexts``, one item per context), so an interrupted run resumes where it
    stopped."""
    layers = model.resolve_layers(p.layers)

    def measure(k, walk, state):
        keep = ~state.sink
        return {"walk": walk, "word_loss": state.word_loss,
                "metrics": {str(layer): context_metrics(state.reps[layer], walk, graph, keep, p.label,
                                                        stream(p.seed, "phi_null", k, str(layer)))
                            for layer in layers}}

    items = measure_contexts(
        run, model, list(range(p.n_contexts)),
        lambda k: graphs.context_walk(graph, p.context_length, p.seed, k, bridge_penalty=p.bridge_penalty),
        measure, layers=layers, batch_size=p.batch_size, words=lambda walk: graphs.walk_words(graph, walk), loss=True)
    return Contexts.from_items(items, layers, graph)


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
    def from_items(cls, items: list, layers, graph) -> "Contexts":
        """From the checkpointed items of :func:`collect_contexts`, in context order."""
        walks = np.array([item["walk"] for item in items], dtype=np.int64)
        loss = nan_array([item["word_loss"] for item in items])
        metrics = {layer: {name: nan_array([item["metrics"][str(layer)][name] for item in items])
                           for name in PER_CONTEXT}
                   for layer in layers}
        bridge = np.array([graphs.is_bridge(graph, w) for w in walks])
        return cls(list(layers), walks, loss, metrics, bridge)


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
    node_loss = node_losses(contexts.walks, contexts.word_loss, graph.n)
    class_loss = _class_losses(contexts.word_loss, contexts.bridge)
    results = {}
    for layer in contexts.layers:
        entry = {"per_context": {}, "summary": {}, "css_by_position": {}, "css_by_node": {}, "css_by_class": {}}
        for name in PER_CONTEXT:
            values = contexts.metrics[layer][name]
            entry["per_context"][name] = values
            entry["summary"][name] = mean_ci(values, p.n_boot, stream(p.seed, "bootstrap", "metric", str(layer), name))
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
                "layer": parse_layer_key(key), "metric": name,
                "mean": entry["summary"][name]["mean"], "ci_low": entry["summary"][name]["ci_low"],
                "ci_high": entry["summary"][name]["ci_high"],
                "max_abs_css": np.nanmax(np.abs(by_pos)) if np.isfinite(by_pos).any() else np.nan,
                "positions_q<0.05": int(np.sum(q < 0.05)),
                "css_bridge": by_class["bridge"]["css"], "css_anchor": by_class["anchor"]["css"],
            })
    return pd.DataFrame(rows)


def results_document(contexts: Contexts, tables: dict, graph, model) -> dict:
    """The ``results`` part of results.json: per-layer tables plus what is needed to recompute them."""
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


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {"context_length": 20, "layers": "0,-1", "n_boot": 100, "n_contexts": 4, "n_perm": 100}
