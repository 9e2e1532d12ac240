"""collapse's figures: each measure against context length per kind, layer x length heatmaps, the reversal, and
the probes' accuracy and log-probability."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.core.layers import layer_key
from iclnb.plotting.style import PALETTE, band, layout, log_x

#: Axis titles of the measures, with their units.
MEASURE_TITLES = {
    "cosine": "mean pairwise cosine",
    "cosine_centred": "mean pairwise cosine, centred",
    "l2": "mean pairwise L2 (residual units)",
    "spread": "spread: tr Cov (residual units²)",
    "participation_ratio": "participation ratio (dimensions)",
    "twonn": "TwoNN dimension (dimensions)",
}
#: Short panel titles.
MEASURE_SHORT = {
    "cosine": "cosine", "cosine_centred": "cosine, centred", "l2": "L2 distance", "spread": "spread",
    "participation_ratio": "participation ratio", "twonn": "TwoNN dimension",
}
#: The y-axis title of each measure's panel: its unit.
MEASURE_UNITS = {"cosine": "cosine", "cosine_centred": "cosine", "l2": "residual units", "spread": "residual units²",
                 "participation_ratio": "dimensions", "twonn": "dimensions"}
#: Every measured point is marked, so a series of one point still shows.
MARKER = dict(size=6)
KIND_COLORS = {"walk": PALETTE[0], "natural": PALETTE[2], "repeated": PALETTE[3], "walk_to_natural": PALETTE[1],
               "walk_to_walk": PALETTE[4]}
KIND_NAMES = {"walk": "walk", "natural": "natural text", "repeated": "repeated token",
              "walk_to_natural": "walk → natural text", "walk_to_walk": "walk → walk on the other graph"}


def _series(kinds: dict, kind: str, layer, measure: str, points=None):
    key = layer_key(layer)
    ts = sorted(int(t.removeprefix("tokens_")) for t in kinds[kind])
    if points is not None:
        ts = [t for t in ts if t in points]
    s = [kinds[kind][f"tokens_{t}"][key][measure] for t in ts]
    return ts, [v["mean"] for v in s], [v["ci_low"] for v in s], [v["ci_high"] for v in s]


def _none(values):
    return [np.nan if v is None else v for v in values]


def measures_figure(kinds: dict, layer, points, kind_names=("walk", "natural", "repeated"), measures=None,
                    title: str | None = None, offset: int = 0, x_title: str = "context length (tokens, log scale)",
                    references=None) -> go.Figure:
    """Each measure against context length at one layer: one line per kind with its 95% CI band, in a 3 x 2 grid
    of panels. ``offset`` is subtracted from the x values (tokens after a switch); ``references`` adds dashed
    lines: (label, kinds, kind, offset) drawn at x = t − offset."""
    measures = list(measures or MEASURE_TITLES)
    rows = (len(measures) + 1) // 2
    fig = make_subplots(rows=rows, cols=2, vertical_spacing=0.11, horizontal_spacing=0.12,
                        subplot_titles=[MEASURE_SHORT[m] for m in measures])
    xs = set()
    for i, m in enumerate(measures):
        row, col = i // 2 + 1, i % 2 + 1
        for kind in kind_names:
            t, mean, low, high = _series(kinds, kind, layer, m, points)
            x = [v - offset for v in t]
            xs.update(x)
            band(fig, x, _none(mean), _none(low), _none(high), name=KIND_NAMES.get(kind, kind),
                 color=KIND_COLORS.get(kind, PALETTE[7]), row=row, col=col, showlegend=i == 0, marker=MARKER)
        for label, ref_kinds, kind, ref_offset in references or ():
            t, mean, low, high = _series(ref_kinds, kind, layer, m)
            x = [v - ref_offset for v in t]
            keep = [j for j, v in enumerate(x) if v in xs]
            band(fig, [x[j] for j in keep], _none([mean[j] for j in keep]), _none([low[j] for j in keep]),
                 _none([high[j] for j in keep]), name=label, color=KIND_COLORS.get(kind, PALETTE[7]), row=row,
                 col=col, showlegend=i == 0, dash="dash", marker=MARKER)
        fig.update_yaxes(title_text=MEASURE_UNITS[m], row=row, col=col)
    for i in range(len(measures)):
        log_x(fig, sorted(xs), x_title if i // 2 + 1 == rows else "", row=i // 2 + 1, col=i % 2 + 1)
    height = 250 * rows + 170
    return layout(fig, title or f"Collapse measures by context length, {layer_key(layer).replace('_', ' ')} "
                  "(mean, 95% bootstrap CI over contexts)", height=height, legend_below=True,
                  margin=dict(b=130))


def heatmap_figure(kinds: dict, layers, points, measure: str, kind_names=("walk", "natural", "repeated")):
    """One measure as a layer x context-length heatmap per kind (means over contexts), one colour scale."""
    keys = [layer_key(k) for k in layers]
    grids = []
    for kind in kind_names:
        grids.append(np.array([[_none([kinds[kind][f"tokens_{t}"][key][measure]["mean"]])[0] for t in points]
                               for key in keys], dtype=float))
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
    zmin, zmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig = make_subplots(rows=1, cols=len(kind_names), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[KIND_NAMES.get(k, k) for k in kind_names])
    labels = [str(t) for t in points]
    ylabels = [str(k) for k in layers]
    for c, (kind, grid) in enumerate(zip(kind_names, grids), start=1):
        fig.add_trace(go.Heatmap(z=grid, x=labels, y=ylabels, zmin=zmin, zmax=zmax, colorscale="Viridis",
                                 showscale=c == len(kind_names),
                                 colorbar=dict(title=dict(text=MEASURE_SHORT[measure], side="right"), len=0.9),
                                 hovertemplate="tokens %{x}<br>layer %{y}<br>%{z:.3g}<extra></extra>"),
                      row=1, col=c)
        fig.update_xaxes(type="category", title_text="context length (tokens)", tickangle=-45, row=1, col=c)
    fig.update_yaxes(type="category", title_text="layer (decoder block)", row=1, col=1)
    return layout(fig, f"{MEASURE_TITLES[measure]}: layer x context length (mean over contexts)",
                  height=max(340, 32 * len(keys) + 220))


def probing_figure(probing: dict, kind_names=("walk", "natural", "repeated")) -> go.Figure:
    """Accuracy and log-probability of the right answer against context length per kind (95% CI over contexts),
    with the no-context level as a dotted line."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.13,
                        subplot_titles=["accuracy (answer's first token is the argmax)", "log-probability of the answer"])
    xs = set()
    for col, name in enumerate(("accuracy", "logprob"), start=1):
        for kind in kind_names:
            ts = sorted(int(t.removeprefix("tokens_")) for t in probing[kind])
            s = [probing[kind][f"tokens_{t}"][name] for t in ts]
            xs.update(ts)
            band(fig, ts, _none([v["mean"] for v in s]), _none([v["ci_low"] for v in s]),
                 _none([v["ci_high"] for v in s]), name=KIND_NAMES[kind], color=KIND_COLORS[kind], row=1, col=col,
                 showlegend=col == 1, marker=MARKER)
        if "no_context" in probing:
            level = probing["no_context"][name]["mean"]
            fig.add_trace(go.Scatter(x=[min(xs), max(xs)], y=[level, level], mode="lines", name="no context",
                                     line=dict(color="#555", dash="dot"), legendgroup="none",
                                     showlegend=col == 1), row=1, col=col)
    fig.update_yaxes(title_text="fraction of probes", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="log-probability (nats)", row=1, col=2)
    for col in (1, 2):
        log_x(fig, sorted(xs), "context length (tokens, log scale)", row=1, col=col)
    return layout(fig, "Factual probes after each context (mean over contexts, 95% bootstrap CI)", height=440,
                  legend_below=True, margin=dict(b=130))
