"""hierarchical: how the structure of the representations grows with context length, per hierarchy level and model.

Contexts are walks on a two-level hierarchy: super-clusters that contain sub-clusters (default 3 super-clusters of
5 nodes, each split into sub-clusters of 2 and 3 nodes). One walk of the largest context length per context serves
every shorter length (a causal model's prefix states do not depend on what follows), so the design is paired across
N, and every model reads the same walks. Per model, N and layer: Φ per level beside its node-shuffled null, the
normalised Dirichlet energy, the centred coherence, and the CSS of the word losses against Φ (per position and per
node; max and mean |CSS| with their permutation null); per model and level, the smallest N at which Φ exceeds its
null (see docs/methods.md).
"""

from __future__ import annotations

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key, parse_layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.hierarchy.common import (css_entry, energy_chance, levels_of, make_walks, measure_context,
                                                metric_arrays, null_streams, phi_entry)
from iclnb.experiments.kit import each_model, measure_contexts
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, N_BOOT, N_PERM, OUTPUT_DIR, SEED, Float, Int,
                                      IntList, Layers, StrList, declare)
from iclnb.metrics.levels import level_order
from iclnb.results.io import nan_array
from iclnb.stats import mean_ci

__all__ = ["PARAMS", "make_graph", "make_walks", "levels_of", "check", "read_models", "collect", "tables",
           "figure_layer", "summary_table", "results_document", "tidy_rows"]


PARAMS = declare(
    StrList("models", "gemma-3-270m,smollm2-135m", "comma-separated models: embedded names, Hugging Face ids or "
            "local directories (loaded one at a time)"),
    Int("n_super_clusters", 3, "super-clusters (level 1)", min=2, max=20),
    IntList("sub_cluster_sizes", "2,3", "nodes of each sub-cluster (level 2) inside every super-cluster", min=1,
            unique_sorted=False),
    Float("p_sub", 0.9, "edge probability inside a sub-cluster", min=0.0, max=1.0),
    Float("p_super", 0.4, "edge probability between sub-clusters of one super-cluster", min=0.0, max=1.0),
    Float("p_between", 0.1, "edge probability between super-clusters", min=0.0, max=1.0),
    Float("bridge_penalty", 0.7, "walk weight per level crossed (a step into another sub-cluster: x0.7, into another "
          "super-cluster: x0.49; 1.0: uniform walk)", min=1e-6, max=1e6),
    IntList("context_lengths", "10,20,30,50,75,100,150,200", "context lengths N in words (one walk of the largest "
            "serves every N)", min=3),
    Int("n_contexts", 25, "contexts: walks on the fixed graph, the same for every model", min=2, max=MAX_CONTEXTS),
    Layers(),
    N_BOOT,
    N_PERM,
    Int("batch_size", 4, "contexts per forward pass (results do not depend on it)", min=1, max=4096),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)


def make_graph(p):
    """The run's two-level hierarchy (its own random stream: changing the walks never changes the graph)."""
    return graphs.two_level_hierarchy(p.n_super_clusters, list(p.sub_cluster_sizes), rng=stream(p.seed, "graph"),
                                      probabilities=[p.p_sub, p.p_super, p.p_between])


def check(p, model) -> None:
    """Refuse, before any work and with one line, sub-clusters that make the two levels one, a model that cannot be
    found, a context that cannot fit one of the models, or a layer a model lacks (``model`` is None: the models of
    the list are read one by one, tokenizers and configs only)."""
    if len(p.sub_cluster_sizes) < 2:
        raise IclnbError("sub_cluster_sizes must name at least 2 sub-clusters per super-cluster (e.g. 2,3), "
                         "or the two levels are the same clustering")
    read_models(p, make_graph(p))


def read_models(p, graph) -> dict:
    """Each model of the list read without its weights (:func:`iclnb.models.model_spec`), the longest context checked
    against its context window: ``{name: {"layers", "tokens_per_word"}}``; one IclnbError line for the first
    problem."""
    from iclnb.models import model_spec
    from iclnb.prompts import check_fits

    out = {}
    for name in p.models:
        spec = model_spec(name)
        report = check_fits(spec, graph.words, max(p.context_lengths))
        out[name] = {"layers": spec.resolve_layers(p.layers), "tokens_per_word": report}
    return out


def collect(run, graph, walks: np.ndarray, models: dict, p) -> dict:
    """Run every model over every context (one model in memory at a time, each loaded only while some of its
    contexts are still to do), checkpointed per (model, context) so that an interrupted run resumes where it stopped.
    ``models`` is :func:`read_models`. Returns ``{model: {"layers", "word_loss" (K, N_max), "metrics":
    metric_arrays(...)}}``."""
    from iclnb.models import load_model

    lengths, levels = list(p.context_lengths), levels_of(graph)
    provenance = dict(run.config.get("model", {}).get("models", {}))

    def load(name):
        lm = load_model(name, dtype=p.dtype or None)
        provenance[name] = lm.provenance()
        run.record_model({"name": ",".join(p.models), "models": provenance})
        return lm

    out = {}
    for name, model in each_model(p.models, load):
        layers = models[name]["layers"]

        def measure(k, walk, state, name=name, layers=layers):
            metrics, _ = measure_context(state, walk, graph, lengths, layers, null_streams(p.seed, k, name))
            return {"word_loss": state.word_loss, "metrics": metrics}

        items = measure_contexts(run, model, range(p.n_contexts), lambda k: walks[k], measure, layers=layers,
                                 batch_size=p.batch_size, words=lambda walk: graphs.walk_words(graph, walk),
                                 loss=True, key=lambda k, name=name: f"{name}|{k}",
                                 total=len(p.models) * p.n_contexts, desc=f"{name}: contexts (batches)")
        out[name] = {"layers": layers, "word_loss": nan_array([item["word_loss"] for item in items]),
                     "metrics": metric_arrays(items, layers, lengths, levels)}
    return out


def tables(measured: dict, graph, walks: np.ndarray, p) -> dict:
    """Per model: ``N_<n>`` -> ``layer_<k>`` -> phi (per level: mean, CI, null, excess), energy_norm, energy_raw,
    coherence (per level), css_max_abs / css_mean_abs (per level, with CI and permutation null), css_by_position
    and css_by_node (per level); ``onset`` -> ``layer_<k>`` -> the smallest N at which Φ exceeds its null, per
    level, with bootstrap CIs and the order of the levels."""
    lengths, levels = list(p.context_lengths), levels_of(graph)
    chance = energy_chance(graph)
    out = {}
    for name, m in measured.items():
        model_out = {f"N_{n}": {} for n in lengths}
        onset = {}
        for layer in m["layers"]:
            arr = m["metrics"][layer]
            lk = layer_key(layer)
            for j, n in enumerate(lengths):
                rng = lambda *what: stream(p.seed, "bootstrap", name, n, str(layer), *what)  # noqa: E731
                entry = {"phi": {}, "coherence": {}, "css_max_abs": {}, "css_mean_abs": {}, "css_by_position": {},
                         "css_by_node": {}}
                for level in levels:
                    phi = arr["phi"][level][:, j]
                    entry["phi"][level] = phi_entry(phi, arr["phi_null"][level][:, j], p.n_boot,
                                                    lambda what, level=level: rng("phi", level, what))
                    entry["coherence"][level] = mean_ci(arr["coherence"][level][:, j], p.n_boot,
                                                        rng("coherence", level))
                    c = css_entry(walks, m["word_loss"], phi, n, graph.n, p.n_boot, p.n_perm,
                                  lambda what, level=level: stream(p.seed, "css", name, n, str(layer), level, what))
                    entry["css_max_abs"][level] = c["extremes"]["max_abs"]
                    entry["css_mean_abs"][level] = c["extremes"]["mean_abs"]
                    entry["css_by_position"][level] = c["by_position"]
                    entry["css_by_node"][level] = c["by_node"]
                for key in ("energy_norm", "energy_raw"):
                    entry[key] = mean_ci(arr[key][:, j], p.n_boot, rng(key))
                entry["energy_norm"]["chance"] = chance
                model_out[f"N_{n}"][lk] = entry
            onset[lk] = level_order(lengths, {level: arr["phi"][level] - arr["phi_null"][level] for level in levels},
                                    n_boot=p.n_boot, rng=stream(p.seed, "onset", name, str(layer)))
        model_out["onset"] = onset
        model_out["layers"] = list(m["layers"])
        model_out["figure_layer"] = figure_layer(model_out, m["layers"], lengths, levels)
        out[name] = model_out
    return out


def figure_layer(model_tables: dict, layers, lengths, levels):
    """The layer the N-sweep figures show for a model: the one with the largest mean excess Φ − null of the coarsest
    level at the largest N (a choice from the data, stated in every figure)."""
    last = f"N_{max(lengths)}"
    scores = [model_tables[last][layer_key(layer)]["phi"][levels[0]]["excess_mean"] for layer in layers]
    scores = [s if s is not None and np.isfinite(s) else -np.inf for s in scores]
    return layers[int(np.argmax(scores))]


def summary_table(tab: dict, levels):
    """One row per (model, layer, level): the onset N of Φ over its null with its CI and, at the largest N, Φ and
    its null, max |CSS| and its null."""
    import pandas as pd

    rows = []
    for name, mt in tab.items():
        last = max((k for k in mt if k.startswith("N_")), key=lambda k: int(k[2:]))
        for layer in mt["layers"]:
            lk = layer_key(layer)
            for level in levels:
                on = mt["onset"][lk]["levels"][level]
                e = mt[last][lk]
                rows.append({
                    "model": name, "layer": lk.removeprefix("layer_"), "level": level,
                    "onset_N": on["n_star"] if on["reached"] else "not reached",
                    "onset_ci": f"[{_txt(on['ci_low'])}, {_txt(on['ci_high'])}]",
                    f"phi@{last}": e["phi"][level]["mean"], "phi_null": e["phi"][level]["null_mean"],
                    "phi_ci": f"[{e['phi'][level]['ci_low']:.3g}, {e['phi'][level]['ci_high']:.3g}]",
                    "coherence": e["coherence"][level]["mean"], "energy_norm": e["energy_norm"]["mean"],
                    "css_max_abs": e["css_max_abs"][level]["value"],
                    "css_max_abs_null": e["css_max_abs"][level]["null_mean"],
                })
    return pd.DataFrame(rows)


def _txt(v) -> str:
    return "not reached" if v is None else str(v)


def results_document(tab: dict, graph, walks: np.ndarray, measured: dict, models: dict, p) -> dict:
    """The ``results`` part of results.json."""
    return {
        "models": tab,
        "levels": levels_of(graph),
        "context_lengths": list(p.context_lengths),
        "graph": {**graph.to_dict(), "group_sizes": graph.extra["group_sizes"],
                  "edge_probabilities": graph.extra["probabilities"]},
        "walks": [graphs.walk_words(graph, w) for w in walks],
        "word_loss": {name: m["word_loss"] for name, m in measured.items()},
        "tokens_per_word": {name: m["tokens_per_word"] for name, m in models.items()},
    }


def tidy_rows(r, n_boot: int, seed: int) -> list:
    """One row per (model, N, layer, level) for Φ (null: its node-shuffled null), its excess over the null, the
    coherence and max |CSS| (null: its permutation null), and per (model, N, layer) for E_norm (null: the chance
    value |edges| / C(n, 2)); ``condition`` is ``<model>/<level>`` (or ``<model>``)."""
    from iclnb.experiments.kit import row

    out = []
    for name, mt in (r.results.get("models") or {}).items():
        for nkey, per_layer in mt.items():
            if not nkey.startswith("N_"):
                continue
            n = int(nkey[2:])
            for lk, e in per_layer.items():
                layer = parse_layer_key(lk)
                for level, s in e["phi"].items():
                    cond = f"{name}/{level}"
                    out.append(row("phi", layer, n, s["mean"], s["ci_low"], s["ci_high"], cond,
                                   (s["null_mean"], s["null_ci_low"], s["null_ci_high"])))
                    out.append(row("phi_excess", layer, n, s["excess_mean"], s["excess_ci_low"], s["excess_ci_high"],
                                   cond))
                    c = e["coherence"][level]
                    out.append(row("coherence", layer, n, c["mean"], c["ci_low"], c["ci_high"], cond))
                    m = e["css_max_abs"][level]
                    out.append(row("css_max_abs", layer, n, m["value"], m["ci_low"], m["ci_high"], cond,
                                   (m["null_mean"], float("nan"), float("nan"))))
                s = e["energy_norm"]
                out.append(row("energy_norm", layer, n, s["mean"], s["ci_low"], s["ci_high"], name,
                               (s.get("chance"), float("nan"), float("nan"))))
    return out


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {
    "context_lengths": "10,20",
    "layers": "0,-1",
    "models": "gemma-3-270m",
    "n_boot": 50,
    "n_contexts": 3,
    "n_perm": 50,
}
