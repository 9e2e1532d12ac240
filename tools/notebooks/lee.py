"""Writes notebooks/reproduce_lee.ipynb (run from the repository root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402
write("reproduce_lee", "iclnb.experiments.lee.reproduce_lee", [
("md", """
# reproduce_lee: influence dynamics in context, and the Bayesian influence function

Lee et al. (2025) measure how influence changes over training with Bayesian influence functions (BIF): the weights
vary over a localised posterior, the inputs stay fixed. This notebook has two parts on random walks over a two-level
hierarchy (3 super-clusters of 5 word-nodes, each split into sub-clusters of 2 and 3).

* **Part A, in context** (weights frozen): Context Sensitivity Scores CSS(z, Φ) = −Cov over contexts of (loss of the
  word at a position, cluster separation Φ) across context lengths N (paired: every N is a prefix of the same walk),
  sign flips against a permutation null, peaks of |CSS|, Φ per hierarchy level, bridges per context, the stagewise
  cluster-pair matrix and the cluster means over N.
* **Part B, the BIF**: localised SGLD moves the last blocks around the loaded weights; the word losses and Φ of a
  few contexts are recorded at every draw; BIF = −Cov over draws (or the correlation of the loss traces), compared
  with leave-one-out influence and CSS. Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.lee import reproduce_lee as exp, figures
from iclnb.plotting.graph import graph_figure

p, run, lm = start(exp, globals())
lm
"""),
("md", "The graph, drawn once from the run's graph stream; nodes coloured by super-cluster."),
("code", """
graph = exp.make_graph(p.seed)
run.save_figure(graph_figure(graph), "graph")
"""),
("md", "## Part A: in context\\nOne forward pass per context at the largest N gives every shorter N (prefix) and every requested layer; checkpointed per batch of contexts."),
("code", """
contexts = exp.collect_contexts(run, lm, graph, p)
phi_tab = run.save_table(exp.phi_table(contexts, p), "phi_by_level")
phi_tab
"""),
("md", "CSS of every position against Φ (super-clusters) at each N, and a few positions over N with 95% bootstrap intervals over contexts."),
("code", """
layer = max(k for k in contexts.layers)
traj = exp.css_trajectories(contexts, p)
run.save_figure(figures.css_over_n_figure(traj[layer], contexts.lengths), "css_over_n")
"""),
("md", "Sign flips of CSS between consecutive N, summed over positions, against the null that shuffles Φ across contexts (one shuffle for every N). Near-zero covariances flip by chance; only an observed count above the null says more."),
("code", """
flips = {lv: exp.sign_flips(contexts, layer, lv, p) for lv in exp.LEVELS}
run.save_figure(figures.sign_flip_figure(flips), "sign_flips")
exp.sign_flip_summary(flips)
"""),
("md", "Where |CSS| peaks over N for each position, with bootstrap intervals of the peak's N and height."),
("code", """
peaks = {lv: exp.css_peaks(contexts, layer, lv, p) for lv in exp.LEVELS}
run.save_figure(figures.peaks_figure(peaks), "css_peaks")
"""),
("md", "Within / between as level-specific Φ: Φ of super-clusters (between) and sub-clusters (within) beside their node-shuffled nulls, and CSS of each context's mean loss over its own bridge and anchor words. Bridges are defined per context; the union over contexts (the predecessor's definition) is shown for comparison."),
("code", """
class_tab = run.save_table(exp.class_css_table(contexts, graph, p), "css_by_class")
bridges = exp.bridge_report(contexts, graph)
run.save_figure(figures.phi_levels_figure(phi_tab, class_tab, layer), "phi_levels")
bridges
"""),
("md", "The stagewise cluster-pair matrix −Cov(mean loss of cluster c1's words, ||μ_c2 − μ̄||²) per N, and the cluster means over N in one MDS."),
("code", """
pairs = exp.cluster_pair_matrices(contexts, graph, layer, p)
mds = exp.cluster_mds(contexts, graph, layer, p.seed)
run.save_figure(figures.cluster_pair_figure(pairs, contexts.lengths), "cluster_pairs")
run.save_figure(figures.cluster_mds_figure(mds), "cluster_mds")
"""),
("md", "## Part B: the Bayesian influence function\\nLocalised SGLD around the loaded weights moves only the last `moved_blocks` blocks (the blocks before them are computed once); every chain starts at the loaded weights with its own noise stream and is checkpointed. The loaded weights are restored exactly afterwards."),
("code", """
inputs = exp.bif_inputs(lm, graph, p)
draws = exp.sample_bif(run, lm, graph, inputs, p)
run.update_config(sgld=exp.sgld_config(draws))
diagnostics = exp.sgld_diagnostics(draws, p)
run.save_figure(figures.sgld_diagnostics_figure(draws, exp.sgld_settings(p).draw_steps(), diagnostics), "sgld_diagnostics")
diagnostics["llc"]
"""),
("md", "The token x token BIF of the first context (correlation of the word-loss traces over the draws of all chains)."),
("code", """
tables = exp.bif_tables(draws, inputs, p)
run.save_figure(figures.bif_heatmap_figure(tables["token_token"]["correlation"][0], inputs.words[0], inputs.bridge[0]), "bif_heatmap")
"""),
("md", "BIF of each word on Φ at bridge and anchor words (CIs over chains), and its rank correlation with leave-one-out influence on Φ (each word deleted, Φ recomputed) and with CSS at the same length."),
("code", """
bridge_anchor = exp.bridge_anchor_bif(tables, inputs, p)
loo = exp.loo_influence(run, lm, graph, inputs, draws["layer"], p)
ranks = exp.rank_correlations(tables, loo, traj, contexts, layer, p)
css_p = traj[layer]["level_1"]["css"][contexts.lengths.index(p.bif_context_length), : p.bif_context_length]
run.save_figure(figures.bif_comparison_figure(bridge_anchor, tables["token_phi"]["covariance"], loo, css_p, ranks, inputs.bridge), "bif_comparison")
ranks
"""),
("md", "Write `results.json` and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(contexts, graph, phi_tab, traj, flips, peaks, class_tab, pairs, mds, bridges, inputs,
                                draws, diagnostics, tables, bridge_anchor, loo, ranks, p))
"""),
], {"n_contexts": 4, "context_lengths": "5,8", "bif_context_length": 5, "n_bif_contexts": 1, "n_chains": 2,
    "n_draws": 3, "n_burnin": 0, "n_boot": 20, "n_perm": 20})
