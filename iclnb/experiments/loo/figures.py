"""Plotly figures of the leave-one-out experiments (loo, loo_multilayer, loo_heatmap, compare_loo_metrics).

Every builder takes a tidy DataFrame from ``iclnb.experiments.loo`` and returns a ``plotly.graph_objects.Figure``;
titles and labels come from the data, never hard-coded findings.
"""

from __future__ import annotations

import numpy as np

from iclnb.figures import PALETTE as _PALETTE
from iclnb.figures import ci_band

COLORS = {"semantic": "#1f77b4", "unrelated": "#ff7f0e", "bridge": "#d62728", "anchor": "#2ca02c"}


def _band(fig, x, low, high, color, name, row=None, col=None, showlegend=False):
    trace = ci_band(list(x), low, high, color, name, showlegend=showlegend)
    fig.add_trace(trace, row=row, col=col) if row is not None else fig.add_trace(trace)


def _layer_or_last(table, layer):
    return int(table["layer"].max()) if layer is None else int(layer)


def influence_by_position_figure(influence, metric: str = "ratio", layer=None, n_words=None):
    """Mean influence (over trials) of each position at one layer and context length; bridges marked."""
    import plotly.graph_objects as go

    layer = _layer_or_last(influence, layer)
    n_words = int(influence["N"].max()) if n_words is None else int(n_words)
    sub = influence[(influence["layer"] == layer) & (influence["metric"] == metric) & (influence["N"] == n_words)]
    fig = go.Figure()
    for condition, group in sub.groupby("condition", sort=False):
        stats = group.groupby("position").agg(mean=("influence", "mean"), bridge=("is_bridge", "mean")).reset_index()
        fig.add_trace(go.Scatter(
            x=stats["position"], y=stats["mean"], mode="lines+markers", name=condition,
            line=dict(color=COLORS.get(condition)),
            marker=dict(size=7, color=stats["bridge"], colorscale="Reds", cmin=0, cmax=1,
                        line=dict(color=COLORS.get(condition), width=1),
                        colorbar=dict(title="bridge share", x=1.1) if condition == sub["condition"].iloc[0] else None),
            hovertemplate="position %{x}<br>influence %{y:.4g}<br>bridge share %{marker.color:.2f}"))
    fig.add_hline(y=0, line=dict(color="grey", width=1, dash="dot"))
    fig.update_layout(title=f"Influence on {metric} by deleted position (N={n_words}, layer {layer}; marker colour: "
                            f"share of trials where the position is a bridge)",
                      xaxis_title="deleted word position", yaxis_title=f"{metric}(full) − {metric}(without p)",
                      template="plotly_white")
    return fig


def bridge_anchor_figure(table, metric: str = "ratio", layer=None):
    """Bridge vs anchor mean influence with 95% intervals against N, one panel per condition, at one layer."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    layer = _layer_or_last(table, layer)
    sub = table[(table["layer"] == layer) & (table["metric"] == metric)]
    conditions = list(dict.fromkeys(sub["condition"]))
    fig = make_subplots(rows=1, cols=len(conditions), subplot_titles=conditions, shared_yaxes=True)
    for c, condition in enumerate(conditions, start=1):
        for cls in ("bridge", "anchor"):
            g = sub[(sub["condition"] == condition) & (sub["class"] == cls)].sort_values("N")
            _band(fig, g["N"], g["ci_low"], g["ci_high"], COLORS[cls], cls, row=1, col=c)
            fig.add_trace(go.Scatter(x=g["N"], y=g["mean"], mode="lines+markers", name=cls, legendgroup=cls,
                                     line=dict(color=COLORS[cls]), showlegend=c == 1), row=1, col=c)
        fig.add_hline(y=0, line=dict(color="grey", width=1, dash="dot"), row=1, col=c)
        fig.update_xaxes(type="log", title_text="context length N (words)", row=1, col=c)
    fig.update_yaxes(title_text=f"mean influence on {metric}", row=1, col=1)
    fig.update_layout(title=f"Bridge vs anchor influence on {metric}, layer {layer} (95% bootstrap over trials)",
                      template="plotly_white")
    return fig


def temporal_figure(table, metric: str = "ratio", layer=None):
    """Influence of fixed positions as the context grows, one panel per condition."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    layer = _layer_or_last(table, layer)
    sub = table[(table["layer"] == layer) & (table["metric"] == metric)]
    conditions = list(dict.fromkeys(sub["condition"]))
    fig = make_subplots(rows=1, cols=max(len(conditions), 1), subplot_titles=conditions, shared_yaxes=True)
    for c, condition in enumerate(conditions, start=1):
        for i, (position, g) in enumerate(sub[sub["condition"] == condition].groupby("position")):
            g = g.sort_values("N")
            color = _PALETTE[i % len(_PALETTE)]
            _band(fig, g["N"], g["ci_low"], g["ci_high"], color, f"position {position}", row=1, col=c)
            fig.add_trace(go.Scatter(x=g["N"], y=g["mean"], mode="lines+markers", name=f"position {position}",
                                     legendgroup=f"position {position}", line=dict(color=color), showlegend=c == 1),
                          row=1, col=c)
        fig.update_xaxes(type="log", title_text="context length N (words)", row=1, col=c)
    fig.update_yaxes(title_text=f"influence on {metric}", row=1, col=1)
    fig.update_layout(title=f"Influence of fixed positions on {metric} as N grows, layer {layer} (95% bootstrap "
                            "over trials)", template="plotly_white")
    return fig


def heatmap_figure(table, metric: str = "ratio"):
    """Layer x N heatmaps of the influence: rows (condition, class), columns mean / std."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    sub = table[table["metric"] == metric]
    conditions = list(dict.fromkeys(sub["condition"]))
    panels = [(c, cls) for c in conditions for cls in ("bridge", "anchor")]
    fig = make_subplots(rows=len(panels), cols=2, horizontal_spacing=0.12, vertical_spacing=0.06,
                        subplot_titles=[f"{c} · {cls} · {stat}" for c, cls in panels for stat in ("mean", "std")])
    for r, (condition, cls) in enumerate(panels, start=1):
        g = sub[(sub["condition"] == condition) & (sub["class"] == cls)]
        for c, stat in enumerate(("mean", "std"), start=1):
            grid = g.pivot_table(index="layer", columns="N", values=stat, dropna=False).sort_index()
            z = grid.to_numpy(dtype=float)
            finite = z[np.isfinite(z)]
            bound = float(np.abs(finite).max()) if finite.size else 1.0
            kwargs = dict(colorscale="RdBu_r", zmid=0, zmin=-bound, zmax=bound) if stat == "mean" else \
                dict(colorscale="Viridis")
            fig.add_trace(go.Heatmap(z=z, x=[str(n) for n in grid.columns], y=grid.index.tolist(), **kwargs,
                                     colorbar=dict(len=0.9 / len(panels), y=1 - (r - 0.5) / len(panels),
                                                   x=0.44 if c == 1 else 1.0, thickness=10),
                                     hovertemplate="N %{x}<br>layer %{y}<br>" + stat + " %{z:.4g}<extra></extra>"),
                          row=r, col=c)
            fig.update_xaxes(title_text="N", type="category", row=r, col=c)
            fig.update_yaxes(title_text="layer", type="category", row=r, col=c)
    fig.update_layout(title=f"Leave-one-out influence on {metric}: layer x context length", template="plotly_white",
                      height=320 * len(panels), width=1000)
    return fig


def metric_curves_figure(curves):
    """Full-context metrics against N with 95% intervals over trials, one panel per metric."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    metrics = list(dict.fromkeys(curves["metric"]))
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    for m, metric in enumerate(metrics, start=1):
        for condition, g in curves[curves["metric"] == metric].groupby("condition", sort=False):
            g = g.sort_values("N")
            color = COLORS.get(condition)
            _band(fig, g["N"], g["ci_low"], g["ci_high"], color, condition, row=1, col=m)
            fig.add_trace(go.Scatter(x=g["N"], y=g["mean"], mode="lines+markers", name=condition,
                                     legendgroup=condition, line=dict(color=color), showlegend=m == 1), row=1, col=m)
        fig.update_xaxes(type="log", title_text="N (words)", row=1, col=m)
    layer = curves["layer"].iloc[0] if len(curves) else ""
    fig.update_layout(title=f"Full-context metrics vs N, layer {layer} (95% bootstrap over trials)",
                      template="plotly_white", width=300 * len(metrics) + 200)
    return fig


def influence_scatter_figure(wide, correlations, x: str = "ratio", y: str = "energy", layer=None):
    """Influence on one metric against influence on another (every position, N, trial) at one layer."""
    import plotly.graph_objects as go

    layer = _layer_or_last(wide, layer)
    sub = wide[wide["layer"] == layer]
    fig = go.Figure()
    for condition, g in sub.groupby("condition", sort=False):
        row = correlations[(correlations["condition"] == condition) & (correlations["layer"] == layer)]
        r = row["pearson_r"].iloc[0] if len(row) else np.nan
        rho = row["spearman_rho"].iloc[0] if len(row) else np.nan
        fig.add_trace(go.Scatter(x=g[x], y=g[y], mode="markers", marker=dict(size=5, opacity=0.5,
                                                                             color=COLORS.get(condition)),
                                 name=f"{condition} (r={r:.2f}, ρ={rho:.2f})", text=g["N"],
                                 hovertemplate=f"{x} %{{x:.4g}}<br>{y} %{{y:.4g}}<br>N %{{text}}"))
    fig.update_layout(title=f"Influence on {y} vs influence on {x}, layer {layer}", xaxis_title=f"influence on {x}",
                      yaxis_title=f"influence on {y}", template="plotly_white")
    return fig


def css_figure(css_table):
    """CSS(position, Φ) across trials with 95% intervals, one panel per condition, one line per N."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    conditions = list(dict.fromkeys(css_table["condition"]))
    fig = make_subplots(rows=len(conditions), cols=1, subplot_titles=conditions, shared_xaxes=True)
    lengths = sorted(css_table["N"].unique())
    for r, condition in enumerate(conditions, start=1):
        for i, n_words in enumerate(lengths):
            g = css_table[(css_table["condition"] == condition) & (css_table["N"] == n_words)].sort_values("position")
            color = _PALETTE[i % len(_PALETTE)]
            ok = g[np.isfinite(g["ci_low"].astype(float))]
            if len(ok):
                _band(fig, ok["position"], ok["ci_low"], ok["ci_high"], color, f"N={n_words}", row=r, col=1)
            fig.add_trace(go.Scatter(x=g["position"], y=g["css"], mode="lines", name=f"N={n_words}",
                                     legendgroup=f"N={n_words}", line=dict(color=color), showlegend=r == 1),
                          row=r, col=1)
        fig.update_yaxes(title_text="CSS = −Cov(loss, Φ)", row=r, col=1)
    fig.update_xaxes(title_text="word position", row=len(conditions), col=1)
    layer = css_table["layer"].iloc[0] if len(css_table) else ""
    fig.update_layout(title=f"Context sensitivity of each position's loss to Φ (ratio) across trials, layer {layer}",
                      template="plotly_white", height=300 * len(conditions) + 100)
    return fig
