"""Writes notebooks/hierarchical.ipynb and notebooks/deep_hierarchy.ipynb (run from the repository root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402

write("hierarchical", "iclnb.experiments.hierarchy.hierarchical", [
("md", """
# hierarchical: structure vs context length, per hierarchy level, across models

Contexts are random walks over a two-level hierarchy of words: super-clusters (level 1) that contain sub-clusters
(level 2). One walk of the largest context length per context serves every shorter length N (a causal model's states
of a prefix do not depend on what follows), so the design is paired across N, and every model reads the same walks.
Per model, N and layer we measure the cluster separation Φ of each level beside its node-shuffled null, the
normalised Dirichlet energy, the centred coherence, and the Context Sensitivity Score CSS = −Cov over contexts of
(word loss, Φ). Per model and level: the smallest N at which Φ exceeds its null, with a bootstrap interval.
Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.hierarchy import hierarchical as exp, figures

p, run, _ = start(exp, globals())
graph = exp.make_graph(p)
levels = exp.levels_of(graph)
models = exp.read_models(p, graph)  # tokenizers and configs: each model's layers and tokens per word
{name: m["layers"] for name, m in models.items()}
"""),
("md", "The graph: nodes coloured by super-cluster; it is drawn once from the run's graph stream. The walks come from their own streams, so every model reads the same contexts."),
("code", """
walks = exp.make_walks(graph, p)
run.save_figure(figures.hierarchy_graph_figure(graph, levels), "graph")
"""),
("md", "One forward pass per batch of contexts and model gives every requested layer and the word losses; the models are loaded one at a time, and each (model, context) is checkpointed, so an interrupted run resumes where it stopped."),
("code", """
measured = exp.collect(run, graph, walks, models, p)
"""),
("md", "Per model, layer and level: the onset N (the smallest N from which the mean of Φ − null over contexts is above 0 by a one-sided t test, also at every longer N) with its bootstrap interval, and at the largest N Φ beside its null, coherence, E_norm and max |CSS| beside its permutation null."),
("code", """
tables = exp.tables(measured, graph, walks, p)
exp.summary_table(tables, levels)
"""),
("md", "The money plot: Φ of each level and its node-shuffled null, E_norm with its chance value, and max |CSS| with its permutation null, against N; each model at the layer where the super-cluster excess Φ − null is largest at the largest N (named in the legend)."),
("code", """
run.save_figure(figures.money_figure(tables, p.context_lengths, levels), "money_plot")
"""),
("md", "CSS of the word loss at each position against the context's super-cluster Φ, for every N (rows) and position (columns)."),
("code", """
run.save_figure(figures.css_heatmap_figure(tables, p.context_lengths, levels[0]), "css_heatmap")
"""),
("md", "Φ per level by layer at the largest N, with the node-shuffled nulls."),
("code", """
run.save_figure(figures.phi_by_layer_figure(tables, max(p.context_lengths), levels), "phi_by_layer")
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(tables, graph, walks, measured, models, p), model=",".join(p.models))
"""),
], {"models": "gemma-3-270m", "context_lengths": "10,20", "n_contexts": 3, "layers": "0,-1", "n_boot": 50,
    "n_perm": 50})

write("deep_hierarchy", "iclnb.experiments.hierarchy.deep_hierarchy", [
("md", """
# deep_hierarchy: which level of a hierarchy separates first

Contexts are random walks over a hierarchy of clusters of words (default branching 2,2,4: two clusters of eight
words, each split into two clusters of four). One walk of the largest context length per context serves every
shorter length N (paired design). Per level, N and layer we measure the separation Φ − (its node-shuffled null):
each level's null keeps that level's number and sizes of clusters, so the separations of different levels can be
compared. The N at which each level separates comes with a bootstrap interval over contexts, and the same resamples
say how often a coarser level separates before a finer one. CSS relates the word losses to each level's Φ, and an
animation shows the node means as the context grows. Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.hierarchy import deep_hierarchy as exp, figures
from iclnb.plotting.animation import save_gif

p, run, lm = start(exp, globals())
lm
"""),
("md", "The graph: symbol = top-level cluster, colour = finest cluster (shades of its top-level cluster's hue)."),
("code", """
graph = exp.make_graph(p)
levels = exp.levels_of(graph)
run.save_figure(figures.hierarchy_graph_figure(graph, levels), "graph")
"""),
("md", "One forward pass per batch of contexts gives every requested layer and the word losses; every prefix length is measured from it. Each context is checkpointed, so an interrupted run resumes where it stopped."),
("code", """
walks = exp.make_walks(graph, p)
measured = exp.collect(run, lm, graph, walks, p)
tables = exp.tables(measured, graph, walks, p)
"""),
("md", "When each level separates: per layer and level, the smallest N from which the mean of Φ − null over contexts is above 0 (one-sided t test at 5%, also at every longer N), its 95% bootstrap interval over contexts, the share of resamples in which it is reached at all, and how often (over the same resamples) the coarser level separates strictly before the next finer one."),
("code", """
run.save_figure(figures.onset_figure(tables["onset"], p.context_lengths, levels), "onset_by_layer")
exp.onset_table(tables, levels)
"""),
("md", "Separation of each level against N at the last measured layer, with 95% bootstrap intervals; dotted lines mark each level's onset N."),
("code", """
last = measured["layers"][-1]
run.save_figure(figures.separation_figure(tables["levels"], p.context_lengths, last, levels,
                                          tables["onset"][f"layer_{last}"]["levels"]), "separation")
"""),
("md", "CSS per level: the largest |CSS| over positions of the word loss against each level's Φ, with its permutation null (Φ shuffled across contexts)."),
("code", """
run.save_figure(figures.css_level_figure(tables["levels"], p.context_lengths, last, levels), "css_by_level")
"""),
("md", "The node means as the context grows (each node's mean over all its occurrences in the first N words of every context), in one PCA fitted on all frames and rotated frame to frame onto the previous one. Press play or drag the slider; a GIF copy is written where frames can be rendered."),
("code", """
frames, explained = exp.animation_frames(measured["sums"], measured["counts"], p.context_lengths)
animation = figures.animation_figure(frames, graph.words, graph.labelings, levels, measured["animation_layer"],
                                     explained)
save_gif(animation, run.figures_dir / "node_means_animation.gif")
run.save_figure(animation, "node_means_animation")
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(tables, graph, walks, measured, frames, explained, lm))
"""),
], {"context_lengths": "10,20", "n_contexts": 3, "layers": "0,-1", "n_boot": 50, "n_perm": 50})
