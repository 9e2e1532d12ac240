"""Writes notebooks/block_permutation.ipynb and notebooks/incongruous_injection.ipynb (run from the repository
root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402

write("block_permutation", "iclnb.experiments.perturbation.block_permutation", [
("md", """
# block_permutation: does order matter, or is a walk a bag of words?

Each context is a random walk over a 3 x 5 stochastic block model (3 clusters of 5 words). From the first N words
of the walk we build two permutations of the same words: the **block permutation** keeps every maximal same-cluster
run intact and shuffles the order of the runs; the **full shuffle** shuffles every position. The three conditions
hold exactly the same word occurrences, so every comparison is paired within a context: we report Φ (cluster
separation, beside its node-shuffled null), the normalised Dirichlet energy, the per-word perplexity, and the mean
paired log-ratio natural / permuted with a bootstrap interval. Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.perturbation import block_permutation as exp, figures
from iclnb.plotting.graph import graph_figure

p, run, lm = start(exp, globals())
lm
"""),
("md", "The graph, drawn once from the run's graph stream (the same graph as css_basic with the same seed)."),
("code", """
graph = exp.make_graph(p.seed)
layers = lm.resolve_layers(p.layers)
run.save_figure(graph_figure(graph), "graph")
"""),
("md", "Every context runs once per condition and N (the natural walk once at the largest N: shorter contexts are its prefixes), all layers and the loss from the same passes; each context is checkpointed, so an interrupted run resumes where it stopped."),
("code", """
contexts = exp.collect(run, lm, graph, p)
tables = exp.tables(contexts, layers, p)
"""),
("md", "Per N, layer and condition: Φ with its 95% bootstrap interval over contexts, its null, E_norm, perplexity, and the paired log-ratios natural / condition of Φ and of perplexity (0: no difference)."),
("code", """
summary = exp.summary_table(tables)
run.save_table(summary, "summary")
summary
"""),
("md", "Block junctions: where two runs meet after the permutation. A junction that is not a graph edge is a step the natural walk could never take; a merge joins two runs of the same cluster into one longer run. The full shuffle's non-edge steps are given for comparison."),
("code", """
junctions = exp.junction_summary(tables)
run.save_table(junctions, "junctions")
run.save_figure(figures.junction_figure(tables), "junctions")
"""),
("md", "Φ and E_norm against N per condition and layer (95% CI over contexts); the grey dashed band is Φ's node-shuffled null for the natural walk."),
("code", """
run.save_figure(figures.phi_energy_figure(tables), "phi_energy")
"""),
("md", "The paired effects: mean over contexts of log(natural / permuted) for Φ (per layer) and for perplexity, with 95% bootstrap intervals."),
("code", """
run.save_figure(figures.log_ratio_figure(tables), "log_ratio")
"""),
("md", "Perplexity per word by condition."),
("code", """
run.save_figure(figures.perplexity_figure(tables), "perplexity")
"""),
("md", "The geometry itself at the deepest measured layer: a joint MDS of the node means of the three conditions at the largest N (node-mean distances averaged over contexts), nodes coloured by cluster, graph edges in grey."),
("code", """
doc = exp.results_document(contexts, tables, graph, layers, lm, p)
deepest = "layer_" + str(layers[-1])
run.save_figure(figures.mds_figure(doc["mds"][deepest], graph, deepest), "mds")
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(doc)
"""),
], {"n_contexts": 3, "context_lengths": "8,16", "layers": "0,-1", "n_boot": 50})

write("incongruous_injection", "iclnb.experiments.perturbation.incongruous_injection", [
("md", """
# incongruous_injection: one word out of place

Each context is a random walk over a 3 x 5 stochastic block model. One word is inserted immediately before word
position p, of four kinds: a graph word of another cluster (`wrong_cluster`), a common word outside the graph
(`random_vocab`), a science term (`semantic_outlier`) and a nonsense string the tokenizer splits into several tokens
(`out_of_vocab`). The leave-one-out engine's `Insert(word)` edit runs the walk once and recomputes only each
variant's suffix on the shared prefix's key/value cache. The inserted span is excluded from the geometry and every
original word keeps its own label, so ΔΦ = Φ(with the insertion) − Φ(without) compares the same words. We also
report the inserted word's own surprisal and the loss of the words after it, with and without the insertion.
Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.perturbation import incongruous_injection as exp, figures

p, run, lm = start(exp, globals())
lm
"""),
("md", "The graph (css_basic's with the same seed) and the token count of every candidate inserted word for this model: the out-of-vocabulary strings must take several tokens (the run refuses otherwise); the others are whatever the tokenizer makes of them."),
("code", """
import pandas as pd

graph = exp.make_graph(p.seed)
layers = [k for k in lm.resolve_layers(p.layers) if k != "embed"]
tokens = exp.inserted_token_counts(lm, p)
pd.DataFrame([{"kind": kind, "word": w, "tokens": tokens[w]} for kind, name in exp.WORD_LISTS.items()
              for w in p[name]])
"""),
("md", "Every context once: all kinds, positions, context lengths and layers from shared passes; checkpointed per context, so an interrupted run resumes where it stopped."),
("code", """
contexts = exp.collect(run, lm, graph, p)
tables = exp.tables(contexts, layers, p)
by_layer = exp.delta_phi_by_layer(contexts, layers, p)
"""),
("md", "Per kind, N and position at the deepest measured layer: ΔΦ median and mean (95% bootstrap CI of the mean), the inserted word's surprisal, and the mean loss of the later words with and without the insertion."),
("code", """
summary = exp.summary_table(tables, layers[-1])
run.save_table(summary, "summary")
exp.kind_summary(tables, layers[-1])
"""),
("md", "ΔΦ against the insertion position, per kind and N, at the deepest measured layer: the median over contexts with its 95% bootstrap interval."),
("code", """
run.save_figure(figures.delta_phi_position_figure(tables, "layer_" + str(layers[-1])), "delta_phi_position")
"""),
("md", "ΔΦ by layer, averaged over the positions of each context, per kind and N (mean with 95% CI)."),
("code", """
run.save_figure(figures.delta_phi_layer_figure(by_layer), "delta_phi_layer")
"""),
("md", "The loss at the insertion: the inserted word's own surprisal (the sum of its tokens' losses) against its position."),
("code", """
run.save_figure(figures.loss_at_figure(tables), "loss_at")
"""),
("md", "The loss after the insertion: the mean loss of the later words minus the same words' loss without the insertion (paired per context)."),
("code", """
run.save_figure(figures.loss_after_figure(tables), "loss_after")
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(contexts, tables, by_layer, graph, layers, lm, p))
"""),
], {"n_contexts": 2, "context_lengths": "10,16", "positions": "1,5", "layers": "-1", "n_boot": 50,
    "kinds": "wrong_cluster,out_of_vocab"})
