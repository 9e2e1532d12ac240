"""collapse: how the representations of very long contexts change with length, and what natural text does to them.

Three kinds of context, each read up to ``max_tokens`` tokens in chunks with the key/value cache: a random walk on a
word graph (``walk``), natural English prose (``natural``, the reference) and one token repeated (``repeated``). At
context points on a log scale (64, 128, 256, ... tokens, and ``max_tokens``) the trailing window of
``window_tokens`` token positions (the sink, token 0, excluded) is measured at every requested layer: mean pairwise
cosine raw and centred, mean pairwise L2 distance, spread (trace of the covariance), participation-ratio dimension
and TwoNN intrinsic dimension. Reversal: the walk switches at ``switch_fraction`` of ``max_tokens`` to natural text
(``walk_to_natural``) or to a walk on another graph (``walk_to_walk``), measured at points after the switch.
Probing: common-knowledge questions asked after each context point (accuracy of the answer's first token, the
log-probability of the whole answer), and their correlation with the collapse measures.

Every interval is a bootstrap over contexts; the comparison with natural text (``vs_natural``) is the difference of
the means, bootstrapped over contexts drawn independently for each kind.
"""

from __future__ import annotations

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key, parse_layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.collapse import corpus
from iclnb.experiments.collapse import probes as probe_data
from iclnb.experiments.collapse.chunked import ChunkedPass
from iclnb.experiments.kit import checkpoint_key, resume_units
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, OUTPUT_DIR, SEED, Bool, Choice, Float,
                                      Int, Layers, declare)
from iclnb.metrics import collapse_stats
from iclnb.stats import mean_ci

PARAMS = declare(
    MODEL,
    Int("max_tokens", 1024, "tokens per context (BOS included); the longest context point", min=8),
    Int("n_contexts", 4, "contexts of each kind", min=2, max=MAX_CONTEXTS),
    Layers(),
    Int("window_tokens", 50, "trailing token positions measured at each context point (the sink excluded)", min=3),
    Choice("graph", "grid", "graph of the walk: \"grid\" (4x4 word grid) or \"sbm\" (3x5 stochastic block model); "
           "the reversal's other walk uses the other one", ("grid", "sbm")),
    Float("switch_fraction", 0.5, "reversal contexts switch from the walk at this fraction of max_tokens", min=0.01,
          max=0.99),
    Bool("probe", True, "ask the factual questions after every context point"),
    Int("chunk_tokens", 256, "most tokens per forward pass (results do not depend on it but through float rounding)",
        min=1, max=1 << 20),
    N_BOOT,
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)

#: The kinds of context, natural text (the reference) among them.
KINDS = ("walk", "natural", "repeated")
REFERENCE = "natural"
#: Reversal contexts: the walk's first tokens, then natural text or a walk on the other graph.
REVERSALS = ("walk_to_natural", "walk_to_walk")
#: The measures, in results order, and the key of :func:`iclnb.metrics.collapse_stats` each one reports.
MEASURES = {
    "cosine": "mean_cosine",
    "cosine_centred": "mean_cosine_centered",
    "l2": "mean_l2",
    "spread": "spread",
    "participation_ratio": "participation_ratio",
    "twonn": "twonn_dimension",
}
#: The first context point in tokens (then doubling up to max_tokens).
FIRST_POINT = 64
#: Words of the sbm graph: nouns that are not on the 4x4 grid, so the two walks share no word.
SBM_WORDS = tuple(w for w in graphs.NOUNS if w not in graphs.GRID_WORDS)[:15]


# ------------------------------------------------------------------------------------------------ context points


def context_points(max_tokens: int, window_tokens: int) -> list[int]:
    """Context lengths (tokens) at which the windows are measured: FIRST_POINT (or the first power of two above
    the window, when that is larger) doubling while below ``max_tokens``, then ``max_tokens``."""
    t = FIRST_POINT
    while t <= window_tokens:
        t *= 2
    points = []
    while t < max_tokens:
        points.append(t)
        t *= 2
    return points + [int(max_tokens)]


def switch_token(p) -> int:
    """Where the reversal contexts switch: the first token of what follows the walk."""
    return int(round(p.max_tokens * p.switch_fraction))


def reversal_points(p) -> list[int]:
    """Context points after the switch: the switch plus each context point that fits, and ``max_tokens``."""
    s = switch_token(p)
    after = [s + d for d in context_points(p.max_tokens, p.window_tokens) if s + d < p.max_tokens]
    return after + [int(p.max_tokens)]


def check(p, model) -> None:
    """Refuse, before any work, parameters that cannot run: a context beyond the model's, a window that does not
    fit, natural text shorter than the contexts, a switch too close to either end."""
    probe_tokens = max(len(q) + len(a) for q, a in encoded_probes(model.tokenizer)) if p.probe else 0
    if p.max_tokens + probe_tokens > model.max_positions:
        raise IclnbError(f"max_tokens {p.max_tokens} is beyond the {model.max_positions} tokens {model.name} can read"
                         + (f" (with the {probe_tokens} tokens of the longest probe)" if probe_tokens else "")
                         + f"; use max_tokens at most {model.max_positions - probe_tokens}")
    if p.max_tokens < p.window_tokens + 3:
        raise IclnbError(f"max_tokens {p.max_tokens} leaves no full window of window_tokens {p.window_tokens} after "
                         f"the sink; use max_tokens at least {p.window_tokens + 3} or a smaller window_tokens")
    available = len(natural_corpus(model.tokenizer)[0])
    if p.max_tokens > available:
        raise IclnbError(f"max_tokens {p.max_tokens} is longer than the natural text ({available} tokens of "
                         f"{model.name}'s tokenizer), which would repeat inside a context; use max_tokens at most "
                         f"{available}")
    s = switch_token(p)
    if s < p.window_tokens + 2 or p.max_tokens - s < p.window_tokens:
        raise IclnbError(f"switch_fraction {p.switch_fraction} switches at token {s}, leaving less than a window "
                         f"({p.window_tokens} tokens) before or after the switch; choose a value nearer 0.5")
    model.resolve_layers(p.layers)


# ------------------------------------------------------------------------------------------------ contexts


def make_graph(family: str):
    """The walk's graph: the 4x4 grid of Park et al.'s words, or a 3x5 sbm over other nouns (fixed, seed 0)."""
    if family == "grid":
        return graphs.grid(4, 4)
    return graphs.sbm(3, 5, 0.8, 0.1, rng=stream(0, "collapse_sbm"), words=SBM_WORDS)


def other_graph(family: str):
    return make_graph("sbm" if family == "grid" else "grid")


def _bos(tokenizer) -> list[int]:
    from iclnb.models import adds_bos

    return [tokenizer.bos_token_id] if adds_bos(tokenizer) else []


def walk_ids(tokenizer, graph, n_tokens: int, rng, bos: bool = True) -> np.ndarray:
    """The first ``n_tokens`` token ids of a random walk on ``graph`` (BOS first when ``bos`` and the tokenizer uses
    one); words in their leading-space form, as ``encode_walk`` encodes them."""
    from iclnb.prompts import word_token_ids

    pieces = {w: word_token_ids(tokenizer, w) for w in graph.words}
    ids = list(_bos(tokenizer)) if bos else []
    node = None
    while len(ids) < n_tokens:
        steps = graphs.random_walk(graph, 256, rng, start=node)
        for w in graphs.walk_words(graph, steps[:-1]):
            ids.extend(pieces[w])
        node = int(steps[-1])
    return np.asarray(ids[:n_tokens], dtype=np.int64)


_CORPUS: dict = {}


def natural_corpus(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(ids, starts): the prose paragraphs tokenized one by one, each followed by the tokens of a blank line, and
    where each paragraph starts."""
    key = (getattr(tokenizer, "name_or_path", None), id(tokenizer))
    if key not in _CORPUS:
        sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
        ids, starts = [], []
        for paragraph in corpus.prose_paragraphs():
            starts.append(len(ids))
            ids.extend(tokenizer(paragraph, add_special_tokens=False)["input_ids"])
            ids.extend(sep)
        _CORPUS[key] = (np.asarray(ids, dtype=np.int64), np.asarray(starts, dtype=np.int64))
    return _CORPUS[key]


def natural_ids(tokenizer, n_tokens: int, rng, bos: bool = True) -> np.ndarray:
    """``n_tokens`` tokens of prose starting at a paragraph drawn from ``rng``, continuing through the following
    paragraphs (after the last one, the first): BOS first when ``bos``, else the blank line before the paragraph."""
    ids, starts = natural_corpus(tokenizer)
    start = int(starts[rng.integers(len(starts))])
    head = list(_bos(tokenizer)) if bos else list(tokenizer("\n\n", add_special_tokens=False)["input_ids"])
    body = np.roll(ids, -start)[: max(n_tokens - len(head), 0)]
    return np.concatenate([np.asarray(head, dtype=np.int64), body])[:n_tokens]


def repeat_words(tokenizer) -> list[str]:
    """Nouns that are one token in their leading-space form: the words a repeated context repeats."""
    from iclnb.prompts import word_token_ids

    return [w for w in graphs.NOUNS if len(word_token_ids(tokenizer, w)) == 1]


def repeated_ids(tokenizer, n_tokens: int, rng) -> tuple[np.ndarray, str]:
    """BOS, then one single-token noun (drawn from ``rng``) repeated up to ``n_tokens`` tokens; and the noun."""
    from iclnb.prompts import word_token_ids

    words = repeat_words(tokenizer)
    word = words[int(rng.integers(len(words)))]
    head = _bos(tokenizer)
    return np.asarray(head + word_token_ids(tokenizer, word) * (n_tokens - len(head)), dtype=np.int64), word


def context_ids(kind: str, tokenizer, p, index: int) -> np.ndarray:
    """Token ids of context ``index`` of a kind, each drawn from its own stream (the same in every run and on
    resume). Reversal kinds: the walk's first tokens up to the switch, then the continuation."""
    if kind == "walk":
        return walk_ids(tokenizer, make_graph(p.graph), p.max_tokens, stream(p.seed, "walk", index))
    if kind == "natural":
        return natural_ids(tokenizer, p.max_tokens, stream(p.seed, "natural", index))
    if kind == "repeated":
        return repeated_ids(tokenizer, p.max_tokens, stream(p.seed, "repeated", index))[0]
    s = switch_token(p)
    prefix = context_ids("walk", tokenizer, p, index)[:s]
    n = p.max_tokens - s
    if kind == "walk_to_natural":
        rest = natural_ids(tokenizer, n, stream(p.seed, "reversal_natural", index), bos=False)
    elif kind == "walk_to_walk":
        rest = walk_ids(tokenizer, other_graph(p.graph), n, stream(p.seed, "reversal_walk", index), bos=False)
    else:
        raise IclnbError(f"unknown kind of context {kind!r}")
    return np.concatenate([prefix, rest])


def encoded_probes(tokenizer) -> list[tuple[list[int], list[int]]]:
    """(question ids, answer ids) of every probe: the template's tokens, and the answer's leading-space form."""
    from iclnb.prompts import word_token_ids

    return [(tokenizer(probe_data.TEMPLATE.format(question=q), add_special_tokens=False)["input_ids"],
             word_token_ids(tokenizer, a)) for q, a in probe_data.PROBES]


# ------------------------------------------------------------------------------------------------ measuring


def window_measures(pass_: ChunkedPass) -> dict:
    """{layer_<k>: {measure: value}} of the trailing window at every layer of the pass."""
    out = {}
    for k in pass_.layers:
        stats = collapse_stats(pass_.window(k), window=None)
        out[layer_key(k)] = {name: stats[key] for name, key in MEASURES.items()}
    return out


def read_context(pass_: ChunkedPass, ids: np.ndarray, stops, probes=None, probe_at=None,
                 forks=()) -> tuple[dict, dict, dict]:
    """Read ``ids`` from where ``pass_`` stands, measuring the window at every point of ``stops`` (tokens from the
    start of the context) and scoring ``probes`` at the points of ``probe_at`` (default: every stop); at each token
    count in ``forks`` a copy of the pass is kept. Returns ({tokens_<t>: measures}, {tokens_<t>: {"correct",
    "logprob"}}, {fork point: pass})."""
    probe_at = set(stops if probe_at is None else probe_at)
    measures, scored, copies = {}, {}, {}
    marks = sorted(set(stops) | set(forks))
    for t in marks:
        if t > len(ids):
            raise IclnbError(f"context point {t} is beyond the context's {len(ids)} tokens")
        pass_.feed(ids[pass_.n_tokens : t])
        if t in forks:
            copies[t] = pass_.fork()
        if t in stops:
            measures[f"tokens_{t}"] = window_measures(pass_)
            if probes and t in probe_at:
                correct, logprob = pass_.probe(probes)
                scored[f"tokens_{t}"] = {"correct": correct, "logprob": logprob}
    return measures, scored, copies


def collect(run, model, p) -> dict:
    """Read every context of every kind, checkpointed per (kind, context): one item ``walk/<k>`` (the walk, with
    its two reversals forked at the switch), ``natural/<k>`` and ``repeated/<k>``. Returns ``{key: item}``."""
    layers = model.resolve_layers(p.layers)
    tok = model.tokenizer
    points = context_points(p.max_tokens, p.window_tokens)
    after = reversal_points(p)
    s = switch_token(p)
    probes = encoded_probes(tok) if p.probe else None

    def read(kind, k) -> dict:
        ids = context_ids(kind, tok, p, k)
        pass_ = ChunkedPass(model, layers, p.window_tokens, p.chunk_tokens)
        if kind != "walk":
            measures, scored, _ = read_context(pass_, ids, points, probes)
            return {"measures": measures, "probes": scored}
        # the walk is also measured at the reversal points (its continuation without a switch)
        stops = sorted(set(points) | set(after))
        measures, scored, forks = read_context(pass_, ids, stops, probes, probe_at=points, forks=(s,))
        item = {"measures": measures, "probes": scored}
        for reversal in REVERSALS:
            rest = context_ids(reversal, tok, p, k)
            fork = forks[s] if reversal == REVERSALS[-1] else forks[s].fork()
            item[reversal] = read_context(fork, rest, after)[0]
        return item

    units = [(kind, k) for k in range(p.n_contexts) for kind in KINDS]
    items = resume_units(run, units, lambda batch: [read(*unit) for unit in batch], every_s=0,
                         desc="contexts (kind, index)")
    return {checkpoint_key(unit): item for unit, item in zip(units, items)}


def baseline_probes(model, p) -> dict | None:
    """The probes asked after the BOS token alone (no context): per probe, correct and logprob."""
    if not p.probe:
        return None
    pass_ = ChunkedPass(model, [], p.window_tokens, p.chunk_tokens)
    head = _bos(model.tokenizer)
    if not head:  # a model without BOS: the first template token alone starts the context
        return None
    pass_.feed(head)
    correct, logprob = pass_.probe(encoded_probes(model.tokenizer))
    return {"correct": correct, "logprob": logprob}


# ------------------------------------------------------------------------------------------------ summaries


def per_context(store, p, layers) -> dict:
    """kind -> {"points": [t...], "values": (n_contexts, n_points, n_layers, n_measures)} of the collapse measures,
    for the three kinds and the reversals."""
    keys = [layer_key(k) for k in layers]
    out = {}
    for kind in (*KINDS, *REVERSALS):
        item_kind = "walk" if kind in REVERSALS else kind
        items = [store[f"{item_kind}/{k}"] for k in range(p.n_contexts)]
        blocks = [it[kind] if kind in REVERSALS else it["measures"] for it in items]
        points = sorted(int(t.removeprefix("tokens_")) for t in blocks[0])
        values = np.array([[[[np.nan if b[f"tokens_{t}"][key][m] is None else b[f"tokens_{t}"][key][m]
                              for m in MEASURES] for key in keys] for t in points] for b in blocks], dtype=float)
        out[kind] = {"points": points, "values": values}
    return out


def _nest(points, keys, ci: dict) -> dict:
    """{tokens_<t>: {layer_<k>: {measure: {mean, ci_low, ci_high}}}} from :func:`~iclnb.stats.mean_ci` of values
    over (points, layers, measures), flattened."""
    shape = (len(points), len(keys), len(MEASURES))
    arrays = {name: np.reshape(ci[name], shape) for name in ("mean", "ci_low", "ci_high")}
    return {f"tokens_{t}": {key: {m: {name: float(a[i, j, q]) for name, a in arrays.items()}
                                  for q, m in enumerate(MEASURES)}
                            for j, key in enumerate(keys)}
            for i, t in enumerate(points)}


def summarise(data: dict, p, layers) -> tuple[dict, dict]:
    """(kinds, vs_natural): each measure's mean over contexts with its 95% bootstrap CI per kind, context point and
    layer; and the difference from natural text at the same point (kinds other than natural, at the points natural
    text was measured; for a reversal, natural text read for as many tokens as have passed since the switch)."""
    keys = [layer_key(k) for k in layers]
    s = switch_token(p)
    kinds, vs = {}, {}
    ref = data[REFERENCE]
    for kind, d in data.items():
        v = d["values"]
        kinds[kind] = _nest(d["points"], keys, mean_ci(v.reshape(len(v), -1), p.n_boot,
                                                       stream(p.seed, "bootstrap", kind)))
        if kind == REFERENCE:
            continue
        offset = s if kind in REVERSALS else 0
        pairs = [(i, ref["points"].index(t - offset)) for i, t in enumerate(d["points"])
                 if t - offset in ref["points"]]
        if not pairs:
            continue
        mine, theirs = zip(*pairs)
        # contexts of different kinds are independent draws: pairing them by index gives the unpaired interval
        diff = v[:, list(mine)] - ref["values"][:, list(theirs)]
        ci = mean_ci(diff.reshape(len(diff), -1), p.n_boot, stream(p.seed, "bootstrap", "vs_natural", kind))
        vs[kind] = _nest([d["points"][i] for i in mine], keys, ci)
    return kinds, vs


def probe_arrays(store, p) -> dict:
    """kind -> {"points", "correct": (contexts, points, probes) bool, "logprob": (contexts, points, probes)}."""
    out = {}
    for kind in KINDS:
        items = [store[f"{kind}/{k}"]["probes"] for k in range(p.n_contexts)]
        points = sorted(int(t.removeprefix("tokens_")) for t in items[0])
        out[kind] = {
            "points": points,
            "correct": np.array([[it[f"tokens_{t}"]["correct"] for t in points] for it in items], dtype=float),
            "logprob": np.array([[it[f"tokens_{t}"]["logprob"] for t in points] for it in items], dtype=float),
        }
    return out


def probing_summary(arrays: dict, baseline, p) -> dict:
    """Per kind and context point: accuracy (fraction of probes whose answer's first token is the argmax) and the
    mean log-probability of the right answer, each a mean over contexts of the per-context mean over probes with
    its 95% bootstrap CI; ``no_context``: the same after the BOS token alone, with a CI over probes."""
    out = {}
    for kind, a in arrays.items():
        entry = {}
        for name in ("accuracy", "logprob"):
            per_context = (a["correct"] if name == "accuracy" else a["logprob"]).mean(axis=2)  # (contexts, points)
            ci = mean_ci(per_context, p.n_boot, stream(p.seed, "bootstrap", "probe", kind, name))
            for i, t in enumerate(a["points"]):
                entry.setdefault(f"tokens_{t}", {})[name] = {stat: float(v[i]) for stat, v in ci.items()}
        out[kind] = entry
    if baseline is not None:
        out["no_context"] = {}
        for name, values in (("accuracy", baseline["correct"]), ("logprob", baseline["logprob"])):
            ci = mean_ci(values, p.n_boot, stream(p.seed, "bootstrap", "probe", name))
            out["no_context"][name] = {stat: float(v) for stat, v in ci.items()}
    return out


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of x with the same row of y (NaN where either is constant)."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx -= rx.mean(-1, keepdims=True)
    ry -= ry.mean(-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1), np.nan)


def probe_correlations(data: dict, arrays: dict, layers, p) -> dict:
    """Spearman correlation between each collapse measure and the mean log-probability of the right answers, over
    every (kind, context, context point) of the three kinds, per layer; the 95% CI resamples whole contexts (a
    context's points go together). Pools context lengths: the measures and the answers both change with length."""
    units_x, units_y = [], []
    for kind, a in arrays.items():
        d = data[kind]
        idx = [d["points"].index(t) for t in a["points"]]
        units_x.append(d["values"][:, idx])                  # (contexts, points, layers, measures)
        units_y.append(a["logprob"].mean(axis=2))             # (contexts, points)
    x = np.concatenate(units_x)                                # (units, points, layers, measures)
    y = np.concatenate(units_y)
    out = {}
    for j, k in enumerate(layers):
        entry = {}
        for q, m in enumerate(MEASURES):
            xv, yv = x[:, :, j, q], y
            ok = np.isfinite(xv).all(axis=1)
            if ok.sum() < 3:
                entry[m] = {"spearman": None, "ci_low": None, "ci_high": None, "n": int(ok.sum() * x.shape[1])}
                continue
            r = float(_spearman_rows(xv[ok].ravel()[None], yv[ok].ravel()[None])[0])
            good = np.flatnonzero(ok)
            rng = stream(p.seed, "bootstrap", "probe_correlation", str(k), m)
            boot_draws = good[rng.integers(len(good), size=(p.n_boot, len(good)))]
            boot = _spearman_rows(xv[boot_draws].reshape(p.n_boot, -1), yv[boot_draws].reshape(p.n_boot, -1))
            boot = boot[np.isfinite(boot)]
            low, high = (np.percentile(boot, [2.5, 97.5]) if len(boot) else (np.nan, np.nan))
            entry[m] = {"spearman": r, "ci_low": float(low), "ci_high": float(high), "n": int(ok.sum() * x.shape[1])}
        out[layer_key(k)] = entry
    return out


def summary_table(kinds: dict, vs: dict, layer) -> "object":
    """One row per (kind, context point) at ``layer``: every measure's mean with its CI, and its difference from
    natural text where measured."""
    import pandas as pd

    key = layer_key(layer)
    rows = []
    for kind, by_point in kinds.items():
        for tkey, by_layer in by_point.items():
            row = {"kind": kind, "tokens": int(tkey.removeprefix("tokens_"))}
            for m, s in by_layer[key].items():
                row[m] = s["mean"]
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = s["ci_low"], s["ci_high"]
                d = vs.get(kind, {}).get(tkey, {}).get(key, {}).get(m)
                row[f"{m}_minus_natural"] = None if d is None else d["mean"]
            rows.append(row)
    return pd.DataFrame(rows)


def correlation_table(correlations: dict):
    import pandas as pd

    return pd.DataFrame([{"layer": parse_layer_key(key), "measure": m, **v}
                         for key, entry in correlations.items() for m, v in entry.items()])


def results_document(kinds, vs, probing, correlations, layers, p, model) -> dict:
    """The ``results`` part of results.json."""
    return {
        "kinds": kinds,
        "vs_natural": vs,
        "layers": list(layers),
        "measures": list(MEASURES),
        "points": context_points(p.max_tokens, p.window_tokens),
        "window_tokens": p.window_tokens,
        "reversal": {"switch_tokens": switch_token(p), "points": reversal_points(p), "kinds": list(REVERSALS),
                     "walk_graph": p.graph, "other_graph": "sbm" if p.graph == "grid" else "grid"},
        "probing": probing,
        "probe_correlation": correlations,
        "probes": {"source": probe_data.SOURCE, "licence": probe_data.LICENCE, "template": probe_data.TEMPLATE,
                   "items": [{"question": q, "answer": a} for q, a in probe_data.PROBES]},
        "natural_text": corpus.provenance(),
        "repeated_words": repeat_words(model.tokenizer),
    }


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {"layers": "0,-1", "max_tokens": 128, "n_boot": 100, "n_contexts": 2}
