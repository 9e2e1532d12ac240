"""superposition_collapse: a context readable under two hypotheses, then one step that only one of them allows.

A dual graph gives two clusterings H1, H2 of one word set and two graphs G1, G2 on them. Each context is a walk on
the edges common to G1 and G2 up to step D, a step valid only under the context's true hypothesis at D, then a walk
on that hypothesis's graph; D is a percentage of the context length (default 25, 50, 75 %) or never (the control,
ambiguous to the end). Contexts alternate the true hypothesis, and context k of every condition shares its walk up
to that condition's D (one stream per context index), so the conditions are paired.

Per position and layer (:mod:`iclnb.metrics.superposition`): the distance of the word's vector to the centroid of
its cluster-mates under the true and under the false hypothesis (node means over a trailing window, the word's own
node left out), their ratio, the superposition score (d_false − d_true) / ||c_true − c_false|| in [−1, 1], and the
velocity ||r_t − r_{t−1}||. Around D: the collapse (the change of the margin d_false − d_true from the
``collapse_window`` positions before D to those from D on) and the velocity spike (velocity at D minus its mean
over the positions before), both divided by the context's residual norm at that layer (the mean word-vector norm),
each beside the same statistic at random non-disambiguating steps of the same contexts and at D in the
never-revealed control. Decoding accuracy: the sign of the mean H1-vs-H2 score from D on names the hypothesis; its
share of correct contexts has a bootstrap CI and a binomial test against 0.5 (see docs/methods.md).
"""

from __future__ import annotations

import warnings

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key, parse_layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, N_PERM, OUTPUT_DIR, SEED, Int,
                                      IntList, Layers, declare)
from iclnb.experiments.superposition import dual
from iclnb.experiments.superposition.dual import NEVER, conditions, disambiguate_at, true_hypothesis
from iclnb.metrics.superposition import (hypothesis_distances, residual_norm, superposition_score, velocity,
                                         window_change)
from iclnb.results.io import nan_array
from iclnb.stats import mean_ci, paired_difference

PARAMS = declare(
    MODEL,
    Int("n_contexts", 100, "contexts per condition (the true hypothesis alternates: H1, H2, H1, ...)", min=2,
        max=MAX_CONTEXTS),
    Int("context_length", 100, "words per context (N)", min=8),
    IntList("disambiguation_percent", "25,50,75", "the disambiguating step D of each condition, in percent of "
            "context_length; a control that is never disambiguated is always added", min=1, max=99),
    Layers(),
    Int("window", 50, "trailing word positions whose node means give the hypothesis centroids", min=2),
    Int("collapse_window", 10, "word positions before and after D compared by the collapse and the velocity spike",
        min=1),
    Int("null_steps", 5, "random non-disambiguating steps per context for the null", min=1, max=1000),
    *dual.GRAPH_PARAMS,
    N_BOOT,
    N_PERM,
    Int("batch_size", 8, "contexts per forward pass (results do not depend on it)", min=1, max=4096),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

#: Per-position series, summarised over contexts.
SERIES = ("score", "d_true", "d_false", "ratio", "velocity")
#: Statistics around a step: each reported at D, at random non-disambiguating steps, and at D in the control.
STEP_STATS = ("collapse", "velocity_spike", "score_change", "collapse_raw")

make_graph = dual.make_graph


def check(p, model) -> None:
    """Refuse, before any work: a dual graph whose clusterings agree, a context the model cannot read, layers it
    does not have, and a D whose collapse windows do not fit in the context."""
    for pct in p.disambiguation_percent:
        d = disambiguate_at(str(pct), p.context_length)
        if d - p.collapse_window < 1 or d + p.collapse_window > p.context_length:
            raise IclnbError(
                f"disambiguation_percent {pct} puts D at word {d}, which leaves no collapse_window of "
                f"{p.collapse_window} words on both sides in a context of {p.context_length}; use a longer "
                "context_length, a smaller collapse_window or a percentage nearer 50")
    dual.check_fit(p, model, make_graph(p))


def context_measures(state, walk, graph, layers, window: int) -> dict:
    """Per layer: distances of each position to its H1 and H2 mates' centroids, the distance between the two
    centroids, the velocity, and the residual norm (the sink word excluded)."""
    valid = ~np.asarray(state.sink, dtype=bool)
    h1, h2 = graph.labelings["H1"], graph.labelings["H2"]
    out = {}
    for layer in layers:
        x = state.reps[layer]
        dist = hypothesis_distances(x, walk, h1, h2, window, valid)
        out[str(layer)] = {"d_h1": dist["d_a"], "d_h2": dist["d_b"], "between": dist["between"],
                           "velocity": velocity(x, valid), "rho": residual_norm(x, valid)}
    return {"layers": out}


def collect_contexts(run, model, graph, p) -> dict:
    """Every (condition, context) once, checkpointed: ``{condition: [item, ...]}``."""
    layers = model.resolve_layers(p.layers)
    return dual.collect(run, model, graph, p, layers,
                        lambda unit, walk, state: context_measures(state, walk, graph, layers, p.window))


# ------------------------------------------------------------------------------------------------ per context


def series(items: list, layer, truth: np.ndarray) -> dict:
    """(K, T) arrays of one condition at one layer, oriented to each context's true hypothesis: ``score`` (toward
    the truth), ``score_h1`` (toward H1), ``d_true`` and ``d_false`` over the residual norm, ``ratio``
    d_true / d_false, ``velocity`` over the residual norm, ``margin`` d_false − d_true (raw), and ``rho`` (K,)."""
    per = [item["layers"][str(layer)] for item in items]
    d1, d2, between, vel = (nan_array([q[name] for q in per]) for name in ("d_h1", "d_h2", "between", "velocity"))
    rho = nan_array([q["rho"] for q in per])
    is_h1 = (np.asarray(truth) == "H1")[:, None]
    d_true, d_false = np.where(is_h1, d1, d2), np.where(is_h1, d2, d1)
    score_h1 = superposition_score(d1, d2, between)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"score": np.where(is_h1, score_h1, -score_h1), "score_h1": score_h1, "d_true": d_true / rho[:, None],
                "d_false": d_false / rho[:, None], "ratio": d_true / d_false, "velocity": vel / rho[:, None],
                "margin": d_false - d_true, "rho": rho}


def step_statistics(s: dict, k: int, step: int, width: int) -> dict:
    """The statistics of context k around ``step``: ``collapse`` (change of the margin d_false − d_true from the
    ``width`` positions before the step to the ``width`` from it on, over the residual norm), ``velocity_spike``
    (velocity at the step minus its mean over the ``width`` positions before, already over the residual norm),
    ``score_change`` (the same change of the superposition score) and ``collapse_raw`` (the collapse in residual
    units, not normalised)."""
    raw = window_change(s["margin"][k], step, width)
    vel = s["velocity"][k]
    before = vel[step - width : step]
    spike = (float(vel[step] - np.nanmean(before)) if 0 <= step - width and np.isfinite(before).any()
             else float("nan"))
    return {"collapse": raw / s["rho"][k], "velocity_spike": spike,
            "score_change": window_change(s["score"][k], step, width), "collapse_raw": raw}


def null_steps(graph, walk, step: int | None, width: int, n: int, rng) -> np.ndarray:
    """Up to ``n`` random steps s of a walk that disambiguate nothing: the transition walk[s−1] -> walk[s] is an
    edge of both graphs, both windows fit (width <= s <= T − width), and neither window holds ``step`` (None: no
    step to avoid)."""
    walk = np.asarray(walk)
    T = walk.shape[0]
    common = (np.asarray(graph.adjacency) > 0) & (np.asarray(graph.extra["G2_adjacency"]) > 0)
    s = np.arange(max(width, 1), T - width + 1)
    ok = common[walk[s - 1], walk[s]]
    if step is not None:
        ok &= (s <= step - width) | (s > step + width)
    eligible = s[ok]
    if eligible.size == 0:
        return eligible
    return np.sort(rng.choice(eligible, size=min(n, eligible.size), replace=False))


def decoded_correct(s: dict, start: int, truth: np.ndarray) -> np.ndarray:
    """Per context: 1.0 when the sign of the mean H1-vs-H2 score over positions [start, T) names the true
    hypothesis, 0.0 when not, NaN without a defined score."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a context without any defined score: NaN
        mean = np.nanmean(s["score_h1"][:, start:], axis=1)
    guess = np.where(mean > 0, "H1", "H2")
    return np.where(np.isfinite(mean) & (mean != 0), (guess == np.asarray(truth)).astype(float), np.nan)


# ------------------------------------------------------------------------------------------------ summaries


def _accuracy(correct: np.ndarray, rng, n_boot: int) -> dict:
    """The share of correct contexts with its CI, their number and a binomial test against 0.5."""
    from scipy.stats import binomtest

    c = correct[np.isfinite(correct)]
    if not c.size:
        return {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n": 0, "p_value": np.nan}
    return {**mean_ci(c, n_boot, rng, count=True), "p_value": float(binomtest(int(c.sum()), int(c.size), 0.5).pvalue)}


def reference_step(p) -> int:
    """Where the never-revealed control is read for its own entry: the median D of the conditions."""
    return int(np.median([disambiguate_at(str(pct), p.context_length) for pct in p.disambiguation_percent]))


def summarise(data: dict, graph, p, layers) -> dict:
    """``condition_<c>`` -> ``layer_<k>`` -> accuracy (with the control's at the same positions), collapse,
    velocity_spike, score_change, collapse_raw (each with mean, CI, ``null`` at random non-disambiguating steps and
    in the never-revealed control, and the paired differences from both), residual_norm, and the per-position
    series (mean and CI over contexts)."""
    truth = np.array([true_hypothesis(k) for k in range(p.n_contexts)])
    w = p.collapse_window
    never_items = data[NEVER]
    out = {}
    for layer in layers:
        never = series(never_items, layer, truth)
        for c in conditions(p):
            s = never if c == NEVER else series(data[c], layer, truth)
            d = reference_step(p) if c == NEVER else disambiguate_at(c, p.context_length)
            rng = lambda *what: stream(p.seed, "summary", c, str(layer), *what)  # noqa: E731
            at_d = [step_statistics(s, k, d, w) for k in range(p.n_contexts)]
            at_control = [step_statistics(never, k, d, w) for k in range(p.n_contexts)]
            at_null = []
            for k, item in enumerate(data[c]):
                steps = null_steps(graph, item["walk"], None if c == NEVER else d, w, p.null_steps,
                                   stream(p.seed, "null_steps", c, k))
                stats = [step_statistics(s, k, int(t), w) for t in steps]
                at_null.append({name: (float(np.nanmean([x[name] for x in stats]))
                                       if stats and np.isfinite([x[name] for x in stats]).any() else np.nan)
                                for name in STEP_STATS})
            entry = {"disambiguate_at": d, "context_length": p.context_length}
            for name in STEP_STATS:
                value = np.array([x[name] for x in at_d], dtype=float)
                rand = np.array([x[name] for x in at_null], dtype=float)
                ctl = np.array([x[name] for x in at_control], dtype=float)
                stat = mean_ci(value, p.n_boot, rng(name))
                stat["null"] = {"random_steps": mean_ci(rand, p.n_boot, rng(name, "random"))}
                stat["vs_random_steps"] = paired_difference(value - rand, p.n_boot, rng(name, "vs_random"),
                                                            rng(name, "vs_random_p"), p.n_perm)
                if c != NEVER:
                    stat["null"]["never_revealed"] = mean_ci(ctl, p.n_boot, rng(name, "never"))
                    stat["vs_never_revealed"] = paired_difference(value - ctl, p.n_boot, rng(name, "vs_never"),
                                                                  rng(name, "vs_never_p"), p.n_perm)
                stat["per_context"] = value
                entry[name] = stat
            acc = _accuracy(decoded_correct(s, d, truth), rng("accuracy"), p.n_boot)
            if c != NEVER:
                acc["control"] = _accuracy(decoded_correct(never, d, truth), rng("accuracy", "control"), p.n_boot)
            entry["accuracy"] = acc
            entry["residual_norm"] = mean_ci(s["rho"], p.n_boot, rng("rho"))
            entry["per_position"] = {name: mean_ci(s[name], p.n_boot, rng("series", name)) for name in SERIES}
            out.setdefault(f"condition_{c}", {})[layer_key(layer)] = entry
    return out


def summary_table(summary: dict):
    """One row per (condition, layer): accuracy and the control's, collapse and velocity spike beside their nulls
    (random non-disambiguating steps, never-revealed control), each with its 95% CI."""
    import pandas as pd

    def fmt(s):
        return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]" if np.isfinite(s["mean"]) else "n/a"

    rows = []
    for ckey, by_layer in summary.items():
        for lkey, e in by_layer.items():
            row = {"condition": ckey.removeprefix("condition_"), "layer": parse_layer_key(lkey),
                   "D": e["disambiguate_at"], "accuracy": fmt(e["accuracy"]),
                   "accuracy_p": e["accuracy"]["p_value"],
                   "control_accuracy": fmt(e["accuracy"]["control"]) if "control" in e["accuracy"] else "",
                   "collapse": fmt(e["collapse"]), "collapse_random_steps": fmt(e["collapse"]["null"]["random_steps"]),
                   "collapse_never": fmt(e["collapse"]["null"].get("never_revealed", {"mean": np.nan})),
                   "spike": fmt(e["velocity_spike"]),
                   "spike_random_steps": fmt(e["velocity_spike"]["null"]["random_steps"]),
                   "spike_never": fmt(e["velocity_spike"]["null"].get("never_revealed", {"mean": np.nan}))}
            rows.append(row)
    return pd.DataFrame(rows)


def results_document(data: dict, summary: dict, graph, p, model, layers) -> dict:
    """The ``results`` part of results.json: per-condition, per-layer summaries plus what recomputes them."""
    from iclnb.prompts import tokenization_report

    return {
        **summary,
        "layers": list(layers),
        "conditions": {c: disambiguate_at(c, p.context_length) for c in conditions(p)},
        "graph": graph.to_dict(),
        "agreement": graphs.co_membership_agreement(graph.labelings["H1"], graph.labelings["H2"]),
        "common_graph": dual.common_graph(graph),
        "contexts": {c: {"walks": np.array([item["walk"] for item in items]),
                         "true_hypothesis": [true_hypothesis(k) for k in range(len(items))]}
                     for c, items in data.items()},
        "tokens_per_word": tokenization_report(model.tokenizer, graph.words),
    }


def tidy_rows(r, n_boot, seed) -> list[dict]:
    """Rows for ``iclnb summarize`` / compare_experiments: accuracy (null: the control's), collapse and
    velocity_spike (null: random non-disambiguating steps) per condition and layer."""
    from iclnb.experiments.kit import row

    rows = []
    n_words = r.params.get("context_length")
    for ckey, by_layer in r.results.items():
        if not ckey.startswith("condition_") or not isinstance(by_layer, dict):
            continue
        condition = ckey.removeprefix("condition_")
        for lkey, e in by_layer.items():
            layer = parse_layer_key(lkey)
            acc = e["accuracy"]
            ctl = acc.get("control") or {}
            rows.append(row("accuracy", layer, n_words, acc["mean"], acc["ci_low"], acc["ci_high"], condition,
                            (ctl.get("mean", np.nan), ctl.get("ci_low", np.nan), ctl.get("ci_high", np.nan))))
            for name in ("collapse", "velocity_spike"):
                s = e[name]
                n = s["null"]["random_steps"]
                rows.append(row(name, layer, n_words, s["mean"], s["ci_low"], s["ci_high"], condition,
                                (n["mean"], n["ci_low"], n["ci_high"])))
    return rows


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {
    "collapse_window": 5,
    "context_length": 40,
    "layers": "0,-1",
    "n_boot": 50,
    "n_contexts": 4,
    "n_perm": 50,
    "null_steps": 2,
    "window": 20,
}
