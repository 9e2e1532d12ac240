"""Figures of the superposition family: the two graphs of a dual graph, per-position series around the
disambiguating step, statistics at the step beside their nulls, decoding accuracy, and graph adherence per window."""

from __future__ import annotations

import dataclasses

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.core.layers import parse_layer_key
from iclnb.plotting.graph import graph_figure
from iclnb.plotting.style import PALETTE, band, layout

SERIES_TITLES = {
    "score": "Superposition score toward the true hypothesis",
    "d_true": "Distance to the true hypothesis' mates",
    "d_false": "Distance to the false hypothesis' mates",
    "ratio": "d_true / d_false",
    "velocity": "Velocity ||r_t − r_t−1||",
}
#: Each series' y-axis title with its unit.
SERIES_AXES = {"score": "score (−1 false, +1 true)", "d_true": "residual norms", "d_false": "residual norms",
               "ratio": "ratio", "velocity": "residual norms"}
STEP_TITLES = {
    "collapse": "collapse (change of d_false − d_true, residual norms)",
    "velocity_spike": "velocity spike (residual norms)",
    "score_change": "change of the superposition score",
    "collapse_raw": "collapse (residual units, not normalised)",
}
STEP_AXES = {"collapse": "residual norms", "velocity_spike": "residual norms", "score_change": "score",
             "collapse_raw": "residual units"}


def _condition_label(key: str) -> str:
    c = key.removeprefix("condition_")
    return "never revealed" if c == "never" else f"D at {c}%"


def dual_graph_figures(graph) -> tuple[go.Figure, go.Figure]:
    """G1 coloured by H1 and G2 coloured by H2, each in its own layout."""
    g2 = dataclasses.replace(graph, adjacency=np.asarray(graph.extra["G2_adjacency"]))
    return (graph_figure(graph, "H1", title=f"G1 ({len(graph.edges())} edges), nodes coloured by clustering H1"),
            graph_figure(g2, "H2", title=f"G2 ({len(g2.edges())} edges), nodes coloured by clustering H2"))


def series_figure(summary: dict, name: str = "score") -> go.Figure:
    """One panel per condition: the per-position mean of a series with its 95% CI over contexts, one line per
    layer; a dotted vertical line marks the disambiguating step D."""
    keys = list(summary)
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=[_condition_label(k) for k in keys])
    for row, ckey in enumerate(keys, start=1):
        for i, (lkey, e) in enumerate(summary[ckey].items()):
            s = e["per_position"][name]
            x = np.arange(len(s["mean"]))
            band(fig, x, s["mean"], s["ci_low"], s["ci_high"], name=lkey.replace("_", " "),
                 color=PALETTE[i % len(PALETTE)], row=row, col=1, showlegend=row == 1)
        first = next(iter(summary[ckey].values()))
        if not ckey.endswith("never"):
            fig.add_vline(x=first["disambiguate_at"], line=dict(color="#555", width=1, dash="dot"), row=row, col=1)
        if name == "score":
            fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=row, col=1)
        fig.update_yaxes(title_text=SERIES_AXES[name], row=row, col=1)
    fig.update_xaxes(title_text="word position", row=len(keys), col=1)
    return layout(fig, f"{SERIES_TITLES[name]} by position (95% CI over contexts)",
                  height=190 * len(keys) + 160, legend_below=True)


def step_figure(summary: dict, stats=("collapse", "velocity_spike")) -> go.Figure:
    """Per layer and condition, each statistic at D with its 95% CI (filled markers), beside the same statistic at
    random non-disambiguating steps of the same contexts (open markers) and at D in the never-revealed control
    (crosses)."""
    keys = [k for k in summary if not k.endswith("never")]
    fig = make_subplots(rows=len(stats), cols=1, shared_xaxes=True, vertical_spacing=0.09,
                        subplot_titles=[STEP_TITLES[s] for s in stats])
    layers = list(next(iter(summary.values())))
    x0 = np.arange(len(layers), dtype=float)
    width = 0.8 / max(len(keys), 1)
    for row, stat in enumerate(stats, start=1):
        for i, ckey in enumerate(keys):
            color = PALETTE[i % len(PALETTE)]
            x = x0 - 0.4 + width * (i + 0.5)
            kinds = (("at D", lambda e: e[stat], "circle", 0.0),
                     ("random steps", lambda e: e[stat]["null"]["random_steps"], "circle-open", -0.22),
                     ("never revealed", lambda e: e[stat]["null"]["never_revealed"], "x-thin-open", 0.22))
            for kind, get, symbol, shift in kinds:
                vals = [get(summary[ckey][lk]) for lk in layers]
                mean = np.array([v["mean"] for v in vals], dtype=float)
                low = np.array([v["ci_low"] for v in vals], dtype=float)
                high = np.array([v["ci_high"] for v in vals], dtype=float)
                fig.add_trace(go.Scatter(
                    x=x + shift * width, y=mean, mode="markers", name=f"{_condition_label(ckey)}: {kind}",
                    legendgroup=f"{ckey}{kind}", showlegend=row == 1,
                    marker=dict(color=color, symbol=symbol, size=8, line=dict(width=1.5, color=color)),
                    error_y=dict(type="data", symmetric=False, array=high - mean, arrayminus=mean - low,
                                 color=color, thickness=1.2, width=3)), row=row, col=1)
        fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=row, col=1)
        fig.update_yaxes(title_text=STEP_AXES[stat], row=row, col=1)
    fig.update_xaxes(showgrid=False, zeroline=False)
    fig.update_xaxes(tickvals=x0, ticktext=[str(parse_layer_key(lk)) for lk in layers], row=len(stats), col=1,
                     title_text="layer (decoder block)")
    return layout(fig, "At the disambiguating step D vs random steps and the control (95% bootstrap CI)",
                  height=300 * len(stats) + 200, legend_below=True)


def accuracy_figure(summary: dict) -> go.Figure:
    """Decoding accuracy of the true hypothesis from D on, per layer and condition, with its 95% CI; dashed: the
    never-revealed control read at the same positions; dotted: chance (0.5)."""
    fig = go.Figure()
    keys = [k for k in summary if not k.endswith("never")]
    layers = list(next(iter(summary.values())))
    names = [str(parse_layer_key(lk)) for lk in layers]
    for i, ckey in enumerate(keys):
        color = PALETTE[i % len(PALETTE)]
        acc = [summary[ckey][lk]["accuracy"] for lk in layers]
        ctl = [a["control"] for a in acc]
        band(fig, list(range(len(names))), [a["mean"] for a in acc], [a["ci_low"] for a in acc],
             [a["ci_high"] for a in acc], name=_condition_label(ckey), color=color, marker=dict(size=7))
        band(fig, list(range(len(names))), [a["mean"] for a in ctl], [a["ci_low"] for a in ctl],
             [a["ci_high"] for a in ctl], name=f"control at the positions of {_condition_label(ckey)}",
             color=color, dash="dash")
    fig.add_hline(y=0.5, line=dict(color="#999", width=1, dash="dot"))
    fig.update_xaxes(tickvals=list(range(len(names))), ticktext=names, title_text="layer (decoder block)")
    fig.update_yaxes(title_text="accuracy (fraction of contexts)", range=[0, 1.02])
    return layout(fig, "Decoding the true hypothesis from D on (95% bootstrap CI over contexts)", height=520,
                  legend_below=True)


# ------------------------------------------------------------------------------------------------ graph adherence

ADHERENCE_TITLES = {
    "energy_ratio": "energy ratio",
    "separation_ratio": "separation ratio",
    "probe_ratio": "probe ratio",
    "knn_ratio": "kNN ratio",
    "mean": "mean of the four",
}


def adherence_figure(summary: dict, layer_key: str, metrics, orientation: str = "toward_truth") -> go.Figure:
    """One panel per metric at one layer: the per-window mean with its 95% CI over contexts, one line per
    condition (toward the true hypothesis, or oriented to H1 for contexts whose truth is H1/H2); dotted: 0.5."""
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.05,
                        subplot_titles=[ADHERENCE_TITLES.get(m, m) for m in metrics])
    for row, metric in enumerate(metrics, start=1):
        for i, (ckey, by_layer) in enumerate(summary.items()):
            e = by_layer[layer_key]
            s = e["metrics"][metric][orientation]
            color = "#444444" if ckey.endswith("never") else PALETTE[i % len(PALETTE)]
            band(fig, e["window_ends"], s["mean"], s["ci_low"], s["ci_high"], name=_condition_label(ckey),
                 color=color, row=row, col=1, showlegend=row == 1, dash="dash" if ckey.endswith("never") else None)
        fig.add_hline(y=0.5, line=dict(color="#999", width=1, dash="dot"), row=row, col=1)
        fig.update_yaxes(title_text="ratio (> 0.5: " + ("true" if orientation == "toward_truth" else "H1") + ")",
                         row=row, col=1, title_font=dict(size=12))
    fig.update_xaxes(title_text="end of the window (word position)", row=len(metrics), col=1)
    what = "toward the true hypothesis" if orientation == "toward_truth" else f"oriented to H1, contexts {orientation}"
    return layout(fig, f"Graph adherence per window at {layer_key.replace('_', ' ')}, {what} (95% CI)",
                  height=210 * len(metrics) + 170, legend_below=True)


def adherence_heatmap(summary: dict, metric: str = "mean", part: str = "after") -> go.Figure:
    """Condition x layer: the mean adherence toward the true hypothesis over the windows after D (``part``)."""
    ckeys = list(summary)
    lkeys = list(next(iter(summary.values())))
    z = np.array([[summary[c][lk]["metrics"][metric][part]["mean"] for lk in lkeys] for c in ckeys], dtype=float)
    text = [[f"{v:.2f}" if np.isfinite(v) else "" for v in r] for r in z]
    fig = go.Figure(go.Heatmap(z=z, x=[str(parse_layer_key(lk)) for lk in lkeys],
                               y=[_condition_label(c) for c in ckeys], zmid=0.5, colorscale="RdBu",
                               text=text, texttemplate="%{text}",
                               colorbar=dict(title="ratio<br>(> 0.5:<br>true)")))
    fig.update_xaxes(type="category", title_text="layer (decoder block)")
    fig.update_yaxes(title_text="condition", autorange="reversed")
    where = "windows after D (never revealed: its second half)" if part == "after" else "windows before D"
    return layout(fig, f"{ADHERENCE_TITLES.get(metric, metric)} toward the true hypothesis, {where}",
                  height=120 + 45 * len(ckeys))
