"""context_switch's figures: the switch ratio against n2 per layer, the pair classes against unrelated pairs, and the
crossing n2 by layer.

n2 runs over orders of magnitude, so it is drawn on a log axis whose ticks are the measured values; n2 = 0 (no word
on G2 yet) is drawn half a step left of the smallest positive value and labelled 0.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.core.layers import parse_layer_key
from iclnb.plotting.style import PALETTE, band, layout, rgba

X_TITLE = "n2: words on G2 after the switch (log axis; 0 drawn at the left)"
PAIR_SERIES = (("g1_vs_neither", "H1-only same-cluster pairs", PALETTE[0]),
               ("g2_vs_neither", "H2-only same-cluster pairs", PALETTE[3]),
               ("shared_vs_neither", "pairs same-cluster in both", PALETTE[2]))


def n2_positions(n2_values) -> np.ndarray:
    """Where each n2 is drawn on the log axis: itself, and 0 at half the smallest positive n2 (1 when none)."""
    n2 = np.asarray(n2_values, dtype=float)
    positive = n2[n2 > 0]
    zero_at = positive.min() / 2 if positive.size else 1.0
    return np.where(n2 > 0, n2, zero_at)


def _position_of(value, n2_values) -> float:
    """Drawn position of an n2 between measured values (on the straight segment drawn between them)."""
    n2 = np.asarray(n2_values, dtype=float)
    return float(np.exp(np.interp(value, n2, np.log(n2_positions(n2)))))


def _x_axis(fig, n2_values, row, col):
    fig.update_xaxes(type="log", tickvals=list(n2_positions(n2_values)), ticktext=[f"{n:g}" for n in n2_values],
                     row=row, col=col)


def _series(table, n2_values, key, name=None):
    cells = [table[f"n2_{n}"][key] if name is None else table[f"n2_{n}"][key][name] for n in n2_values]
    return ([c["mean"] for c in cells], [c["ci_low"] for c in cells], [c["ci_high"] for c in cells])


def _finite(value) -> bool:
    return value is not None and np.isfinite(float(value))


def ratio_figure(tables: dict, n2_values, layers_keys=None, window: int | None = None) -> go.Figure:
    """One panel per layer: the pooled switch ratio with its 95% CI, its node-permuted null (dashed), each graph
    pair's mean ratio (thin lines), the line ratio = 1 and the crossing n2 with its CI (a marker on that line)."""
    pooled = tables["pooled"]
    keys = list(layers_keys or pooled["crossing"])
    pairs = [name for name in tables if name.startswith("graph_pair_")]
    x = list(n2_positions(n2_values))
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, vertical_spacing=0.06 if len(keys) > 1 else 0,
                        subplot_titles=[key.replace("_", " ") for key in keys])
    for row, key in enumerate(keys, start=1):
        first = row == 1
        for i, name in enumerate(pairs):
            mean = _series(tables[name], n2_values, key)[0]
            fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", line=dict(color=rgba("#555555", 0.45), width=1),
                                     name="one graph pair (mean)", legendgroup="pairs", showlegend=first and i == 0,
                                     hovertext=name, hoverinfo="text+y"), row=row, col=1)
        band(fig, x, *_series(pooled, n2_values, key, "ratio_null"), name="node-permuted null", color="#7f7f7f",
             row=row, col=1, showlegend=first, dash="dash")
        band(fig, x, *_series(pooled, n2_values, key), name="ratio, pooled over graph pairs", color=PALETTE[0],
             row=row, col=1, showlegend=first, marker=dict(size=6))
        fig.add_hline(y=1, line=dict(color="#999", width=1, dash="dot"), row=row, col=1)
        cross = pooled["crossing"][key]
        if _finite(cross["n2"]):
            at = _position_of(cross["n2"], n2_values)
            lo = _position_of(cross["ci_low"], n2_values) if _finite(cross["ci_low"]) else x[0]
            hi = _position_of(cross["ci_high"], n2_values) if _finite(cross["ci_high"]) else x[-1]
            fig.add_trace(go.Scatter(
                x=[at], y=[1.0], mode="markers", marker=dict(symbol="diamond", size=10, color=PALETTE[1]),
                error_x=dict(type="data", symmetric=False, array=[hi - at], arrayminus=[at - lo], color=PALETTE[1],
                             thickness=2, width=6),
                name="crossing n2 (95% CI)", legendgroup="crossing", showlegend=first or "crossing" not in
                {t.legendgroup for t in fig.data if t.showlegend},
                hovertext=f"crossing n2 {cross['n2']:.0f}", hoverinfo="text"), row=row, col=1)
        fig.update_yaxes(title_text="ratio d(H1 pairs) / d(H2 pairs)", row=row, col=1)
        _x_axis(fig, n2_values, row, 1)
    fig.update_xaxes(title_text=X_TITLE, row=len(keys), col=1)
    over = f"<br><sup>node means over the last {window} words before each end point</sup>" if window else ""
    return layout(fig, f"Switch ratio after n2 words on G2 (mean, 95% bootstrap CI over contexts){over}",
                  height=230 * len(keys) + 190, legend_below=True)


def pair_classes_figure(table: dict, n2_values, layers_keys=None) -> go.Figure:
    """One panel per layer: the mean distance of each pair class over unrelated pairs (different clusters under
    both clusterings), with 95% CIs: below 1 means those pairs sit closer together than unrelated ones."""
    keys = list(layers_keys or table["crossing"])
    x = list(n2_positions(n2_values))
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, vertical_spacing=0.06 if len(keys) > 1 else 0,
                        subplot_titles=[key.replace("_", " ") for key in keys])
    for row, key in enumerate(keys, start=1):
        for name, label, color in PAIR_SERIES:
            band(fig, x, *_series(table, n2_values, key, name), name=label, color=color, row=row, col=1,
                 showlegend=row == 1, marker=dict(size=5))
        fig.add_hline(y=1, line=dict(color="#999", width=1, dash="dot"), row=row, col=1)
        fig.update_yaxes(title_text="distance / unrelated pairs", row=row, col=1)
        _x_axis(fig, n2_values, row, 1)
    fig.update_xaxes(title_text=X_TITLE, row=len(keys), col=1)
    return layout(fig, "Node-mean distance of each pair class over unrelated pairs (mean, 95% CI over contexts)",
                  height=230 * len(keys) + 190, legend_below=True)


def crossing_figure(tables: dict, n2_values, window: int | None = None) -> go.Figure:
    """The crossing n2 per layer with its 95% CI: pooled over graph pairs (diamonds) and per graph pair (small
    points, spread to the right). Layers whose ratio does not start below 1 or never reaches it have no point; an
    open upper end is drawn to the largest n2. A dashed line marks the window: below it, the window still holds
    words from before the switch."""
    fig = go.Figure()
    largest = float(max(n2_values))
    pairs = [name for name in tables if name.startswith("graph_pair_")]
    keys = list(tables["pooled"]["crossing"])
    offsets = np.linspace(0.0, 0.35, len(pairs)) if len(pairs) > 1 else np.zeros(len(pairs))
    for name, offset in [("pooled", -0.15)] + list(zip(pairs, offsets)):
        xs, ys, up, down, text = [], [], [], [], []
        for position, key in enumerate(keys):
            cross = tables[name]["crossing"][key]
            if not _finite(cross["n2"]):
                continue
            hi = float(cross["ci_high"]) if _finite(cross["ci_high"]) else largest
            lo = float(cross["ci_low"]) if _finite(cross["ci_low"]) else 0.0
            xs.append(position + offset)
            ys.append(float(cross["n2"]))
            up.append(hi - float(cross["n2"]))
            down.append(float(cross["n2"]) - lo)
            text.append(f"{name}, {key}: {cross['n2']:.0f} [{lo:.0f}, {hi:.0f}{'' if _finite(cross['ci_high']) else '+'}]")
        pooled = name == "pooled"
        color = PALETTE[0] if pooled else rgba("#555555", 0.6)
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="markers", name="pooled over graph pairs" if pooled else "one graph pair",
            legendgroup="pooled" if pooled else "pairs", showlegend=pooled or name == pairs[0],
            marker=dict(size=11 if pooled else 6, color=color, symbol="diamond" if pooled else "circle"),
            error_y=dict(type="data", symmetric=False, array=up, arrayminus=down, thickness=2 if pooled else 1,
                         color=color, width=4 if pooled else 2),
            hovertext=text, hoverinfo="text"))
    if window:
        fig.add_hline(y=window, line=dict(color="#999", width=1, dash="dash"),
                      annotation_text=f"window: {window} words", annotation_position="top left")
    fig.update_xaxes(title_text="layer (decoder block)", tickvals=list(range(len(keys))),
                     ticktext=[str(parse_layer_key(k)) for k in keys], range=[-0.6, len(keys) - 0.4])
    fig.update_yaxes(title_text="crossing n2 (words on G2)", rangemode="tozero")
    return layout(fig, "n2 at which the switch ratio reaches 1 (95% bootstrap CI over contexts)", height=420,
                  legend_below=True)
