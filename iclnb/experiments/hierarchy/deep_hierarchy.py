"""deep_hierarchy: which level of a deep hierarchy separates first as the context grows.

Contexts are walks on a hierarchy graph (default branching 2,2,4: 2 clusters of 8 nodes, each split into 2 clusters
of 4; ``iclnb.graphs.hierarchy``). One walk of the largest context length per context serves every shorter length
(paired design). Per level, N and layer: the separation Φ − its per-level node-shuffled null (comparable across
levels with different numbers and sizes of clusters: each level's null keeps its own cluster sizes), with CIs over
contexts; the N at which each level separates with a bootstrap interval, and how often a coarser level separates
before a finer one; CSS of the word losses against each level's Φ; and an animation of the node means over N (each
node's mean over all its occurrences in the contexts) in one PCA fitted on all frames, aligned frame to frame (see
docs/methods.md).
"""

from __future__ import annotations

import numpy as np

from iclnb import graphs
from iclnb.core.errors import IclnbError
from iclnb.core.layers import layer_key, parse_layer_key
from iclnb.core.seeding import stream
from iclnb.experiments.hierarchy.common import (css_entry, energy_chance, levels_of, make_walks, measure_context,
                                                metric_arrays, null_streams, phi_entry)
from iclnb.experiments.kit import measure_contexts
from iclnb.experiments.params import (DTYPE, LOG, MAX_CONTEXTS, MODEL, N_BOOT, N_PERM, OUTPUT_DIR, SEED, Bool, Float,
                                      Int, IntList, Layers, Str, declare)
from iclnb.metrics import pca
from iclnb.metrics.levels import level_order
from iclnb.results.io import nan_array
from iclnb.stats import mean_ci

__all__ = ["PARAMS", "check_branching", "make_graph", "make_walks", "levels_of", "animation_layer", "measured_layers",
           "check", "collect", "tables", "onset_table", "animation_frames", "results_document", "tidy_rows"]

PARAMS = declare(
    MODEL,
    IntList("branching", "2,2,4", "clusters per level, coarsest first; the last number is the nodes of each finest "
            "cluster (2,2,4: 16 nodes, levels of 2 and 4 clusters)", min=2, unique_sorted=False),
    Float("p_same", 0.9, "edge probability inside a finest cluster", min=0.0, max=1.0),
    Float("decay", 0.3, "edge probability factor per level further apart (p_same * decay^(distance-1))", min=0.0,
          max=1.0),
    Float("bridge_penalty", 0.5, "walk weight factor per level crossed (1.0: uniform walk)", min=1e-6, max=1e6),
    Bool("legacy_distance", False, "the predecessor's sparser graph (p_same * decay^distance)"),
    IntList("context_lengths", "10,20,30,50,75,100,150,200", "context lengths N in words (one walk of the largest "
            "serves every N)", min=3),
    Int("n_contexts", 25, "contexts: walks on the fixed graph", min=2, max=MAX_CONTEXTS),
    Layers(help="blocks to measure: \"default\" (0, L/4, L/2, 3L/4 and the last block L-1), \"all\", or e.g. "
           "\"0,5,-1\"; negatives count from the end, \"embed\" is the embeddings"),
    Str("animation_layer", "-1", "the layer whose node means the animation shows (measured with the others)",
        lambda n, v: _layer_text(n, v), "a layer index or embed"),
    N_BOOT,
    N_PERM,
    Int("batch_size", 4, "contexts per forward pass (results do not depend on it)", min=1, max=4096),
    OUTPUT_DIR,
    DTYPE,
    SEED,
    LOG,
)


def _layer_text(name, value):
    text = str(value).strip()
    if text != "embed" and not text.lstrip("-").isdigit():
        raise IclnbError(f"parameter {name} must be one layer index (e.g. -1 or 12) or embed, got {value!r}")
    return text


def check_branching(branching) -> None:
    """One line for a branching that gives no hierarchy to measure (its declaration keeps every number at least
    2: no level of a single cluster, no finest cluster of a single node)."""
    b = list(branching)
    if len(b) < 2:
        raise IclnbError(f"branching {','.join(map(str, b))} has no cluster level: give at least two numbers, "
                         f"clusters then nodes per cluster (e.g. 2,2,4)")
    n = int(np.prod(b))
    if n > len(graphs.NOUNS):
        raise IclnbError(f"branching {','.join(map(str, b))} gives {n} nodes, more than the {len(graphs.NOUNS)} "
                         f"words of the vocabulary; use fewer or smaller levels")


def make_graph(p):
    """The run's hierarchy graph (its own random stream)."""
    check_branching(p.branching)
    return graphs.hierarchy(list(p.branching), p.p_same, p.decay, rng=stream(p.seed, "graph"),
                            legacy_distance=p.legacy_distance)


def animation_layer(p, model):
    """The layer whose node means the animation shows (an index of ``model``'s layers, or ``"embed"``)."""
    return model.layer_index(int(p.animation_layer) if p.animation_layer != "embed" else "embed")


def measured_layers(p, model) -> list:
    """The layers measured: ``layers`` plus the animation layer."""
    return model.resolve_layers(list(dict.fromkeys([*model.resolve_layers(p.layers), animation_layer(p, model)])))


def check(p, model) -> None:
    """Refuse, before any work, a branching without a hierarchy, a context that cannot fit the model, or a layer
    the model lacks."""
    from iclnb.prompts import check_fits

    check_fits(model, make_graph(p).words, max(p.context_lengths))
    measured_layers(p, model)


def collect(run, model, graph, walks: np.ndarray, p) -> dict:
    """Run every context once (all layers and the loss from one pass of the longest walk) and measure every prefix;
    checkpointed per batch (the animation layer's node sums of each context go to ``raw_data/node_sums_<k>.npz``
    first), so an interrupted run resumes where it stopped. Returns ``{"layers", "word_loss", "metrics", "sums",
    "counts", "animation_layer"}`` with ``sums`` (L, n, d) and ``counts`` (L, n) pooled over contexts."""
    layers, anim = measured_layers(p, model), animation_layer(p, model)
    lengths, levels = list(p.context_lengths), levels_of(graph)

    def measure(k, walk, state):
        metrics, (sums, counts) = measure_context(state, walk, graph, lengths, layers, null_streams(p.seed, k),
                                                  sums_layer=anim)
        run.save_arrays(f"node_sums_{k}", sums=sums, counts=counts)
        return {"word_loss": state.word_loss, "metrics": metrics}

    items = measure_contexts(run, model, range(p.n_contexts), lambda k: walks[k], measure, layers=layers,
                             batch_size=p.batch_size, words=lambda walk: graphs.walk_words(graph, walk), loss=True)
    sums, counts = 0.0, 0
    for k in range(p.n_contexts):
        with np.load(run.raw_data_dir / f"node_sums_{k}.npz") as f:
            sums, counts = sums + f["sums"], counts + f["counts"]
    return {"layers": layers, "word_loss": nan_array([item["word_loss"] for item in items]),
            "metrics": metric_arrays(items, layers, lengths, levels), "sums": sums, "counts": counts,
            "animation_layer": anim}


def tables(measured: dict, graph, walks: np.ndarray, p) -> dict:
    """``levels`` -> level -> ``N_<n>`` -> ``layer_<k>`` -> separation (Φ − null: mean, CI, Φ's mean, the null's
    mean and CI, one-sided p), phi, coherence, css_max_abs, css_mean_abs; ``css_by_position`` -> level ->
    ``layer_<k>`` at the largest N; ``energy_norm`` -> ``N_<n>`` -> ``layer_<k>``; ``onset`` -> ``layer_<k>`` ->
    the N at which each level separates (bootstrap CI) and the order of the levels."""
    lengths, levels = list(p.context_lengths), levels_of(graph)
    out = {"levels": {level: {f"N_{n}": {} for n in lengths} for level in levels},
           "css_by_position": {level: {} for level in levels}, "energy_norm": {f"N_{n}": {} for n in lengths},
           "onset": {}}
    chance = energy_chance(graph)
    for layer in measured["layers"]:
        arr, lk = measured["metrics"][layer], layer_key(layer)
        for j, n in enumerate(lengths):
            rng = lambda *what: stream(p.seed, "bootstrap", n, str(layer), *what)  # noqa: E731
            for level in levels:
                phi = arr["phi"][level][:, j]
                e = phi_entry(phi, arr["phi_null"][level][:, j], p.n_boot,
                              lambda what, level=level: rng("phi", level, what))
                c = css_entry(walks, measured["word_loss"], phi, n, graph.n, p.n_boot, p.n_perm,
                              lambda what, level=level: stream(p.seed, "css", n, str(layer), level, what),
                              by_position=n == max(lengths))
                out["levels"][level][f"N_{n}"][lk] = {
                    "separation": {"mean": e["excess_mean"], "ci_low": e["excess_ci_low"],
                                   "ci_high": e["excess_ci_high"], "phi_mean": e["mean"], "null_mean": e["null_mean"],
                                   "null_ci_low": e["null_ci_low"], "null_ci_high": e["null_ci_high"],
                                   "p_value": e["p_value"]},
                    "phi": e,
                    "coherence": mean_ci(arr["coherence"][level][:, j], p.n_boot, rng("coherence", level)),
                    "css_max_abs": c["extremes"]["max_abs"],
                    "css_mean_abs": c["extremes"]["mean_abs"],
                }
                if "by_position" in c:
                    out["css_by_position"][level][lk] = c["by_position"]
            out["energy_norm"][f"N_{n}"][lk] = {**mean_ci(arr["energy_norm"][:, j], p.n_boot, rng("energy")),
                                                "chance": chance}
        out["onset"][lk] = level_order(lengths, {level: arr["phi"][level] - arr["phi_null"][level]
                                                 for level in levels},
                                       n_boot=p.n_boot, rng=stream(p.seed, "onset", str(layer)))
    return out


def onset_table(tab: dict, levels):
    """One row per (layer, level): the N at which the level separates (with its bootstrap CI and the share of
    resamples that reach it), and per layer how often the coarser level separates first."""
    import pandas as pd

    rows = []
    for lk, on in tab["onset"].items():
        pairs = {(q["coarser"], q["finer"]): q for q in on["pairs"]}
        for i, level in enumerate(levels):
            s = on["levels"][level]
            row = {"layer": lk.removeprefix("layer_"), "level": level,
                   "onset_N": s["n_star"] if s["reached"] else "not reached",
                   "ci_low": s["ci_low"] if s["ci_low"] is not None else "not reached",
                   "ci_high": s["ci_high"] if s["ci_high"] is not None else "not reached",
                   "fraction_reached": s["fraction_reached"], "order": " < ".join(on["order"])}
            if i + 1 < len(levels):
                q = pairs[(level, levels[i + 1])]
                row[f"P(before {levels[i + 1]})"] = q["p_coarser_first"]
                row["P(same N)"] = q["p_same"]
            rows.append(row)
    return pd.DataFrame(rows)


def animation_frames(sums: np.ndarray, counts: np.ndarray, lengths) -> tuple[dict, np.ndarray]:
    """The node means pooled over contexts at each N (sum of a node's vectors over all its occurrences in the first
    N words of every context / their count), embedded once by a PCA fitted on the node means of all frames together,
    each frame centred and rotated (orthogonal Procrustes) onto the previous one so that points do not jump; scale
    is kept, so a growing spread stays visible. Returns ``({N: (n_nodes, 2)}, explained variance ratio (2,))``."""
    from scipy.linalg import orthogonal_procrustes

    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts[..., None] > 0, sums / np.maximum(counts, 1)[..., None], np.nan)
    L, n, d = means.shape
    coords, ratio, _ = pca(means.reshape(L * n, d), k=2)
    coords = coords.reshape(L, n, 2)
    frames, previous = {}, None
    for j, length in enumerate(lengths):
        xy = coords[j]
        seen = np.isfinite(xy).all(axis=1)
        centred = xy - (xy[seen].mean(axis=0) if seen.any() else 0.0)
        if previous is not None:
            both = seen & np.isfinite(previous).all(axis=1)
            if both.sum() >= 2:
                rotation, _ = orthogonal_procrustes(centred[both], previous[both])
                centred = centred @ rotation
        frames[int(length)] = centred
        previous = centred
    return frames, ratio


def results_document(tab: dict, graph, walks: np.ndarray, measured: dict, frames: dict, explained, model) -> dict:
    """The ``results`` part of results.json."""
    from iclnb.prompts import tokenization_report

    return {
        **tab,
        "layers": list(measured["layers"]),
        "level_names": levels_of(graph),
        "graph": {**graph.to_dict(), "branching": graph.extra["branching"],
                  "legacy_distance": graph.extra["legacy_distance"]},
        "walks": [graphs.walk_words(graph, w) for w in walks],
        "word_loss": measured["word_loss"],
        "animation": {"layer": measured["animation_layer"], "explained_variance_ratio": explained,
                      "frames": {f"N_{n}": xy for n, xy in frames.items()},
                      "node_counts": {f"N_{n}": c for n, c in zip(sorted(frames), measured["counts"])}},
        "tokens_per_word": tokenization_report(model.tokenizer, graph.words),
    }


def tidy_rows(r, n_boot: int, seed: int) -> list:
    """One row per (level, N, layer) for the separation Φ − null, Φ (null: its node-shuffled null) and max |CSS|
    (null: its permutation null); ``condition`` is the level."""
    from iclnb.experiments.kit import row

    out = []
    nan = float("nan")
    for level, per_n in (r.results.get("levels") or {}).items():
        for nkey, per_layer in per_n.items():
            n = int(nkey[2:])
            for lk, e in per_layer.items():
                layer = parse_layer_key(lk)
                s = e["separation"]
                out.append(row("separation", layer, n, s["mean"], s["ci_low"], s["ci_high"], level))
                f = e["phi"]
                out.append(row("phi", layer, n, f["mean"], f["ci_low"], f["ci_high"], level,
                               (f["null_mean"], f["null_ci_low"], f["null_ci_high"])))
                m = e["css_max_abs"]
                out.append(row("css_max_abs", layer, n, m["value"], m["ci_low"], m["ci_high"], level,
                               (m["null_mean"], nan, nan)))
    return out


#: The small parameters the notebook tests run it with (`iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {"context_lengths": "10,20", "layers": "0,-1", "n_boot": 50, "n_contexts": 3, "n_perm": 50}
