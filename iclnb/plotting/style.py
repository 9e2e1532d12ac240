"""The look every figure shares: palette, widths that fit a notebook column, confidence bands.

Figure builders take data and return a ``plotly.graph_objects.Figure``; titles and labels describe the axes (with
their units) only, never an interpretation.
"""

from __future__ import annotations

import itertools

import numpy as np
import plotly.graph_objects as go

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
#: Width of a JupyterLab notebook column at the default zoom: figures are laid out to fit it.
COLUMN_WIDTH = 860
TEMPLATE = "plotly_white"


def rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _finite_or_none(values) -> list:
    return [None if v is None or not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)]


def ci_band(x, low, high, color: str, name: str, showlegend: bool = False, alpha: float = 0.2) -> go.Scatter:
    """The shaded interval between ``low`` and ``high`` as one trace (missing values leave gaps); lines only, so
    plotly adds no markers of its own to short traces. Each run of points with both bounds is its own closed
    outline: one outline through a gap would close each piece on itself and shade wedges across the gap."""
    x = list(np.asarray(x, dtype=float)) if not isinstance(x, list) else x
    low, high = _finite_or_none(low), _finite_or_none(high)
    xs, ys = [], []
    for known, run in itertools.groupby(range(len(x)), key=lambda i: low[i] is not None and high[i] is not None):
        if known:
            run = list(run)
            gap = [None] if xs else []
            xs += gap + [x[i] for i in run + run[::-1]]
            ys += gap + [high[i] for i in run] + [low[i] for i in run[::-1]]
    return go.Scatter(x=xs, y=ys, mode="lines", fill="toself", fillcolor=rgba(color, alpha),
                      line=dict(width=0), hoverinfo="skip", name=f"{name} 95% CI", legendgroup=name,
                      showlegend=showlegend)


def band(fig, x, mean, low, high, name: str, color: str, row=None, col=None, showlegend=True, marker=None,
         dash=None):
    """A line (with markers when ``marker`` is given) and its shaded interval; adds two traces to ``fig``."""
    x = list(x)
    kw = {} if row is None else dict(row=row, col=col)
    fig.add_trace(ci_band(x, low, high, color, name), **kw)
    fig.add_trace(go.Scatter(x=x, y=_finite_or_none(mean), mode="lines+markers" if marker else "lines", name=name,
                             line=dict(color=color, dash=dash), marker=marker, legendgroup=name,
                             showlegend=showlegend), **kw)
    return fig


def layout(fig, title: str, height: int = 420, width: int | None = COLUMN_WIDTH, legend_below: bool = False, **kw):
    """The common layout: a column-wide figure with its title; ``legend_below`` puts the legend under the plot
    area, clear of the data and of any colour bar."""
    extra = {}
    if legend_below:
        extra["legend"] = dict(orientation="h", yanchor="top", y=-110 / height, xanchor="left", x=0)
    fig.update_layout(title=title, height=height, width=width, template=TEMPLATE, **extra, **kw)
    return fig


def log_x(fig, values, title: str, row=None, col=None):
    """A log-scaled x axis whose ticks are exactly ``values`` (the context lengths measured), labelled in full."""
    values = sorted({float(v) for v in values})
    kw = {} if row is None else dict(row=row, col=col)
    fig.update_xaxes(type="log", title_text=title, tickvals=values, ticktext=[f"{v:g}" for v in values], **kw)
    return fig
