"""Writes notebooks/context_switch.ipynb (run from the repository root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402
write("context_switch", "iclnb.experiments.switching.context_switch", [
("md", """
# context_switch: how fast representations reorganise after a switch of graph

A graph pair is one set of words with two clusterings, H1 and H2, and a stochastic block model graph on each (G1 and
G2). Each context is `n1` words of a random walk on G1 followed by `n2` words of a walk on G2 that continues from the
last word. After `n2` words we take every word's node mean over the last `window` words and compare node pairs that
share a cluster under H1 only with pairs that share one under H2 only:

ratio = mean distance over H1-only pairs / mean distance over H2-only pairs,

below 1 while the representation follows G1's clusters and above 1 once it follows G2's. Pairs that share a cluster
under both clusterings say nothing about the switch and are reported apart. Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.switching import context_switch as exp, figures
from iclnb.plotting.graph import graph_figure

p, run, lm = start(exp, globals())
lm
"""),
("md", "The first graph pair: G1 coloured by H1 and G2 coloured by H2 (the same words; each graph drawn in its own layout). Below them, every graph pair (each drawn from its own graph seed) with the co-membership agreement of H1 and H2 and the number of node pairs in each class."),
("code", """
pair0 = exp.make_graph_pair(p, 0)
run.save_figure(graph_figure(pair0, "H1", title="graph pair 0: G1, coloured by H1"), "graph_pair_0_G1")
run.save_figure(graph_figure(exp.second_graph(pair0), "H2", title="graph pair 0: G2, coloured by H2"), "graph_pair_0_G2")
"""),
("code", """
run.save_table(exp.graph_pairs_table(p), "graph_pairs")
"""),
("md", "One forward pass per context over walk1 plus the longest walk2 gives every requested layer; the measurements at every n2 come from that pass (each n2's window ends at word n1 + n2). Each context is checkpointed, so an interrupted run resumes where it stopped."),
("code", """
collected = exp.collect(run, lm, p)
run.save_arrays("per_context", **exp.raw_arrays(collected))
{"contexts": collected.tokens.shape[:2], "tokens at each end point (mean)": dict(zip(p.n2_values, collected.tokens.mean(axis=(0, 1)).round(1)))}
"""),
("md", "Per graph pair and pooled over graph pairs: the ratio at the first and the last n2 with 95% bootstrap intervals over contexts, the n2 at which the mean ratio reaches 1 with its interval (empty where the ratio does not start below 1, or never reaches 1), and the first n2 whose ratio interval lies entirely above 1."),
("code", """
tables = exp.switch_tables(collected, p)
run.save_table(exp.summary_table(tables, p.n2_values), "summary")
"""),
("md", "The switch ratio against n2, one panel per layer: pooled over graph pairs with its 95% interval, each graph pair's mean as a thin line, and the same ratio with node identities permuted (its null, near 1). The diamond marks where the pooled ratio reaches 1, with its interval."),
("code", """
run.save_figure(figures.ratio_figure(tables, p.n2_values, window=p.window), "ratio")
"""),
("md", "Which side moves: the distance of H1-only, H2-only and shared same-cluster pairs, each over the distance of unrelated pairs (different clusters under both), pooled over graph pairs."),
("code", """
run.save_figure(figures.pair_classes_figure(tables["pooled"], p.n2_values), "pair_classes")
"""),
("md", "The crossing n2 by layer, pooled and per graph pair, with 95% intervals. Below the dashed line (n2 < window) the window still holds words from before the switch, so even a representation that switched at once would show a ratio between its G1 and G2 values there."),
("code", """
run.save_figure(figures.crossing_figure(tables, p.n2_values, window=p.window), "crossing")
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(collected, tables, p, lm))
"""),
], {"n1": 30, "n2_values": "0,10,20", "n_contexts": 2, "n_graph_pairs": 1, "layers": "0,-1", "window": 10,
    "n_boot": 50})
