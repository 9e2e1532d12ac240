"""Figures of the analyses. compare_experiments: one panel per metric, one line per run (and word set) with its 95%
interval, the experiment's null as a dotted line where it has one. compare_loo_metrics: the full-context metrics over
N, the influences on two metrics against each other, CSS across contexts (in the colours and units of the
leave-one-out family's figures). Every number written on a figure is computed from the data drawn."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.experiments.loo.figures import COLORS, metric_unit
from iclnb.plotting.style import PALETTE, band, layout, log_x

__all__ = ["curves_figure", "metric_curves_figure", "influence_scatter_figure", "css_figure"]

_DASHES = ("solid", "dash", "dashdot", "longdash")  # "dot" is the null's
_PANEL_HEIGHT = 250


def _name(run: str, model: str, condition: str) -> str:
    return f"{run} ({model})" + (f", {condition}" if condition else "")


def curves_figure(curves, metrics, x: str = "N", title: str = "", y_title: str = "mean over contexts (95% CI)",
                  annotate_change: bool = False):
    """``curves`` (tidy rows) drawn over ``x`` ("N", "layer" or "depth"), one panel per metric in ``metrics``.
    ``annotate_change`` writes at the end of each curve its last value over its first (computed here)."""
    metrics = [m for m in metrics if (curves["metric"] == m).any()] or list(metrics)[:1]
    cols = 1 if len(metrics) == 1 else 2
    rows = max(1, math.ceil(len(metrics) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=metrics, horizontal_spacing=0.1,
                        vertical_spacing=min(0.12, 0.3 / rows) if rows > 1 else 0.1)
    series = list(dict.fromkeys(zip(curves["run"], curves["model"], curves["condition"])))
    runs = list(dict.fromkeys(curves["run"]))
    conditions = [c for c in dict.fromkeys(curves["condition"]) if c]
    shown = set()
    null_shown = False
    for i, metric in enumerate(metrics):
        row, col = i // cols + 1, i % cols + 1
        for run, model, condition in series:
            sub = curves[(curves["metric"] == metric) & (curves["run"] == run) & (curves["condition"] == condition)]
            sub = sub.sort_values(x)
            if sub.empty:
                continue
            name = _name(run, model, condition)
            color = PALETTE[runs.index(run) % len(PALETTE)]
            dash = _DASHES[conditions.index(condition) % len(_DASHES)] if condition else "solid"
            if len(sub) == 1:  # one point: its interval as an error bar (a band needs two)
                fig.add_trace(go.Scatter(
                    x=list(sub[x]), y=list(sub["mean"]), mode="markers", name=name, legendgroup=name,
                    marker=dict(size=7, color=color), showlegend=name not in shown,
                    error_y=dict(type="data", symmetric=False, color=color, thickness=1.5, width=5,
                                 array=list((sub["ci_high"] - sub["mean"]).fillna(0)),
                                 arrayminus=list((sub["mean"] - sub["ci_low"]).fillna(0)))), row=row, col=col)
            else:
                band(fig, sub[x], sub["mean"], sub["ci_low"], sub["ci_high"], name, color, row=row, col=col,
                     showlegend=name not in shown, marker=dict(size=6), dash=dash)
            shown.add(name)
            if np.isfinite(sub["null"]).any():
                fig.add_trace(go.Scatter(x=list(sub[x]), y=list(sub["null"]), mode="lines+markers",
                                         line=dict(color=color, dash="dot", width=1.5),
                                         marker=dict(symbol="x", size=7, color=color),
                                         name="null (× on a dotted line, in the run's colour)", legendgroup="null",
                                         showlegend=not null_shown), row=row, col=col)
                null_shown = True
            if annotate_change and len(sub) > 1 and np.isfinite(sub["mean"].iloc[-1]):
                first, last = sub["mean"].iloc[0], sub["mean"].iloc[-1]
                if np.isfinite(first) and first != 0:
                    fig.add_annotation(x=math.log10(sub[x].iloc[-1]) if x == "N" else sub[x].iloc[-1],
                                       y=last, text=f"×{last / first:.3g}", showarrow=False, xanchor="left",
                                       xshift=6, font=dict(size=10, color=color), row=row, col=col)
        if x == "N":
            log_x(fig, curves["N"].dropna(), "N (words, log scale)", row=row, col=col)
        else:
            fig.update_xaxes(title_text="block" if x == "layer" else "relative depth: block / (blocks − 1)",
                             row=row, col=col)
        if col == 1:
            fig.update_yaxes(title_text=y_title, row=row, col=col)
    if annotate_change:
        fig.update_xaxes(automargin=True)
        for axis in fig.layout:
            if axis.startswith("xaxis") and fig.layout[axis].type == "log":
                values = [v for v in fig.layout[axis].tickvals or []]
                if values:
                    low, high = math.log10(min(values)), math.log10(max(values))
                    pad = max(0.15, 0.18 * (high - low))
                    fig.layout[axis].range = [low - 0.05 * (high - low or 1), high + pad]
    legend_rows = math.ceil((len(shown) + null_shown) / 2)
    bottom = 80 + 22 * legend_rows
    height = 90 + rows * _PANEL_HEIGHT + bottom
    layout(fig, title, height=height, legend_below=True, margin=dict(l=70, r=30, t=80, b=bottom))
    fig.update_layout(legend=dict(y=-66 / (height - 80 - bottom)))
    for annotation in fig.layout.annotations[: len(metrics)]:
        annotation.font = dict(size=13)
    return fig


def metric_curves_figure(curves):
    """Full-context metrics against N with 95% intervals over contexts, one panel per metric."""
    metrics = list(dict.fromkeys(curves["metric"]))
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[f"{m} ({metric_unit(m)})" for m in metrics])
    for m, metric in enumerate(metrics, start=1):
        for condition, g in curves[curves["metric"] == metric].groupby("condition", sort=False):
            g = g.sort_values("N")
            band(fig, g["N"], g["mean"], g["ci_low"], g["ci_high"], condition, COLORS.get(condition, PALETTE[0]),
                 row=m, col=1, showlegend=m == 1, marker=dict(size=6))
        fig.update_yaxes(title_text=metric, row=m, col=1)
    log_x(fig, curves["N"], "context length N (words)", row=len(metrics), col=1)
    layer = curves["layer"].iloc[0] if len(curves) else ""
    return layout(fig, f"Full-context metrics vs N, layer {layer} (95% CI over contexts)",
                  height=220 * len(metrics) + 120, legend_below=True)


def influence_scatter_figure(wide, correlations, x: str, y: str, layer: int):
    """Influence on one metric against influence on another (every position, N, context) at one layer; the legend
    gives each word set's correlations."""
    layer = int(layer)
    sub = wide[wide["layer"] == layer]
    fig = go.Figure()
    for condition, g in sub.groupby("condition", sort=False):
        row = correlations[(correlations["condition"] == condition) & (correlations["layer"] == layer)]
        r = row["pearson_r"].iloc[0] if len(row) else np.nan
        rho = row["spearman_rho"].iloc[0] if len(row) else np.nan
        fig.add_trace(go.Scatter(x=g[x], y=g[y], mode="markers",
                                 marker=dict(size=5, opacity=0.5, color=COLORS.get(condition)),
                                 name=f"{condition} (Pearson r = {r:.2f}, Spearman ρ = {rho:.2f})", text=g["N"],
                                 hovertemplate=f"{x} %{{x:.4g}}<br>{y} %{{y:.4g}}<br>N %{{text}}"))
    fig.update_xaxes(title_text=f"influence on {x} ({metric_unit(x)})")
    fig.update_yaxes(title_text=f"influence on {y} ({metric_unit(y)})")
    return layout(fig, f"Influence on {y} vs influence on {x}, layer {layer}", legend_below=True)


def css_figure(css_table):
    """CSS(position, M) across contexts with 95% intervals, one panel per word set, one line per N."""
    conditions = list(dict.fromkeys(css_table["condition"]))
    metric = css_table["metric"].iloc[0] if len(css_table) else "metric"
    fig = make_subplots(rows=max(len(conditions), 1), cols=1, subplot_titles=conditions, shared_xaxes=True)
    lengths = sorted(css_table["N"].unique())
    for r, condition in enumerate(conditions, start=1):
        for i, n_words in enumerate(lengths):
            g = css_table[(css_table["condition"] == condition) & (css_table["N"] == n_words)].sort_values("position")
            band(fig, g["position"], g["css"], g["ci_low"], g["ci_high"], f"N = {n_words}",
                 PALETTE[i % len(PALETTE)], row=r, col=1, showlegend=r == 1)
        fig.update_yaxes(title_text=f"CSS (nats x {metric_unit(metric)})", row=r, col=1)
    fig.update_xaxes(title_text="word position", row=max(len(conditions), 1), col=1)
    layer = css_table["layer"].iloc[0] if len(css_table) else ""
    return layout(fig, f"CSS = −Cov over contexts (word loss, {metric}), layer {layer} (95% CI)",
                  height=280 * max(len(conditions), 1) + 120, legend_below=True)
