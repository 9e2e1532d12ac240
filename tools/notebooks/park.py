"""Writes notebooks/reproduce_park.ipynb (run from the repository root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402
write("reproduce_park", "iclnb.experiments.park.reproduce_park", [
("md", """
# reproduce_park: in-context learning of representations (Park et al. 2025)

The model reads random walks over a graph whose nodes are ordinary words (by default Park's 4x4 grid of 16 words).
One forward pass per context gives every layer at every context length, since the states of a prefix do not depend
on what follows. We measure rule-following accuracy (next-token mass on the current node's neighbours) against a
copying baseline and chance, and, per layer and context length, the geometry of node means over a trailing window:
scale-invariant Dirichlet energy E_norm, the Spearman correlation of node-mean distance with graph distance, and the
Procrustes fit of the top two principal components to the graph's spectral embedding, next to two negative controls
(node labels shuffled; attention sink included). All intervals are 95% bootstrap intervals over contexts.
Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.park import figures, reproduce_park as exp
from iclnb.plotting.graph import graph_figure
from iclnb.plotting.widgets import current_view

p, run, lm = start(exp, globals())
lm
"""),
("md", "The graph. Its words are the nodes; a context is a uniform random walk over it, written as the words separated by spaces."),
("code", """
setup = exp.prepare(lm, p)
run.save_figure(graph_figure(setup.graph, labeling=None), "graph")
"""),
("md", "Each context holds as many whole words as fit in the largest context length. Each context length in tokens and in words (of context 0), with the trailing window of tokens over which the node means are taken there, and whether that window reaches the attention sink at token 0."),
("code", """
setup.table
"""),
("md", "One forward pass per batch of contexts gives every layer's word states and the next-token probabilities of the graph words; each context's statistics are checkpointed, so an interrupted run resumes where it stopped."),
("code", """
data = exp.measure(run, lm, setup, p)
"""),
("md", "Rule-following accuracy over the first 50 and the last 200 words of each context, beside the renormalised accuracy (mass on valid neighbours over mass on all graph words), the copying baseline (an ideal recaller of the transitions already in the context) and chance: E[deg(current node)] / n over the walk positions, the mass a uniform guess over the n graph words puts on valid next words (a walk visits nodes in proportion to their degree)."),
("code", """
acc = exp.accuracy(setup, data, p)
exp.accuracy_table(acc)
"""),
("md", "Accuracy against context, in bins of 25 word positions (x: the token that ends a bin's last word, mean over contexts)."),
("code", """
run.save_figure(figures.accuracy_figure(acc), "accuracy")
"""),
("md", "E_norm and distance correlation of the node means for every layer and context length (means over contexts)."),
("code", """
geo = exp.geometry(setup, data, p)
run.save_figure(figures.geometry_heatmap(geo), "geometry_heatmap")
"""),
("md", "The same against context for a few layers, with their bootstrap intervals."),
("code", """
run.save_figure(figures.geometry_curves(geo), "geometry_curves")
"""),
("md", "Negative controls next to the default at every layer, at the largest context length and at the largest one whose window reaches token 0: node labels shuffled (the correlations must fall to 0 and E_norm to the fraction of node pairs that are edges), and the attention sink included (it changes only the context lengths whose window reaches token 0)."),
("code", """
ctl = exp.controls(setup, data, p)
exp.controls_table(geo, ctl)
"""),
("md", "PCA of the node means (each node's mean averaged over the contexts whose window holds it) at each context length, for the layer with the highest distance correlation at the largest context length, next to the graph's spectral embedding."),
("code", """
layer = exp.best_layer(geo)
run.save_figure(figures.pca_figure(geo, setup.graph, layer), f"pca_layer_{layer}")
"""),
("md", "Semantic prior (graph=\"days_of_week_ring\" only; nothing is shown for other graphs): which pair among PCs 1-4 best fits the calendar circle and which the in-context ring, per layer at the largest context length, next to the best-pair fit of rings through the nodes in random orders."),
("code", """
days = exp.days_of_week(setup, data, p)
exp.days_of_week_table(days)
"""),
("md", "Explore the PCA of node means: sliders for layer and context length, a toggle for the sink (a static figure of the starting view when run headless)."),
("code", """
explorer = exp.explorer(setup, data, geo)
explorer
"""),
("md", "A static copy of the explorer's current view (rerun this cell after moving the sliders to save the view shown)."),
("code", """
run.save_figure(current_view(explorer), "pca_explorer")
"""),
("md", "The headline numbers of the reproduction, with their layer and context length where they refer to one."),
("code", """
summ = exp.summary(setup, acc, geo, ctl)
run.save_table(exp.summary_table(summ), "summary")
"""),
("md", "Write `results.json` (with the graph and every context's words, so anyone can recompute everything) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(setup, acc, geo, ctl, days, summ))
"""),
], {"n_contexts": 2, "context_lengths_tokens": "20,40", "layers": "0,-1", "n_shuffles": 2, "batch_size": 2})
