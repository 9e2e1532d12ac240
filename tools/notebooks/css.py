"""Writes notebooks/css_basic.ipynb (run from the repository root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402
write("css_basic", "iclnb.experiments.css.css_basic", [
("md", """
# css_basic: Context Sensitivity Scores on a clustered graph

Contexts are random walks over a two-level stochastic block model whose nodes are ordinary words. For every context
and layer we measure the geometry of the word representations (cluster separation Φ beside its node-shuffled null,
scale-invariant Dirichlet energy, centred coherence) and relate it to the loss of each word with the Context
Sensitivity Score CSS(z, M) = −Cov over contexts of (loss of z, M). CSS is correlational: the model's weights stay
frozen. Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.css import css_basic as exp, figures
from iclnb.plotting.graph import graph_figure

p, run, lm = start(exp, globals())
lm
"""),
("md", "The graph: nodes coloured by cluster. It is drawn once from the run's graph stream and shared by every context."),
("code", """
graph = exp.make_graph(p.seed)
run.save_figure(graph_figure(graph), "graph")
"""),
("md", "One forward pass per batch of contexts gives every requested layer and the per-token loss; each context's metrics are checkpointed, so an interrupted run resumes where it stopped."),
("code", """
contexts = exp.collect_contexts(run, lm, graph, p)
contexts.walks.shape
"""),
("md", "Per layer and metric: the mean over contexts with its 95% bootstrap interval, the largest |CSS| over positions, the number of positions whose CSS survives false-discovery control (q < 0.05), and CSS of the mean loss at bridge and at anchor positions."),
("code", """
tables = exp.css_tables(contexts, graph, p)
exp.summary_table(tables)
"""),
("md", "CSS of each position's word loss against Φ, per layer, with 95% bootstrap intervals over contexts; the marker colour is the fraction of contexts in which that position is a bridge (a step into another cluster)."),
("code", """
run.save_figure(figures.css_by_position_figure(tables, "phi", contexts.bridge.mean(axis=0)), "css_by_position")
"""),
("md", "Each metric by layer: every context as a grey point, the mean with its 95% bootstrap interval, and for Φ its null (node labels shuffled over nodes)."),
("code", """
run.save_figure(figures.metric_by_layer_figure(tables, exp.METRICS, exp.NULLS), "metrics_by_layer")
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(contexts, tables, graph, lm))
"""),
], {"n_contexts": 4, "context_length": 20, "n_boot": 100, "n_perm": 100, "layers": "0,-1"})
