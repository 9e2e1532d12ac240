"""One tidy table per run: every summarised number of a finished run as rows of
``(run, model, experiment, condition, layer, depth, N, metric, mean, ci_low, ci_high, null, null_ci_low,
null_ci_high)``.

:func:`tidy` dispatches on the run's experiment (``config.json``); each extractor knows where that experiment keeps
its numbers:

* ``css_basic``: ``layer_<k>.summary.<metric>`` (mean, CI over contexts) at N = ``context_length``; Φ's null is
  ``phi_null``; CSS of the mean loss at bridge and at anchor positions as ``css_bridge_<metric>`` /
  ``css_anchor_<metric>``;
* ``loo`` (and its presets): ``layer_<k>.full_context.<word set>.N_<n>.<metric>`` (one value per context; the mean
  with a bootstrap interval over contexts is computed here) and the bridge / anchor influence records as
  ``influence_<metric>_bridge`` / ``influence_<metric>_anchor``;
* ``reproduce_park``: ``layer_<k>.<metric>`` per context length with ``<metric>_ci_low/_ci_high``, N the mean
  number of words per context at that length; the null of each metric is its shuffled-label control;
* ``compare_loo_metrics``: its ``metric_curves`` records.

An experiment module can also carry its own extractor: a function ``tidy_rows(r, n_boot, seed)`` in
``iclnb/experiments/<family>/<name>.py`` (or ``iclnb/analyses/<name>.py``) returning rows made with
:func:`iclnb.experiments.kit.row` (as the extractors here do); :func:`tidy` uses it when the experiment is not in
:data:`EXTRACTORS`, so a new experiment adds its extractor beside its own code.

A run of another experiment gives an empty table with the same columns (:func:`supported` says which do).
``condition`` is the word set (loo) and empty elsewhere; ``depth`` is block / (blocks − 1), which lines up models
of different depth; ``null*`` are NaN where the experiment states no null.
"""

from __future__ import annotations

import numpy as np

from iclnb.core.seeding import stream
from iclnb.experiments.kit import row
from iclnb.results.io import nan_array

__all__ = ["COLUMNS", "tidy", "supported", "EXTRACTORS", "extractor"]

COLUMNS = ["run", "model", "experiment", "condition", "layer", "depth", "N", "metric", "mean", "ci_low", "ci_high",
           "null", "null_ci_low", "null_ci_high"]

_NAN = float("nan")


def _layer_number(key: str):
    body = key[len("layer_"):]
    return int(body) if body.lstrip("-").isdigit() else body


def _layer_keys(r) -> list[tuple]:
    """``(key, layer)`` of every measured layer whose entry is in the results."""
    out = []
    for layer in r.layers:
        key = f"layer_{layer}"
        if isinstance(r.results.get(key), dict):
            out.append((key, layer))
    return out


# ---------------------------------------------------------------------------------------------------- extractors


def _css_basic(r, n_boot, seed) -> list[dict]:
    n_words = r.params.get("context_length")
    rows = []
    for key, layer in _layer_keys(r):
        entry = r.results[key]
        summary = entry.get("summary") or {}
        null = summary.get("phi_null") or {}
        for metric, s in summary.items():
            nulls = (null.get("mean"), null.get("ci_low"), null.get("ci_high")) if metric == "phi" else (_NAN,) * 3
            rows.append(row(metric, layer, n_words, s.get("mean"), s.get("ci_low"), s.get("ci_high"), null=nulls))
        for metric, classes in (entry.get("css_by_class") or {}).items():
            for cls, s in classes.items():
                rows.append(row(f"css_{cls}_{metric}", layer, n_words, s.get("css"), s.get("ci_low"),
                                 s.get("ci_high")))
    return rows


def _loo(r, n_boot, seed) -> list[dict]:
    from iclnb.stats import bootstrap_ci

    rows = []
    for key, layer in _layer_keys(r):
        entry = r.results[key]
        for condition, by_n in (entry.get("full_context") or {}).items():
            cells, columns = [], []
            for n_key, metrics in by_n.items():
                for metric, values in metrics.items():
                    cells.append((int(str(n_key).removeprefix("N_")), metric))
                    columns.append(nan_array(values))
            if not cells:
                continue
            width = max(len(c) for c in columns)
            samples = np.full((width, len(columns)), np.nan)
            for j, column in enumerate(columns):
                samples[: len(column), j] = column
            if width >= 2:
                mean, low, high = bootstrap_ci(samples, n_resamples=n_boot,
                                               rng=stream(seed, "bootstrap", "tidy", str(layer), condition))
            else:
                mean, low, high = samples[0], np.full(len(columns), np.nan), np.full(len(columns), np.nan)
            for (n_words, metric), m, lo, hi in zip(cells, np.atleast_1d(mean), np.atleast_1d(low),
                                                    np.atleast_1d(high)):
                rows.append(row(metric, layer, n_words, m, lo, hi, condition))
        for record in entry.get("bridge_anchor") or []:
            rows.append(row(f"influence_{record.get('metric')}_{record.get('class')}", layer, record.get("N"),
                             record.get("mean"), record.get("ci_low"), record.get("ci_high"),
                             record.get("condition", "")))
    return rows


_PARK_METRICS = ("energy_norm", "distance_correlation")


def _reproduce_park(r, n_boot, seed) -> list[dict]:
    shuffled = (r.results.get("controls") or {}).get("shuffled_labels") or {}
    rows = []
    for key, layer in _layer_keys(r):
        entry = r.results[key]
        words = entry.get("context_words")
        if words is None:
            continue
        words = list(np.atleast_1d(words))
        control = shuffled.get(key) or {}
        pca = entry.get("pca") or {}
        series = {m: (entry.get(m), entry.get(f"{m}_ci_low"), entry.get(f"{m}_ci_high")) for m in _PARK_METRICS}
        if "procrustes_r2" in pca:
            series["procrustes_r2"] = (pca.get("procrustes_r2"), pca.get("procrustes_r2_ci_low"),
                                       pca.get("procrustes_r2_ci_high"))
        for metric, (mean, low, high) in series.items():
            if mean is None:
                continue
            null = [control.get(metric), control.get(f"{metric}_ci_low"), control.get(f"{metric}_ci_high")]
            for i, n_words in enumerate(words):
                def at(values):
                    values = np.atleast_1d(nan_array(values)) if values is not None else None
                    return values[i] if values is not None and i < len(values) else _NAN
                rows.append(row(metric, layer, round(float(n_words), 1), at(mean), at(low), at(high),
                                 null=tuple(at(v) for v in null)))
    return rows


def _compare_loo_metrics(r, n_boot, seed) -> list[dict]:
    return [row(rec.get("metric"), rec.get("layer"), rec.get("N"), rec.get("mean"), rec.get("ci_low"),
                 rec.get("ci_high"), rec.get("condition", "")) for rec in r.results.get("metric_curves") or []]


#: experiment name (as config.json records it) -> extractor(run, n_boot, seed) -> rows
EXTRACTORS = {
    "css_basic": _css_basic,
    "loo": _loo,
    "loo_multilayer": _loo,
    "reproduce_park": _reproduce_park,
    "compare_loo_metrics": _compare_loo_metrics,
}


def extractor(experiment: str | None):
    """The extractor of ``experiment``: from :data:`EXTRACTORS`, else the ``tidy_rows`` of its module, else None."""
    if not experiment:
        return None
    if experiment in EXTRACTORS:
        return EXTRACTORS[experiment]
    from iclnb.core.errors import IclnbError
    from iclnb.experiments import find

    try:
        return getattr(find(experiment).load(), "tidy_rows", None)
    except IclnbError:  # a run of an experiment this installation does not have
        return None


def supported(r) -> bool:
    """Whether :func:`tidy` knows where the run's experiment keeps its numbers."""
    return extractor(r.experiment) is not None


def tidy(r, label: str | None = None, n_boot: int = 1000, seed: int = 42):
    """The tidy table of one finished run (a :class:`~iclnb.results.reader.RunResults` or a results directory).

    ``label`` names the run in the ``run`` column (default: the directory's name). Where a run stores one value per
    context rather than a summary (loo), the mean's 95% interval is a bootstrap over contexts with ``n_boot``
    resamples drawn from ``seed``.
    """
    import pandas as pd

    from iclnb.results.reader import RunResults, load

    if not isinstance(r, RunResults):
        r = load(r)
    extract = extractor(r.experiment)
    rows = extract(r, n_boot, seed) if extract else []
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("run", "model", "experiment", "depth")])
    n_blocks = r.n_blocks
    table.insert(0, "run", label or r.dir.name)
    table.insert(1, "model", r.model or (r.config.get("model") or {}).get("name") or "")
    table.insert(2, "experiment", r.experiment or "")
    depth = [(layer / (n_blocks - 1) if isinstance(layer, (int, np.integer)) and n_blocks and n_blocks > 1
              else _NAN) for layer in table["layer"]]
    table.insert(5, "depth", depth)
    for column in ("N", "mean", "ci_low", "ci_high", "null", "null_ci_low", "null_ci_high", "depth"):
        table[column] = table[column].astype(float)
    return table[COLUMNS]
