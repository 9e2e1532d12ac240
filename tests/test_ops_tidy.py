"""The tidy extractor against hand-made results of each experiment kind (no model, no notebook)."""

import math

import numpy as np
import pytest

from iclnb.ops.tidy import COLUMNS, supported, tidy
from iclnb.results import load
from iclnb.results.io import write_json


def make_run(directory, experiment, params, results, model="tiny-model", n_layers=4, finished=True):
    """A finished results directory written by hand: config.json and results.json as a run writes them."""
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", {
        "experiment": experiment, "params": params, "model": {"name": model, "n_layers": n_layers},
        "provenance": {"started": "2025-01-01T00:00:00+00:00",
                       "finished": "2025-01-01T00:01:00+00:00" if finished else None,
                       "packages": {"iclnb": "0.1.0"}, "git_commit": "abc123", "git_dirty": False}})
    if finished:
        write_json(directory / "results.json", {"model": model, "timestamp": "2025-01-01T00:01:00+00:00",
                                                "config": params, "results": results})
    return directory


def css_results():
    def summary(base):
        return {"phi": {"mean": base, "ci_low": base - 0.1, "ci_high": base + 0.1},
                "phi_null": {"mean": 0.3, "ci_low": 0.25, "ci_high": 0.35},
                "energy_norm": {"mean": 0.4, "ci_low": 0.35, "ci_high": 0.45},
                "coherence": {"mean": 0.01, "ci_low": -0.02, "ci_high": 0.04}}
    css = {"phi": {"bridge": {"css": -0.5, "ci_low": -0.7, "ci_high": -0.3},
                   "anchor": {"css": 0.1, "ci_low": -0.1, "ci_high": 0.3}}}
    return {"layers": [0, 3], "layer_0": {"summary": summary(0.5), "css_by_class": css},
            "layer_3": {"summary": summary(1.0), "css_by_class": css}}


def loo_results():
    full = {"semantic": {"N_6": {"ratio": [1.0, 2.0, 3.0], "within": [1.0, 1.0, 1.0]},
                         "N_10": {"ratio": [2.0, 4.0, 6.0], "within": [1.0, None, 1.0]}}}
    records = [{"condition": "semantic", "N": 10, "metric": "ratio", "class": "bridge", "mean": 0.2,
                "std": 0.1, "ci_low": 0.1, "ci_high": 0.3, "n": 9, "n_contexts": 3}]
    return {"layers": [3], "conditions": ["semantic"], "layer_3": {"full_context": full, "bridge_anchor": records}}


def park_results():
    layer = {"context_tokens": [20, 40], "context_words": [9.5, 19.0],
             "energy_norm": [0.3, 0.2], "energy_norm_ci_low": [0.25, 0.15], "energy_norm_ci_high": [0.35, 0.25],
             "distance_correlation": [0.1, 0.4], "distance_correlation_ci_low": [-0.1, 0.3],
             "distance_correlation_ci_high": [0.3, 0.5], "pca": {}}
    shuffled = {"energy_norm": [0.2, 0.2], "energy_norm_ci_low": [0.19, 0.19], "energy_norm_ci_high": [0.21, 0.21],
                "distance_correlation": [0.0, 0.01]}
    return {"layers": [-1 + 4], "layer_3": layer, "controls": {"shuffled_labels": {"layer_3": shuffled}}}


def test_css_basic(tmp_path):
    t = tidy(make_run(tmp_path / "css", "css_basic", {"context_length": 20}, css_results()))
    assert list(t.columns) == COLUMNS
    phi = t[(t.metric == "phi") & (t.layer == 3)].iloc[0]
    assert (phi["mean"], phi["ci_low"], phi["ci_high"], phi["N"]) == (1.0, 0.9, 1.1, 20.0)
    assert (phi["null"], phi["null_ci_low"], phi["null_ci_high"]) == (0.3, 0.25, 0.35)
    assert phi["depth"] == 1.0 and phi["run"] == "css" and phi["model"] == "tiny-model"
    assert math.isnan(t[(t.metric == "energy_norm")].iloc[0]["null"])  # no null stated for energy
    bridge = t[(t.metric == "css_bridge_phi") & (t.layer == 0)].iloc[0]
    assert (bridge["mean"], bridge["ci_low"], bridge["ci_high"]) == (-0.5, -0.7, -0.3)
    assert set(t.layer) == {0, 3}


def test_loo_means_over_contexts_with_an_interval(tmp_path):
    r = load(make_run(tmp_path / "loo", "loo", {"context_lengths": [6, 10]}, loo_results()))
    t = tidy(r, n_boot=200, seed=1)
    ratio = t[(t.metric == "ratio")].sort_values("N")
    assert list(ratio["N"]) == [6.0, 10.0] and list(ratio["mean"]) == [2.0, 4.0]
    assert (ratio["ci_low"] <= ratio["mean"]).all() and (ratio["mean"] <= ratio["ci_high"]).all()
    assert set(ratio["condition"]) == {"semantic"}
    assert t[(t.metric == "within") & (t.N == 10)].iloc[0]["mean"] == 1.0  # null values left out
    infl = t[t.metric == "influence_ratio_bridge"].iloc[0]
    assert (infl["mean"], infl["ci_low"], infl["N"], infl["layer"]) == (0.2, 0.1, 10.0, 3)
    assert tidy(r, n_boot=200, seed=1).equals(t)  # seeded: the same table twice


def test_reproduce_park_nulls_are_the_shuffled_controls(tmp_path):
    t = tidy(make_run(tmp_path / "park", "reproduce_park", {}, park_results()))
    energy = t[t.metric == "energy_norm"].sort_values("N")
    assert list(energy["N"]) == [9.5, 19.0] and list(energy["mean"]) == [0.3, 0.2]
    assert list(energy["null"]) == [0.2, 0.2] and list(energy["null_ci_low"]) == [0.19, 0.19]
    dc = t[t.metric == "distance_correlation"].sort_values("N")
    assert list(dc["null"]) == [0.0, 0.01] and np.isnan(dc["null_ci_low"]).all()


def test_an_unknown_experiment_gives_an_empty_table(tmp_path):
    r = load(make_run(tmp_path / "x", "something_else", {}, {"value": 1}))
    assert not supported(r)
    t = tidy(r)
    assert t.empty and list(t.columns) == COLUMNS


def test_an_unfinished_run_is_refused(tmp_path):
    from iclnb.core.errors import IclnbError

    with pytest.raises(IclnbError, match="has not finished"):
        tidy(make_run(tmp_path / "u", "css_basic", {}, {}, finished=False))
