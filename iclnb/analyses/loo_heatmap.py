"""loo_heatmap: the influence of leave-one-out over layers and context lengths, read from a loo or loo_multilayer
run: per metric, bridge and anchor positions, the mean and the standard deviation, for each word set."""

from __future__ import annotations

from iclnb.analyses.loo_source import describe, load_source
from iclnb.experiments.loo import loo as loo_experiment
from iclnb.experiments.loo.loo import METRICS
from iclnb.experiments.params import LOG, OUTPUT_DIR, Str, StrList, declare

__all__ = ["PARAMS", "load_source", "describe"]

PARAMS = declare(
    Str("results_dir", "", "a loo or loo_multilayer results directory; empty: results/loo_multilayer", None,
        "directory"),
    StrList("metrics", "ratio,cross,within,within_sq", "metrics to draw, one figure each", options=METRICS),
    OUTPUT_DIR,
    LOG,
)


#: The small parameters the notebook tests run it with, after the runs it reads (TEST_SETUP; `iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {"metrics": "ratio,within", "results_dir": "{runs}/loo"}
TEST_SETUP = [
    {"experiment": "loo", "parameters": loo_experiment.TEST_PARAMETERS},  # loo's own test run
]
