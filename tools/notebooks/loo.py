"""Writes notebooks/loo.ipynb, notebooks/loo_heatmap.ipynb, notebooks/compare_loo_metrics.ipynb (run from the repository root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402
LOO_TEST = {"context_lengths": "6,10", "layers": "0,2,-1", "n_boot": 100, "n_contexts": 2, "positions": "2",
            "output_dir": "{runs}/loo"}
write("loo", "iclnb.experiments.loo.loo", [
("md", """
# loo: leave-one-out influence of each context word

Each context is a uniform random walk on a `semantic_conflict` graph: 12 words in 3 graph clusters whose edges cut
across 4 semantic groups. With the *semantic* word set, words of one semantic group sit in different clusters; the
*unrelated* set is a control on the same node walks. For every word position p we delete the word and measure how the
geometry of node means changes: influence = M(full) − M(without p) for M in cross (semantic-pair distance), within
(graph-pair distance), ratio = cross / within, and within_sq (graph-pair squared distance). `layers` chooses one
block (the default, the last) or many: `iclnb run loo_multilayer` runs this notebook at every layer and 14 context
lengths. Definitions: `docs/methods.md`.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.experiments.loo import figures, loo as exp

p, run, lm = start(exp, globals())
lm
"""),
("md", "One full pass per (word set, context) at the largest N and, for every deleted position, only the suffix after it, recomputed on top of the shared prefix's KV cache in packed batches; every shorter N is a prefix of those contexts, so the same passes give it. Each context is checkpointed, so an interrupted run resumes. The table gives the work and wall time per word set."),
("code", """
data = exp.measure(run, lm, p.conditions, p.context_lengths, p.n_contexts, p.layers, p.positions, p.seed,
                   batch_tokens=p.batch_tokens)
exp.timing_table(data)
"""),
("md", "The tidy influence table (`raw_data/influence.csv`): one row per (word set, N, context, position, layer, metric) with the full-context value, the value without the position, and their difference."),
("code", """
influence = run.save_table(exp.influence_table(data), "influence")
influence.head(8)
"""),
("md", "Mean influence of each deleted position at the longest context and the last measured layer (over contexts); the marker colour is the share of contexts in which that position is a bridge."),
("code", """
run.save_figure(figures.influence_by_position_figure(influence, p.metric), "influence_by_position")
"""),
("md", "Bridge versus anchor positions at the last measured layer: mean influence per (word set, N, metric) with 95% bootstrap intervals that resample whole contexts."),
("code", """
bridge_anchor = exp.bridge_anchor_table(data, p.seed, p.n_boot)
exp.bridge_anchor_summary(bridge_anchor)
"""),
("md", "The same comparison against N, one panel per word set."),
("code", """
run.save_figure(figures.bridge_anchor_figure(bridge_anchor, p.metric), "bridge_vs_anchor")
"""),
("md", "The temporal view: the influence of the words at positions 5, 10, 20, 30 and 50 as the context grows past them (mean over contexts, 95% bootstrap intervals)."),
("code", """
temporal = exp.temporal_table(data, p.seed, p.n_boot)
run.save_figure(figures.temporal_figure(temporal, p.metric), "temporal")
"""),
("md", "Across depth: layer x N heatmaps of the mean and standard deviation of the influence (one row of cells when a single layer was measured)."),
("code", """
run.save_figure(figures.heatmap_figure(bridge_anchor, p.metric), f"heatmap_{p.metric}")
"""),
("md", "The full contexts: each context's metrics per layer and mean word loss, averaged (the per-token losses go into `results.json` for CSS across contexts)."),
("code", """
exp.full_context_table(data).groupby(["condition", "N", "layer"])[[*exp.METRICS, "mean_word_loss"]].mean()
"""),
("md", "Write `results.json` (strict JSON) and the PNG copies of the figures, and release the results directory."),
("code", """
run.finish(exp.results_document(data, bridge_anchor, temporal))
"""),
], LOO_TEST)

SETUP = [{"experiment": "loo", "parameters": LOO_TEST}]
write("loo_heatmap", "iclnb.analyses.loo_heatmap", [
("md", """
# loo_heatmap: leave-one-out influence, layer x context length

Reads a `loo` or `loo_multilayer` run and draws, per metric, heatmaps of the influence over layers and context
lengths: bridge and anchor positions, their mean and standard deviation, for each word set.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.analyses import loo_heatmap as exp
from iclnb.experiments.loo import figures

p, run, _ = start(exp, globals())
source = exp.load_source(p)
exp.describe(source)
"""),
("md", "The stored bridge/anchor aggregates (mean, standard deviation, 95% interval over contexts) for every (word set, N, layer, metric)."),
("code", """
bridge_anchor = source.table("bridge_anchor")
bridge_anchor.head(8)
"""),
("md", "One heatmap figure per metric (the first is shown; all are saved): rows are (word set, position class), columns the mean and the standard deviation of the influence."),
("code", """
shown = [run.save_figure(figures.heatmap_figure(bridge_anchor, m), f"heatmap_{m}") for m in p.metrics]
shown[0]
"""),
("md", "Write `results.json` (the figures drawn and the source run) and release the directory."),
("code", """
run.finish({"source": str(source.dir), "figures": [f"heatmap_{m}" for m in p.metrics]}, model=source.model)
"""),
], {"results_dir": "{runs}/loo", "metrics": "ratio,within"}, SETUP)

write("compare_loo_metrics", "iclnb.analyses.compare_loo_metrics", [
("md", """
# compare_loo_metrics: the leave-one-out metrics against each other

Reads a `loo` or `loo_multilayer` run. Compares the four geometry metrics (cross, within, ratio, within_sq) of the
full contexts as N grows, asks whether the influences on two metrics agree on which words matter, and computes the
Context Sensitivity Score of each position's word loss against a full-context metric across contexts.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.analyses import compare_loo_metrics as exp, figures

p, run, _ = start(exp, globals())
source = exp.load_source(p)
layer = source.layer_number(p.layer)
exp.describe(source)
"""),
("md", "Full-context metrics against N, mean over contexts with 95% bootstrap intervals."),
("code", """
curves = exp.metric_curves(source, layer, p.seed, p.n_boot)
run.save_figure(figures.metric_curves_figure(curves), "metrics_vs_N")
"""),
("md", "Correlation between the influences on the two chosen metrics, per word set and layer, over every (N, context, position)."),
("code", """
correlations, wide = exp.influence_correlations(source, p.x_metric, p.y_metric)
correlations
"""),
("md", "The same at the chosen layer as a scatter, one point per (N, context, position)."),
("code", """
run.save_figure(figures.influence_scatter_figure(wide, correlations, p.x_metric, p.y_metric, layer),
                f"influence_{p.x_metric}_vs_{p.y_metric}")
"""),
("md", "CSS(z, M) = −Cov over contexts of (the loss of the word at position z, the full context's metric M), per N, with 95% bootstrap intervals over contexts."),
("code", """
css = exp.css_across_contexts(source, layer, p.css_metric, p.seed, p.n_boot, p.n_perm)
run.save_figure(figures.css_figure(css), "css_across_contexts")
"""),
("md", "Write `results.json` (curves, correlations and CSS) and release the directory."),
("code", """
run.finish({"source": str(source.dir), "layer": layer, "metric_curves": curves.to_dict(orient="records"),
            "influence_correlations": correlations.to_dict(orient="records"), "css": css.to_dict(orient="records")},
           model=source.model)
"""),
], {"results_dir": "{runs}/loo", "layer": "-1", "n_boot": 100, "n_perm": 100}, SETUP)
