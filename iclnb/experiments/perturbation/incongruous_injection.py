"""incongruous_injection: one word out of place, and what it does to the geometry and to the loss around it.

Design. Context k is one walk on the run's 3 x 5 sbm graph (the longest context length; shorter contexts are its
prefixes). One word is inserted immediately before word position p (so it sits between words p − 1 and p), of
four kinds:

* ``wrong_cluster``: a graph word from another super-cluster: one word per cluster is drawn per context (stream
  ``("inject", "wrong_cluster", k)``), and at p the word of a cluster that is neither word p − 1's nor word p's
  (when they differ there is one such cluster; otherwise one of the two others, drawn from
  ``("inject", "wrong_cluster", k, p)``);
* ``random_vocab``: a common word outside the graph, one per context from ``random_vocab_words``;
* ``semantic_outlier``: a science term, one per context from ``semantic_outlier_words``;
* ``out_of_vocab``: a nonsense string that the tokenizer splits into several tokens, one per context from
  ``out_of_vocab_words`` (refused if one is a single token).

Every variant is measured by :class:`iclnb.methods.loo.LooEngine` with ``Insert(word)``: the walk runs once, and each
variant recomputes only its suffix on top of the shared prefix's key/value cache; every context length and every
layer come from the same passes. The inserted span is excluded from the geometry and every original word keeps
its own node label (exact alignment, whatever the inserted word's token count). Φ is the cluster separation of the
original words' vectors (:class:`iclnb.methods.word_separation.WordSeparation`, equal to
``iclnb.metrics.cluster_separation``), the attention-sink word excluded.

Reported per (kind, N, p, layer): ΔΦ = Φ(with the insertion) − Φ(without), median and mean over contexts with
bootstrap CIs; per (kind, N, p): the inserted word's own surprisal (``loss_at``: the sum of its tokens' losses),
the mean loss of the original words after it (``loss_after``), the same words' mean loss without the insertion
(``loss_after_baseline``) and the paired difference (``loss_after_delta``).
"""

from __future__ import annotations

import time

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key, parse_layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.kit import resume_units
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, OUTPUT_DIR, SEED, Float, Int, IntList,
                                      Layers, StrList, declare)
from iclnb.experiments.perturbation.common import make_graph
from iclnb.methods.loo import Insert, LooEngine
from iclnb.methods.word_separation import WordSeparation
from iclnb.prompts import check_fits, tokenization_report
from iclnb.results.io import nan_array
from iclnb.stats import mean_ci

KINDS = ("wrong_cluster", "random_vocab", "semantic_outlier", "out_of_vocab")

PARAMS = declare(
    MODEL,
    Int("n_contexts", 10, "contexts: walks on one fixed graph; each gets every kind at every position", min=2,
        max=MAX_CONTEXTS),
    IntList("context_lengths", "20,50,100,200", "context lengths N in words (each a prefix of the context's longest "
            "walk)", min=2, max=100_000),
    IntList("positions", "1,2,3,4,5,10,15,20,30,50,75,100,150", "insertion positions p (the word goes before word "
            "p); at each N only the positions below N are measured", min=0, max=100_000),
    StrList("kinds", ",".join(KINDS), "kinds of inserted word", options=KINDS),
    Layers(),
    Float("bridge_penalty", 0.3, "walk weight of a step into another cluster (1.0: the uniform walk of Park et al.)",
          min=1e-6, max=1e6),
    StrList("random_vocab_words", "water,people,money,music,paper,street,letter,story,family,morning",
            "common words outside the graph for random_vocab (one drawn per context)"),
    StrList("semantic_outlier_words", "photosynthesis,mitochondria,thermodynamics,neutrino,chlorophyll,isotope,"
            "enzyme,osmosis", "science terms for semantic_outlier (one drawn per context)"),
    StrList("out_of_vocab_words", "xqzvbt,blorftag,plorkvath,glimbrastic,qwzrtx,zxqwv",
            "nonsense strings for out_of_vocab, each several tokens (one drawn per context)"),
    N_BOOT,
    Int("batch_tokens", 0, "suffix tokens per batched pass (0: 2048 on CPU, 16384 on GPU); results depend on it "
        "only through float rounding", min=0, max=10_000_000),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

WORD_LISTS = {"random_vocab": "random_vocab_words", "semantic_outlier": "semantic_outlier_words",
              "out_of_vocab": "out_of_vocab_words"}


# ---------------------------------------------------------------------------------------------------- checks


def check_inputs(p, graph) -> None:
    """Refuse, with one line, what needs no model: a position below no context length, inserted words that are
    graph words, a word with spaces."""
    n_max = max(p.context_lengths)
    beyond = sorted(q for q in p.positions if q >= n_max)
    if beyond:
        raise IclnbError(f"insertion position {beyond[0]} is not below any context length (the largest is {n_max}); "
                         f"use positions below {n_max} or add a longer context length")
    for kind, name in WORD_LISTS.items():
        words = p[name]
        if kind in p.kinds and not words:
            raise IclnbError(f"parameter {name} is empty; give at least one word for the {kind} insertions")
        clash = sorted(set(words) & set(graph.words))
        if clash:
            raise IclnbError(f"{name} holds the graph word {clash[0]!r}; an inserted word of kind {kind} must lie "
                             f"outside the graph (graph words: {', '.join(graph.words)})")
        spaced = [w for w in words if not w or any(c.isspace() for c in w)]
        if spaced:
            raise IclnbError(f"{name} holds {spaced[0]!r}; each inserted word must be one word without spaces")


def check(p, model) -> None:
    """Refuse, before any work: bad positions or words, out-of-vocabulary strings that are a single token, layers
    the model lacks, a context that cannot fit."""
    graph = make_graph(p.seed)
    check_inputs(p, graph)
    if not [k for k in model.resolve_layers(p.layers) if k != "embed"]:
        raise IclnbError("incongruous_injection needs at least one decoder block in layers (not only 'embed')")
    report = inserted_token_counts(model, p)
    if "out_of_vocab" in p.kinds:
        single = [w for w in p.out_of_vocab_words if report[w] < 2]
        if single:
            raise IclnbError(f"out_of_vocab word {single[0]!r} is a single token for {model.name}; choose strings "
                             f"the tokenizer splits into several tokens")
    extra = max([report[w] for w in report] + [1])
    check_fits(model, graph.words, max(p.context_lengths), extra_tokens=extra)


def inserted_token_counts(model, p) -> dict:
    """Tokens of every candidate inserted word in its leading-space form (graph words included)."""
    words = [w for name in WORD_LISTS.values() for w in p[name]] + list(make_graph(p.seed).words)
    return tokenization_report(model.tokenizer, words)


# ---------------------------------------------------------------------------------------------------- the words


def inserted_words(graph, walk: np.ndarray, positions, kind: str, p, k: int) -> list[str]:
    """The word inserted before each position of context k (see the module docstring)."""
    positions = [int(q) for q in positions]
    if kind in WORD_LISTS:
        words = list(p[WORD_LISTS[kind]])
        word = words[int(stream(p.seed, "inject", kind, k).integers(len(words)))]
        return [word] * len(positions)
    if kind != "wrong_cluster":
        raise IclnbError(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
    clusters = graph.labelings["cluster"]
    ids = np.unique(clusters)
    pick = stream(p.seed, "inject", "wrong_cluster", k)
    representative = {int(c): int(pick.choice(np.flatnonzero(clusters == c))) for c in ids}
    out = []
    for q in positions:
        near = {int(clusters[walk[q]])} | ({int(clusters[walk[q - 1]])} if q > 0 else set())
        candidates = [int(c) for c in ids if int(c) not in near]
        if not candidates:  # a graph with two clusters and a bridge at p: avoid at least word p − 1's cluster
            candidates = [int(c) for c in ids if int(c) != int(clusters[walk[max(q - 1, 0)]])]
        chosen = candidates[int(stream(p.seed, "inject", "wrong_cluster", k, q).integers(len(candidates)))]
        out.append(graph.words[representative[chosen]])
    return out


# ---------------------------------------------------------------------------------------------------- measuring


def measure_context(engine, graph, p, k: int, layers) -> dict:
    """Context k at every kind, position, context length and layer. Returns, per kind and ``N_<n>``: positions (P,),
    inserted words (P,), phi_full (L,), phi_edited (P, L), inserted_loss (P,), following_loss (P,),
    baseline_loss (P,): the same words' mean loss without the insertion; and the full context's word losses."""
    lengths = sorted(p.context_lengths)
    n_max = lengths[-1]
    walk = graphs.context_walk(graph, n_max, p.seed, k, bridge_penalty=p.bridge_penalty)
    words = graphs.walk_words(graph, walk)
    positions = np.array(sorted(q for q in p.positions if q < n_max), dtype=np.int64)
    measure = WordSeparation(graph.labelings["cluster"][walk])
    nodes = np.arange(n_max)  # one node per word position: WordSeparation needs the word vectors themselves
    start = time.perf_counter()
    word_loss = None
    out = {}
    for kind in p.kinds:
        chosen = inserted_words(graph, walk, positions, kind, p, k)
        per_n = {n: {"positions": [], "words": [], "phi_edited": [], "inserted_loss": [], "following_loss": []}
                 for n in lengths}
        phi_full = {}
        for word in sorted(set(chosen)):
            at = positions[[w == word for w in chosen]]
            trials = engine.trial(words, nodes, n_max, measure, layers, positions=at, edit=Insert(word),
                                  loss=word_loss is None, context_lengths=lengths, variant_loss=True)
            if word_loss is None:
                word_loss = trials[n_max].word_loss
            for n, t in trials.items():
                below = t.positions < n
                rec = per_n[n]
                rec["positions"] += t.positions[below].tolist()
                rec["words"] += [word] * int(below.sum())
                rec["phi_edited"] += t.edited[below, :, 0].tolist()
                rec["inserted_loss"] += t.inserted_loss[below].tolist()
                rec["following_loss"] += t.following_loss[below].tolist()
                phi_full[n] = t.full[:, 0]
        out[kind] = {}
        for n in lengths:
            rec = per_n[n]
            order = np.argsort(rec["positions"], kind="stable")
            pos = np.asarray(rec["positions"], dtype=np.int64)[order]
            out[kind][f"N_{n}"] = {
                "positions": pos,
                "words": [rec["words"][i] for i in order],
                "phi_full": phi_full[n],
                "phi_edited": np.asarray(rec["phi_edited"], dtype=float).reshape(-1, len(layers))[order],
                "inserted_loss": np.asarray(rec["inserted_loss"], dtype=float)[order],
                "following_loss": np.asarray(rec["following_loss"], dtype=float)[order],
                "baseline_loss": np.array([_mean_loss(word_loss[q:n]) for q in pos]),
            }
    return {"walk": walk, "word_loss": word_loss, "kinds": out, "seconds": time.perf_counter() - start}


def _mean_loss(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def collect(run, model, graph, p) -> dict:
    """Measure every context once, checkpointed per context (an interrupted run resumes where it stopped);
    returns {context index (str): its measurements}."""
    layers = [k for k in model.resolve_layers(p.layers) if k != "embed"]
    engine = LooEngine(model, batch_tokens=p.batch_tokens or None)
    units = range(p.n_contexts)
    items = resume_units(run, units, lambda batch: [measure_context(engine, graph, p, k, layers) for k in batch],
                         every_s=0, desc="contexts (every kind, position and N)")
    return {str(k): item for k, item in zip(units, items)}


# ---------------------------------------------------------------------------------------------------- tables


def arrays(contexts: dict, kind: str, n: int, positions, n_layers: int) -> dict:
    """Per (kind, N): (K, P, L) delta_phi and (K, P) inserted / following / baseline losses over contexts, for the
    positions below N (NaN where a context lacks one)."""
    k_all = len(contexts)
    idx = {q: i for i, q in enumerate(positions)}
    out = {"delta_phi": np.full((k_all, len(positions), n_layers), np.nan)}
    for name in ("inserted_loss", "following_loss", "baseline_loss"):
        out[name] = np.full((k_all, len(positions)), np.nan)
    for k in range(k_all):
        rec = contexts[str(k)]["kinds"][kind][f"N_{n}"]
        rows = [idx[int(q)] for q in rec["positions"]]
        full = nan_array(rec["phi_full"])
        edited = nan_array(rec["phi_edited"]).reshape(len(rows), n_layers)
        out["delta_phi"][k, rows] = edited - full[None]
        for name in ("inserted_loss", "following_loss", "baseline_loss"):
            out[name][k, rows] = nan_array(rec[name])
    return out


def _stats(values: np.ndarray, n_boot: int, rng_mean, rng_median) -> dict:
    """Median and mean over axis 0 with 95% bootstrap CIs (vectorised over the other axes) and n."""
    median = mean_ci(values, n_boot, rng_median, statistic=np.median)
    return {"median": median["mean"], "median_ci_low": median["ci_low"], "median_ci_high": median["ci_high"],
            **mean_ci(values, n_boot, rng_mean, count=True)}


def _pick(stats: dict, index) -> dict:
    return {key: (int(np.asarray(v)[index]) if key == "n" else float(np.asarray(v)[index]))
            for key, v in stats.items()}


def tables(contexts: dict, layers, p) -> dict:
    """``kinds`` -> kind -> ``N_<n>`` -> ``p_<p>`` -> {``loss_at``, ``loss_after``, ``loss_after_baseline``,
    ``loss_after_delta``, ``layer_<k>``: {``delta_phi``, ``loss_at``, ``loss_after``}}; each statistic has median,
    mean and their 95% bootstrap CIs over contexts and n."""
    out = {}
    for kind in p.kinds:
        out[kind] = {}
        for n in sorted(p.context_lengths):
            positions = [q for q in sorted(p.positions) if q < n]
            if not positions:
                continue
            a = arrays(contexts, kind, n, positions, len(layers))
            rng = lambda what: stream(p.seed, "bootstrap", kind, n, what)  # noqa: E731
            dphi = _stats(a["delta_phi"], p.n_boot, rng("delta_phi"), rng("delta_phi_median"))
            at = _stats(a["inserted_loss"], p.n_boot, rng("loss_at"), rng("loss_at_median"))
            after = _stats(a["following_loss"], p.n_boot, rng("loss_after"), rng("loss_after_median"))
            base = _stats(a["baseline_loss"], p.n_boot, rng("baseline"), rng("baseline_median"))
            delta = _stats(a["following_loss"] - a["baseline_loss"], p.n_boot, rng("loss_delta"),
                           rng("loss_delta_median"))
            entry = {}
            for i, q in enumerate(positions):
                losses = {"loss_at": _pick(at, i), "loss_after": _pick(after, i)}
                cell = {**losses, "loss_after_baseline": _pick(base, i), "loss_after_delta": _pick(delta, i)}
                for j, layer in enumerate(layers):
                    cell[layer_key(layer)] = {"delta_phi": _pick(dphi, (i, j)), **losses}
                entry[f"p_{q}"] = cell
            out[kind][f"N_{n}"] = entry
    return out


def delta_phi_by_layer(contexts: dict, layers, p) -> dict:
    """Per kind and N: ΔΦ averaged over the positions below N within each context, then its mean and median over
    contexts with CIs, per layer: {kind: {N_<n>: {layer_<k>: stats}}}."""
    out = {}
    for kind in p.kinds:
        out[kind] = {}
        for n in sorted(p.context_lengths):
            positions = [q for q in sorted(p.positions) if q < n]
            if not positions:
                continue
            d = arrays(contexts, kind, n, positions, len(layers))["delta_phi"]
            with np.errstate(invalid="ignore"):
                per_context = np.nanmean(d, axis=1) if np.isfinite(d).any() else np.full(d.shape[::2], np.nan)
            s = _stats(per_context, p.n_boot, stream(p.seed, "bootstrap", kind, n, "by_layer"),
                       stream(p.seed, "bootstrap", kind, n, "by_layer_median"))
            out[kind][f"N_{n}"] = {layer_key(layer): _pick(s, j) for j, layer in enumerate(layers)}
    return out


def summary_table(tabs: dict, layer) -> "object":
    """One row per (kind, N, p) at one layer: ΔΦ median and mean with CIs, the inserted word's loss, and the loss
    after it with and without the insertion."""
    import pandas as pd

    key = layer_key(layer)
    rows = []
    for kind, by_n in tabs.items():
        for n_key, by_p in by_n.items():
            for p_key, cell in by_p.items():
                d = cell[key]["delta_phi"]
                rows.append({"kind": kind, "N": int(n_key[2:]), "p": int(p_key[2:]),
                             "dphi_median": d["median"], "dphi_mean": d["mean"],
                             "dphi_ci": (round(d["ci_low"], 3), round(d["ci_high"], 3)),
                             "loss_at": cell["loss_at"]["mean"], "loss_after": cell["loss_after"]["mean"],
                             "loss_after_baseline": cell["loss_after_baseline"]["mean"],
                             "loss_after_delta": cell["loss_after_delta"]["mean"], "n": d["n"]})
    return pd.DataFrame(rows).round(3)


def kind_summary(tabs: dict, layer, n: int | None = None):
    """One row per kind at one layer and N (default: the largest): ΔΦ median and mean pooled over positions is in
    :func:`delta_phi_by_layer`; here the range over positions of the mean ΔΦ and the mean losses."""
    import pandas as pd

    key = layer_key(layer)
    rows = []
    for kind, by_n in tabs.items():
        n_key = f"N_{n}" if n is not None else max(by_n, key=lambda s: int(s[2:]))
        cells = by_n[n_key]
        rows.append({"kind": kind, "N": int(n_key[2:]),
                     "dphi_mean_min": min(c[key]["delta_phi"]["mean"] for c in cells.values()),
                     "dphi_mean_max": max(c[key]["delta_phi"]["mean"] for c in cells.values()),
                     "loss_at_mean": float(np.nanmean([c["loss_at"]["mean"] for c in cells.values()])),
                     "loss_after_delta_mean": float(np.nanmean([c["loss_after_delta"]["mean"]
                                                                for c in cells.values()]))})
    return pd.DataFrame(rows).round(3)


def results_document(contexts: dict, tabs: dict, by_layer: dict, graph, layers, model, p) -> dict:
    """The ``results`` part of results.json."""
    lengths = sorted(p.context_lengths)
    raw = {}
    for kind in p.kinds:
        raw[kind] = {}
        for n in lengths:
            positions = [q for q in sorted(p.positions) if q < n]
            if positions:
                raw[kind][f"N_{n}"] = {"positions": positions,
                                       **arrays(contexts, kind, n, positions, len(layers)),
                                       "words": [contexts[str(k)]["kinds"][kind][f"N_{n}"]["words"]
                                                 for k in range(len(contexts))]}
    candidates = sorted({w for name in WORD_LISTS.values() for w in p[name]})
    return {
        "kinds": tabs,
        "delta_phi_by_layer": by_layer,
        "layers": list(layers),
        "context_lengths": lengths,
        "positions": sorted(p.positions),
        "n_contexts": p.n_contexts,
        "graph": graph.to_dict(),
        "tokens_per_word": tokenization_report(model.tokenizer, graph.words),
        "inserted_tokens": tokenization_report(model.tokenizer, candidates),
        "contexts": {
            "walks": [contexts[str(k)]["walk"] for k in range(len(contexts))],
            "word_loss": [contexts[str(k)]["word_loss"] for k in range(len(contexts))],
            "seconds": [contexts[str(k)]["seconds"] for k in range(len(contexts))],
            "per_kind": raw,
        },
        "definitions": {
            "delta_phi": "phi(context with the word inserted before p) - phi(context); phi over the original words "
                         "only (the inserted span excluded, every word keeps its own cluster label), sink excluded",
            "loss_at": "the inserted word's surprisal: the sum of its tokens' losses (nats)",
            "loss_after": "mean word loss of the original words after the insertion (positions p..N-1)",
            "loss_after_baseline": "mean word loss of the same words in the context without the insertion",
            "loss_after_delta": "loss_after - loss_after_baseline, paired per context",
            "statistics": "median and mean over contexts, each with a 95% bootstrap CI",
        },
    }


def tidy_rows(r, n_boot, seed) -> list[dict]:
    """Rows for ``iclnb summarize`` / compare_experiments: ΔΦ per (kind, N, layer) averaged over positions, and
    per (kind, N, p) the mean ΔΦ at each layer (metric ``delta_phi_p<p>``) and the losses."""
    from iclnb.experiments.kit import row

    rows = []
    for kind, by_n in (r.results.get("delta_phi_by_layer") or {}).items():
        for n_key, by_layer in by_n.items():
            for key, s in by_layer.items():
                rows.append(row("delta_phi", parse_layer_key(key), int(n_key[2:]), s["mean"], s["ci_low"],
                                s["ci_high"], kind))
    for kind, by_n in (r.results.get("kinds") or {}).items():
        for n_key, by_p in by_n.items():
            for p_key, cell in by_p.items():
                q = p_key[2:]
                for key, le in cell.items():
                    if key.startswith("layer_"):
                        d = le["delta_phi"]
                        rows.append(row(f"delta_phi_p{q}", parse_layer_key(key), int(n_key[2:]), d["mean"],
                                        d["ci_low"], d["ci_high"], kind))
                for name in ("loss_at", "loss_after_delta"):
                    s = cell[name]
                    rows.append(row(f"{name}_p{q}", "", int(n_key[2:]), s["mean"], s["ci_low"], s["ci_high"], kind))
    return rows


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {
    "context_lengths": "10,16",
    "kinds": "wrong_cluster,out_of_vocab",
    "layers": "-1",
    "n_boot": 50,
    "n_contexts": 2,
    "positions": "1,5",
}
