"""Plotly figure builders shared by the notebooks (saving lives in ``iclnb.plots``).

Builders take arrays or result dicts and return a ``plotly.graph_objects.Figure``; titles and labels describe the
axes only, never an interpretation.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def graph_layout(graph, seed: int = 0) -> np.ndarray:
    """2-D node positions: the graph's own coordinates when it has them, else a seeded spring layout."""
    if "positions" in graph.extra:
        return np.asarray(graph.extra["positions"], dtype=float)
    import networkx as nx

    g = nx.from_numpy_array(np.asarray(graph.adjacency))
    layout = nx.spring_layout(g, seed=seed)
    return np.array([layout[i] for i in range(graph.n)])


def graph_figure(graph, labeling: str | None = "cluster", positions=None, title: str = "") -> go.Figure:
    """The graph with its words, nodes coloured by a labeling."""
    xy = graph_layout(graph) if positions is None else np.asarray(positions, dtype=float)
    edges = graph.edges()
    ex = np.full(3 * len(edges), np.nan)
    ey = np.full(3 * len(edges), np.nan)
    ex[0::3], ex[1::3] = xy[edges[:, 0], 0], xy[edges[:, 1], 0]
    ey[0::3], ey[1::3] = xy[edges[:, 0], 1], xy[edges[:, 1], 1]
    labels = graph.labelings.get(labeling) if labeling else None
    colors = [PALETTE[int(c) % len(PALETTE)] for c in labels] if labels is not None else PALETTE[0]
    fig = go.Figure([
        go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="#bbbbbb", width=1), hoverinfo="skip", showlegend=False),
        go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers+text", text=list(graph.words), textposition="top center",
                   marker=dict(size=14, color=colors, line=dict(width=1, color="#333")), showlegend=False,
                   hovertext=[f"{w} ({labeling} {int(labels[i])})" if labels is not None else w
                              for i, w in enumerate(graph.words)], hoverinfo="text"),
    ])
    fig.update_layout(title=title or f"{graph.name} graph: {graph.n} nodes, {len(edges)} edges",
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"), template="plotly_white")
    return fig


def ci_band(x, low, high, color: str, name: str, showlegend: bool = False, alpha: float = 0.2) -> go.Scatter:
    """The shaded interval between ``low`` and ``high`` as one trace (missing values leave gaps)."""
    x = list(np.asarray(x, dtype=float)) if not isinstance(x, list) else x
    low = [None if v is None or not np.isfinite(v) else float(v) for v in np.asarray(low, dtype=float)]
    high = [None if v is None or not np.isfinite(v) else float(v) for v in np.asarray(high, dtype=float)]
    return go.Scatter(x=x + x[::-1], y=high + low[::-1], fill="toself", fillcolor=rgba(color, alpha),
                      line=dict(width=0), hoverinfo="skip", name=f"{name} 95% CI", legendgroup=name,
                      showlegend=showlegend)


def band(fig, x, mean, low, high, name: str, color: str, row=None, col=None, showlegend=True, marker=None):
    """A line with its shaded interval; adds two traces to ``fig``."""
    x = list(x)
    kw = {} if row is None else dict(row=row, col=col)
    fig.add_trace(ci_band(x, low, high, color, name), **kw)
    fig.add_trace(go.Scatter(x=x, y=list(mean), mode="lines+markers" if marker else "lines", name=name,
                             line=dict(color=color), marker=marker, legendgroup=name, showlegend=showlegend), **kw)
    return fig


def rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def css_by_position_figure(tables: dict, metric: str, bridge_fraction: np.ndarray) -> go.Figure:
    """CSS per position with its bootstrap CI, one panel per layer; marker colour = how often the position is a bridge."""
    keys = list(tables)
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, subplot_titles=keys, vertical_spacing=0.04)
    for row, key in enumerate(keys, start=1):
        s = tables[key]["css_by_position"][metric]
        x = np.arange(len(s["css"]))
        marker = dict(size=7, color=bridge_fraction, colorscale="Viridis", cmin=0, cmax=1,
                      showscale=row == 1, colorbar=dict(title="bridge<br>fraction", len=0.3, y=1, yanchor="top"))
        band(fig, x, s["css"], s["ci_low"], s["ci_high"], name=f"CSS({metric})", color=PALETTE[0],
             row=row, col=1, showlegend=row == 1, marker=marker)
        fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=row, col=1)
    fig.update_xaxes(title_text="word position", row=len(keys), col=1)
    fig.update_layout(height=max(300, 220 * len(keys)), template="plotly_white", showlegend=False,
                      title=f"CSS of word loss against {metric}, by position (95% bootstrap CI over contexts)")
    return fig


def metric_by_layer_figure(tables: dict, metrics) -> go.Figure:
    """Mean of each per-context metric by layer, with bootstrap CIs and the individual contexts as points."""
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=list(metrics))
    layers = [key.removeprefix("layer_") for key in tables]
    for col, name in enumerate(metrics, start=1):
        for i, key in enumerate(tables):
            values = np.asarray(tables[key]["per_context"][name], dtype=float)
            fig.add_trace(go.Scatter(x=[layers[i]] * len(values), y=values, mode="markers", showlegend=False,
                                     marker=dict(size=4, color="#aaaaaa"), hoverinfo="y"), row=1, col=col)
        summary = [tables[key]["summary"][name] for key in tables]
        mean = np.array([s["mean"] for s in summary], dtype=float)
        low = np.array([s["ci_low"] for s in summary], dtype=float)
        high = np.array([s["ci_high"] for s in summary], dtype=float)
        fig.add_trace(go.Scatter(x=layers, y=mean, mode="lines+markers", name=name, showlegend=False,
                                 line=dict(color=PALETTE[col - 1]),
                                 error_y=dict(type="data", symmetric=False, array=high - mean, arrayminus=mean - low)),
                      row=1, col=col)
        fig.update_xaxes(title_text="layer", type="category", row=1, col=col)
    fig.update_layout(template="plotly_white", height=380, title="Per-context metrics by layer (mean, 95% CI)")
    return fig
