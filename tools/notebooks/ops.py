"""Writes notebooks/compare_experiments.ipynb (run from the repository root)."""
import sys

sys.path[:0] = ["tools/notebooks", "."]
from writer import write  # noqa: E402

# the runs other notebooks' tests make, with exactly their test parameters (shared, not run again)
LOO = {"context_lengths": "6,10", "layers": "0,2,-1", "n_boot": 100, "n_contexts": 2, "output_dir": "{runs}/loo",
       "positions": "2"}
CSS = {"context_length": 20, "layers": "0,-1", "n_boot": 100, "n_contexts": 4, "n_perm": 100}
PARK = {"batch_size": 2, "context_lengths_tokens": "20,40", "layers": "0,-1", "n_contexts": 2, "n_shuffles": 2}
SETUP = [{"experiment": "loo", "parameters": LOO}, {"experiment": "css_basic", "parameters": CSS},
         {"experiment": "reproduce_park", "parameters": PARK}]

write("compare_experiments", "iclnb.analyses.compare_experiments", [
("md", """
# compare_experiments: runs of any experiments and models, side by side

Reads finished runs (any experiments, any models) with the results reader, turns each into one tidy table (run,
model, experiment, word set, layer, N, metric, mean with its 95% interval over contexts, and the experiment's null),
and lines up what they share: the same metric over N at one layer and over layers at one N, per run. The runs'
parameters are laid side by side first; the ones that differ are listed, because curves that differ in more than
one factor do not compare that factor alone.
"""),
("params", ""),
("code", """
from iclnb.experiments import start
from iclnb.analyses import compare_experiments as exp, figures

p, run, _ = start(exp, globals())
runs = exp.load_runs(p.runs)
names = exp.labels(runs)
exp.overview(runs, names)
"""),
("md", "Every parameter and setting of every run side by side (saved whole as `raw_data/parameters.csv`); below, the rows in which the runs differ."),
("code", """
parameters = run.save_table(exp.parameter_table(runs, names), "parameters")
exp.differing(parameters)
"""),
("md", "The tidy table of every run (`raw_data/tidy.csv`), and the metrics drawn below."),
("code", """
table = run.save_table(exp.tidy_table(runs, names, p.n_boot, p.seed), "tidy")
metrics, why = exp.metrics_to_show(table, p.metric)
print("metrics drawn:", ", ".join(metrics), "-", why)
table[table["metric"].isin(metrics)]
"""),
("md", "Each metric over N at the chosen layer of each model (-1: each model's last block), mean over contexts with its 95% bootstrap interval; × on a dotted line: the experiment's null where it has one."),
("code", """
over_n = exp.curves_over_n(table, runs, names, metrics, p.layer)
run.save_figure(figures.curves_figure(over_n, metrics, "N", title=f"Metrics over N at layer {p.layer} of each model"),
                "metrics_vs_N")
"""),
("md", "The same curves relative to their value at the first N (interval scaled alike; the first N's own uncertainty is not propagated); the number at the end of each curve is its last value over its first."),
("code", """
relative = exp.relative_to_first_n(over_n)
run.save_figure(figures.curves_figure(relative, metrics, "N", title=f"Relative to the first N, layer {p.layer}",
                                      y_title="mean / mean at the first N", annotate_change=True),
                "metrics_vs_N_relative")
"""),
("md", "Per curve: the mean at the first and the last N with their intervals, the ratio, and whether the intervals overlap."),
("code", """
changes = run.save_table(exp.change_table(over_n), "changes")
changes
"""),
("md", "Each metric over layers at each run's largest (or smallest) N; the x axis is the block index, or the relative depth when the models differ in block count."),
("code", """
over_layers = exp.curves_over_layers(table, metrics, p.context_length)
x = "depth" if exp.use_depth(runs, p.layer_axis) else "layer"
run.save_figure(figures.curves_figure(over_layers, metrics, x, title=f"Metrics over layers at each run's {p.context_length} N"),
                "metrics_vs_layer")
"""),
("md", "Write `results.json` (the runs, the parameter table, the tidy table and the curves) and release the directory."),
("code", """
run.finish({"runs": [str(r.dir) for r in runs], "names": names, "metrics": metrics,
            "parameters": parameters.to_dict(orient="records"), "tidy": table.to_dict(orient="records"),
            "curves_over_N": over_n.to_dict(orient="records"), "changes": changes.to_dict(orient="records"),
            "curves_over_layers": over_layers.to_dict(orient="records")},
           model=", ".join(sorted({str(r.model) for r in runs})))
"""),
], {"runs": "{runs}/loo,{runs}/css_basic-*,{runs}/reproduce_park-*", "n_boot": 100}, SETUP)
