"""reproduce_park: in-context learning of representations (Park et al. 2025).

A model reads random walks over a graph whose nodes are ordinary words (Park's 4x4 grid by default). From one forward
pass per context this module measures, at every requested layer and context length (the states of a prefix do not
depend on what follows, so every context length comes from the pass over the longest):

* rule-following accuracy at each word position (next-token mass on the current node's neighbours, raw and
  renormalised over the graph's words), next to the copying baseline (an ideal recaller of transitions already seen)
  and chance: E[deg(current node)] / n over the walk positions, the mass on valid next words of a model that spreads
  its mass uniformly over the n graph words (a walk visits nodes in proportion to their degree, so this is not the
  mean degree / n);
* node means over a trailing window of the last ``window_tokens`` tokens (sink excluded), their scale-invariant
  Dirichlet energy E_norm, the Spearman correlation of node-mean distance with graph distance, the PCA of the node
  means and the Procrustes fit of its top two components to the graph's spectral embedding;
* negative controls: the same statistics with node identities permuted (must fall to chance) and with the attention
  sink included (for a model with BOS the sink is the BOS state at token 0, counted as an occurrence of the first
  word's node, which is what a token-level analysis without special handling does);
* for ``graph="days_of_week_ring"``: which pairs among PCs 1-4 carry the calendar circle and the in-context ring.

Every statistic comes with a bootstrap interval over contexts. The notebook ``notebooks/reproduce_park.ipynb`` calls
the steps in order: :func:`prepare`, :func:`measure`, :func:`accuracy`, :func:`geometry`, :func:`controls`,
:func:`days_of_week`, :func:`explorer`, :func:`summary`, :func:`results_document`; each takes data and returns data,
and the notebook hands what it returns to the run. The per-context statistics live in
:mod:`iclnb.experiments.park.per_context`, the figures in :mod:`iclnb.experiments.park.figures`.

Default words: Park's 16 words for the 4x4 grid (:data:`iclnb.graphs.GRID_WORDS`); for any other graph the first n
words of :data:`iclnb.graphs.NOUNS` (``ring`` of size n; ``hex_lattice`` of size s is networkx's honeycomb of s x s
hexagons, 16 nodes for s=2, 30 for s=3). ``days_of_week_ring`` uses the seven weekday names in a seeded ring order
and ignores ``graph_size`` and ``words``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from itertools import combinations

import numpy as np
import pandas as pd

from iclnb import graphs as G
from iclnb.core.errors import IclnbError
from iclnb.core.layers import EMBED, layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.kit import measure_contexts
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, OUTPUT_DIR, SEED, Choice, Int, IntList, Layers,
                                      StrList, declare)
from iclnb.experiments.park.per_context import N_PCS, VARIANTS, context_geometry, context_statistics, pair_targets
from iclnb.metrics import dirichlet_energy, distance_correlation, pca, procrustes_fit, spectral_embedding
from iclnb.results.io import read_npz
from iclnb.stats import mean_ci

GRAPHS = ("grid", "ring", "hex_lattice", "days_of_week_ring")

PARAMS = declare(
    MODEL,
    Choice("graph", "grid", "\"grid\", \"ring\", \"hex_lattice\" (graph_size x graph_size hexagons) or "
           "\"days_of_week_ring\"", GRAPHS),
    Int("graph_size", 4, "grid: graph_size x graph_size; ring: number of nodes; hex_lattice: hexagons per side "
        "(days_of_week_ring: ignored)", min=1),
    StrList("words", "", "empty: Park's 16 words for the 4x4 grid, else the first n of iclnb.graphs.NOUNS; or "
            "\"w1,w2,...\"", allow_empty=True),
    Int("n_contexts", 16, "contexts: independent random walks (bootstrap intervals are over them)", min=2,
        max=MAX_CONTEXTS),
    IntList("context_lengths_tokens", "50,100,200,400,800,1400", "context lengths (tokens, BOS included) at which "
            "geometry is measured; each context holds as many whole words as fit in the largest", min=2),
    Int("window_tokens", 200, "node means use the words within the last window_tokens tokens of each context length"),
    Layers("all"),
    Int("n_shuffles", 10, "node-label permutations per context for the shuffled-label control"),
    Int("batch_size", 4, "contexts per forward pass (results do not depend on it)", max=4096),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

BIN_WORDS = 25  # word positions per accuracy bin
BOOTSTRAP_RESAMPLES = 2000  # resamples of every bootstrap interval over contexts
FIRST_WORDS, LAST_WORDS = 50, 200  # the headline accuracy windows (Park et al.'s early and late context)

__all__ = [
    "PARAMS", "GRAPHS", "Setup", "Measurements", "make_graph", "sample_walks", "check", "prepare", "measure",
    "chance_by_position", "accuracy", "accuracy_table", "geometry", "best_layer", "controls", "controls_table",
    "pca_views", "explorer", "days_of_week", "days_of_week_table", "summary", "summary_table", "results_document",
]


# ---------------------------------------------------------------------------------------------------- setup


def make_graph(graph: str = "grid", graph_size: int = 4, words=None, seed: int = 42) -> G.Graph:
    """The graph of a run: ``grid`` (size x size), ``ring`` (size nodes), ``hex_lattice`` (size x size hexagons) or
    ``days_of_week_ring`` (seven weekdays on a ring in an order drawn from ``stream(seed, "graph")``).

    ``words``: None, "" or [] for the defaults (see the module docstring), else a list or a comma-separated string.
    """
    if graph not in GRAPHS:
        raise IclnbError(f"graph must be one of {', '.join(GRAPHS)}; got {graph!r}")
    if isinstance(words, str):
        words = [w for w in words.replace(",", " ").split() if w]
    words = list(words) if words else None
    if graph == "days_of_week_ring":
        return G.days_of_week_ring(stream(seed, "graph"))
    if graph == "grid":
        return G.grid(graph_size, graph_size, words=words)
    if graph == "ring":
        return G.ring(graph_size, words=words)
    return G.hex_lattice(graph_size, graph_size, words=words)


def sample_walks(graph: G.Graph, tokenizer, n_contexts: int, context_tokens: int, seed: int) -> list[np.ndarray]:
    """``n_contexts`` uniform random walks (:func:`iclnb.graphs.context_walk`), each as many words as fit in
    ``context_tokens`` tokens of the model's encoding (BOS included); words may have several tokens."""
    from iclnb.models import adds_bos
    from iclnb.prompts import tokenization_report

    lengths = tokenization_report(tokenizer, graph.words)
    bos = 1 if adds_bos(tokenizer) else 0
    longest = max(1, context_tokens - bos)  # words have >= 1 token
    walks = []
    for i in range(n_contexts):
        walk = G.context_walk(graph, longest, seed, i)
        ends = bos + np.cumsum([lengths[graph.words[k]] for k in walk])
        n_words = int(np.searchsorted(ends, context_tokens, side="right"))
        if n_words < 2:
            raise IclnbError(f"a context of {context_tokens} tokens holds fewer than two words")
        walks.append(walk[:n_words])
    return walks


def _blocks(model, layers) -> list[int]:
    return [k for k in model.resolve_layers(layers) if k != EMBED]


def check(p, model) -> None:
    """Refuse, before any work: a graph or words that cannot be built, words that share their first token, a context
    longer than the model reads or too short for two words, layers out of range or with no decoder block."""
    from iclnb.models import adds_bos
    from iclnb.prompts import first_token_ids, tokenization_report

    graph = make_graph(p.graph, p.graph_size, p.words, p.seed)
    first_token_ids(model.tokenizer, graph.words)
    longest = max(p.context_lengths_tokens)
    if longest > model.max_positions:
        raise IclnbError(f"context_lengths_tokens reaches {longest} tokens, more than the {model.max_positions} "
                         f"{model.name} can read; use context lengths of at most {model.max_positions} tokens")
    bos = 1 if adds_bos(model.tokenizer) else 0
    most = max(tokenization_report(model.tokenizer, graph.words).values())
    if longest < bos + 2 * most:
        raise IclnbError(f"a context of {longest} tokens may hold fewer than two words (words of up to {most} "
                         f"tokens{', after BOS' if bos else ''}); raise the largest of context_lengths_tokens")
    if not _blocks(model, p.layers):
        raise IclnbError("reproduce_park needs at least one decoder block in layers (not only 'embed')")


@dataclass
class Setup:
    """Everything fixed before the forward passes: the graph, each context's walk and words, the layers, the
    context lengths and window, the graph words' first tokens, and ``table`` (each context length in tokens and in
    words of context 0, with the window the node means use there)."""

    graph: G.Graph
    walks: list  # node-index arrays
    words: list  # word lists
    layers: list
    context_tokens: np.ndarray
    window_tokens: int
    token_ids: list
    tokens_per_word: dict
    bos: bool
    tokens_per_context: list
    n_blocks: int
    table: pd.DataFrame

    @property
    def energy_chance(self) -> float:
        """E_norm of node means that carry no graph information: the fraction of node pairs that are edges."""
        n = self.graph.n
        return float(len(self.graph.edges()) / (n * (n - 1) / 2))


def prepare(model, p) -> Setup:
    """Build the graph and the walks (each as many whole words as fit in the largest context length) and convert
    the context lengths to words."""
    from iclnb.prompts import encode_walk, first_token_ids, tokenization_report

    graph = make_graph(p.graph, p.graph_size, p.words, p.seed)
    tok = model.tokenizer
    ctx = np.asarray(sorted(p.context_lengths_tokens), dtype=np.int64)
    walks = sample_walks(graph, tok, p.n_contexts, int(ctx[-1]), p.seed)
    words = [[graph.words[k] for k in w] for w in walks]
    encodings = [encode_walk(tok, w) for w in words]
    geo = context_geometry(encodings[0].spans, ctx, p.window_tokens)
    table = pd.DataFrame({
        "context (tokens)": ctx,
        "context (words)": geo["words"],
        "window (words)": geo["window_words"],
        "window holds the sink": geo["window_has_sink"],
    })
    return Setup(graph=graph, walks=walks, words=words, layers=_blocks(model, p.layers), context_tokens=ctx,
                 window_tokens=int(p.window_tokens), token_ids=first_token_ids(tok, graph.words),
                 tokens_per_word=tokenization_report(tok, graph.words), bos=encodings[0].bos,
                 tokens_per_context=[len(e) for e in encodings], n_blocks=model.n_layers, table=table)


# ---------------------------------------------------------------------------------------------------- the pass


@dataclass
class Measurements:
    """Per-context results (checkpoint items, in context order) and node means averaged over contexts: each node's
    mean over the contexts whose window holds it (a short context does not visit every node)."""

    items: list
    mean_means: dict  # variant -> (layers, context lengths, n, d) float64


def sink_states(model, layers) -> dict | None:
    """The residual at token 0 for a model with BOS: in a causal model it sees only BOS, so it is the same in every
    context and one pass over the lone BOS token gives it. None for a model without BOS."""
    import torch

    from iclnb.models import adds_bos

    if not adds_bos(model.tokenizer):
        return None
    cap = model.run(torch.tensor([[model.tokenizer.bos_token_id]]), layers=layers)
    return {k: cap.resid[k][0, 0].float().cpu().numpy() for k in layers}


def measure(run, model, setup: Setup, p) -> Measurements:
    """One forward pass per context (batches of ``p.batch_size``), every layer and context length from it.

    Checkpointed per context through the run (``checkpoint_contexts.json`` and the context's node means in
    ``raw_data/node_means_<i>.npz``, written before the context's item), so an interrupted run resumes where it
    stopped; a context whose node means are missing or damaged (a truncated npz) is measured again.
    """
    n = len(setup.walks)
    raw = run.raw_data_dir
    ck = run.checkpoint("contexts", total=n, every_s=0)
    for i in range(n):
        if str(i) in ck and read_npz(raw / f"node_means_{i}.npz") is None:
            del ck[str(i)]
    sink_state = cache(lambda: sink_states(model, setup.layers) if setup.bos else None)  # only if work remains

    def statistics(i, words, states):
        item, arrays = context_statistics(states, setup.walks[i], setup.graph, setup.layers, setup.context_tokens,
                                          setup.window_tokens, sink_state(), stream(p.seed, "label_shuffle", i),
                                          p.n_shuffles)
        run.save_arrays(f"node_means_{i}", **arrays)  # before the item: a checkpointed context has its means
        return item

    items = measure_contexts(run, model, range(n), lambda i: setup.words[i], statistics, layers=setup.layers,
                             batch_size=p.batch_size, token_ids=setup.token_ids, every_s=0)
    sums = {"default": 0.0, "sink_included": 0.0}
    seen = {"default": 0, "sink_included": 0}
    for i in range(n):
        z = read_npz(raw / f"node_means_{i}.npz")
        m, s = np.asarray(z["means"], dtype=np.float64), np.asarray(z["sink_means"], dtype=np.float64)
        sidx = z["sink_context_index"]
        with_sink = m.copy()
        with_sink[:, sidx] = s
        for variant, means in (("default", m), ("sink_included", with_sink)):
            ok = np.isfinite(means)
            sums[variant] = sums[variant] + np.where(ok, means, 0.0)
            seen[variant] = seen[variant] + ok
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_means = {v: np.where(seen[v] > 0, sums[v] / seen[v], np.nan) for v in sums}
    return Measurements(items=items, mean_means=mean_means)


# ---------------------------------------------------------------------------------------------------- helpers


def _ci(samples, seed, name) -> dict:
    """Mean over contexts (axis 0) with its 95% bootstrap interval, drawn from the run's stream for ``name``."""
    return mean_ci(samples, BOOTSTRAP_RESAMPLES, stream(seed, "bootstrap", name))


def _stack(items, variant, key) -> np.ndarray:
    return np.stack([np.asarray(it["stats"][variant][key], dtype=np.float64) for it in items])


def _padded(rows) -> np.ndarray:
    """Rows of different lengths as a (len(rows), longest) array, NaN after each row's end."""
    longest = max(len(r) for r in rows)
    out = np.full((len(rows), longest), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = np.asarray(r, dtype=np.float64)
    return out


def _head(x: np.ndarray, lengths: np.ndarray, k: int) -> np.ndarray:
    """Per row, the mean of its first k values (all of them in a shorter row)."""
    return np.array([np.nanmean(row[: min(k, n)]) for row, n in zip(x, lengths)])


def _tail(x: np.ndarray, lengths: np.ndarray, k: int) -> np.ndarray:
    """Per row, the mean of its own last k values (all of them in a shorter row)."""
    return np.array([np.nanmean(row[max(0, n - k): n]) for row, n in zip(x, lengths)])


# ---------------------------------------------------------------------------------------------------- accuracy


def chance_by_position(walk, adjacency) -> np.ndarray:
    """deg(walk[t]) / n at each word position t: the mass on valid next words of a predictor that spreads its mass
    uniformly over the n graph words (the copying baseline's score before it recalls anything)."""
    adj = np.asarray(adjacency) != 0
    return adj[np.asarray(walk)].sum(axis=1) / adj.shape[0]


def accuracy(setup: Setup, data: Measurements, p, bin_words: int = BIN_WORDS) -> dict:
    """Rule-following accuracy against context (bins of ``bin_words`` word positions) with the copying baseline and
    chance, each averaged over contexts in the same bins, and the headline windows (first 50 and last 200 words of
    each context) with bootstrap intervals over contexts."""
    items = data.items
    raw = _padded([it["accuracy_raw"] for it in items])
    ren = _padded([it["accuracy_renormalized"] for it in items])
    cop = _padded([it["copy_baseline"] for it in items])
    chance = _padded([chance_by_position(w, setup.graph.adjacency) for w in setup.walks])
    ends = _padded([it["word_end_tokens"] for it in items])
    lengths = np.array([len(it["accuracy_raw"]) for it in items])
    T = raw.shape[1]
    edges = np.unique(np.minimum(np.arange(0, T + bin_words, bin_words), T))

    def binned(x):
        return np.stack([np.nanmean(x[:, a:b], axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)

    curves = {name: _ci(binned(x), p.seed, f"accuracy_{name}")
              for name, x in (("raw", raw), ("renormalized", ren), ("copy_baseline", cop), ("chance", chance))}
    headline = {}
    for name, x in (("accuracy", raw), ("renormalized", ren), ("copy_baseline", cop), ("chance", chance)):
        prefix = "" if name == "accuracy" else f"{name}_"
        headline[f"{prefix}first_{FIRST_WORDS}_words"] = _ci(_head(x, lengths, FIRST_WORDS), p.seed,
                                                             f"{name}_first")
        headline[f"{prefix}last_{LAST_WORDS}_words"] = _ci(_tail(x, lengths, LAST_WORDS), p.seed, f"{name}_last")
    headline["chance_all_words"] = _ci(np.nanmean(chance, axis=1), p.seed, "chance_all")
    out = {
        # x of a bin: the token that ends its last word (mean over contexts), and its last word position
        "context_tokens": np.nanmean(ends[:, edges[1:] - 1], axis=0),
        "context_words": edges[1:],
        "bin_words": bin_words,
        "mean": curves["raw"]["mean"], "ci_low": curves["raw"]["ci_low"], "ci_high": curves["raw"]["ci_high"],
        "summary": headline,
        "definition": "raw = next-token mass on the first tokens of the current node's neighbours; renormalized = "
                      "raw / mass on all graph words; copy_baseline = an ideal recaller of the transitions already in "
                      "the context; chance = deg(current node) / n (a uniform guess over the graph words), averaged "
                      "over the walk positions; bins of word positions, 95% bootstrap CI over contexts",
    }
    for name in ("renormalized", "copy_baseline", "chance"):
        c = curves[name]
        out[name] = c["mean"]
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = c["ci_low"], c["ci_high"]
    return out


def accuracy_table(acc: dict) -> pd.DataFrame:
    """The headline windows: accuracy, renormalised accuracy, copying baseline and chance over the first 50 and
    the last 200 words of each context (mean over contexts with its 95% bootstrap interval)."""
    s = acc["summary"]
    rows = []
    for label, prefix in (("next-token mass on valid neighbours", ""), ("renormalised over graph words",
                                                                         "renormalized_"),
                          ("copying baseline", "copy_baseline_"), ("chance, E[deg] / n", "chance_")):
        for window in (f"first_{FIRST_WORDS}_words", f"last_{LAST_WORDS}_words"):
            d = s[prefix + window]
            rows.append({"quantity": label, "words": window.replace("_words", "").replace("_", " "),
                         "mean": d["mean"], "ci_low": d["ci_low"], "ci_high": d["ci_high"]})
    return pd.DataFrame(rows).round(3)


# ---------------------------------------------------------------------------------------------------- geometry


def _layer_block(items, variant, seed) -> dict:
    """Per layer: E_norm, distance correlation, Procrustes r2 (with CIs) at each context length."""
    return {key: _ci(_stack(items, variant, key), seed, f"{variant}_{key}")
            for key in ("energy_norm", "distance_correlation", "procrustes_r2")}


def geometry(setup: Setup, data: Measurements, p) -> dict:
    """E_norm, distance correlation and the PCA/Procrustes comparison per layer and context length.

    Returns ``{"layers", "context_tokens", "energy_norm_chance", "spectral_embedding", "per_layer"}``; ``per_layer``
    maps ``layer_<k>`` to its curves over context lengths (mean over contexts with CIs) and its PCA (per context, and
    of the node means averaged over contexts).
    """
    block = _layer_block(data.items, "default", p.seed)
    raw_e = _ci(_stack(data.items, "default", "energy_raw"), p.seed, "energy_raw")
    ev = _stack(data.items, "default", "explained_variance")  # (context, layer, length, pcs)
    ctx_words = np.stack([np.asarray(it["context_words"]) for it in data.items])
    adj = np.asarray(setup.graph.adjacency, dtype=np.float64)
    spectral = spectral_embedding(adj, 2)[0]
    per_layer = {}
    for li, k in enumerate(setup.layers):
        layer = {"context_tokens": setup.context_tokens, "context_words": ctx_words.mean(axis=0)}
        for key in ("energy_norm", "distance_correlation"):
            layer[key] = block[key]["mean"][li]
            layer[f"{key}_ci_low"] = block[key]["ci_low"][li]
            layer[f"{key}_ci_high"] = block[key]["ci_high"][li]
        layer["energy_raw"] = raw_e["mean"][li]
        mm = data.mean_means["default"][li]
        coords = [pca(m, k=N_PCS) for m in mm]
        layer["pca"] = {
            "explained_variance_per_context": np.nanmean(ev[:, li], axis=0),
            "procrustes_r2": block["procrustes_r2"]["mean"][li],
            "procrustes_r2_ci_low": block["procrustes_r2"]["ci_low"][li],
            "procrustes_r2_ci_high": block["procrustes_r2"]["ci_high"][li],
            "mean_over_contexts": {
                "coords": [c[0] for c in coords],
                "explained_variance": [c[1] for c in coords],
                "procrustes_r2": [procrustes_fit(c[0][:, :2], spectral)[1] for c in coords],
                "distance_correlation": [distance_correlation(m, adj) for m in mm],
                "energy_norm": [dirichlet_energy(m, adj) for m in mm],
            },
            "definition": "PCA of node means; procrustes_r2 = similarity-Procrustes fit of PCs 1-2 onto the graph's "
                          "spectral embedding (Laplacian eigenvectors 2-3), per context with CI; mean_over_contexts = "
                          "the same on node means averaged over the contexts whose window holds each node",
        }
        per_layer[layer_key(k)] = layer
    return {"layers": list(setup.layers), "context_tokens": setup.context_tokens,
            "energy_norm_chance": setup.energy_chance, "spectral_embedding": spectral, "per_layer": per_layer}


def best_layer(geo: dict):
    """The layer with the highest mean distance correlation at the largest context length."""
    vals = np.array([geo["per_layer"][layer_key(k)]["distance_correlation"][-1] for k in geo["layers"]], dtype=float)
    if not np.isfinite(vals).any():
        return geo["layers"][-1]
    return geo["layers"][int(np.nanargmax(vals))]


# ---------------------------------------------------------------------------------------------------- controls


def controls(setup: Setup, data: Measurements, p) -> dict:
    """The negative controls at every layer and context length: node identities shuffled, and the sink included.

    ``compared_at_context_tokens``: the largest context length and the largest whose window holds the sink, where
    :func:`controls_table` compares them with the default.
    """
    ctx = setup.context_tokens
    sink_ctx = np.flatnonzero(ctx <= setup.window_tokens)
    compared = [int(ctx[-1])] + ([int(ctx[sink_ctx[-1]])] if sink_ctx.size else [])
    out = {"description": {
        "shuffled_labels": "node identities permuted (n_shuffles random permutations per context, averaged): the "
                           "node means are kept but assigned to random graph nodes; E_norm should fall to "
                           f"{setup.energy_chance:.3f} (the fraction of node pairs that are edges) and the "
                           "correlations to 0",
        "sink_included": "the attention-sink state (token 0) counted as an occurrence of the first word's node; it "
                         "changes the node means only at context lengths whose window reaches token 0",
    }, "context_tokens": ctx, "compared_at_context_tokens": list(dict.fromkeys(compared))}
    blocks = {v: _layer_block(data.items, v, p.seed) for v in VARIANTS if v != "default"}
    for variant, block in blocks.items():
        out[variant] = {}
        for li, k in enumerate(setup.layers):
            entry = {}
            for key, val in block.items():
                entry[key] = val["mean"][li]
                entry[f"{key}_ci_low"] = val["ci_low"][li]
                entry[f"{key}_ci_high"] = val["ci_high"][li]
            out[variant][layer_key(k)] = entry
    sh = blocks["shuffled_labels"]
    out["shuffled_labels_summary"] = {
        "distance_correlation_mean_over_layers_and_contexts": float(np.nanmean(sh["distance_correlation"]["mean"])),
        "distance_correlation_max_abs": float(np.nanmax(np.abs(sh["distance_correlation"]["mean"]))),
        "energy_norm_mean_over_layers_and_contexts": float(np.nanmean(sh["energy_norm"]["mean"])),
        "energy_norm_chance": setup.energy_chance,
    }
    return out


def controls_table(geo: dict, ctl: dict) -> pd.DataFrame:
    """Per layer, at the compared context lengths: distance correlation and E_norm of the default next to the two
    controls (means over contexts)."""
    ctx = [int(t) for t in ctl["context_tokens"]]
    rows = []
    for k in geo["layers"]:
        key = layer_key(k)
        for t in ctl["compared_at_context_tokens"]:
            c = ctx.index(t)
            row = {"layer": k, "context (tokens)": t}
            for short, name in (("dcorr", "distance_correlation"), ("E_norm", "energy_norm")):
                row[f"{short} default"] = geo["per_layer"][key][name][c]
                for variant in ("sink_included", "shuffled_labels"):
                    row[f"{short} {variant.replace('_', ' ')}"] = ctl[variant][key][name][c]
            rows.append(row)
    return pd.DataFrame(rows).round(3)


# ---------------------------------------------------------------------------------------------------- PCA views


def pca_views(setup: Setup, data: Measurements) -> dict:
    """PCs 1-2 of the node means averaged over contexts, for every view of the explorer:
    ``{(sink_included, layer, context_tokens): (n, 2) array}``."""
    views = {}
    for variant in ("default", "sink_included"):
        for li, k in enumerate(setup.layers):
            for ci, t in enumerate(setup.context_tokens):
                views[(variant == "sink_included", k, int(t))] = pca(data.mean_means[variant][li, ci], k=2)[0]
    return views


def explorer(setup: Setup, data: Measurements, geo: dict):
    """The interactive PCA explorer (sliders for layer and context length, a toggle for the sink) in JupyterLab,
    starting at :func:`best_layer` and the largest context length; a static figure of that view when headless."""
    from iclnb.plotting.widgets import pca_explorer

    return pca_explorer(pca_views(setup, data), setup.graph, setup.layers, [int(t) for t in setup.context_tokens],
                        layer=best_layer(geo), context=int(setup.context_tokens[-1]))


# ---------------------------------------------------------------------------------------------------- days of week


def days_of_week(setup: Setup, data: Measurements, p) -> dict | None:
    """For ``graph="days_of_week_ring"``: at each layer and context length, the Procrustes fit of every pair among
    PCs 1-4 to the calendar circle and to the in-context ring, next to the null (the best-pair fit of rings through
    the nodes in random orders). None for other graphs."""
    targets = pair_targets(setup.graph)
    if not targets:
        return None
    pairs = [f"PC{i + 1}-PC{j + 1}" for i, j in combinations(range(N_PCS), 2)]
    out = {"pairs": pairs, "calendar_order": setup.graph.extra["calendar_order"], "layers": list(setup.layers),
           "context_tokens": setup.context_tokens}
    nulls = [name for name in targets if name.startswith("null_")]
    # null: best-pair r2 of a random ring order, per context averaged over the orders: (context, layer, length)
    null_best = np.nanmean([np.nanmax(_stack(data.items, "default", f"pc_pairs_r2_{name}"), axis=-1)
                            for name in nulls], axis=0)
    null_ci = _ci(null_best, p.seed, "days_null")
    out["random_ring_order_best_r2"] = {layer_key(k): {"mean": null_ci["mean"][li], "ci_low": null_ci["ci_low"][li],
                                                       "ci_high": null_ci["ci_high"][li]}
                                        for li, k in enumerate(setup.layers)}
    for name in ("calendar", "in_context"):
        ci = _ci(_stack(data.items, "default", f"pc_pairs_r2_{name}"), p.seed, f"days_{name}")  # (layer, len, pair)
        out[name] = {layer_key(k): {"r2_mean": ci["mean"][li], "r2_ci_low": ci["ci_low"][li],
                                    "r2_ci_high": ci["ci_high"][li]} for li, k in enumerate(setup.layers)}
    return out


def days_of_week_table(days: dict | None) -> pd.DataFrame | None:
    """Per layer at the largest context length: the best PC pair for the calendar circle and for the in-context
    ring with its r2, and the null's best r2. None when the run is not on the days-of-week ring."""
    if days is None:
        return None
    rows = []
    for k in days["layers"]:
        key = layer_key(k)
        row = {"layer": k}
        for name, label in (("calendar", "calendar"), ("in_context", "in-context ring")):
            r = np.asarray(days[name][key]["r2_mean"], dtype=float)[-1]
            best = int(np.nanargmax(r)) if np.isfinite(r).any() else 0
            row[f"{label}: best pair"] = days["pairs"][best]
            row[f"{label}: r2"] = r[best]
        row["random ring order: best r2"] = np.asarray(days["random_ring_order_best_r2"][key]["mean"])[-1]
        rows.append(row)
    return pd.DataFrame(rows).round(3)


# ---------------------------------------------------------------------------------------------------- summary


def summary(setup: Setup, acc: dict, geo: dict, ctl: dict) -> dict:
    """The headline numbers of the reproduction (computed, with CIs): ``rows`` (quantity, layer, context length,
    value, CI) and the same numbers under named keys."""
    s = acc["summary"]
    t = int(setup.context_tokens[-1])
    rows = []

    def row(quantity, d=None, layer=None, tokens=None, value=None):
        if d is not None:
            value, low, high = d["mean"], d["ci_low"], d["ci_high"]
        else:
            low = high = None
        rows.append({"quantity": quantity, "layer": layer, "context_tokens": tokens, "value": value,
                     "ci_low": low, "ci_high": high})

    row(f"accuracy, first {FIRST_WORDS} words", s[f"first_{FIRST_WORDS}_words"])
    row(f"chance, first {FIRST_WORDS} words", s[f"chance_first_{FIRST_WORDS}_words"])
    row(f"accuracy, last {LAST_WORDS} words", s[f"last_{LAST_WORDS}_words"])
    row(f"copying baseline, last {LAST_WORDS} words", s[f"copy_baseline_last_{LAST_WORDS}_words"])
    row(f"chance, last {LAST_WORDS} words", s[f"chance_last_{LAST_WORDS}_words"])
    out = {"accuracy_first_50_words": s[f"first_{FIRST_WORDS}_words"]["mean"],
           "accuracy_last_200_words": s[f"last_{LAST_WORDS}_words"]["mean"],
           "chance_first_50_words": s[f"chance_first_{FIRST_WORDS}_words"]["mean"],
           "chance_all_words": s["chance_all_words"]["mean"]}

    def dc(k):
        lay = geo["per_layer"][layer_key(k)]
        return {"mean": lay["distance_correlation"][-1], "ci_low": lay["distance_correlation_ci_low"][-1],
                "ci_high": lay["distance_correlation_ci_high"][-1]}

    def highest(layers):
        return max(layers, key=lambda k: np.nan_to_num(dc(k)["mean"], nan=-np.inf))

    last_third = [k for k in setup.layers if k >= setup.n_blocks - setup.n_blocks // 3]
    early = [k for k in setup.layers if k <= 4]
    if last_third:
        best = highest(last_third)
        row("distance correlation, best of the last third", dc(best), layer=best, tokens=t)
        out["distance_correlation_best_last_third"] = {"layer": best, "context_tokens": t, "value": dc(best)["mean"]}
    if early:
        worst = highest(early)
        row("distance correlation, highest of layers 0-4", dc(worst), layer=worst, tokens=t)
        out["distance_correlation_max_layers_0_4"] = {"layer": worst, "context_tokens": t,
                                                      "value": dc(worst)["mean"]}
    sh = ctl["shuffled_labels_summary"]
    row("shuffled labels: distance correlation", value=sh["distance_correlation_mean_over_layers_and_contexts"])
    row("shuffled labels: E_norm", value=sh["energy_norm_mean_over_layers_and_contexts"])
    row("E_norm chance (edge density)", value=setup.energy_chance)
    out["shuffled_labels_distance_correlation"] = sh["distance_correlation_mean_over_layers_and_contexts"]
    out["shuffled_labels_energy_norm"] = sh["energy_norm_mean_over_layers_and_contexts"]
    out["rows"] = rows
    return out


def summary_table(summ: dict) -> pd.DataFrame:
    """The summary's rows as a table: quantity, the layer and context length it refers to (blank where it is an
    average), value and 95% bootstrap interval over contexts (blank where none applies)."""
    table = pd.DataFrame(summ["rows"], columns=["quantity", "layer", "context_tokens", "value", "ci_low", "ci_high"])
    table["layer"] = table["layer"].astype("Int64")
    table["context_tokens"] = table["context_tokens"].astype("Int64")
    return table.rename(columns={"context_tokens": "context (tokens)"})


# ---------------------------------------------------------------------------------------------------- results.json


def results_document(setup: Setup, acc: dict, geo: dict, ctl: dict, days: dict | None, summ: dict) -> dict:
    """The ``results`` part of results.json: ``layer_<k>`` per layer, accuracy, controls, days of week (for that
    graph), summary, and what anyone needs to recompute everything (the graph, every context's words, the conversion
    of context lengths to words)."""
    graph = setup.graph
    doc = {
        **geo["per_layer"],
        "layers": setup.layers,
        "energy_norm_chance": geo["energy_norm_chance"],
        "accuracy": acc,
        "controls": ctl,
        **({"days_of_week": days} if days is not None else {}),
        "summary": summ,
        "pca_figure_layer": best_layer(geo),
        "graph": {"name": graph.name, "words": list(graph.words), "edges": graph.edges().tolist(),
                  **({"calendar_order": graph.extra["calendar_order"]} if "calendar_order" in graph.extra else {})},
        "spectral_embedding": geo["spectral_embedding"],
        "contexts": setup.words,
        "tokens_per_context": setup.tokens_per_context,
        "tokens_per_word": setup.tokens_per_word,
        "context_lengths": {"tokens": setup.context_tokens,
                            "words_context_0": setup.table["context (words)"].to_numpy(),
                            "window_tokens": setup.window_tokens},
        "conventions": {
            "layer": "residual output of decoder block k (0-based), before the final norm",
            "word_representation": "residual at the last token of each word's span",
            "node_means": f"trailing window of the words within the last {setup.window_tokens} tokens, sink excluded",
            "bos": setup.bos,
        },
    }
    return doc


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {
    "batch_size": 2,
    "context_lengths_tokens": "20,40",
    "layers": "0,-1",
    "n_contexts": 2,
    "n_shuffles": 2,
}
