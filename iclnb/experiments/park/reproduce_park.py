"""reproduce_park: in-context learning of representations (Park et al. 2025; SPEC sections 1, 4, 5, 7.10).

A model reads random walks over a graph whose nodes are ordinary words (Park's 4x4 grid by default). From one forward
pass per sequence this module measures, at every requested layer and context point (prefix property: the states of a
prefix do not depend on what follows):

* rule-following accuracy at each word position (next-token mass on the current node's neighbours, raw and
  renormalised over the graph's words), next to the copying baseline (an ideal recaller of transitions already seen)
  and chance (mean degree / n);
* node means over a trailing window of the last ``window`` tokens (sink excluded), their scale-invariant Dirichlet
  energy E_norm, the Spearman correlation of node-mean distance with graph distance, the PCA of the node means and
  the Procrustes fit of its top two components to the graph's spectral embedding;
* negative controls: the same statistics with node identities permuted (must fall to chance) and with the attention
  sink included (for a model with BOS the sink is the BOS state at token 0, counted as an occurrence of the first
  word's node, which is what a token-level analysis without special handling does);
* for ``graph="days_of_week_ring"``: which pairs among PCs 1-4 carry the calendar circle and the in-context ring.

Every statistic comes with a bootstrap interval over sequences. The notebook ``notebooks/reproduce_park.ipynb`` calls
the steps in order: :func:`prepare`, :func:`measure`, :func:`accuracy`, :func:`geometry`, :func:`controls`,
:func:`pca_figure`, :func:`days_of_week`, :func:`explorer`, :func:`summary`.

Default words: Park's 16 words for the 4x4 grid (:data:`iclnb.graphs.GRID_WORDS`); for any other graph the first n
words of :data:`iclnb.graphs.NOUNS` (``ring`` of size n; ``hex`` of size s is networkx's honeycomb of s x s hexagons,
16 nodes for s=2, 30 for s=3). ``days_of_week_ring`` uses the seven weekday names in a seeded ring order and ignores
``graph_size`` and ``words``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from iclnb import graphs as G
from iclnb.core.errors import IclnbError
from iclnb.experiments.common import choice, int_list, positive_int
from iclnb.metrics import (
    copy_baseline,
    dirichlet_energy,
    distance_correlation,
    graph_distances,
    neighbor_accuracy,
    node_means_prefix,
    pca,
    procrustes_fit,
    spectral_embedding,
)
from iclnb.models import adds_bos
from iclnb.core.progress import progress
from iclnb.prompts import encode_walk, first_token_ids, tokenization_report
from iclnb.represent import represent_walks
from iclnb.core.seeding import stream
from iclnb.stats import bootstrap_ci

GRAPHS = ("grid", "ring", "hex", "days_of_week_ring")
N_PCS = 4  # PCs kept per (layer, context point): the days-of-week test looks at PCs 1-4
VARIANTS = ("default", "sink_included", "shuffled_labels")

__all__ = [
    "GRAPHS",
    "Setup",
    "Measurements",
    "make_graph",
    "sample_walks",
    "context_geometry",
    "sequence_statistics",
    "prepare",
    "measure",
    "accuracy",
    "geometry",
    "controls",
    "pca_figure",
    "days_of_week",
    "explorer",
    "summary",
    "collect_results",
]


# ---------------------------------------------------------------------------------------------------- setup


def make_graph(graph: str = "grid", graph_size: int = 4, words=None, seed: int = 42) -> G.Graph:
    """The graph of a run: ``grid`` (size x size), ``ring`` (size nodes), ``hex`` (size x size hexagons) or
    ``days_of_week_ring`` (seven weekdays on a ring in an order drawn from ``stream(seed, "graph")``).

    ``words``: None/"" for the defaults (see the module docstring), else a list or a comma-separated string.
    """
    choice("graph", graph, GRAPHS)
    if isinstance(words, str):
        words = [w for w in words.replace(",", " ").split() if w] or None
    if graph == "days_of_week_ring":
        return G.days_of_week_ring(stream(seed, "graph"))
    size = positive_int("graph_size", graph_size, 1)
    if graph == "grid":
        return G.grid(size, size, words=words)
    if graph == "ring":
        return G.ring(size, words=words)
    return G.hex_lattice(size, size, words=words)


def sample_walks(graph: G.Graph, tokenizer, n_sequences: int, seq_tokens: int, seed: int) -> list[np.ndarray]:
    """``n_sequences`` uniform random walks (``stream(seed, "walks", i)``), each as many words as fit in
    ``seq_tokens`` tokens of the model's encoding (BOS included); words may have several tokens."""
    lengths = tokenization_report(tokenizer, graph.words)
    bos = 1 if adds_bos(tokenizer) else 0
    longest = max(1, seq_tokens - bos)  # words have >= 1 token
    walks = []
    for i in range(n_sequences):
        walk = G.random_walk(graph, longest, stream(seed, "walks", i))
        ends = bos + np.cumsum([lengths[graph.words[k]] for k in walk])
        n_words = int(np.searchsorted(ends, seq_tokens, side="right"))
        if n_words < 2:
            raise IclnbError(f"seq_tokens={seq_tokens} leaves room for fewer than two words")
        walks.append(walk[:n_words])
    return walks


def context_geometry(spans: np.ndarray, context_tokens, window_tokens: int) -> dict:
    """Convert context points and the window from tokens to word positions for one encoding.

    For context point t (tokens), the context holds the words whose span ends at or before t; the window holds those
    of them whose span starts at or after t - window_tokens; the sink (token 0) lies in the window when t <= window.
    Returns arrays ``words``, ``window_words`` and ``window_has_sink`` (one entry per context point).
    """
    spans = np.asarray(spans)
    t = np.asarray(context_tokens, dtype=np.int64)
    words = np.searchsorted(spans[:, 1], t, side="right")
    first = np.searchsorted(spans[:, 0], t - int(window_tokens), side="left")
    window_words = np.maximum(words - first, 0)
    return {"words": words, "window_words": window_words, "window_has_sink": t <= int(window_tokens)}


@dataclass
class Setup:
    """Everything fixed before the forward passes."""

    params: dict
    graph: G.Graph
    walks: list  # node-index arrays
    words: list  # word lists
    layers: list
    context_tokens: np.ndarray
    window_tokens: int
    token_ids: list
    tokens_per_word: dict
    bos: bool
    sequence_tokens: list
    n_blocks: int
    table: pd.DataFrame = field(default=None)

    @property
    def chance(self) -> float:
        return float(self.graph.adjacency.sum(axis=1).mean() / self.graph.n)

    @property
    def energy_chance(self) -> float:
        n = self.graph.n
        return float(len(self.graph.edges()) / (n * (n - 1) / 2))


def prepare(model, params: dict) -> Setup:
    """Check the parameters, build the graph and the walks, convert context points to words.

    ``setup.table`` lists each context point in tokens and words (of sequence 0) and the window it uses.
    """
    p = dict(params)
    n_seq = positive_int("n_sequences", p.get("n_sequences", 16), 2)
    seq_tokens = positive_int("seq_tokens", p.get("seq_tokens", 1400), 3)
    window = positive_int("window", p.get("window", 200), 1)
    seed = positive_int("seed", p.get("seed", 42), 0)
    ctx = sorted(set(int_list("context_points", p.get("context_points", "50,100,200,400,800,1400"), 2)))
    if ctx[-1] > seq_tokens:
        raise IclnbError(f"context point {ctx[-1]} exceeds seq_tokens={seq_tokens}; context points are in tokens")
    if seq_tokens > model.max_positions:
        raise IclnbError(f"seq_tokens={seq_tokens} exceeds the {model.max_positions} positions of {model.name}")
    graph = make_graph(p.get("graph", "grid"), p.get("graph_size", 4), p.get("words") or None, seed)
    tok = model.tokenizer
    token_ids = first_token_ids(tok, graph.words)
    walks = sample_walks(graph, tok, n_seq, seq_tokens, seed)
    words = [[graph.words[k] for k in w] for w in walks]
    layers = [k for k in model.resolve_layers(p.get("layers", "all")) if k != "embed"]
    if not layers:
        raise IclnbError("reproduce_park needs at least one decoder block in layers (not only 'embed')")
    encs = [encode_walk(tok, w) for w in words]
    geo = context_geometry(encs[0].spans, ctx, window)
    table = pd.DataFrame({
        "context tokens": ctx,
        "context words": geo["words"],
        "window words": geo["window_words"],
        "window holds the sink": geo["window_has_sink"],
    })
    setup = Setup(params=p, graph=graph, walks=walks, words=words, layers=layers,
                  context_tokens=np.asarray(ctx), window_tokens=window, token_ids=token_ids,
                  tokens_per_word=tokenization_report(tok, graph.words), bos=encs[0].bos,
                  sequence_tokens=[len(e) for e in encs], n_blocks=model.n_layers, table=table)
    return setup


# ---------------------------------------------------------------------------------------------------- per sequence


def _means_at(reps: np.ndarray, nodes: np.ndarray, n: int, ends: np.ndarray, windows: np.ndarray):
    """Node means (len(ends), n, d) with a per-context window (rows), grouped so that each distinct window is one
    ``node_means_prefix`` call. Rows with node id n are ignored (the excluded sink)."""
    out = np.full((len(ends), n, reps.shape[1]), np.nan)
    counts = np.zeros((len(ends), n), dtype=np.int64)
    for w in np.unique(windows):
        idx = np.flatnonzero(windows == w)
        if w < 1:
            continue
        m, c = node_means_prefix(reps, nodes, n + 1, ends[idx], window=int(w))
        out[idx], counts[idx] = m[:, :n], c[:, :n]
    return out, counts


def _pair_r2(coords: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Procrustes r2 of every pair of PCs (i < j among the columns of coords) onto a 2-D target."""
    pairs = list(combinations(range(coords.shape[1]), 2))
    return np.array([procrustes_fit(coords[:, [i, j]], target)[1] for i, j in pairs])


def _geometry_stats(means: np.ndarray, adjacency: np.ndarray, spectral: np.ndarray, targets: dict,
                    coords=None, ratio=None) -> dict:
    """Scalar geometry of one node-means matrix (n, d); ``coords``/``ratio``: its PCA when already computed."""
    if coords is None:
        coords, ratio, _ = pca(means, k=N_PCS)
    out = {
        "energy_norm": dirichlet_energy(means, adjacency),
        "energy_raw": dirichlet_energy(means, adjacency, normalized=False),
        "distance_correlation": distance_correlation(means, adjacency),
        "procrustes_r2": procrustes_fit(coords[:, :2], spectral)[1],
        "explained_variance": ratio,
    }
    for name, target in targets.items():
        out[f"pc_pairs_r2_{name}"] = _pair_r2(coords, target)
    return out


def _shuffled_stats(means: np.ndarray, coords: np.ndarray, perms, adjacency: np.ndarray,
                    spectral: np.ndarray) -> dict:
    """E_norm, distance correlation and Procrustes r2 with node identities permuted, averaged over ``perms``.

    Permuting node identities permutes the rows of the means, of their pairwise distances and of their PCA
    coordinates, so those are computed once. Falls back to the plain metrics when some node is unseen.
    """
    keys = ("energy_norm", "distance_correlation", "procrustes_r2")
    if np.isnan(means).any():
        vals = [_geometry_stats(means[p], adjacency, spectral, {}, coords[p], None) for p in perms]
        return {k: float(np.nanmean([v[k] for v in vals])) for k in keys}
    from scipy.spatial.distance import pdist, squareform
    from scipy.stats import rankdata

    n = means.shape[0]
    dist = squareform(pdist(means))
    iu = np.triu_indices(n, 1)
    total = float(np.sum(dist[iu] ** 2))
    g = graph_distances(adjacency)[iu]
    g_rank = rankdata(g)
    edges = np.triu(adjacency, 1)[iu] != 0
    scale = dist.max() if dist.max() > 0 else 1.0
    out = {k: [] for k in keys}
    for p in perms:
        e = dist[np.ix_(p, p)][iu]
        out["energy_norm"].append(float(np.sum(e[edges] ** 2) / total) if total > 0 else np.nan)
        r = rankdata(np.round(e / scale, 12))
        out["distance_correlation"].append(float(np.corrcoef(g_rank, r)[0, 1]) if np.ptp(r) > 0 else np.nan)
        out["procrustes_r2"].append(procrustes_fit(coords[p][:, :2], spectral)[1])
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else np.nan for k, v in out.items()}


def _circle(angles_index: np.ndarray, n: int) -> np.ndarray:
    a = 2 * np.pi * np.asarray(angles_index) / n
    return np.stack([np.cos(a), np.sin(a)], axis=1)


N_RING_NULL = 20  # random ring orders: the null for "this PC pair carries that ring"


def pair_targets(graph: G.Graph) -> dict:
    """2-D targets whose location among PCs 1-4 is reported: for days_of_week_ring the calendar circle, the
    in-context ring, and ``null_<i>``: rings through the nodes in random orders (a stream fixed by the graph), whose
    best-pair fit is the level a ring with no relation to the representation reaches. None for other graphs."""
    if graph.name != "days_of_week_ring":
        return {}
    order = np.asarray(graph.extra["calendar_order"])
    targets = {"calendar": _circle(order, graph.n), "in_context": _circle(np.arange(graph.n), graph.n)}
    rng = stream(0, "random_ring_orders", *order.tolist())
    for i in range(N_RING_NULL):
        targets[f"null_{i}"] = _circle(rng.permutation(graph.n), graph.n)
    return targets


def sequence_statistics(states, walk: np.ndarray, graph: G.Graph, layers, context_tokens, window_tokens: int,
                        sink_state: dict | None, rng: np.random.Generator, n_shuffles: int = 10):
    """All statistics of one sequence from its word states (``iclnb.represent.WordStates``).

    sink_state: layer -> (d,) residual at token 0 (BOS) for models with BOS, else None (then the sink is the first
    word's own state). Returns ``(item, arrays)``: ``item`` is the JSON-safe checkpoint entry (per-position accuracy,
    (layer, context) statistics for each variant), ``arrays`` the node means to keep on disk (``means`` of the
    default variant, ``sink_means`` for the context points whose window holds the sink).
    """
    n = graph.n
    adj = np.asarray(graph.adjacency, dtype=np.float64)
    spectral = spectral_embedding(adj, 2)[0]
    targets = pair_targets(graph)
    walk = np.asarray(walk)
    acc = neighbor_accuracy(states.token_probs, walk, adj)
    geo = context_geometry(states.encoding.spans, context_tokens, window_tokens)
    ends, windows, has_sink = geo["words"], geo["window_words"], geo["window_has_sink"]
    sink = states.sink
    nodes_default = np.where(sink, n, walk)  # the sink word (no-BOS models) is excluded by default
    bos = sink_state is not None
    perms = [rng.permutation(n) for _ in range(n_shuffles)]

    n_l, n_c = len(layers), len(ends)
    stats = {v: {} for v in VARIANTS}
    means_all = np.full((n_l, n_c, n, states.reps[layers[0]].shape[1]), np.nan, dtype=np.float32)
    sink_idx = np.flatnonzero(has_sink)
    sink_means = np.full((n_l, len(sink_idx), n, means_all.shape[-1]), np.nan, dtype=np.float32)

    def put(variant, li, ci, values):
        for key, val in values.items():
            arr = stats[variant].setdefault(key, np.full((n_l, n_c) + np.shape(val), np.nan))
            arr[li, ci] = val

    for li, k in enumerate(layers):
        reps = states.reps[k]
        means, _ = _means_at(reps, nodes_default, n, ends, windows)
        means_all[li] = means
        # the sink included: its state joins the node means as an occurrence of the first word's node
        if bos:
            reps_s = np.concatenate([np.asarray(sink_state[k], dtype=reps.dtype)[None], reps])
            nodes_s = np.concatenate([walk[:1], walk])
            ends_s, windows_s = ends + 1, windows + has_sink.astype(np.int64)
        else:
            reps_s, nodes_s, ends_s, windows_s = reps, walk, ends, windows
        means_s, _ = _means_at(reps_s, nodes_s, n, ends_s, windows_s)
        sink_means[li] = means_s[sink_idx]
        for ci in range(n_c):
            coords, ratio, _ = pca(means[ci], k=N_PCS)
            put("default", li, ci, _geometry_stats(means[ci], adj, spectral, targets, coords, ratio))
            if has_sink[ci]:
                put("sink_included", li, ci, _geometry_stats(means_s[ci], adj, spectral, targets))
            else:  # the window does not reach token 0: the same node means
                put("sink_included", li, ci, _geometry_stats(means[ci], adj, spectral, targets, coords, ratio))
            # node identities permuted: the means stay, their assignment to graph nodes is random
            put("shuffled_labels", li, ci, _shuffled_stats(means[ci], coords, perms, adj, spectral))
    item = {
        "accuracy_raw": acc["raw"],
        "accuracy_renormalized": acc["renormalized"],
        "copy_baseline": copy_baseline(walk, adj),
        "word_end_tokens": states.encoding.spans[:, 1],
        "context_words": ends,
        "window_words": windows,
        "stats": stats,
    }
    return item, {"means": means_all, "sink_means": sink_means, "sink_context_index": sink_idx}


# ---------------------------------------------------------------------------------------------------- the pass


@dataclass
class Measurements:
    """Per-sequence results (checkpoint items, in sequence order) and node means averaged over sequences."""

    items: list
    mean_means: dict  # variant -> (layers, contexts, n, d) float64, mean over sequences of node means
    sink_state: dict | None


def _save_npz(path: Path, **arrays) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sink_states(model, layers) -> dict | None:
    """The residual at token 0 for a model with BOS: in a causal model it sees only BOS, so it is the same in every
    sequence and one pass over the lone BOS token gives it. None for a model without BOS."""
    if not adds_bos(model.tokenizer):
        return None
    cap = model.run(torch.tensor([[model.tokenizer.bos_token_id]]), layers=layers)
    return {k: cap.resid[k][0, 0].cpu().numpy() for k in layers}


def measure(run, model, setup: Setup, batch_size: int = 4, n_shuffles: int = 10) -> Measurements:
    """One forward pass per sequence (batches of ``batch_size`` through ``represent_walks``), every layer and
    context point from it. Checkpointed per sequence (``checkpoint_sequences.json`` + ``raw_data/node_means_<i>.npz``)
    so an interrupted run resumes where it stopped."""
    ck = run.checkpoint("sequences", total=len(setup.walks), every_s=0)
    raw = run.raw_data_dir
    seed = int(setup.params.get("seed", 42))
    sink_state = sink_states(model, setup.layers) if setup.bos else None
    todo = [i for i in range(len(setup.walks)) if str(i) not in ck or not (raw / f"node_means_{i}.npz").exists()]
    bar = progress(total=len(setup.walks), desc="sequences", initial=len(setup.walks) - len(todo))
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        states = represent_walks(model, [setup.words[i] for i in batch], setup.layers, token_ids=setup.token_ids,
                                 batch_size=batch_size)
        for i, st in zip(batch, states):
            item, arrays = sequence_statistics(st, setup.walks[i], setup.graph, setup.layers, setup.context_tokens,
                                               setup.window_tokens, sink_state, stream(seed, "label_shuffle", i),
                                               n_shuffles)
            _save_npz(raw / f"node_means_{i}.npz", **arrays)
            ck[str(i)] = item
            bar.update(1)
        del states
    bar.close()
    ck.flush()
    items = [ck[str(i)] for i in range(len(setup.walks))]
    sums, sink_sums = None, None
    for i in range(len(setup.walks)):
        with np.load(raw / f"node_means_{i}.npz") as z:
            m, s = z["means"].astype(np.float64), z["sink_means"].astype(np.float64)
            sidx = z["sink_context_index"]
        sums = m if sums is None else sums + m
        full_s = m.copy()
        full_s[:, sidx] = s
        sink_sums = full_s if sink_sums is None else sink_sums + full_s
    k = len(setup.walks)
    return Measurements(items=items, mean_means={"default": sums / k, "sink_included": sink_sums / k},
                        sink_state=sink_state)


# ---------------------------------------------------------------------------------------------------- statistics


def _ci(samples, seed, name, axis=0) -> dict:
    est, lo, hi = bootstrap_ci(np.asarray(samples, dtype=np.float64), axis=axis, rng=stream(seed, "bootstrap", name))
    return {"mean": est, "ci_low": lo, "ci_high": hi}


def _stack(items, variant, key) -> np.ndarray:
    return np.stack([np.asarray(it["stats"][variant][key], dtype=np.float64) for it in items])


def _padded(items, key) -> np.ndarray:
    longest = max(len(it[key]) for it in items)
    out = np.full((len(items), longest), np.nan)
    for row, it in enumerate(items):
        out[row, : len(it[key])] = np.asarray(it[key], dtype=np.float64)
    return out


def _fmt(d: dict) -> str:
    return f"{d['mean']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def accuracy(run, setup: Setup, data: Measurements, results: dict, bin_words: int = 25):
    """Rule-following accuracy vs context (bins of ``bin_words`` word positions) with the copying baseline and
    chance; fills ``results["accuracy"]``, saves the figure ``accuracy`` and returns it."""
    from iclnb.experiments.park import figures as F
    from iclnb.plotting.save import save_figure

    seed = int(setup.params.get("seed", 42))
    raw, ren, cop = (_padded(data.items, k) for k in ("accuracy_raw", "accuracy_renormalized", "copy_baseline"))
    ends = _padded(data.items, "word_end_tokens")
    T = raw.shape[1]
    edges = np.arange(0, T + bin_words, bin_words)
    edges[-1] = min(edges[-1], T)
    edges = np.unique(np.minimum(edges, T))

    def binned(x):
        return np.stack([np.nanmean(x[:, a:b], axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)

    b_raw, b_ren, b_cop = binned(raw), binned(ren), binned(cop)
    ci = _ci(b_raw, seed, "accuracy")
    ci_ren = _ci(b_ren, seed, "accuracy_renormalized")
    ci_cop = _ci(b_cop, seed, "copy_baseline")
    # x: the token position that ends the bin's last word (mean over sequences), and the bin's last word count
    ctx_tokens = np.nanmean(ends[:, edges[1:] - 1], axis=0)
    first = min(50, T)
    last = min(200, T)
    headline = {
        "first_50_words": _ci(np.nanmean(raw[:, :first], axis=1), seed, "acc_first"),
        "last_200_words": _ci(np.nanmean(raw[:, -last:], axis=1) if T >= last else np.nanmean(raw, axis=1), seed,
                              "acc_last"),
        "copy_baseline_first_50_words": _ci(np.nanmean(cop[:, :first], axis=1), seed, "copy_first"),
        "copy_baseline_last_200_words": _ci(np.nanmean(cop[:, -last:], axis=1), seed, "copy_last"),
        "renormalized_last_200_words": _ci(np.nanmean(ren[:, -last:], axis=1), seed, "ren_last"),
    }
    results["accuracy"] = {
        "context_tokens": ctx_tokens,
        "context_words": edges[1:],
        "bin_words": bin_words,
        "mean": ci["mean"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"],
        "renormalized_mean": ci_ren["mean"], "renormalized_ci_low": ci_ren["ci_low"],
        "renormalized_ci_high": ci_ren["ci_high"],
        "copy_baseline": ci_cop["mean"], "copy_baseline_ci_low": ci_cop["ci_low"],
        "copy_baseline_ci_high": ci_cop["ci_high"],
        "chance": setup.chance,
        "summary": headline,
        "definition": "raw = next-token mass on the first tokens of the current node's neighbours; renormalized = "
                      "raw / mass on all graph words; bins of word positions, 95% bootstrap CI over sequences",
    }
    print(f"neighbour mass: first {first} words {_fmt(headline['first_50_words'])}, last {last} words "
          f"{_fmt(headline['last_200_words'])}; copying baseline over the last {last} words "
          f"{_fmt(headline['copy_baseline_last_200_words'])}; chance {setup.chance:.3f}")
    fig = F.accuracy_figure(results["accuracy"])
    save_figure(fig, run.output_dir / "figures", "accuracy")
    return fig


def _layer_block(setup, items, variant, seed) -> dict:
    """Per layer: E_norm, distance correlation, Procrustes r2 (with CIs) at each context point."""
    out = {}
    for key in ("energy_norm", "distance_correlation", "procrustes_r2"):
        x = _stack(items, variant, key)  # (seq, layer, ctx)
        out[key] = _ci(x, seed, f"{variant}_{key}")
    return out


def geometry(run, setup: Setup, data: Measurements, results: dict):
    """E_norm, distance correlation and the PCA/Procrustes comparison per layer and context point; fills
    ``results["layer_<k>"]``, saves the figures ``geometry_heatmap`` and ``geometry_curves``; returns the
    heatmap figure."""
    from iclnb.experiments.park import figures as F
    from iclnb.plotting.save import save_figure

    seed = int(setup.params.get("seed", 42))
    block = _layer_block(setup, data.items, "default", seed)
    raw_e = _ci(_stack(data.items, "default", "energy_raw"), seed, "energy_raw")
    ev = _stack(data.items, "default", "explained_variance")  # (seq, layer, ctx, pcs)
    ctx_words = np.stack([np.asarray(it["context_words"]) for it in data.items])
    adj = np.asarray(setup.graph.adjacency, dtype=np.float64)
    spectral = spectral_embedding(adj, 2)[0]
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
            "explained_variance_per_sequence": np.nanmean(ev[:, li], axis=0),
            "procrustes_r2": block["procrustes_r2"]["mean"][li],
            "procrustes_r2_ci_low": block["procrustes_r2"]["ci_low"][li],
            "procrustes_r2_ci_high": block["procrustes_r2"]["ci_high"][li],
            "mean_over_sequences": {
                "coords": [c[0] for c in coords],
                "explained_variance": [c[1] for c in coords],
                "procrustes_r2": [procrustes_fit(c[0][:, :2], spectral)[1] for c in coords],
                "distance_correlation": [distance_correlation(m, adj) for m in mm],
                "energy_norm": [dirichlet_energy(m, adj) for m in mm],
            },
            "definition": "PCA of node means; procrustes_r2 = similarity-Procrustes fit of PCs 1-2 onto the graph's "
                          "spectral embedding (Laplacian eigenvectors 2-3), per sequence with CI; mean_over_sequences "
                          "= the same on node means averaged over sequences",
        }
        results[f"layer_{k}"] = layer
    results["energy_norm_chance"] = setup.energy_chance
    dc = block["distance_correlation"]["mean"][:, -1]
    best = setup.layers[int(np.nanargmax(dc))]
    print(f"distance correlation at {setup.context_tokens[-1]} tokens: highest at layer {best} "
          f"({np.nanmax(dc):.3f}); E_norm there {block['energy_norm']['mean'][setup.layers.index(best), -1]:.3f} "
          f"(chance {setup.energy_chance:.3f})")
    fig_h = F.geometry_heatmap(results, setup.layers, setup.context_tokens)
    save_figure(fig_h, run.output_dir / "figures", "geometry_heatmap")
    fig_c = F.geometry_curves(results, _curve_layers(setup.layers), setup.energy_chance)
    save_figure(fig_c, run.output_dir / "figures", "geometry_curves")
    return fig_h


def _curve_layers(layers: list) -> list:
    if len(layers) <= 5:
        return list(layers)
    picks = np.unique(np.round(np.linspace(0, len(layers) - 1, 5)).astype(int))
    return [layers[i] for i in picks]


def best_layer(setup: Setup, results: dict) -> int:
    """The layer with the highest mean distance correlation at the largest context point."""
    vals = [results[f"layer_{k}"]["distance_correlation"][-1] for k in setup.layers]
    vals = np.where(np.isfinite(np.asarray(vals, dtype=float)), vals, -np.inf)
    return setup.layers[int(np.argmax(vals))]


def controls(run, setup: Setup, data: Measurements, results: dict) -> pd.DataFrame:
    """The negative controls next to the default at every layer, at the largest context point and at the largest
    context point whose window holds the sink; fills ``results["controls"]`` and returns the table."""
    seed = int(setup.params.get("seed", 42))
    out = {"description": {
        "shuffled_labels": "node identities permuted (n_shuffles random permutations per sequence, averaged): the "
                           "node means are kept but assigned to random graph nodes; E_norm should fall to "
                           f"{setup.energy_chance:.3f} and the correlations to 0",
        "sink_included": "the attention-sink state (token 0) counted as an occurrence of the first word's node; it "
                         "changes the node means only at context points whose window reaches token 0",
    }}
    rows = []
    ctx = setup.context_tokens
    sink_ctx = np.flatnonzero(ctx <= setup.window_tokens)
    cols = [len(ctx) - 1] + ([int(sink_ctx[-1])] if sink_ctx.size else [])
    blocks = {v: _layer_block(setup, data.items, v, seed) for v in VARIANTS}
    for variant in ("shuffled_labels", "sink_included"):
        out[variant] = {}
        for li, k in enumerate(setup.layers):
            entry = {"context_tokens": ctx}
            for key, val in blocks[variant].items():
                entry[key] = val["mean"][li]
                entry[f"{key}_ci_low"] = val["ci_low"][li]
                entry[f"{key}_ci_high"] = val["ci_high"][li]
            out[variant][f"layer_{k}"] = entry
    for li, k in enumerate(setup.layers):
        for c in dict.fromkeys(cols):
            row = {"layer": k, "context tokens": int(ctx[c])}
            for v in VARIANTS:
                for key, short in (("distance_correlation", "dcorr"), ("energy_norm", "E_norm")):
                    row[f"{short} {v}"] = blocks[v][key]["mean"][li, c]
            rows.append(row)
    table = pd.DataFrame(rows)
    sh = blocks["shuffled_labels"]["distance_correlation"]
    out["shuffled_labels_summary"] = {
        "distance_correlation_mean_over_layers_and_contexts": float(np.nanmean(sh["mean"])),
        "distance_correlation_max_abs": float(np.nanmax(np.abs(sh["mean"]))),
        "energy_norm_mean_over_layers_and_contexts": float(np.nanmean(blocks["shuffled_labels"]["energy_norm"]["mean"])),
        "energy_norm_chance": setup.energy_chance,
    }
    results["controls"] = out
    s = out["shuffled_labels_summary"]
    print(f"shuffled labels: distance correlation {s['distance_correlation_mean_over_layers_and_contexts']:.3f} on "
          f"average (largest |value| {s['distance_correlation_max_abs']:.3f}), E_norm "
          f"{s['energy_norm_mean_over_layers_and_contexts']:.3f} (chance {setup.energy_chance:.3f})")
    return table.round(3)


def pca_figure(run, setup: Setup, data: Measurements, results: dict, layer=None):
    """PCA scatter (PCs 1-2) of the node means averaged over sequences, with the graph's edges, at each context
    point for ``layer`` (default: :func:`best_layer`), next to the graph's spectral embedding; saved as
    ``pca_layer_<k>``."""
    from iclnb.experiments.park import figures as F
    from iclnb.plotting.save import save_figure

    layer = best_layer(setup, results) if layer is None else layer
    li = setup.layers.index(layer)
    coords = [pca(m, k=2)[0] for m in data.mean_means["default"][li]]
    spectral = spectral_embedding(np.asarray(setup.graph.adjacency, dtype=float), 2)[0]
    r2 = results[f"layer_{layer}"]["pca"]["mean_over_sequences"]["procrustes_r2"]
    titles = [f"{t} tokens (Procrustes r2 {r:.2f})" for t, r in zip(setup.context_tokens, r2)]
    fig = F.pca_grid(coords, titles, setup.graph, spectral, title=f"PCA of node means, layer {layer}")
    save_figure(fig, run.output_dir / "figures", f"pca_layer_{layer}")
    results["pca_figure_layer"] = layer
    return fig


def days_of_week(run, setup: Setup, data: Measurements, results: dict) -> pd.DataFrame | None:
    """For ``graph="days_of_week_ring"``: at each layer (largest context point), the pair among PCs 1-4 whose
    Procrustes fit to the calendar circle, and the pair whose fit to the in-context ring, is best. Fills
    ``results["days_of_week"]``; None (and nothing stored) for other graphs."""
    targets = pair_targets(setup.graph)
    if not targets:
        print(f"graph={setup.graph.name}: the semantic-prior test runs only for graph='days_of_week_ring'")
        return None
    seed = int(setup.params.get("seed", 42))
    pairs = [f"PC{i + 1}-PC{j + 1}" for i, j in combinations(range(N_PCS), 2)]
    out, rows = {"pairs": pairs, "calendar_order": setup.graph.extra["calendar_order"]}, []
    nulls = [name for name in targets if name.startswith("null_")]
    # null: best-pair r2 of a random ring order, per sequence averaged over the orders: (seq, layer, ctx)
    null_best = np.nanmean([np.nanmax(_stack(data.items, "default", f"pc_pairs_r2_{name}"), axis=-1)
                            for name in nulls], axis=0)
    null_ci = _ci(null_best, seed, "days_null")
    out["random_ring_order_best_r2"] = {f"layer_{k}": {"mean": null_ci["mean"][li], "ci_low": null_ci["ci_low"][li],
                                                       "ci_high": null_ci["ci_high"][li]}
                                        for li, k in enumerate(setup.layers)}
    targets = {name: t for name, t in targets.items() if name not in nulls}
    for name in targets:
        x = _stack(data.items, "default", f"pc_pairs_r2_{name}")  # (seq, layer, ctx, pairs)
        ci = _ci(x, seed, f"days_{name}")
        out[name] = {f"layer_{k}": {"r2_mean": ci["mean"][li], "r2_ci_low": ci["ci_low"][li],
                                    "r2_ci_high": ci["ci_high"][li]} for li, k in enumerate(setup.layers)}
    for li, k in enumerate(setup.layers):
        row = {"layer": k}
        for name in targets:
            r = np.asarray(out[name][f"layer_{k}"]["r2_mean"])[-1]
            best = int(np.nanargmax(r)) if np.isfinite(r).any() else 0
            row[f"{name}: best pair"] = pairs[best]
            row[f"{name}: r2"] = r[best]
        row["random ring order: best r2"] = np.asarray(out["random_ring_order_best_r2"][f"layer_{k}"]["mean"])[-1]
        rows.append(row)
    out["context_tokens"] = setup.context_tokens
    results["days_of_week"] = out
    return pd.DataFrame(rows).round(3)


def explorer(setup: Setup, data: Measurements):
    """The interactive PCA explorer (sliders for layer and context point, a toggle for the sink) in JupyterLab;
    a static figure of the best layer at the largest context point in a headless run."""
    from iclnb.plotting.widgets import pca_explorer

    coords = {}
    for variant in ("default", "sink_included"):
        for li, k in enumerate(setup.layers):
            for ci, t in enumerate(setup.context_tokens):
                coords[(variant == "sink_included", k, int(t))] = pca(data.mean_means[variant][li, ci], k=2)[0]
    dc = [np.nanmean([it["stats"]["default"]["distance_correlation"][li][-1] for it in data.items])
          for li in range(len(setup.layers))]
    start_layer = setup.layers[int(np.nanargmax(dc))] if np.isfinite(dc).any() else setup.layers[-1]
    return pca_explorer(coords, setup.graph, setup.layers, [int(t) for t in setup.context_tokens],
                        layer=start_layer, context=int(setup.context_tokens[-1]))


def summary(setup: Setup, results: dict) -> pd.DataFrame:
    """The headline numbers of the reproduction (computed, with CIs), stored in ``results["summary"]``."""
    acc = results["accuracy"]["summary"]
    last_third = [k for k in setup.layers if k >= setup.n_blocks - setup.n_blocks // 3]
    early = [k for k in setup.layers if k <= 4]

    def dc(k):
        lay = results[f"layer_{k}"]
        return lay["distance_correlation"][-1], lay["distance_correlation_ci_low"][-1], \
            lay["distance_correlation_ci_high"][-1]

    rows = [
        ("accuracy, first 50 words", *_triple(acc["first_50_words"])),
        ("accuracy, last 200 words", *_triple(acc["last_200_words"])),
        ("copying baseline, last 200 words", *_triple(acc["copy_baseline_last_200_words"])),
        ("chance (mean degree / n)", setup.chance, None, None),
    ]
    out = {"accuracy_first_50_words": acc["first_50_words"]["mean"],
           "accuracy_last_200_words": acc["last_200_words"]["mean"]}
    if last_third:
        best = max(last_third, key=lambda k: np.nan_to_num(dc(k)[0], nan=-np.inf))
        rows.append((f"distance correlation at {setup.context_tokens[-1]} tokens, best of the last third "
                     f"(layer {best})", *dc(best)))
        out["distance_correlation_best_last_third"] = {"layer": best, "value": dc(best)[0]}
    if early:
        worst = max(early, key=lambda k: np.nan_to_num(dc(k)[0], nan=-np.inf))
        rows.append((f"distance correlation at {setup.context_tokens[-1]} tokens, highest of layers 0-4 "
                     f"(layer {worst})", *dc(worst)))
        out["distance_correlation_max_layers_0_4"] = {"layer": worst, "value": dc(worst)[0]}
    sh = results["controls"]["shuffled_labels_summary"]
    rows.append(("distance correlation, shuffled labels (mean over layers and contexts)",
                 sh["distance_correlation_mean_over_layers_and_contexts"], None, None))
    out["shuffled_labels_distance_correlation"] = sh["distance_correlation_mean_over_layers_and_contexts"]
    results["summary"] = out
    return pd.DataFrame(rows, columns=["quantity", "value", "ci_low", "ci_high"]).round(3)


def _triple(d):
    return d["mean"], d["ci_low"], d["ci_high"]


def collect_results(setup: Setup, results: dict) -> dict:
    """Add what anyone needs to recompute everything: the graph, every sequence's words, the context conversion."""
    results["graph"] = {"name": setup.graph.name, "words": list(setup.graph.words),
                        "edges": setup.graph.edges().tolist(),
                        **({"calendar_order": setup.graph.extra["calendar_order"]}
                           if "calendar_order" in setup.graph.extra else {})}
    results["sequences"] = setup.words
    results["sequence_tokens"] = setup.sequence_tokens
    results["tokens_per_word"] = setup.tokens_per_word
    results["context_points"] = {"tokens": setup.context_tokens, "words_sequence_0": setup.table["context words"].to_numpy(),
                                 "window_tokens": setup.window_tokens}
    results["layers"] = setup.layers
    results["conventions"] = {
        "layer": "residual output of decoder block k (0-based), before the final norm",
        "word_representation": "residual at the last token of each word's span",
        "node_means": f"trailing window of the words within the last {setup.window_tokens} tokens, sink excluded",
        "bos": setup.bos,
    }
    return results
