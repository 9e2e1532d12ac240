"""css_basic's figures: CSS by position per layer, and the per-context metrics by layer."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.core.layers import parse_layer_key
from iclnb.plotting.style import PALETTE, band, layout

#: Axis titles of the per-context metrics, with their units.
METRIC_TITLES = {
    "phi": "Φ (dimensionless)",
    "energy_norm": "E_norm (fraction of all-pair distance²)",
    "energy_raw": "Dirichlet energy (squared residual norm)",
    "coherence": "coherence (centred cosine)",
}


def css_by_position_figure(tables: dict, metric: str, bridge_fraction: np.ndarray) -> go.Figure:
    """CSS per position with its bootstrap CI, one panel per layer; marker colour = how often the position is a
    bridge across contexts."""
    keys = list(tables)
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[key.replace("_", " ") for key in keys])
    for row, key in enumerate(keys, start=1):
        s = tables[key]["css_by_position"][metric]
        x = np.arange(len(s["css"]))
        marker = dict(size=7, color=bridge_fraction, colorscale="Viridis", cmin=0, cmax=1, showscale=row == 1,
                      colorbar=dict(title="bridge<br>fraction", len=0.3, y=1, yanchor="top"))
        band(fig, x, s["css"], s["ci_low"], s["ci_high"], name=f"CSS({metric})", color=PALETTE[0],
             row=row, col=1, showlegend=False, marker=marker)
        fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=row, col=1)
        fig.update_yaxes(title_text="CSS (nats x Φ)" if metric == "phi" else f"CSS (nats x {metric})", row=row, col=1)
    fig.update_xaxes(title_text="word position", row=len(keys), col=1)
    return layout(fig, f"CSS of word loss against {metric}, by position (95% bootstrap CI over contexts)",
                  height=max(320, 200 * len(keys)), showlegend=False)


def metric_by_layer_figure(tables: dict, metrics, nulls: dict | None = None) -> go.Figure:
    """Mean of each per-context metric by layer with its 95% CI, the individual contexts as grey points, and where
    ``nulls`` names one (``{"phi": "phi_null"}``) the null's mean and CI as a dashed band."""
    nulls = nulls or {}
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[METRIC_TITLES.get(m, m) for m in metrics])
    layers = [str(parse_layer_key(key)) for key in tables]
    for row, name in enumerate(metrics, start=1):
        values = [np.asarray(tables[key]["per_context"][name], dtype=float) for key in tables]
        fig.add_trace(go.Scatter(x=np.repeat(layers, [len(v) for v in values]), y=np.concatenate(values),
                                 mode="markers", name="one context", marker=dict(size=4, color="#bbbbbb"),
                                 hoverinfo="y", legendgroup="contexts", showlegend=row == 1), row=row, col=1)
        for series, color, dash in ((name, PALETTE[0], None), (nulls.get(name), "#7f7f7f", "dash")):
            if series is None:
                continue
            summary = [tables[key]["summary"][series] for key in tables]
            band(fig, layers, [s["mean"] for s in summary], [s["ci_low"] for s in summary],
                 [s["ci_high"] for s in summary], name="mean" if series == name else "node-shuffled null",
                 color=color, row=row, col=1, showlegend=row == 1 or series != name, marker=dict(size=6),
                 dash=dash)
        fig.update_yaxes(title_text=METRIC_TITLES.get(name, name).split(" (")[0], row=row, col=1)
    fig.update_xaxes(type="category", row=len(metrics), col=1, title_text="layer (decoder block)")
    return layout(fig, "Per-context metrics by layer (mean with 95% bootstrap CI over contexts)",
                  height=260 * len(metrics) + 80, legend_below=True)
