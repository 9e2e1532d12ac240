"""Writes notebooks/collapse.ipynb (run from the repository root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402
write("collapse", "iclnb.experiments.collapse.collapse", [
("md", """
# collapse: representations over very long contexts

Three kinds of context are read up to `max_tokens` tokens, in chunks with the key/value cache: a random walk on a word
graph, natural English prose (the reference) and one token repeated. At context points on a log scale the trailing
window of `window_tokens` token positions (the sink, token 0, excluded) is measured at each layer: mean pairwise
cosine (raw and centred), mean pairwise L2 distance, spread (trace of the covariance), participation-ratio dimension
and TwoNN intrinsic dimension. Reversal contexts switch from the walk to natural text or to a walk on another graph;
factual probes are asked after every context point. Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.collapse import collapse as exp, figures

p, run, lm = start(exp, globals())
layers = lm.resolve_layers(p.layers)
points = exp.context_points(p.max_tokens, p.window_tokens)
lm
"""),
("md", "Where the natural text comes from (it ships with Python), and the context points (tokens) where the windows are measured; reversal contexts switch at `switch_tokens` and are measured at `reversal_points`."),
("code", """
{"natural_text": exp.corpus.provenance(), "points": points, "switch_tokens": exp.switch_token(p),
 "reversal_points": exp.reversal_points(p)}
"""),
("md", "Read every context of every kind in chunks, measuring the window (and asking the probes) at each context point; each (kind, context) is checkpointed, so an interrupted run resumes where it stopped."),
("code", """
store = exp.collect(run, lm, p)
data = exp.per_context(store, p, layers)
{kind: d["values"].shape for kind, d in data.items()}
"""),
("md", "Every measure per kind, context point and layer: the mean over contexts with its 95% bootstrap interval, and the difference from natural text at the same point. The table shows the last layer."),
("code", """
kinds, vs_natural = exp.summarise(data, p, layers)
run.save_table(exp.summary_table(kinds, vs_natural, layers[-1]), "summary_last_layer")
"""),
("md", "Each measure against context length at the last layer, one line per kind with its 95% interval over contexts."),
("code", """
run.save_figure(figures.measures_figure(kinds, layers[-1], points), "measures_last_layer")
"""),
("md", "Across layers: the participation ratio and the raw cosine as layer x context-length heatmaps, one panel per kind."),
("code", """
run.save_figure(figures.heatmap_figure(kinds, layers, points, "participation_ratio"), "heatmap_participation_ratio")
"""),
("code", """
run.save_figure(figures.heatmap_figure(kinds, layers, points, "cosine"), "heatmap_cosine")
"""),
("md", "Reversal at the last layer, against tokens since the switch: the walk followed by natural text, and by a walk on the other graph. Dashed: natural text read from its start for as many tokens, and the walk continued without a switch."),
("code", """
s = exp.switch_token(p)
run.save_figure(figures.measures_figure(
    kinds, layers[-1], exp.reversal_points(p), kind_names=exp.REVERSALS, offset=s,
    x_title="tokens since the switch (log scale)",
    references=[("natural text from its start", kinds, "natural", 0), ("walk, no switch", kinds, "walk", s)],
    title=f"After the switch at token {s}, {exp.layer_key(layers[-1]).replace('_', ' ')} (mean, 95% bootstrap CI)"),
    "reversal_last_layer")
"""),
("md", "Factual probes after each context point: accuracy (is the answer's first token the argmax?) and the log-probability of the whole answer, per kind, with the level after the BOS token alone (no context)."),
("code", """
if p.probe:
    probe_values = exp.probe_arrays(store, p)
    probing = exp.probing_summary(probe_values, exp.baseline_probes(lm, p), p)
    run.save_figure(figures.probing_figure(probing), "probing")
else:
    probe_values, probing = None, None
"""),
("md", "Spearman correlation of each measure with the mean log-probability of the right answers over every (kind, context, context point), per layer; the interval resamples whole contexts. It pools context lengths, along which both change."),
("code", """
correlations = exp.probe_correlations(data, probe_values, layers, p) if p.probe else None
run.save_table(exp.correlation_table(correlations), "probe_correlation") if p.probe else None
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(kinds, vs_natural, probing, correlations, layers, p, lm))
"""),
], {"max_tokens": 128, "n_contexts": 2, "layers": "0,-1", "n_boot": 100})
