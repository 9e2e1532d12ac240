"""Figures of the leave-one-out family (loo, loo_multilayer; the heatmaps are loo_heatmap's too).

Every builder takes a tidy DataFrame from the family's steps and returns a ``plotly.graph_objects.Figure`` that fits
a notebook column; titles and labels come from the data, never hard-coded findings.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.plotting.style import PALETTE, band, layout, log_x

CLASSES = ("bridge", "anchor")
COLORS = {"semantic": "#1f77b4", "unrelated": "#ff7f0e", "bridge": "#d62728", "anchor": "#2ca02c"}
#: The unit of each metric (and of an influence on it).
UNITS = {"cross": "residual norm", "within": "residual norm", "ratio": "dimensionless",
         "within_sq": "squared residual norm"}


def metric_unit(metric: str) -> str:
    """The unit of ``metric`` and of an influence on it."""
    return UNITS.get(metric, "metric units")


def _layer_or_last(table, layer):
    return int(table["layer"].max()) if layer is None else int(layer)


def influence_by_position_figure(influence, metric: str = "ratio", layer=None, n_words=None):
    """Mean influence (over contexts) of each deleted position at one layer and context length; the marker colour
    is the share of contexts in which the position is a bridge."""
    layer = _layer_or_last(influence, layer)
    n_words = int(influence["N"].max()) if n_words is None else int(n_words)
    sub = influence[(influence["layer"] == layer) & (influence["metric"] == metric) & (influence["N"] == n_words)]
    fig = go.Figure()
    for i, (condition, group) in enumerate(sub.groupby("condition", sort=False)):
        stats = group.groupby("position").agg(mean=("influence", "mean"), bridge=("is_bridge", "mean")).reset_index()
        fig.add_trace(go.Scatter(
            x=stats["position"], y=stats["mean"], mode="lines+markers", name=condition,
            line=dict(color=COLORS.get(condition)),
            marker=dict(size=7, color=stats["bridge"], colorscale="Reds", cmin=0, cmax=1,
                        line=dict(color=COLORS.get(condition), width=1), showscale=i == 0,
                        colorbar=dict(title="bridge<br>share", thickness=12, len=0.6)),
            hovertemplate="position %{x}<br>influence %{y:.4g}<br>bridge share %{marker.color:.2f}"))
    fig.add_hline(y=0, line=dict(color="grey", width=1, dash="dot"))
    fig.update_xaxes(title_text="deleted word position")
    fig.update_yaxes(title_text=f"{metric}(full) − {metric}(without p) ({metric_unit(metric)})")
    return layout(fig, f"Influence on {metric} by deleted position (N = {n_words}, layer {layer})",
                  legend_below=True)


def _panels_over_n(sub, series, ytitle: str, title: str):
    """One panel per word set; in each, one band per series against N on a log axis. ``series(rows)`` gives the
    (name, colour, rows sorted by N) of one word set's rows."""
    conditions = list(dict.fromkeys(sub["condition"]))
    fig = make_subplots(rows=1, cols=max(len(conditions), 1), subplot_titles=conditions, shared_yaxes=True)
    for c, condition in enumerate(conditions, start=1):
        for name, color, g in series(sub[sub["condition"] == condition]):
            band(fig, g["N"], g["mean"], g["ci_low"], g["ci_high"], name, color, row=1, col=c, showlegend=c == 1,
                 marker=dict(size=6))
        fig.add_hline(y=0, line=dict(color="grey", width=1, dash="dot"), row=1, col=c)
        log_x(fig, sub["N"], "context length N (words)", row=1, col=c)
    fig.update_yaxes(title_text=ytitle, row=1, col=1)
    return layout(fig, title, legend_below=True)


def bridge_anchor_figure(table, metric: str = "ratio", layer=None):
    """Bridge vs anchor mean influence with 95% intervals against N, one panel per word set, at one layer."""
    layer = _layer_or_last(table, layer)
    sub = table[(table["layer"] == layer) & (table["metric"] == metric)]
    return _panels_over_n(
        sub, lambda rows: [(cls, COLORS[cls], rows[rows["class"] == cls].sort_values("N")) for cls in CLASSES],
        f"mean influence on {metric} ({metric_unit(metric)})",
        f"Bridge vs anchor influence on {metric}, layer {layer} (95% CI, contexts resampled)")


def temporal_figure(table, metric: str = "ratio", layer=None):
    """Influence of fixed positions as the context grows past them, one panel per word set."""
    layer = _layer_or_last(table, layer)
    sub = table[(table["layer"] == layer) & (table["metric"] == metric)]
    return _panels_over_n(
        sub, lambda rows: [(f"position {position}", PALETTE[i % len(PALETTE)], g.sort_values("N"))
                           for i, (position, g) in enumerate(rows.groupby("position"))],
        f"influence on {metric} ({metric_unit(metric)})",
        f"Influence of fixed positions on {metric} as N grows, layer {layer} (95% CI over contexts)")


def heatmap_figure(table, metric: str = "ratio"):
    """Layer x N heatmaps of the influence: rows (word set, position class), columns mean / std."""
    sub = table[table["metric"] == metric]
    conditions = list(dict.fromkeys(sub["condition"]))
    panels = [(c, cls) for c in conditions for cls in CLASSES]
    fig = make_subplots(rows=len(panels), cols=2, horizontal_spacing=0.2, vertical_spacing=0.35 / len(panels),
                        subplot_titles=[f"{c}, {cls}: {stat}" for c, cls in panels for stat in ("mean", "std")])
    for r, (condition, cls) in enumerate(panels, start=1):
        g = sub[(sub["condition"] == condition) & (sub["class"] == cls)]
        for c, stat in enumerate(("mean", "std"), start=1):
            grid = g.pivot_table(index="layer", columns="N", values=stat, dropna=False).sort_index()
            z = grid.to_numpy(dtype=float)
            finite = z[np.isfinite(z)]
            bound = float(np.abs(finite).max()) if finite.size else 1.0
            kwargs = dict(colorscale="RdBu_r", zmid=0, zmin=-bound, zmax=bound) if stat == "mean" else \
                dict(colorscale="Viridis")
            fig.add_trace(go.Heatmap(z=z, x=[str(n) for n in grid.columns], y=[str(k) for k in grid.index], **kwargs,
                                     colorbar=dict(len=0.8 / len(panels), y=1 - (r - 0.5) / len(panels),
                                                   x=0.41 if c == 1 else 1.01, thickness=10),
                                     hovertemplate="N %{x}<br>layer %{y}<br>" + stat + " %{z:.4g}<extra></extra>"),
                          row=r, col=c)
            fig.update_xaxes(title_text="N (words)" if r == len(panels) else None, type="category", row=r, col=c)
            fig.update_yaxes(title_text="layer", type="category", row=r, col=c)
    return layout(fig, f"Leave-one-out influence on {metric} ({metric_unit(metric)}): layer x context length",
                  height=300 * len(panels) + 80)
