"""loo (and its preset loo_multilayer): leave-one-out influence of each context word on the semantic-vs-graph
geometry, at one layer or at every layer.

Design. Context c draws its own semantic_conflict graph (stream ``("graph", c)``; the word-to-cluster layout is the
same in every context: node 4k+g carries word g of cluster k) and one uniform walk of the largest context length on
it (stream ``("walks", c)``). The context of length N is the walk's first N words (prefix reuse, a paired design
across N), and both word sets ("semantic", "unrelated") read the same node sequence (a paired design across word
sets). For each (word set, context) the full context of the largest N runs once and every tested position's deletion
is recomputed on top of the shared prefix's KV cache (:class:`iclnb.methods.loo.LooEngine`); every shorter N and all
requested layers come from the same passes.

Tested positions: ``"all"``; an integer stride k (positions 0, k, 2k, ... plus the temporal positions 5, 10, 20, 30,
50 that fit); or ``"auto"``: all positions when N <= 100, otherwise the stride ceil(N / 100) (plus the temporal
positions). Position classes: bridge (its cluster differs from the previous word's), anchor (the same cluster);
position 0 is neither.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key
from iclnb.core.progress import progress
from iclnb.core.seeding import stream
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, OUTPUT_DIR, SEED, Choice, Int, IntList,
                                      Layers, Str, StrList, declare)
from iclnb.methods.loo import Delete, LooEngine, PairDistances
from iclnb.prompts import check_fits
from iclnb.results.io import nan_array
from iclnb.stats import mean_ci

CONDITIONS = ("semantic", "unrelated")
METRICS = PairDistances.names
TEMPORAL_POSITIONS = (5, 10, 20, 30, 50)
CLASSES = ("bridge", "anchor")


def _check_positions(name, value):
    spec = str(value).strip().lower()
    if spec in ("all", "auto"):
        return spec
    try:
        stride = int(spec)
    except ValueError:
        stride = 0
    if stride < 1:
        raise IclnbError(f"parameter {name} must be auto, all or a stride of at least 1 (e.g. 5); got {value!r}")
    return str(stride)


PARAMS = declare(
    MODEL,
    Int("n_contexts", 5, "contexts: each draws a new graph (same word-to-cluster layout) and a new walk", min=2,
        max=MAX_CONTEXTS),
    Layers("-1"),
    IntList("context_lengths", "20,50,100,200", "context lengths N in words (each a prefix of the context's longest "
            "walk)", min=2, max=100_000),
    StrList("conditions", "semantic,unrelated", "word sets on the same node walks: semantic and/or unrelated",
            options=CONDITIONS),
    Str("positions", "auto", "deleted positions: auto (every position up to 100 words, a stride beyond), all, or a "
        "stride such as 5", _check_positions, "auto, all, or a stride >= 1"),
    Choice("metric", "ratio", "metric shown in the figures: cross, within, ratio or within_sq", METRICS),
    N_BOOT,
    Int("batch_tokens", 0, "suffix tokens per batched leave-one-out pass (0: 2048 on CPU, 16384 on GPU); results "
        "depend on it only through float rounding", min=0, max=10_000_000),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

#: loo_multilayer: the same notebook at every layer and the 14 context lengths of the seed's multilayer study.
PRESETS = {"loo_multilayer": {"layers": "all", "context_lengths": "6,7,8,9,10,12,15,20,25,30,40,50,75,100"}}


def tested_positions(n_words: int, positions="auto") -> np.ndarray:
    """The word positions deleted in a context of ``n_words`` words (see the module docstring)."""
    spec = str(positions).strip().lower()
    if spec == "all":
        return np.arange(n_words)
    stride = (1 if n_words <= 100 else math.ceil(n_words / 100)) if spec == "auto" else int(spec)
    chosen = set(range(0, n_words, stride)) | {p for p in TEMPORAL_POSITIONS if p < n_words}
    return np.array(sorted(chosen), dtype=np.int64)


# ---------------------------------------------------------------------------------------------------- trials


def context_graph(condition: str, seed: int, context: int):
    """Context ``context``'s graph for one word set; both word sets get the same edges (same stream)."""
    return graphs.semantic_conflict(condition, rng=stream(seed, "graph", context))


def context_walk(seed: int, context: int, n_max: int) -> np.ndarray:
    """Context ``context``'s node walk of the largest context length (uniform over neighbours)."""
    return graphs.context_walk(context_graph("semantic", seed, context), n_max, seed, context)


def context_inputs(condition: str, seed: int, context: int, n_words: int, n_max: int):
    """(graph, nodes, words) of one context: the first ``n_words`` steps of its walk."""
    graph = context_graph(condition, seed, context)
    nodes = context_walk(seed, context, n_max)[:n_words]
    return graph, nodes, graphs.walk_words(graph, nodes)


def check(p, model) -> None:
    """Refuse, before any work, layers the model lacks and a context length that cannot fit it."""
    if not [k for k in model.resolve_layers(p.layers) if k != "embed"]:
        raise IclnbError("leave-one-out needs at least one decoder block in layers (not only 'embed')")
    check_fits(model, [w for group in graphs.SEMANTIC_GROUPS + graphs.UNRELATED_GROUPS for w in group],
               max(p.context_lengths))


# ---------------------------------------------------------------------------------------------------- measuring


@dataclass
class LooData:
    """Everything measured: ``contexts[(condition, N)]`` is a list (one per context) of dicts with ``words``,
    ``nodes``, ``clusters`` (word -> cluster), ``positions`` (P,), ``is_bridge`` (N,), ``full`` (L, M),
    ``edited`` (P, L, M), ``word_loss`` (N,), ``token_loss`` (T-1,), ``n_tokens``, ``seconds``."""

    layers: list
    conditions: list
    context_lengths: list
    n_contexts: int
    contexts: dict


def _from_json(item: dict) -> dict:
    out = dict(item)
    out["positions"] = np.asarray(item["positions"], dtype=np.int64)
    out["nodes"] = np.asarray(item["nodes"], dtype=np.int64)
    out["is_bridge"] = np.asarray(item["is_bridge"], dtype=bool)
    out["full"] = nan_array(item["full"])
    out["edited"] = nan_array(item["edited"]).reshape(len(out["positions"]), *out["full"].shape)
    out["word_loss"] = nan_array(item["word_loss"] or [])
    out["token_loss"] = nan_array(item["token_loss"] or [])
    return out


def measure(run, model, conditions, context_lengths, n_contexts: int, layers, positions="auto", seed: int = 42,
            batch_tokens: int | None = None) -> LooData:
    """Run every (condition, context) once at the largest context length; every shorter length is a prefix of that
    walk, so the same passes give it (``LooEngine.trial(context_lengths=...)``). Results are checkpointed per
    (condition, N) (``checkpoint_loo_<condition>_N<N>.json``, each updated after every context), so a rerun resumes
    where the last one stopped.

    The loop is its own, not :func:`~iclnb.experiments.kit.resume_units`: one unit of work (a word set's context)
    gives one item to each of several checkpoints (one per N), where the kit stores one item per unit."""
    layers = [k for k in model.resolve_layers(layers) if k != "embed"]
    context_lengths = sorted(set(context_lengths))
    engine = LooEngine(model, batch_tokens=batch_tokens or None)
    stores = {(c, n): run.checkpoint(f"loo_{c}_N{n}", total=n_contexts, every_s=0)
              for c in conditions for n in context_lengths}
    units = [(c, k) for c in conditions for k in range(n_contexts)]
    for condition, k in progress(units, desc="leave-one-out (word set, context), all N"):
        if any(str(k) not in stores[(condition, n)] for n in context_lengths):
            for n, item in _measure_context(engine, condition, seed, k, context_lengths, layers, positions).items():
                stores[(condition, n)][str(k)] = item
    contexts = {(c, n): [_from_json(stores[(c, n)][str(k)]) for k in range(n_contexts)]
                for c in conditions for n in context_lengths}
    return LooData(layers, list(conditions), context_lengths, n_contexts, contexts)


def _measure_context(engine, condition, seed, context, context_lengths, layers, positions) -> dict:
    """One context at every context length from the same passes: {N: the context's record at N}."""
    start = time.perf_counter()
    n_max = max(context_lengths)
    graph, nodes, words = context_inputs(condition, seed, context, n_max, n_max)
    tested = {n: tested_positions(n, positions) for n in context_lengths}
    union = np.unique(np.concatenate(list(tested.values())))
    measure = PairDistances(graph.extra["semantic_pairs"], graph.extra["graph_pairs"])
    results = engine.trial(words, nodes, graph.n, measure, layers, positions=union, edit=Delete(), loss=True,
                           context_lengths=context_lengths)
    seconds = time.perf_counter() - start
    clusters = graph.labelings["cluster"]
    bridge = graphs.is_bridge(graph, nodes)
    out = {}
    for n, result in results.items():
        keep = np.isin(result.positions, tested[n])
        out[n] = {
            "words": words[:n],
            "nodes": nodes[:n],
            "clusters": {w: int(clusters[i]) for i, w in enumerate(graph.words)},
            "positions": result.positions[keep],
            "is_bridge": bridge[:n],
            "full": result.full,
            "edited": result.edited[keep],
            "word_loss": result.word_loss,
            "token_loss": result.token_loss,
            "n_tokens": result.n_tokens,
            "seconds": seconds,  # the whole context: every N came from the same passes
        }
    return out


# ---------------------------------------------------------------------------------------------------- tables


def _class_of(position: np.ndarray, is_bridge: np.ndarray) -> np.ndarray:
    return np.where(position == 0, "first", np.where(is_bridge, "bridge", "anchor"))


def influence_table(data: LooData):
    """The tidy table: one row per (condition, N, context, position, layer, metric) with the full-context value,
    the value without the position, and their difference."""
    import pandas as pd

    frames = []
    n_layers, n_metrics = len(data.layers), len(METRICS)
    for (condition, n_words), items in data.contexts.items():
        for context, item in enumerate(items):
            pos = item["positions"]
            n_pos = len(pos)
            shape = (n_pos, n_layers, n_metrics)
            full = np.broadcast_to(item["full"][None], shape)
            frames.append(pd.DataFrame({
                "condition": condition,
                "N": n_words,
                "context": context,
                "position": np.repeat(pos, n_layers * n_metrics),
                "word": np.repeat(np.asarray(item["words"], dtype=object)[pos], n_layers * n_metrics),
                "is_bridge": np.repeat(item["is_bridge"][pos], n_layers * n_metrics),
                "layer": np.tile(np.repeat(np.asarray(data.layers), n_metrics), n_pos),
                "metric": np.tile(np.asarray(METRICS, dtype=object), n_pos * n_layers),
                "full": full.ravel(),
                "loo": item["edited"].ravel(),
                "influence": (full - item["edited"]).ravel(),
            }))
    return pd.concat(frames, ignore_index=True)


def _cluster_bootstrap(sums: np.ndarray, counts: np.ndarray, rng, n_boot: int, confidence: float = 0.95):
    """Percentile interval of a pooled mean, resampling whole trials (axis 0): sum(sums[idx]) / sum(counts[idx]).

    A resample that happens to draw only trials without values is dropped; a column with values in fewer than two
    trials has no interval (NaN)."""
    import warnings

    k = sums.shape[0]
    nan = np.full(sums.shape[1:], np.nan)
    if k < 2 or n_boot < 1:
        return nan, nan.copy()
    idx = rng.integers(0, k, size=(n_boot, k))
    with np.errstate(invalid="ignore", divide="ignore"):
        draws = sums[idx].sum(1) / counts[idx].sum(1)
    draws = np.where(np.isfinite(draws), draws, np.nan)
    alpha = (1 - confidence) / 2
    enough = (counts > 0).sum(0) >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanquantile(draws, alpha, axis=0)
        high = np.nanquantile(draws, 1 - alpha, axis=0)
    return np.where(enough, low, np.nan), np.where(enough, high, np.nan)


def bridge_anchor_table(data: LooData, seed: int = 42, n_boot: int = 1000):
    """Per (condition, N, layer, metric, class): the mean and std of the influence over all (context, position) of
    the class, with a 95% bootstrap interval of the mean that resamples whole contexts (positions of one walk are not
    independent); ``n`` counts the finite values, ``n_contexts`` the contexts with at least one."""
    import pandas as pd

    rows = []
    for (condition, n_words), items in data.contexts.items():
        for cls in CLASSES:
            sums, counts, values = [], [], []
            for item in items:
                pos = item["positions"]
                mask = _class_of(pos, item["is_bridge"][pos]) == cls
                infl = item["full"][None] - item["edited"][mask]                                   # (p, L, M)
                finite = np.isfinite(infl)
                sums.append(np.where(finite, infl, 0.0).sum(0))
                counts.append(finite.sum(0))
                values.append(infl)
            sums, counts = np.stack(sums), np.stack(counts)
            pooled = np.concatenate(values, axis=0)
            n = counts.sum(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.where(n > 0, sums.sum(0) / np.maximum(n, 1), np.nan)
                centred = np.where(np.isfinite(pooled), pooled - mean[None], 0.0)
                std = np.where(n > 1, np.sqrt((centred ** 2).sum(0) / np.maximum(n - 1, 1)), np.nan)
            low, high = _cluster_bootstrap(sums, counts, stream(seed, "bootstrap", "bridge_anchor", condition,
                                                                n_words, cls), n_boot)
            for li, layer in enumerate(data.layers):
                for mi, metric in enumerate(METRICS):
                    rows.append({"condition": condition, "N": n_words, "layer": layer, "metric": metric,
                                 "class": cls, "mean": mean[li, mi], "std": std[li, mi], "ci_low": low[li, mi],
                                 "ci_high": high[li, mi], "n": int(n[li, mi]),
                                 "n_contexts": int((counts[:, li, mi] > 0).sum())})
    return pd.DataFrame(rows)


def temporal_table(data: LooData, seed: int = 42, n_boot: int = 1000, positions=TEMPORAL_POSITIONS):
    """The influence of fixed positions as N grows: per (condition, position, N, layer, metric) the mean over
    contexts with a 95% bootstrap interval over contexts."""
    import pandas as pd

    rows = []
    for (condition, n_words), items in data.contexts.items():
        for position in positions:
            if position >= n_words:
                continue
            values = []
            for item in items:
                where = np.flatnonzero(item["positions"] == position)
                values.append(item["full"] - item["edited"][where[0]] if where.size else
                              np.full(item["full"].shape, np.nan))
            values = np.stack(values)                                                          # (K, L, M)
            ci = mean_ci(values, n_boot, stream(seed, "bootstrap", "temporal", condition, n_words, position))
            for li, layer in enumerate(data.layers):
                for mi, metric in enumerate(METRICS):
                    rows.append({"condition": condition, "position": position, "N": n_words, "layer": layer,
                                 "metric": metric, "mean": ci["mean"][li, mi], "ci_low": ci["ci_low"][li, mi],
                                 "ci_high": ci["ci_high"][li, mi], "n": int(np.isfinite(values[:, li, mi]).sum())})
    # no context reaches a temporal position: an empty table that still has its columns
    return pd.DataFrame(rows, columns=["condition", "position", "N", "layer", "metric", "mean", "ci_low", "ci_high",
                                       "n"])


def full_context_table(data: LooData):
    """The full contexts: per (condition, N, context, layer) the metrics, the mean word loss, the token count."""
    import pandas as pd

    rows = []
    for (condition, n_words), items in data.contexts.items():
        for context, item in enumerate(items):
            loss = item["word_loss"]
            mean_loss = float(np.nanmean(loss)) if np.isfinite(loss).any() else np.nan
            for li, layer in enumerate(data.layers):
                rows.append({"condition": condition, "N": n_words, "context": context, "layer": layer,
                             **{m: item["full"][li, mi] for mi, m in enumerate(METRICS)},
                             "mean_word_loss": mean_loss, "n_tokens": item["n_tokens"]})
    return pd.DataFrame(rows)


def timing_table(data: LooData):
    """Wall time per word set (the run's own measurement). Every context length of a context comes from the same
    passes, so one context's time covers all N; positions and tokens are those of the largest N."""
    import pandas as pd

    n_max = max(data.context_lengths)
    rows = []
    for c in data.conditions:
        items = data.contexts[(c, n_max)]
        rows.append({"condition": c, "contexts": len(items), "context_lengths": len(data.context_lengths),
                     "largest_N": n_max, "positions_at_largest_N": len(items[0]["positions"]),
                     "tokens_at_largest_N": int(np.mean([i["n_tokens"] for i in items])),
                     "seconds": float(sum(i["seconds"] for i in items))})
    return pd.DataFrame(rows)


def bridge_anchor_summary(table, layer=None):
    """The bridge-vs-anchor table at one layer (default: the last measured), one row per (condition, N, metric)."""
    layer = table["layer"].max() if layer is None else layer
    sub = table[table["layer"] == layer]
    wide = sub.pivot_table(index=["condition", "N", "metric"], columns="class",
                           values=["mean", "ci_low", "ci_high"], dropna=False)
    wide.columns = [f"{cls}_{stat}" for stat, cls in wide.columns]
    order = [f"{c}_{s}" for c in CLASSES for s in ("mean", "ci_low", "ci_high")]
    return wide[[c for c in order if c in wide.columns]].reset_index()


# ---------------------------------------------------------------------------------------------------- results


def _by_layer(table, layer) -> list:
    return table[table["layer"] == layer].drop(columns="layer").to_dict(orient="records")


def results_document(data: LooData, bridge_anchor, temporal) -> dict:
    """The ``results`` part of results.json: per layer (``layer_<k>``) the bridge/anchor and temporal tables and the
    full contexts' metrics; per word set and N (``contexts``) the walks, positions, losses and token counts that
    CSS across contexts needs."""
    layers = {}
    for li, layer in enumerate(data.layers):
        full = {c: {f"N_{n}": {m: [item["full"][li, mi] for item in data.contexts[(c, n)]]
                               for mi, m in enumerate(METRICS)}
                    for n in data.context_lengths}
                for c in data.conditions}
        layers[layer_key(layer)] = {"bridge_anchor": _by_layer(bridge_anchor, layer),
                                    "temporal": _by_layer(temporal, layer), "full_context": full}
    contexts = {c: {f"N_{n}": {
        "words": [item["words"] for item in data.contexts[(c, n)]],
        "positions": [item["positions"] for item in data.contexts[(c, n)]],
        "is_bridge": [item["is_bridge"] for item in data.contexts[(c, n)]],
        "word_loss": [item["word_loss"] for item in data.contexts[(c, n)]],
        "token_loss": [item["token_loss"] for item in data.contexts[(c, n)]],
        "n_tokens": [item["n_tokens"] for item in data.contexts[(c, n)]],
        "seconds": [item["seconds"] for item in data.contexts[(c, n)]],
    } for n in data.context_lengths} for c in data.conditions}
    return {
        "layers": data.layers,
        "metrics": list(METRICS),
        "conditions": data.conditions,
        "context_lengths": data.context_lengths,
        "n_contexts": data.n_contexts,
        **layers,
        "contexts": contexts,
        "clusters": {c: data.contexts[(c, data.context_lengths[0])][0]["clusters"] for c in data.conditions},
        "definitions": {
            "cross": "mean over semantic pairs (same semantic group, different graph clusters) of ||mu_a - mu_b||",
            "within": "mean over graph pairs (same graph cluster) of ||mu_a - mu_b||",
            "ratio": "cross / within",
            "within_sq": "mean over graph pairs of ||mu_a - mu_b||^2",
            "influence": "metric(full context) - metric(context without the word at the position)",
            "node_mean": "mean residual (last token of each word span) over all occurrences in the context; the "
                         "attention-sink word excluded",
            "context": "a new graph (same word-to-cluster layout) and a new uniform walk per context; shorter "
                       "contexts are prefixes of the longest; both word sets share the node walk",
        },
    }


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {
    "context_lengths": "6,10",
    "layers": "0,2,-1",
    "n_boot": 100,
    "n_contexts": 2,
    "output_dir": "{runs}/loo",
    "positions": "2",
}
