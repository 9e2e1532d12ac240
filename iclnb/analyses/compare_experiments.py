"""compare_experiments: any runs of any experiments and models, lined up on what they share.

Each run is read with the results reader and turned into its tidy table (:func:`iclnb.ops.tidy.tidy`: one row per
run, word set, layer, N and metric, with the 95% interval over contexts and the experiment's null). The same metric
is then drawn over N at one layer and over layers at one N, per run (so per model), raw and relative to the first N.
The parameters of the runs are laid side by side in one table, and the ones that differ (graph, layers, word sets,
models, ...) are shown, never hidden: two curves that differ in more than the factor of interest are not a
comparison of that factor alone.
"""

from __future__ import annotations

import glob
import itertools
from pathlib import Path

import numpy as np

from iclnb.core.errors import IclnbError
from iclnb.experiments.loo import loo as loo_experiment
from iclnb.experiments.params import LOG, N_BOOT, OUTPUT_DIR, SEED, Choice, Str, declare
from iclnb.ops.tidy import supported, tidy
from iclnb.results.reader import setting

__all__ = ["PARAMS", "load_runs", "overview", "parameter_table", "differing", "tidy_table", "metrics_to_show",
           "curves_over_n", "curves_over_layers", "relative_to_first_n", "change_table"]


PARAMS = declare(
    Str("runs", "", "comma-separated results directories (globs allowed; a sweep directory stands for its runs)",
        None, "comma-separated directories"),
    Str("metric", "", "empty: every metric two or more runs share (each run's own when none is shared); or "
        "comma-separated metric names such as energy_norm", None, "empty or comma-separated metric names"),
    Str("layer", "-1", "the block of the curves over N: an index; negatives count from each model's end", None,
        "a layer index"),
    Choice("context_length", "largest", "N of the curves over layers: each run's largest or smallest measured N",
           ("largest", "smallest")),
    Choice("layer_axis", "auto", "x axis over layers: block index, relative depth block / (blocks - 1), or auto "
           "(depth when the models differ in block count)", ("auto", "block", "depth")),
    N_BOOT,
    OUTPUT_DIR,
    SEED,
    LOG,
)

#: At most this many metrics are drawn (every one stays in the tables).
MAX_PANELS = 6


# ---------------------------------------------------------------------------------------------------- runs


def _expand(part: str) -> list[Path]:
    from iclnb.core.paths import results_dir
    from iclnb.ops.sweep import MANIFEST, read_manifest

    if any(ch in part for ch in "*?["):
        matches = sorted(Path(m) for m in glob.glob(str(Path(part).expanduser())))
        if not matches:
            raise IclnbError(f"no results directory matches {part!r}")
        found = [m.resolve() for m in matches if (m / "results.json").is_file()]
        if not found:
            raise IclnbError(f"{part!r} matches {len(matches)} paths but no finished run (no results.json)")
        return found
    path = results_dir(part)
    if (path / MANIFEST).is_file() and not (path / "results.json").is_file():
        manifest = read_manifest(path)
        found = [path / e["dir"] for e in manifest["runs"] if (path / e["dir"] / "results.json").is_file()]
        if not found:
            raise IclnbError(f"the sweep {path} holds no finished run yet (see `iclnb status {path}`)")
        return found
    return [path]


def load_runs(spec: str) -> list:
    """The finished runs named by ``spec``: comma-separated directories, globs (only finished runs among the
    matches) and sweep directories (their finished runs), in the order given, each once."""
    from iclnb.results.reader import load

    paths: list[Path] = []
    for part in (p.strip() for p in str(spec).split(",")):
        if part:
            paths += [p for p in _expand(part) if p not in paths]
    if not paths:
        raise IclnbError("parameter runs is empty; give comma-separated results directories (globs such as "
                         "results/sweeps/css/* and sweep directories are expanded)")
    return [load(p) for p in paths]


def labels(runs) -> list[str]:
    """A short unique name per run: the directory's name, with its parent's where two runs share a name."""
    names = [r.dir.name for r in runs]
    out = []
    for r, name in zip(runs, names):
        out.append(f"{r.dir.parent.name}/{name}" if names.count(name) > 1 else name)
    if len(set(out)) < len(out):
        out = [f"{i + 1}:{name}" for i, name in enumerate(out)]
    return out


def _n_values(table) -> str:
    values = sorted(set(table["N"].dropna()))
    return ", ".join(f"{v:g}" for v in values)


def overview(runs, names):
    """One row per run: what ran, on which model, with how many contexts, at which layers and N."""
    import pandas as pd

    rows = []
    for r, name in zip(runs, names):
        t = tidy(r, name, n_boot=10)  # only its N and layers are used here
        prov = r.config.get("provenance") or {}
        rows.append({"run": name, "experiment": r.experiment, "model": r.model, "blocks": r.n_blocks,
                     "layers": ", ".join(map(str, r.layers)), "N (words)": _n_values(t),
                     "contexts": r.params.get("n_contexts"), "seed": r.params.get("seed"),
                     "tidy rows": len(t) if supported(r) else "no extractor", "finished": prov.get("finished"),
                     "directory": str(r.dir)})
    return pd.DataFrame(rows)


def parameter_table(runs, names):
    """Every parameter and setting (rows) of every run (columns) side by side; ``differs`` is True where the runs
    that have the row disagree, or where some runs lack it. Nothing is left out."""
    import pandas as pd

    settings = [setting(r) for r in runs]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    rows = []
    for key in keys:
        values = [s.get(key) for s in settings]
        present = [v for v in values if v is not None]
        row = {"setting": key}
        row.update({name: ("(absent)" if v is None else v) for name, v in zip(names, values)})
        row["differs"] = len(set(present)) > 1 or len(present) < len(values)
        rows.append(row)
    return pd.DataFrame(rows)


def differing(table):
    """The rows of :func:`parameter_table` in which the runs differ."""
    return table[table["differs"]].drop(columns="differs").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- numbers


def tidy_table(runs, names, n_boot: int = 1000, seed: int = 42):
    """The tidy tables of every run, one below the other."""
    import pandas as pd

    return pd.concat([tidy(r, name, n_boot=n_boot, seed=seed) for r, name in zip(runs, names)], ignore_index=True)


def metrics_to_show(table, metric: str = "") -> tuple[list[str], str]:
    """The metrics to draw and why: those named, or every metric at least two runs share (ordered by how many runs
    have it), or, when none is shared, each run's own. At most :data:`MAX_PANELS`; the rest is said."""
    present = table.groupby("metric", sort=False)["run"].nunique().sort_values(ascending=False, kind="stable")
    if metric.strip():
        wanted = [m.strip() for m in metric.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in present.index]
        if unknown:
            raise IclnbError(f"metric {', '.join(unknown)} is in none of the runs; they hold: "
                             f"{', '.join(sorted(present.index))}")
        chosen, why = wanted, "as asked"
    else:
        shared = [m for m, n in present.items() if n >= 2]
        if shared:
            chosen = shared
        else:  # each run's metrics in its own order, taken in turn
            own = [list(dict.fromkeys(sub["metric"])) for _, sub in table.groupby("run", sort=False)]
            chosen = [m for group in itertools.zip_longest(*own) for m in group if m is not None]
        why = ("shared by two or more runs" if shared else "no metric is shared by two runs: each run's own")
    left = chosen[MAX_PANELS:]
    if left:
        why += f"; not drawn (in the tables): {', '.join(left)}"
    return chosen[:MAX_PANELS], why


def _resolve_layer(r, spec):
    try:
        return r.layer_number(spec)
    except IclnbError:
        return None


def curves_over_n(table, runs, names, metrics, layer: str = "-1"):
    """The rows of ``metrics`` at one layer of each run (``layer`` resolved per model: -1 is each model's last
    block), ordered by N; runs that did not measure that layer are left out (see :func:`overview`)."""
    parts = []
    for r, name in zip(runs, names):
        k = _resolve_layer(r, layer)
        if k is None:
            continue
        sub = table[(table["run"] == name) & (table["metric"].isin(metrics)) & (table["layer"] == k)]
        parts.append(sub)
    if not parts:
        return table.iloc[0:0]
    import pandas as pd

    return pd.concat(parts).sort_values(["metric", "run", "condition", "N"]).reset_index(drop=True)


def curves_over_layers(table, metrics, at: str = "largest"):
    """The rows of ``metrics`` at each run's largest (or smallest) N, over layers."""
    import pandas as pd

    parts = []
    for (run, metric), sub in table[table["metric"].isin(metrics)].groupby(["run", "metric"], sort=False):
        n_values = sub["N"].dropna()
        if n_values.empty:
            continue
        target = n_values.max() if at == "largest" else n_values.min()
        parts.append(sub[sub["N"] == target])
    if not parts:
        return table.iloc[0:0]
    out = pd.concat(parts)
    out = out[out["layer"].map(lambda k: isinstance(k, (int, np.integer)))]
    return out.sort_values(["metric", "run", "condition", "layer"]).reset_index(drop=True)


def relative_to_first_n(curves):
    """Each curve over N divided by its mean at its smallest N (mean and interval alike; the first N's own
    uncertainty is not propagated). A curve whose first mean is 0 or undefined is left out."""
    out = []
    for _, sub in curves.groupby(["run", "condition", "metric", "layer"], sort=False):
        sub = sub.sort_values("N")
        first = sub["mean"].iloc[0]
        if not np.isfinite(first) or first == 0:
            continue
        scaled = sub.copy()
        for column in ("mean", "ci_low", "ci_high", "null", "null_ci_low", "null_ci_high"):
            scaled[column] = sub[column] / first
        if first < 0:  # a negative reference flips the interval's ends
            scaled[["ci_low", "ci_high"]] = scaled[["ci_high", "ci_low"]].to_numpy()
        out.append(scaled)
    import pandas as pd

    return pd.concat(out, ignore_index=True) if out else curves.iloc[0:0]


def _overlap(a_low, a_high, b_low, b_high):
    if not all(np.isfinite(v) for v in (a_low, a_high, b_low, b_high)):
        return None
    return bool(a_low <= b_high and b_low <= a_high)


def change_table(curves):
    """Per curve over N: the mean (95% CI) at the first and at the last N, their ratio, and whether the two
    intervals overlap (None where an interval is undefined or only one N was measured)."""
    import pandas as pd

    rows = []
    for (run, condition, metric, layer), sub in curves.groupby(["run", "condition", "metric", "layer"], sort=False):
        sub = sub.sort_values("N")
        a, b = sub.iloc[0], sub.iloc[-1]
        one = len(sub) == 1
        ratio = b["mean"] / a["mean"] if (not one and np.isfinite(a["mean"]) and a["mean"] != 0) else np.nan
        rows.append({"run": run, "model": a["model"], "condition": condition, "metric": metric, "layer": layer,
                     "first N": a["N"], "mean at first N": a["mean"], "CI at first N": _ci(a),
                     "last N": b["N"] if not one else np.nan, "mean at last N": b["mean"] if not one else np.nan,
                     "CI at last N": _ci(b) if not one else "", "last / first": ratio,
                     "CIs overlap": None if one else _overlap(a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"])})
    return pd.DataFrame(rows)


def _ci(row) -> str:
    if not (np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"])):
        return ""
    return f"[{row['ci_low']:.4g}, {row['ci_high']:.4g}]"


def use_depth(runs, layer_axis: str) -> bool:
    """Whether the curves over layers use relative depth: asked for, or (auto) the models differ in block count."""
    if layer_axis != "auto":
        return layer_axis == "depth"
    return len({r.n_blocks for r in runs}) > 1


#: The small parameters the notebook tests run it with, after the runs it reads (TEST_SETUP; `iclnb notebooks` writes them into the notebook).
TEST_PARAMETERS = {"n_boot": 100, "runs": "{runs}/loo,{runs}/css_basic-*,{runs}/reproduce_park-*"}
TEST_SETUP = [
    {"experiment": "loo", "parameters": loo_experiment.TEST_PARAMETERS},  # loo's own test run
    {
        "experiment": "css_basic",
        "parameters": {"context_length": 20, "layers": "0,-1", "n_boot": 100, "n_contexts": 4, "n_perm": 100},
    },
    {
        "experiment": "reproduce_park",
        "parameters": {
            "batch_size": 2,
            "context_lengths_tokens": "20,40",
            "layers": "0,-1",
            "n_contexts": 2,
            "n_shuffles": 2,
        },
    },
]
