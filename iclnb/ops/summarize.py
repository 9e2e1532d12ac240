"""``iclnb summarize DIR``: a first draft of ``summary.md`` for a finished run, written from its files only.

The draft holds what the files establish: the question the experiment asks (one sentence per experiment kind:
what it measures, not what it found), the set-up (config.json: model, graph, sizes, seed, versions, commit), the key
numbers with their 95% intervals and nulls (results.json, through the tidy table), the figures (linked by relative
path), and sentences generated from the numbers ("the interval lies above its null", "the interval includes 0").
What only a person can write (interpretation, caveats, next steps) is left as clearly marked TODO sections. No
sentence claims more than a comparison of intervals shows: each is a per-interval statement, with no correction
for the number of intervals looked at.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from iclnb.core.errors import IclnbError

__all__ = ["OBJECTIVES", "ZERO_REFERENCE", "summarize", "draft", "findings"]

SUMMARY_NAME = "summary.md"

#: What each experiment measures, as its question (never what a run found).
OBJECTIVES = {
    "css_basic": "How strongly does the loss of each word covary, across contexts, with the geometry of the "
                 "context's word representations (cluster separation Φ beside its node-shuffled null, Dirichlet "
                 "energy, coherence) on a clustered graph, at each measured layer?",
    "loo": "How much does deleting each word of a context change the geometry of the node means (cross, within, "
           "their ratio, within_sq) as the context length N grows, for bridge and anchor positions, per layer and "
           "word set?",
    "reproduce_park": "Does the model's next-token probability follow the graph given in context (against a copying "
                      "baseline and chance), and how closely does the geometry of its word representations match "
                      "the graph (Dirichlet energy, distance correlation, PCA with a Procrustes fit) per layer and "
                      "context length, next to shuffled-label and sink-included controls?",
    "compare_loo_metrics": "How do the leave-one-out metrics relate to each other: their curves over N, the "
                           "correlation of their influences, and CSS of word losses against one of them?",
    "loo_heatmap": "How do bridge and anchor influences on each leave-one-out metric vary over layer and N?",
    "compare_experiments": "How do the same metrics compare across the given runs, over N and over layers, and in "
                           "which parameters do those runs differ?",
}

#: Metrics for which 0 is the reference a reader compares with (no effect, no correlation); other metrics are
#: compared with their null only.
ZERO_REFERENCE = ("distance_correlation", "coherence")
_ZERO_PREFIXES = ("influence_", "css_")


def _zero_reference(metric: str) -> bool:
    return metric in ZERO_REFERENCE or metric.startswith(_ZERO_PREFIXES)


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x + 0.0:.4g}"  # + 0.0: no "-0"


def _ci(low, high) -> str:
    return f"[{_fmt(low)}, {_fmt(high)}]" if np.isfinite(low) and np.isfinite(high) else "(no interval)"


def _key_layers(layers: list) -> list:
    """At most five layers to report: all when five or fewer, else the first, quartiles and last measured."""
    numeric = [k for k in layers if isinstance(k, (int, np.integer))]
    if len(numeric) <= 5:
        return numeric
    picks = [numeric[round(i * (len(numeric) - 1) / 4)] for i in range(5)]
    return list(dict.fromkeys(picks))


def key_numbers(table):
    """The tidy rows reported: the key layers, at each (metric, word set)'s largest N."""
    if table.empty:
        return table
    layers = _key_layers(list(dict.fromkeys(table["layer"])))
    sub = table[table["layer"].isin(layers)]
    largest = sub.groupby(["metric", "condition"])["N"].transform("max")
    keep = (sub["N"] == largest) | largest.isna()
    return sub[keep].reset_index(drop=True)


def _where(row) -> str:
    parts = [f"layer {row['layer']}"]
    if np.isfinite(row["N"]):
        parts.append(f"N = {row['N']:g}")
    if row["condition"]:
        parts.append(str(row["condition"]))
    return ", ".join(parts)


def findings(table) -> list[str]:
    """Sentences generated from the numbers: for each key row, where its interval lies against its null (when the
    experiment states one) or against 0 (for metrics whose reference is 0); for each curve over N at the last key
    layer, its values at the first and the last N and whether their intervals overlap; and a count."""
    rows = key_numbers(table)
    out, above, below, overlap, excl0, incl0 = [], 0, 0, 0, [], []
    for _, row in rows.iterrows():
        m, lo, hi = row["mean"], row["ci_low"], row["ci_high"]
        if not (np.isfinite(lo) and np.isfinite(hi)):
            continue
        name = f"`{row['metric']}` ({_where(row)}) = {_fmt(m)} {_ci(lo, hi)}"
        if np.isfinite(row["null"]):
            n_lo, n_hi = row["null_ci_low"], row["null_ci_high"]
            null_lo, null_hi = (n_lo, n_hi) if np.isfinite(n_lo) and np.isfinite(n_hi) else (row["null"], row["null"])
            null = f"its null {_fmt(row['null'])}" + (f" {_ci(n_lo, n_hi)}" if np.isfinite(n_lo) else "")
            if lo > null_hi:
                above += 1
                out.append(f"{name}: the interval lies above {null}.")
            elif hi < null_lo:
                below += 1
                out.append(f"{name}: the interval lies below {null}.")
            else:
                overlap += 1
                out.append(f"{name}: the interval overlaps {null}; these data do not separate it from the null.")
        elif _zero_reference(row["metric"]):
            if lo > 0 or hi < 0:
                excl0.append(f"{name}: the interval excludes 0 ({'above' if lo > 0 else 'below'}).")
            else:
                incl0.append(f"`{row['metric']}` ({_where(row)})")
    out += excl0
    if incl0:
        out.append(f"These intervals include 0 (the data do not show they differ from 0): {'; '.join(incl0)}.")
    excl0, incl0 = len(excl0), len(incl0)
    counts = []
    if above + below + overlap:
        counts.append(f"of {above + below + overlap} intervals with a null, {above} lie above it, {below} below it "
                      f"and {overlap} overlap it")
    if excl0 + incl0:
        counts.append(f"of {excl0 + incl0} intervals compared with 0, {excl0} exclude it and {incl0} include it")
    if counts:
        out.append("In all, " + "; ".join(counts) + " (95% intervals, each read on its own: no correction for the "
                   "number of intervals).")
    out += _trends(table)
    return out


def _trends(table) -> list[str]:
    """First N against last N for each curve at the last key layer."""
    if table.empty or table["N"].nunique() < 2:
        return []
    layers = _key_layers(list(dict.fromkeys(table["layer"])))
    if not layers:
        return []
    last = layers[-1]
    out = []
    for (metric, condition), sub in table[table["layer"] == last].groupby(["metric", "condition"], sort=False):
        sub = sub.dropna(subset=["N"]).sort_values("N")
        if len(sub) < 2:
            continue
        a, b = sub.iloc[0], sub.iloc[-1]
        if not all(np.isfinite(v) for v in (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"])):
            continue
        apart = a["ci_high"] < b["ci_low"] or b["ci_high"] < a["ci_low"]
        verb = ("is higher" if b["mean"] > a["mean"] else "is lower") if apart else "is not separated"
        where = f"layer {last}" + (f", {condition}" if condition else "")
        out.append(f"`{metric}` ({where}) at N = {b['N']:g}: {_fmt(b['mean'])} {_ci(b['ci_low'], b['ci_high'])}, "
                   f"against {_fmt(a['mean'])} {_ci(a['ci_low'], a['ci_high'])} at N = {a['N']:g}: the last "
                   f"{verb}" + (" (the intervals do not overlap)." if apart else " from the first (the intervals "
                                "overlap)."))
    return out


def _table(headers, rows) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return lines


def _setup_lines(r) -> list[str]:
    from iclnb.results.reader import setting

    prov = r.config.get("provenance") or {}
    model = r.config.get("model") or {}
    s = setting(r)
    facts = [("results directory", str(r.dir)), ("model", f"{r.model} ({r.n_blocks} blocks)" if r.n_blocks else
                                                  str(r.model)),
             ("model source", s.get("model source")), ("dtype / device", f"{model.get('dtype')} / {model.get('device')}"),
             ("graph", s.get("graph")), ("words", s.get("words")), ("layers measured", s.get("layers measured")),
             ("contexts", r.params.get("n_contexts")), ("seed", r.params.get("seed")),
             ("iclnb / torch / transformers", f"{s.get('iclnb')} / {s.get('torch')} / {s.get('transformers')}"),
             ("python", prov.get("python")), ("git commit", s.get("git commit") or "not recorded"),
             ("host", prov.get("hostname")), ("started", prov.get("started")), ("finished", prov.get("finished"))]
    lines = _table(["", ""], [(k, v) for k, v in facts if v not in (None, "", "None", "None / None")])
    lines += ["", "Every parameter:", ""]
    lines += _table(["parameter", "value"], [(k, f"`{v}`") for k, v in r.params.items()])
    return lines


def _park_headline(r) -> list[str]:
    rows = ((r.results.get("summary") or {}).get("rows")) or []
    if not rows:
        return []
    out = ["", "Headline quantities as the run stored them:", ""]
    out += _table(["quantity", "layer", "context (tokens)", "value", "95% CI"],
                  [(x.get("quantity"), "" if x.get("layer") is None else x.get("layer"),
                    "" if x.get("context_tokens") is None else x.get("context_tokens"), _fmt(_num(x.get("value"))),
                    _ci(_num(x.get("ci_low")), _num(x.get("ci_high")))) for x in rows])
    return out


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def draft(directory) -> str:
    """The text of the draft summary of the finished run in ``directory``."""
    from iclnb.ops.tidy import supported, tidy
    from iclnb.results.reader import load

    r = load(directory)
    table = tidy(r)
    lines = [f"# {r.experiment}: {r.dir.name}", "",
             "*Drafted by `iclnb summarize` from config.json and results.json: the sections marked TODO are for a "
             "person to write; everything else was computed from the run's files.*", "",
             "## Question", "",
             OBJECTIVES.get(r.experiment, f"TODO: the question the {r.experiment} experiment asks."), "",
             "## Set-up", ""]
    lines += _setup_lines(r)
    lines += ["", "## Key numbers", ""]
    keys = key_numbers(table)
    if not supported(r):
        lines.append(f"iclnb does not know where a {r.experiment} run keeps its numbers; see results.json.")
    elif keys.empty:
        lines.append("The run holds no summarised numbers.")
    else:
        lines.append("Means over contexts with 95% bootstrap intervals over contexts, at the largest N of each "
                     "metric" + (" and at the first, quartile and last measured layers" if
                                 len(_key_layers(r.layers)) < len(r.layers) else "") + "; the null is the "
                     "experiment's stated randomisation (blank where it states none).")
        lines.append("")
        lines += _table(["metric", "layer", "N", "word set", "mean", "95% CI", "null", "null 95% CI"],
                        [(f"`{x['metric']}`", x["layer"], f"{x['N']:g}" if np.isfinite(x["N"]) else "",
                          x["condition"], _fmt(x["mean"]), _ci(x["ci_low"], x["ci_high"]),
                          _fmt(x["null"]) if np.isfinite(x["null"]) else "",
                          _ci(x["null_ci_low"], x["null_ci_high"]) if np.isfinite(x["null"]) else "")
                         for _, x in keys.iterrows()])
        lines.append("")
        lines.append("Every number of the run: `iclnb.ops.tidy(iclnb.load_results(DIR))`.")
    if r.experiment == "reproduce_park":
        lines += _park_headline(r)
    lines += ["", "## Figures", ""]
    pngs = sorted((r.dir / "figures").glob("*.png"))
    if not pngs:
        lines.append("The run wrote no PNG figures" + (" (see the HTML figures in figures/)." if
                                                        list((r.dir / "figures").glob("*.html")) else "."))
    for png in pngs:
        html = png.with_suffix(".html")
        link = f" ([interactive](figures/{html.name}))" if html.is_file() else ""
        lines += [f"**{png.stem}**{link}", "", f"![{png.stem}](figures/{png.name})", ""]
    lines += ["", "## What the data show", ""]
    sentences = findings(table)
    lines += [f"- {s}" for s in sentences] or ["No interval in the key numbers can be compared with a null or "
                                               "with 0."]
    lines += ["", "## Interpretation (TODO)", "",
              "> **TODO** (a person): what these numbers mean for the question, in your words; say which "
              "comparisons were planned before the run.", "",
              "## Caveats (TODO)", "",
              "> **TODO** (a person): what could make these numbers misleading: few contexts, one seed, one model, "
              "the number of intervals read above, parameters that differ from earlier runs.", "",
              "## Next steps (TODO)", "",
              "> **TODO** (a person): the runs this one calls for.", ""]
    return "\n".join(lines)


def summarize(directory, force: bool = False) -> Path:
    """Write the draft to ``summary.md`` in the run's directory (atomically) and return its path. An existing
    summary.md (perhaps already edited by hand) is replaced only with ``force``."""
    from iclnb.core.paths import results_dir
    from iclnb.core.files import write_text

    path = results_dir(directory) / SUMMARY_NAME
    if path.exists() and not force:
        raise IclnbError(f"{path} exists (it may hold a person's writing); pass --force to replace it with a new "
                         f"draft")
    text = draft(directory)
    return write_text(path, text)
