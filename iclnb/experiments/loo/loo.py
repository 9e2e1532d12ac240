"""loo and loo_multilayer (SPEC 7.4, 7.5): leave-one-out influence of each context word on the semantic-vs-graph
geometry, at one layer or at every layer; plus the readers used by loo_heatmap and compare_loo_metrics (SPEC 7.12).

Design. Trial t draws its own semantic_conflict graph (stream ``("graph", t)``; the word-to-cluster layout is the
same in every trial: node 4c+g carries word g of cluster c) and one uniform walk of the largest context length on it
(stream ``("walks", t)``). The context of length N is the walk's first N words (prefix reuse, a paired design across
N), and both word sets ("semantic", "unrelated") read the same node sequence (a paired design across conditions).
For each (condition, trial) the full context of the largest N runs once and every tested position's deletion is
recomputed on top of the shared prefix's KV cache (``iclnb.loo.LooEngine``); every shorter N (a prefix of those
contexts) and all requested layers come from the same passes.

Tested positions: ``"all"``; an integer stride k (positions 0, k, 2k, ... plus the temporal positions 5, 10, 20, 30,
50 that fit); or ``"auto"``: all positions when N <= 100, otherwise the stride ceil(N / 100) (plus the temporal
positions). Position classes: bridge (its cluster differs from the previous word's), anchor (the same cluster);
position 0 is neither.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.experiments.common import default_output_dir, int_list, positive_int
from iclnb.loo import METRICS, LooEngine
from iclnb.core.progress import progress
from iclnb.core.seeding import stream
from iclnb.stats import bootstrap_ci

CONDITIONS = ("semantic", "unrelated")
TEMPORAL_POSITIONS = (5, 10, 20, 30, 50)
CLASSES = ("bridge", "anchor")


# ---------------------------------------------------------------------------------------------------- parameters


def parse_conditions(conditions) -> list[str]:
    items = [c.strip() for c in conditions.split(",")] if isinstance(conditions, str) else list(conditions)
    items = [c for c in items if c]
    bad = [c for c in items if c not in CONDITIONS]
    if not items or bad:
        raise IclnbError(f"conditions must be a comma-separated subset of {', '.join(CONDITIONS)}; got {conditions!r}")
    return list(dict.fromkeys(items))


def parse_context_lengths(context_lengths) -> list[int]:
    return sorted(set(int_list("context_lengths", context_lengths, minimum=2)))


def tested_positions(n_words: int, positions="auto") -> np.ndarray:
    """The word positions deleted in a context of ``n_words`` words (see the module docstring)."""
    spec = str(positions).strip().lower()
    if spec == "all":
        return np.arange(n_words)
    if spec == "auto":
        stride = 1 if n_words <= 100 else math.ceil(n_words / 100)
    else:
        stride = positive_int("positions", spec)
    chosen = set(range(0, n_words, stride)) | {p for p in TEMPORAL_POSITIONS if p < n_words}
    return np.array(sorted(chosen), dtype=np.int64)


def check_positions(positions) -> str:
    spec = str(positions).strip().lower()
    if spec not in ("all", "auto"):
        positive_int("positions", spec)
    return spec


# ---------------------------------------------------------------------------------------------------- trials


def trial_graph(condition: str, seed: int, trial: int):
    """Trial ``trial``'s graph for one word set; both word sets get the same edges (same stream)."""
    return graphs.semantic_conflict(condition, rng=stream(seed, "graph", trial))


def trial_walk(seed: int, trial: int, n_max: int) -> np.ndarray:
    """Trial ``trial``'s node walk of the largest context length (uniform over neighbours)."""
    return graphs.random_walk(trial_graph("semantic", seed, trial), n_max, stream(seed, "walks", trial))


def trial_inputs(condition: str, seed: int, trial: int, n_words: int, n_max: int):
    """(graph, nodes, words) of one context: the first ``n_words`` steps of the trial's walk."""
    graph = trial_graph(condition, seed, trial)
    nodes = trial_walk(seed, trial, n_max)[:n_words]
    return graph, nodes, graphs.walk_words(graph, nodes)


def check_fits(model, context_lengths, encode=None) -> None:
    """Refuse, before any work, a context length whose walk cannot fit the model."""
    words = set(w for g in graphs.SEMANTIC_GROUPS + graphs.UNRELATED_GROUPS for w in g)
    if encode is None:
        from iclnb.prompts import tokenization_report

        longest = max(tokenization_report(model.tokenizer, words).values())
    else:
        longest = max(len(encode([w])) for w in words)
    n_max = max(context_lengths)
    if n_max * longest + 1 > model.max_positions:
        raise IclnbError(f"context length {n_max} may need {n_max * longest + 1} tokens, more than the "
                         f"{model.max_positions} {model.name} can read; use at most {(model.max_positions - 1) // longest}")


# ---------------------------------------------------------------------------------------------------- measuring


@dataclass
class LooData:
    """Everything measured: ``trials[(condition, N)]`` is a list (one per trial) of dicts with ``words``,
    ``nodes``, ``clusters`` (word -> cluster), ``positions`` (P,), ``is_bridge`` (N,), ``full`` (L, 4),
    ``loo`` (P, L, 4), ``word_loss`` (N,), ``token_loss`` (T-1,), ``n_tokens``, ``seconds``."""

    layers: list
    conditions: list
    context_lengths: list
    n_trials: int
    trials: dict


def _from_json(item: dict) -> dict:
    def floats(x):
        return np.array([np.nan if v is None else v for v in (x or [])], dtype=np.float64)

    out = dict(item)
    out["positions"] = np.asarray(item["positions"], dtype=np.int64)
    out["nodes"] = np.asarray(item["nodes"], dtype=np.int64)
    out["is_bridge"] = np.asarray(item["is_bridge"], dtype=bool)
    out["full"] = np.array(item["full"], dtype=object)
    out["full"] = np.where(out["full"] == None, np.nan, out["full"]).astype(np.float64)  # noqa: E711
    loo = np.array(item["loo"], dtype=object).reshape(len(out["positions"]), *out["full"].shape)
    out["loo"] = np.where(loo == None, np.nan, loo).astype(np.float64)  # noqa: E711
    out["word_loss"] = floats(item["word_loss"])
    out["token_loss"] = floats(item["token_loss"])
    return out


def measure(run, model, conditions, context_lengths, n_trials: int, layers, positions="auto", seed: int = 42,
            batch_tokens: int | None = None, encode=None, show_progress: bool = True) -> LooData:
    """Run every (condition, trial) once at the largest context length; every shorter length is a prefix of that
    walk, so the same passes give it (``LooEngine.trial(context_lengths=...)``). Results are checkpointed per
    (condition, N) (``checkpoint_loo_<condition>_N<N>.json``, each updated after every trial), so a rerun resumes
    where the last one stopped. ``run`` may be None (no checkpoints: benchmarks)."""
    conditions = parse_conditions(conditions)
    context_lengths = parse_context_lengths(context_lengths)
    n_trials = positive_int("n_trials", n_trials)
    check_positions(positions)
    layers = [k for k in model.resolve_layers(layers) if k != "embed"]
    check_fits(model, context_lengths, encode)
    engine = LooEngine(model, encode=encode, batch_tokens=batch_tokens or None)
    stores = {(c, n): (run.checkpoint(f"loo_{c}_N{n}", total=n_trials, every_s=0) if run is not None else {})
              for c in conditions for n in context_lengths}
    units = [(c, t) for c in conditions for t in range(n_trials)]
    bar = progress(total=len(units), desc="leave-one-out (condition, trial), all N") if show_progress else None
    for condition, trial in units:
        if any(str(trial) not in stores[(condition, n)] for n in context_lengths):
            for n, item in _measure_trial(engine, condition, seed, trial, context_lengths, layers, positions).items():
                stores[(condition, n)][str(trial)] = item
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    trials = {(c, n): [_from_json(_jsonish(stores[(c, n)][str(t)])) for t in range(n_trials)]
              for c in conditions for n in context_lengths}
    return LooData(layers, conditions, context_lengths, n_trials, trials)


def _jsonish(item):
    from iclnb.results.run import to_jsonable

    return to_jsonable(item)


def _measure_trial(engine, condition, seed, trial, context_lengths, layers, positions) -> dict:
    """One trial at every context length from the same passes: {N: the trial's record at N}."""
    start = time.perf_counter()
    n_max = max(context_lengths)
    graph, nodes, words = trial_inputs(condition, seed, trial, n_max, n_max)
    tested = {n: tested_positions(n, positions) for n in context_lengths}
    union = np.unique(np.concatenate(list(tested.values())))
    results = engine.trial(words, nodes, graph.n, graph.extra["semantic_pairs"], graph.extra["graph_pairs"], layers,
                           positions=union, loss=True, context_lengths=context_lengths)
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
            "loo": result.loo[keep],
            "word_loss": result.word_loss,
            "token_loss": result.token_loss,
            "n_tokens": result.n_tokens,
            "seconds": seconds,  # the whole trial: every N came from the same passes
        }
    return out


# ---------------------------------------------------------------------------------------------------- tables


def _class_of(position: np.ndarray, is_bridge: np.ndarray) -> np.ndarray:
    return np.where(position == 0, "first", np.where(is_bridge, "bridge", "anchor"))


def influence_table(data: LooData, run=None):
    """The tidy table: one row per (condition, N, trial, position, layer, metric); written to
    ``raw_data/influence.csv`` when ``run`` is given."""
    import pandas as pd

    frames = []
    n_layers, n_metrics = len(data.layers), len(METRICS)
    for (condition, n_words), items in data.trials.items():
        for trial, item in enumerate(items):
            pos = item["positions"]
            n_pos = len(pos)
            shape = (n_pos, n_layers, n_metrics)
            full = np.broadcast_to(item["full"][None], shape)
            frames.append(pd.DataFrame({
                "condition": condition,
                "N": n_words,
                "trial": trial,
                "position": np.repeat(pos, n_layers * n_metrics),
                "word": np.repeat(np.asarray(item["words"], dtype=object)[pos], n_layers * n_metrics),
                "is_bridge": np.repeat(item["is_bridge"][pos], n_layers * n_metrics),
                "layer": np.tile(np.repeat(np.asarray(data.layers), n_metrics), n_pos),
                "metric": np.tile(np.asarray(METRICS, dtype=object), n_pos * n_layers),
                "full": full.ravel(),
                "loo": item["loo"].ravel(),
                "influence": (full - item["loo"]).ravel(),
            }))
    table = pd.concat(frames, ignore_index=True)
    if run is not None:
        _write_csv_atomic(table, run.raw_data_dir / "influence.csv")
    return table


def _write_csv_atomic(table, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        table.to_csv(tmp, index=False, float_format="%.9g")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """Per (condition, N, layer, metric, class): the mean and std of the influence over all (trial, position) of
    the class, with a 95% bootstrap interval of the mean that resamples whole trials (positions of one walk are not
    independent); ``n`` counts the finite values, ``n_trials`` the trials with at least one."""
    import pandas as pd

    rows = []
    for (condition, n_words), items in data.trials.items():
        for cls in CLASSES:
            sums, counts, values = [], [], []
            for item in items:
                pos = item["positions"]
                mask = _class_of(pos, item["is_bridge"][pos]) == cls
                infl = item["full"][None] - item["loo"][mask]                                   # (p, L, M)
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
                                 "n_trials": int((counts[:, li, mi] > 0).sum())})
    return pd.DataFrame(rows)


def temporal_table(data: LooData, seed: int = 42, n_boot: int = 1000, positions=TEMPORAL_POSITIONS):
    """The influence of fixed positions as N grows: per (condition, position, N, layer, metric) the mean over
    trials with a 95% bootstrap interval over trials."""
    import pandas as pd

    rows = []
    for (condition, n_words), items in data.trials.items():
        for position in positions:
            if position >= n_words:
                continue
            values = []
            for item in items:
                where = np.flatnonzero(item["positions"] == position)
                values.append(item["full"] - item["loo"][where[0]] if where.size else
                              np.full(item["full"].shape, np.nan))
            values = np.stack(values)                                                          # (K, L, M)
            mean, low, high = bootstrap_ci(values, n_resamples=n_boot,
                                           rng=stream(seed, "bootstrap", "temporal", condition, n_words, position))
            mean, low, high = (np.broadcast_to(np.asarray(a, dtype=float), values.shape[1:]) for a in (mean, low, high))
            for li, layer in enumerate(data.layers):
                for mi, metric in enumerate(METRICS):
                    rows.append({"condition": condition, "position": position, "N": n_words, "layer": layer,
                                 "metric": metric, "mean": mean[li, mi], "ci_low": low[li, mi],
                                 "ci_high": high[li, mi], "n": int(np.isfinite(values[:, li, mi]).sum())})
    return pd.DataFrame(rows)


def full_context_table(data: LooData):
    """The full contexts: per (condition, N, trial, layer) the four metrics, the mean word loss, the token count."""
    import pandas as pd

    rows = []
    for (condition, n_words), items in data.trials.items():
        for trial, item in enumerate(items):
            loss = item["word_loss"]
            mean_loss = float(np.nanmean(loss)) if np.isfinite(loss).any() else np.nan
            for li, layer in enumerate(data.layers):
                rows.append({"condition": condition, "N": n_words, "trial": trial, "layer": layer,
                             **{m: item["full"][li, mi] for mi, m in enumerate(METRICS)},
                             "mean_word_loss": mean_loss, "n_tokens": item["n_tokens"],
                             "seconds": item["seconds"]})
    return pd.DataFrame(rows)


def timing_table(data: LooData):
    """Wall time per condition (the run's own measurement). Every context length of a trial comes from the same
    passes, so one trial's time covers all N; positions and tokens are those of the largest N."""
    import pandas as pd

    n_max = max(data.context_lengths)
    rows = []
    for c in data.conditions:
        items = data.trials[(c, n_max)]
        rows.append({"condition": c, "trials": len(items), "context_lengths": len(data.context_lengths),
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


def results_document(data: LooData, bridge_anchor, temporal, model) -> dict:
    """The ``results`` part of results.json (strict JSON via ``Run.finish``, which writes NaN as null)."""
    walks, clusters, full, positions = {}, {}, {}, {}
    for (condition, n_words), items in data.trials.items():
        key = str(n_words)
        walks.setdefault(condition, {})[key] = [item["words"] for item in items]
        clusters.setdefault(condition, {})[key] = [item["clusters"] for item in items]
        positions.setdefault(condition, {})[key] = [item["positions"] for item in items]
        full.setdefault(condition, {})[key] = {
            "metrics": {m: np.stack([item["full"][:, mi] for item in items]) for mi, m in enumerate(METRICS)},
            "phi": np.stack([item["full"][:, METRICS.index("ratio")] for item in items]),
            "word_loss": np.stack([item["word_loss"] for item in items]),
            "token_loss": [item["token_loss"] for item in items],
            "n_tokens": [item["n_tokens"] for item in items],
            "is_bridge": np.stack([item["is_bridge"] for item in items]),
            "seconds": [item["seconds"] for item in items],
        }
    return {
        "layers": data.layers,
        "metrics": list(METRICS),
        "conditions": data.conditions,
        "context_lengths": data.context_lengths,
        "n_trials": data.n_trials,
        "definitions": {
            "cross": "mean over semantic pairs (same semantic group, different graph clusters) of ||mu_a - mu_b||",
            "within": "mean over graph pairs (same graph cluster) of ||mu_a - mu_b||",
            "ratio": "cross / within (Phi)",
            "energy": "mean over graph pairs of ||mu_a - mu_b||^2",
            "influence": "metric(full context) - metric(context without the word at the position)",
            "node_mean": "mean residual (last token of each word span) over all occurrences in the context; the "
                         "attention-sink word excluded",
            "trial": "a new graph (same word-to-cluster layout) and a new uniform walk per trial; shorter contexts "
                     "are prefixes of the longest; both word sets share the node walk",
            "full_context.phi": "[trial][layer index into 'layers'] ratio of the full context; word_loss[trial][position]",
        },
        "bridge_anchor": bridge_anchor.to_dict(orient="records"),
        "temporal": temporal.to_dict(orient="records"),
        "full_context": full,
        "positions": positions,
        "walks": walks,
        "clusters": clusters,
        "model": model.name,
    }


# ---------------------------------------------------------------------------------------------------- analysis readers


def results_directory(results_dir="") -> Path:
    """The results directory an analysis reads: empty means results/loo_multilayer; a relative path that does not
    exist from the working directory is taken relative to the iclnb checkout."""
    if not str(results_dir):
        return default_output_dir("loo_multilayer")
    directory = Path(results_dir).expanduser()
    if not directory.is_absolute() and not directory.exists():
        from iclnb.experiments.common import REPO_ROOT

        if (REPO_ROOT / directory).exists():
            return REPO_ROOT / directory
    return directory


def start_analysis(experiment: str, params: dict):
    """Open the results directory of an analysis notebook (no model needed); returns the Run."""
    from iclnb.results.run import Run

    params = dict(params)
    params["output_dir"] = str(params.get("output_dir") or default_output_dir(experiment))
    return Run.open(params["output_dir"], experiment, params)


def load_results(results_dir="") -> dict:
    """results.json of a loo / loo_multilayer run (``results_dir`` empty: results/loo_multilayer)."""
    from iclnb.results.run import RESULTS_NAME, read_json

    directory = results_directory(results_dir)
    path = directory / RESULTS_NAME
    if not path.exists():
        raise IclnbError(f"{directory} holds no {RESULTS_NAME}; produce it first with `iclnb run loo_multilayer` "
                         f"(or `iclnb run loo`) -o {directory}")
    doc = read_json(path)
    if "bridge_anchor" not in (doc.get("results") or {}):
        raise IclnbError(f"{path} is not the result of a loo or loo_multilayer run")
    return doc


def table_of(doc: dict, name: str):
    """One stored table of a results document as a DataFrame (``bridge_anchor`` or ``temporal``)."""
    import pandas as pd

    return pd.DataFrame(doc["results"][name]).astype({"mean": float, "ci_low": float, "ci_high": float})


def full_context_from_results(doc: dict):
    """Per (condition, N, trial, layer) full-context metrics of a results document, as a DataFrame."""
    import pandas as pd

    res = doc["results"]
    rows = []
    for condition, by_n in res["full_context"].items():
        for n_words, entry in by_n.items():
            for metric, per_trial in entry["metrics"].items():
                for trial, per_layer in enumerate(per_trial):
                    for layer, value in zip(res["layers"], per_layer):
                        rows.append({"condition": condition, "N": int(n_words), "trial": trial, "layer": layer,
                                     "metric": metric, "value": np.nan if value is None else value})
    return pd.DataFrame(rows)


def metric_curves(doc: dict, layer=None, seed: int = 42, n_boot: int = 1000):
    """Full-context metric vs N with 95% bootstrap intervals over trials, at one layer (default: the last)."""
    import pandas as pd

    table = full_context_from_results(doc)
    layer = table["layer"].max() if layer is None else int(layer)
    rows = []
    for (condition, metric, n_words), group in table[table["layer"] == layer].groupby(["condition", "metric", "N"]):
        values = group.sort_values("trial")["value"].to_numpy(dtype=float)
        mean, low, high = bootstrap_ci(values, n_resamples=n_boot,
                                       rng=stream(seed, "bootstrap", "curves", condition, metric, int(n_words)))
        rows.append({"condition": condition, "metric": metric, "N": int(n_words), "layer": layer, "mean": mean,
                     "ci_low": low, "ci_high": high, "n": int(np.isfinite(values).sum())})
    return pd.DataFrame(rows)


def influence_correlations(results_dir, x: str = "ratio", y: str = "energy"):
    """Per (condition, layer): Pearson and Spearman correlation between the influences on two metrics, over all
    (N, trial, position) of raw_data/influence.csv; and the paired values themselves (for a scatter)."""
    import pandas as pd
    from scipy import stats as sps

    directory = results_directory(results_dir)
    path = directory / "raw_data" / "influence.csv"
    if not path.exists():
        raise IclnbError(f"{path} is missing; produce it with `iclnb run loo_multilayer -o {directory}`")
    table = pd.read_csv(path)
    wide = table.pivot_table(index=["condition", "N", "trial", "position", "layer", "is_bridge"], columns="metric",
                             values="influence").reset_index()
    rows = []
    for (condition, layer), group in wide.groupby(["condition", "layer"]):
        pair = group[[x, y]].dropna()
        ok = len(pair) >= 3 and pair[x].std() > 0 and pair[y].std() > 0
        rows.append({"condition": condition, "layer": layer, "n": len(pair),
                     "pearson_r": sps.pearsonr(pair[x], pair[y])[0] if ok else np.nan,
                     "spearman_rho": sps.spearmanr(pair[x], pair[y])[0] if ok else np.nan})
    return pd.DataFrame(rows), wide


def css_across_trials(doc: dict, layer=None, seed: int = 42, n_boot: int = 1000, n_perm: int = 1000):
    """CSS(z, Φ) = −Cov over trials of (word loss at position z, Φ = ratio of the full context) per (condition, N),
    with bootstrap intervals over trials (``iclnb.metrics.css_summary``), at one layer (default: the last)."""
    import pandas as pd

    from iclnb.metrics import css_summary

    res = doc["results"]
    layers = res["layers"]
    layer = layers[-1] if layer is None else int(layer)
    if layer not in layers:
        raise IclnbError(f"layer {layer} was not measured; the run has layers {layers}")
    li = layers.index(layer)
    rows = []
    for condition, by_n in res["full_context"].items():
        for n_words, entry in by_n.items():
            loss = np.array([[np.nan if v is None else v for v in row] for row in entry["word_loss"]], dtype=float)
            phi = np.array([np.nan if row[li] is None else row[li] for row in entry["phi"]], dtype=float)
            summary = css_summary(loss, phi, stream(seed, "css", condition, int(n_words), layer),
                                  n_boot=n_boot, n_perm=n_perm)
            for position in range(loss.shape[1]):
                rows.append({"condition": condition, "N": int(n_words), "layer": layer, "position": position,
                             **{k: summary[k][position] for k in ("css", "ci_low", "ci_high", "pearson_r",
                                                                   "p_value", "q_value")}})
    return pd.DataFrame(rows)
