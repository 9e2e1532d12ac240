"""2-D embeddings of a graph's nodes (PCA of node means, a spectral embedding): the graph's edges as lines and the
nodes as labelled markers, as traces to place in any figure and as a figure of one view."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from iclnb.plotting.style import PALETTE, TEMPLATE

__all__ = ["edge_lines", "embedding_traces", "embedding_figure"]


def edge_lines(coords, edges) -> tuple[list, list]:
    """x and y of the graph's edges as one line trace's data (``None`` between edges); an edge with an unseen end
    (a NaN row) is left out."""
    coords = np.asarray(coords, dtype=float)
    ex, ey = [], []
    for i, j in edges:
        if np.isfinite(coords[[i, j]]).all():
            ex += [coords[i, 0], coords[j, 0], None]
            ey += [coords[i, 1], coords[j, 1], None]
    return ex, ey


def embedding_traces(coords, graph, color: str = PALETTE[0], showlegend: bool = False, text_size: int = 9) -> list:
    """Edge lines plus labelled node markers for a (n, 2) coordinate array (NaN rows = unseen nodes): the traces
    ``[edges, nodes]``."""
    coords = np.asarray(coords, dtype=float)
    ex, ey = edge_lines(coords, graph.edges())
    edges = go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="#cccccc", width=1.5), hoverinfo="skip",
                       showlegend=showlegend, name="graph edges")
    nodes = go.Scatter(x=coords[:, 0], y=coords[:, 1], mode="markers+text", text=list(graph.words),
                       textposition="top center", textfont=dict(size=text_size), marker=dict(size=8, color=color),
                       showlegend=False, name="node means", hovertemplate="%{text}<extra></extra>", cliponaxis=False)
    return [edges, nodes]


def embedding_figure(coords, graph, title: str, axis_titles=("PC1 (residual-stream units)",
                                                             "PC2 (residual-stream units)"),
                     width: int = 620, height: int = 560) -> go.Figure:
    """One view: the embedding with the graph's edges and the words, axes titled with their units."""
    fig = go.Figure(embedding_traces(coords, graph, text_size=11))
    fig.update_layout(title=title, template=TEMPLATE, width=width, height=height, showlegend=False,
                      xaxis_title=axis_titles[0], yaxis_title=axis_titles[1], margin=dict(t=70))
    return fig
