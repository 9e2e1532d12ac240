"""Drawing a graph of words: node positions and the figure."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from iclnb.plotting.style import COLUMN_WIDTH, PALETTE, TEMPLATE

#: The tallest a graph drawing gets (a tall graph is drawn narrower), and the narrowest (its title fits).
GRAPH_MAX_HEIGHT = 620
GRAPH_MIN_WIDTH = 640
_MARGIN = dict(l=20, r=20, t=60, b=20)  # the axes are hidden: room for the title only


def graph_layout(graph, seed: int = 0) -> np.ndarray:
    """2-D node positions: the graph's own coordinates when it has them, else a seeded spring layout."""
    if "positions" in graph.extra:
        return np.asarray(graph.extra["positions"], dtype=float)
    import networkx as nx

    g = nx.from_numpy_array(np.asarray(graph.adjacency))
    layout = nx.spring_layout(g, seed=seed)
    return np.array([layout[i] for i in range(graph.n)])


def graph_figure(graph, labeling: str | None = "cluster", positions=None, title: str = "") -> go.Figure:
    """The graph with its words, nodes coloured by a labeling; equal scales on both axes, as wide as the column
    allows, labels beside the nodes."""
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
        go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="markers+text", text=list(graph.words), textposition="top right",
                   textfont=dict(size=12), marker=dict(size=14, color=colors, line=dict(width=1, color="#333")),
                   showlegend=False, hoverinfo="text",
                   hovertext=[f"{w} ({labeling} {int(labels[i])})" if labels is not None else w
                              for i, w in enumerate(graph.words)]),
    ])
    pad = 0.12 * max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1e-9)
    x_range = [xy[:, 0].min() - pad, xy[:, 0].max() + 2.5 * pad]  # room on the right for the labels
    y_range = [xy[:, 1].min() - pad, xy[:, 1].max() + pad]
    # the figure is the size of the drawing (as large as the column and GRAPH_MAX_HEIGHT allow), so neither a
    # blank band under it nor nodes packed close enough for a marker to cover a neighbour's label
    side, top = _MARGIN["l"] + _MARGIN["r"], _MARGIN["t"] + _MARGIN["b"]
    scale = min((COLUMN_WIDTH - side) / np.ptp(x_range), (GRAPH_MAX_HEIGHT - top) / np.ptp(y_range))
    width = max(GRAPH_MIN_WIDTH, round(scale * np.ptp(x_range)) + side)
    fig.update_layout(title=title or f"{graph.name} graph: {graph.n} nodes, {len(edges)} edges"
                      + (f" (colour: {labeling})" if labels is not None else ""),
                      xaxis=dict(visible=False, range=x_range),
                      yaxis=dict(visible=False, scaleanchor="x", range=y_range),
                      template=TEMPLATE, margin=_MARGIN, width=width, height=round(scale * np.ptp(y_range)) + top)
    return fig
