"""Plotly figure builders of the reproduce_park experiment (pure: data in, ``go.Figure`` out; saving is the caller's).

* :func:`accuracy_figure`: rule-following accuracy vs context with its band, the renormalised curve, the copying
  baseline and chance;
* :func:`geometry_heatmap`: E_norm and distance correlation, layer x context point;
* :func:`geometry_curves`: the same for a few layers as curves with bands;
* :func:`pca_scatter_traces` / :func:`pca_grid`: PCA of node means with the graph's edges drawn, at several context
  points, next to the graph's spectral embedding.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.figures import ci_band

__all__ = ["accuracy_figure", "geometry_heatmap", "geometry_curves", "pca_scatter_traces", "pca_grid"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def _band(x, low, high, color, name, row=None, col=None, fig=None, showlegend=False):
    trace = ci_band(list(np.asarray(x, dtype=float)), low, high, color, name, showlegend=showlegend, alpha=0.18)
    if fig is not None:
        fig.add_trace(trace, row=row, col=col)
    return trace


def accuracy_figure(acc: dict) -> go.Figure:
    """``acc`` as stored in ``results["accuracy"]``."""
    x = acc["context_tokens"]
    fig = go.Figure()
    fig.add_trace(_band(x, acc["ci_low"], acc["ci_high"], _COLORS[0], "neighbour mass"))
    fig.add_trace(go.Scatter(x=x, y=acc["mean"], name="neighbour mass (raw)", line=dict(color=_COLORS[0]),
                             legendgroup="neighbour mass"))
    fig.add_trace(go.Scatter(x=x, y=acc["renormalized_mean"], name="renormalised over graph words",
                             line=dict(color=_COLORS[0], dash="dot")))
    fig.add_trace(go.Scatter(x=x, y=acc["copy_baseline"], name="copying baseline", line=dict(color=_COLORS[1])))
    fig.add_hline(y=acc["chance"], line=dict(color="gray", dash="dash"),
                  annotation_text="chance (mean degree / n)", annotation_position="bottom right")
    fig.update_layout(title="Rule-following accuracy vs context", xaxis_title="context (tokens)",
                      yaxis_title="probability mass on valid next nodes", yaxis_range=[0, 1.02],
                      template="plotly_white", width=800, height=450)
    return fig


def geometry_heatmap(results: dict, layers, context_tokens) -> go.Figure:
    """E_norm and Spearman distance correlation, layer (rows) x context point (columns)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("E_norm (lower = smoother on the graph)",
                                                        "distance correlation (Spearman)"),
                        horizontal_spacing=0.14)
    xs = [str(int(t)) for t in context_tokens]
    ys = [str(k) for k in layers]
    for col, (key, scale, bar_x) in enumerate((("energy_norm", "Viridis_r", 0.43),
                                               ("distance_correlation", "RdBu_r", 1.0)), start=1):
        z = np.array([np.asarray(results[f"layer_{k}"][key], dtype=float) for k in layers])
        kw = dict(zmid=0) if key == "distance_correlation" else {}
        fig.add_trace(go.Heatmap(z=z, x=xs, y=ys, colorscale=scale, colorbar=dict(x=bar_x, len=0.9),
                                 hovertemplate="layer %{y}<br>%{x} tokens<br>%{z:.3f}<extra></extra>", **kw),
                      row=1, col=col)
        fig.update_xaxes(title_text="context (tokens)", type="category", row=1, col=col)
        fig.update_yaxes(title_text="layer", type="category", row=1, col=col)
    fig.update_layout(title="Geometry of node means by layer and context", template="plotly_white",
                      width=1000, height=500)
    return fig


def geometry_curves(results: dict, layers, energy_chance: float) -> go.Figure:
    """E_norm and distance correlation vs context for a few layers, with 95% bands over sequences."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("E_norm", "distance correlation"))
    for i, k in enumerate(layers):
        lay = results[f"layer_{k}"]
        color = _COLORS[i % len(_COLORS)]
        for col, key in enumerate(("energy_norm", "distance_correlation"), start=1):
            x = lay["context_tokens"]
            _band(x, lay[f"{key}_ci_low"], lay[f"{key}_ci_high"], color, f"layer {k}", row=1, col=col, fig=fig)
            fig.add_trace(go.Scatter(x=x, y=lay[key], name=f"layer {k}", line=dict(color=color),
                                     legendgroup=f"layer {k}", showlegend=col == 1), row=1, col=col)
    fig.add_hline(y=energy_chance, line=dict(color="gray", dash="dash"), row=1, col=1,
                  annotation_text="chance", annotation_position="top right")
    fig.add_hline(y=0, line=dict(color="gray", dash="dash"), row=1, col=2)
    fig.update_xaxes(title_text="context (tokens)", type="log")
    fig.update_layout(title="Node-mean geometry vs context", template="plotly_white", width=1000, height=450)
    return fig


def pca_scatter_traces(coords: np.ndarray, graph, color: str = _COLORS[0], showlegend: bool = False) -> list:
    """Edge lines plus labelled node markers for a (n, 2) coordinate array (NaN rows = unseen nodes)."""
    coords = np.asarray(coords, dtype=float)
    ex, ey = [], []
    for i, j in graph.edges():
        if np.isfinite(coords[[i, j]]).all():
            ex += [coords[i, 0], coords[j, 0], None]
            ey += [coords[i, 1], coords[j, 1], None]
    edges = go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="lightgray", width=1.5), hoverinfo="skip",
                       showlegend=showlegend, name="graph edges")
    nodes = go.Scatter(x=coords[:, 0], y=coords[:, 1], mode="markers+text", text=list(graph.words),
                       textposition="top center", textfont=dict(size=9),
                       marker=dict(size=9, color=color), showlegend=False, name="node means",
                       hovertemplate="%{text}<extra></extra>")
    return [edges, nodes]


def pca_grid(coords_list, titles, graph, spectral: np.ndarray, title: str = "") -> go.Figure:
    """One PCA panel per context point plus a last panel with the graph's spectral embedding."""
    panels = len(coords_list) + 1
    cols = min(panels, 4)
    rows = int(np.ceil(panels / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles) + ["spectral embedding of the graph"],
                        horizontal_spacing=0.04, vertical_spacing=0.1)
    for p, coords in enumerate(list(coords_list) + [spectral]):
        r, c = divmod(p, cols)
        color = _COLORS[1] if p == panels - 1 else _COLORS[0]
        for trace in pca_scatter_traces(coords, graph, color=color):
            fig.add_trace(trace, row=r + 1, col=c + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(title=title, template="plotly_white", width=300 * cols, height=300 * rows + 80)
    return fig
