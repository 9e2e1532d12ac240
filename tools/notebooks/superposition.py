"""Writes notebooks/superposition_collapse.ipynb and notebooks/graph_adherence.ipynb (run from the repository root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402

write("superposition_collapse", "iclnb.experiments.superposition.superposition_collapse", [
("md", """
# superposition_collapse: two hypotheses, then a disambiguating step

A dual graph gives two clusterings H1 and H2 of the same words, with a graph on each (G1, G2). Each context walks on
the edges common to both graphs until step D, takes a step that only its true hypothesis allows, then follows that
hypothesis's graph; D is a percentage of the context length, and a control is never disambiguated. Contexts alternate
the true hypothesis, and context k of every condition shares its walk up to that condition's D (a paired design).

Per position and layer: the distance of the word's vector to the centroid of its cluster-mates under the true and the
false hypothesis (node means over a trailing window, its own node left out), the superposition score
(d_false − d_true) / ||c_true − c_false|| in [−1, 1], and the velocity ||r_t − r_{t−1}||. Around D: the collapse and
the velocity spike in units of the residual norm at that layer, each beside the same statistic at random
non-disambiguating steps and in the never-revealed control; and how often the sign of the score from D on names the
true hypothesis. Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.superposition import superposition_collapse as exp, figures

p, run, lm = start(exp, globals())
lm
"""),
("md", "The dual graph, drawn once from the run's graph stream: G1 coloured by H1 and G2 coloured by H2 (the same words)."),
("code", """
graph = exp.make_graph(p)
g1, g2 = figures.dual_graph_figures(graph)
run.save_figure(g1, "graph_h1")
run.save_figure(g2, "graph_h2")
"""),
("md", "One forward pass per batch of contexts gives every requested layer; each context's distances and velocities are checkpointed, so an interrupted run resumes where it stopped."),
("code", """
data = exp.collect_contexts(run, lm, graph, p)
layers = lm.resolve_layers(p.layers)
{c: len(items) for c, items in data.items()}
"""),
("md", "Per condition and layer: decoding accuracy from D on (and the control's at the same positions, with a binomial p-value against 0.5), the collapse and the velocity spike at D beside the same statistic at random non-disambiguating steps and at D in the never-revealed control, all with 95% bootstrap intervals over contexts."),
("code", """
summary = exp.summarise(data, graph, p, layers)
exp.summary_table(summary)
"""),
("md", "The superposition score toward the true hypothesis by position: 0 is equidistant from the two hypotheses' structures, +1 at the true one's side. The dotted line marks D."),
("code", """
run.save_figure(figures.series_figure(summary, "score"), "score_by_position")
"""),
("md", "The velocity of the representation by position, in units of the residual norm at each layer."),
("code", """
run.save_figure(figures.series_figure(summary, "velocity"), "velocity_by_position")
"""),
("md", "The collapse and the velocity spike at D (filled) beside the same statistic at random non-disambiguating steps of the same contexts (open) and at D in the never-revealed control (crosses)."),
("code", """
run.save_figure(figures.step_figure(summary), "collapse_and_spike")
"""),
("md", "Decoding accuracy of the true hypothesis from D on, per layer, with the never-revealed control at the same positions (dashed)."),
("code", """
run.save_figure(figures.accuracy_figure(summary), "accuracy")
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(data, summary, graph, p, lm, layers))
"""),
], {"n_contexts": 4, "context_length": 40, "layers": "0,-1", "window": 20, "collapse_window": 5, "null_steps": 2,
    "n_boot": 50, "n_perm": 50})

write("graph_adherence", "iclnb.experiments.superposition.graph_adherence", [
("md", """
# graph_adherence: which of two graphs a long context's representations follow

The dual graph of `superposition_collapse` (two clusterings H1, H2 of the same words, a graph on each), over a longer
context: the walk stays on edges common to both graphs up to step D, takes a step only its true hypothesis allows,
then follows that hypothesis's graph. D is a percentage of the context (0 % follows the true graph from the first
step) or never (the control). Contexts alternate the true hypothesis.

In every trailing window and layer four measures, each a ratio above 0.5 when the representations follow H1: the
energy ratio (mean squared distance between node means over the edges only G2 has, over that for G1 and G2 together),
the separation ratio (between/within ratio of node means under H1 vs H2), a ridge linear probe for each clustering
whose folds never put one node in both train and test, and kNN consistency of node means. Summaries orient each
context to its true hypothesis. Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.superposition import graph_adherence as exp, figures

p, run, lm = start(exp, globals())
lm
"""),
("md", "The dual graph: G1 coloured by H1 and G2 coloured by H2 (the same words)."),
("code", """
graph = exp.make_graph(p)
g1, g2 = figures.dual_graph_figures(graph)
run.save_figure(g1, "graph_h1")
run.save_figure(g2, "graph_h2")
"""),
("md", "One forward pass per batch of contexts gives every requested layer; each context's window measures are checkpointed, so an interrupted run resumes where it stopped."),
("code", """
data = exp.collect_contexts(run, lm, graph, p)
layers = lm.resolve_layers(p.layers)
{c: len(items) for c, items in data.items()}
"""),
("md", "Per condition and layer: each measure toward the true hypothesis in the windows before D and after it (95% bootstrap intervals over contexts), and the difference after D from the same windows of the never-revealed control (paired by context)."),
("code", """
summary = exp.summarise(data, p, layers)
exp.summary_table(summary)
"""),
("md", "Mean adherence toward the true hypothesis after D, per condition and layer (0.5: neither hypothesis)."),
("code", """
run.save_figure(figures.adherence_heatmap(summary, "mean", "after"), "adherence_heatmap")
"""),
("md", "Window by window at the layer with the highest adherence after D: each measure toward the true hypothesis, one line per condition (dashed: never revealed)."),
("code", """
shown = exp.best_layer(summary)
run.save_figure(figures.adherence_figure(summary, shown, exp.SUMMARY_METRICS), "adherence_by_window")
shown
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(data, summary, graph, p, lm, layers))
"""),
], {"n_contexts": 2, "context_length": 60, "disambiguation_percent": "0,50", "layers": "0,-1", "window": 20,
    "stride": 20, "n_boot": 50, "n_perm": 50})
