"""Figures of the leave-one-out family (loo, loo_multilayer, loo_heatmap, compare_loo_metrics).

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


def _unit(metric: str) -> str:
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
    fig.update_yaxes(title_text=f"{metric}(full) − {metric}(without p) ({_unit(metric)})")
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
        f"mean influence on {metric} ({_unit(metric)})",
        f"Bridge vs anchor influence on {metric}, layer {layer} (95% CI, contexts resampled)")


def temporal_figure(table, metric: str = "ratio", layer=None):
    """Influence of fixed positions as the context grows past them, one panel per word set."""
    layer = _layer_or_last(table, layer)
    sub = table[(table["layer"] == layer) & (table["metric"] == metric)]
    return _panels_over_n(
        sub, lambda rows: [(f"position {position}", PALETTE[i % len(PALETTE)], g.sort_values("N"))
                           for i, (position, g) in enumerate(rows.groupby("position"))],
        f"influence on {metric} ({_unit(metric)})",
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
    return layout(fig, f"Leave-one-out influence on {metric} ({_unit(metric)}): layer x context length",
                  height=300 * len(panels) + 80)


def metric_curves_figure(curves):
    """Full-context metrics against N with 95% intervals over contexts, one panel per metric."""
    metrics = list(dict.fromkeys(curves["metric"]))
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[f"{m} ({_unit(m)})" for m in metrics])
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


def influence_scatter_figure(wide, correlations, x: str = "ratio", y: str = "within_sq", layer=None):
    """Influence on one metric against influence on another (every position, N, context) at one layer; the legend
    gives each word set's correlations."""
    layer = _layer_or_last(wide, layer)
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
    fig.update_xaxes(title_text=f"influence on {x} ({_unit(x)})")
    fig.update_yaxes(title_text=f"influence on {y} ({_unit(y)})")
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
        fig.update_yaxes(title_text=f"CSS (nats x {_unit(metric)})", row=r, col=1)
    fig.update_xaxes(title_text="word position", row=max(len(conditions), 1), col=1)
    layer = css_table["layer"].iloc[0] if len(css_table) else ""
    return layout(fig, f"CSS = −Cov over contexts (word loss, {metric}), layer {layer} (95% CI)",
                  height=280 * max(len(conditions), 1) + 120, legend_below=True)
