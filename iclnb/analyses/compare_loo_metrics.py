"""compare_loo_metrics: the leave-one-out metrics against each other, read from a loo or loo_multilayer run.

The full-context metrics as N grows (with intervals over contexts), whether the influences on two metrics agree on
which words matter (their correlation over every (N, context, position)), and the Context Sensitivity Score of each
position's word loss against a full-context metric across contexts.
"""

from __future__ import annotations

import numpy as np

from iclnb.analyses.loo_source import describe, load_source
from iclnb.core.seeding import stream
from iclnb.experiments.loo import loo as loo_experiment
from iclnb.experiments.loo.loo import METRICS
from iclnb.experiments.params import LOG, N_BOOT, N_PERM, OUTPUT_DIR, SEED, Choice, Str, declare
from iclnb.results.io import nan_array
from iclnb.stats import bootstrap_ci

__all__ = ["PARAMS", "load_source", "describe", "metric_curves", "influence_correlations", "css_across_contexts"]

PARAMS = declare(
    Str("results_dir", "", "a loo or loo_multilayer results directory; empty: results/loo_multilayer", None,
        "directory"),
    Str("layer", "-1", "the block to compare at: an index of a measured layer; negatives count from the model's end",
        None, "a layer index"),
    Choice("x_metric", "ratio", "metric on the x axis of the influence scatter", METRICS),
    Choice("y_metric", "within_sq", "metric on the y axis of the influence scatter", METRICS),
    Choice("css_metric", "ratio", "full-context metric the word losses are related to by CSS", METRICS),
    N_BOOT,
    N_PERM,
    OUTPUT_DIR,
    SEED,
    LOG,
)


def full_context(source, layer: int):
    """Per (condition, N, context) the full-context metrics at one layer, as a DataFrame."""
    import pandas as pd

    rows = []
    for condition, by_n in source.results[source.layer(layer)]["full_context"].items():
        for key, metrics in by_n.items():
            for metric, values in metrics.items():
                for context, value in enumerate(nan_array(values)):
                    rows.append({"condition": condition, "N": int(key.removeprefix("N_")), "context": context,
                                 "metric": metric, "value": value})
    return pd.DataFrame(rows)


def metric_curves(source, layer, seed: int, n_boot: int):
    """Full-context metric vs N with 95% bootstrap intervals over contexts, at one layer."""
    import pandas as pd

    layer = source.layer_number(layer)
    table = full_context(source, layer)
    rows = []
    for (condition, metric, n_words), group in table.groupby(["condition", "metric", "N"]):
        values = group.sort_values("context")["value"].to_numpy(dtype=float)
        mean, low, high = bootstrap_ci(values, n_resamples=n_boot,
                                       rng=stream(seed, "bootstrap", "curves", condition, metric, int(n_words)))
        rows.append({"condition": condition, "metric": metric, "N": int(n_words), "layer": layer, "mean": mean,
                     "ci_low": low, "ci_high": high, "n": int(np.isfinite(values).sum())})
    return pd.DataFrame(rows)


def influence_correlations(source, x: str, y: str):
    """Per (condition, layer): Pearson and Spearman correlation between the influences on two metrics over every
    (N, context, position) of ``raw_data/influence.csv``; and the paired values themselves (for a scatter)."""
    import pandas as pd
    from scipy import stats as sps

    table = source.csv("influence")
    wide = table.pivot_table(index=["condition", "N", "context", "position", "layer", "is_bridge"],
                             columns="metric", values="influence").reset_index()
    rows = []
    for (condition, layer), group in wide.groupby(["condition", "layer"]):
        pair = group[[x, y]].dropna()
        ok = len(pair) >= 3 and pair[x].std() > 0 and pair[y].std() > 0
        rows.append({"condition": condition, "layer": layer, "n": len(pair),
                     "pearson_r": sps.pearsonr(pair[x], pair[y])[0] if ok else np.nan,
                     "spearman_rho": sps.spearmanr(pair[x], pair[y])[0] if ok else np.nan})
    return pd.DataFrame(rows), wide


def css_across_contexts(source, layer, metric: str, seed: int, n_boot: int, n_perm: int):
    """CSS(z, M) = −Cov over contexts of (word loss at position z, M of the full context) per (condition, N), with
    bootstrap intervals over contexts (``iclnb.metrics.css_summary``), at one layer."""
    import pandas as pd

    from iclnb.metrics import css_summary

    layer = source.layer_number(layer)
    full = source.results[source.layer(layer)]["full_context"]
    rows = []
    for condition, by_n in source.results["contexts"].items():
        for key, entry in by_n.items():
            loss = nan_array(entry["word_loss"])
            values = nan_array(full[condition][key][metric])
            summary = css_summary(loss, values, stream(seed, "css", condition, key, layer), n_boot=n_boot,
                                  n_perm=n_perm)
            for position in range(loss.shape[1]):
                rows.append({"condition": condition, "N": int(key.removeprefix("N_")), "layer": layer,
                             "metric": metric, "position": position,
                             **{k: summary[k][position] for k in ("css", "ci_low", "ci_high", "pearson_r",
                                                                   "p_value", "q_value")}})
    return pd.DataFrame(rows)


#: The small parameters the notebook tests run it with, after the runs it reads (TEST_SETUP; `iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {"layer": "-1", "n_boot": 100, "n_perm": 100, "results_dir": "{runs}/loo"}
TEST_SETUP = [
    {"experiment": "loo", "parameters": loo_experiment.TEST_PARAMETERS},  # loo's own test run
]
