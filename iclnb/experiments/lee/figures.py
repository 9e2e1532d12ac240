"""reproduce_lee's figures: CSS over context length, sign flips against their null, peaks, Φ per level, the
cluster-pair matrices and cluster-mean MDS (Part A); the token x token BIF, BIF at bridge / anchor words, BIF
against leave-one-out and CSS, and the SGLD diagnostics (Part B)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.plotting.style import PALETTE, band, layout

LEVEL_TITLES = {"level_1": "super-clusters (level 1)", "level_2": "sub-clusters (level 2)"}


def _zmax(values) -> float:
    v = np.abs(np.asarray(values, dtype=float))
    return float(np.nanmax(v)) if np.isfinite(v).any() and np.nanmax(v) > 0 else 1.0


def css_over_n_figure(traj: dict, lengths, positions=(1, 2, 5, 9)) -> go.Figure:
    """Left: CSS of every position (x) at every N (y), against Φ of level 1. Right: CSS of a few positions over N
    with 95% bootstrap CIs."""
    s = traj["level_1"]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.2,
                        subplot_titles=["CSS(word at position, Φ level 1)", "selected positions over N"])
    z = s["css"]
    zmax = _zmax(z)
    fig.add_trace(go.Heatmap(z=z, x=np.arange(z.shape[1]), y=[str(n) for n in lengths], colorscale="RdBu",
                             zmid=0, zmin=-zmax, zmax=zmax,
                             colorbar=dict(title="CSS<br>(nats x Φ)", x=0.45, len=0.9)), row=1, col=1)
    for i, pos in enumerate(p for p in positions if p < z.shape[1]):
        band(fig, list(lengths), s["css"][:, pos], s["ci_low"][:, pos], s["ci_high"][:, pos], name=f"position {pos}",
             color=PALETTE[i % len(PALETTE)], row=1, col=2, marker=dict(size=6))
    fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=1, col=2)
    fig.update_xaxes(title_text="word position", row=1, col=1)
    fig.update_yaxes(title_text="context length N (words)", type="category", row=1, col=1)
    fig.update_xaxes(title_text="context length N (words)", row=1, col=2)
    fig.update_yaxes(title_text="CSS (nats x Φ)", row=1, col=2)
    return layout(fig, "CSS per position across context length (95% bootstrap CI over contexts)", height=460,
                  legend_below=True)


def sign_flip_figure(flips: dict) -> go.Figure:
    """The permutation null of the number of CSS sign flips (histogram) with the observed count, per level."""
    levels = list(flips)
    fig = make_subplots(rows=1, cols=len(levels), subplot_titles=[
        f"{LEVEL_TITLES.get(lv, lv)}: observed {flips[lv]['observed']}, p = {flips[lv]['p_value']:.3g}"
        for lv in levels])
    for i, lv in enumerate(levels, start=1):
        f = flips[lv]
        fig.add_trace(go.Histogram(x=np.asarray(f["null"]), marker_color="#bbbbbb", name="null (Φ shuffled "
                                   "across contexts)", showlegend=i == 1, legendgroup="null"), row=1, col=i)
        fig.add_vline(x=f["observed"], line=dict(color=PALETTE[3], width=3), row=1, col=i)
        fig.add_trace(go.Scatter(x=[f["observed"]], y=[0], mode="markers", marker=dict(color=PALETTE[3], size=10,
                                 symbol="diamond"), name="observed", showlegend=i == 1, legendgroup="obs"),
                      row=1, col=i)
        fig.update_xaxes(title_text="sign flips of CSS between consecutive N (count)", row=1, col=i)
    fig.update_yaxes(title_text="permutations (count)", row=1, col=1)
    return layout(fig, "CSS sign flips across context length against the permutation null", height=400,
                  legend_below=True)


def peaks_figure(peaks: dict) -> go.Figure:
    """Per position: the context length at which |CSS| peaks (left) and that |CSS| (right), with bootstrap CIs."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["N at which |CSS| peaks", "peak |CSS|"],
                        horizontal_spacing=0.12)
    for i, (lv, t) in enumerate(peaks.items()):
        if t.empty:
            continue
        color = PALETTE[i]
        x = t["position"] + (0.15 * i)
        for col, (y, lo, hi) in enumerate((("peak_N", "peak_N_ci_low", "peak_N_ci_high"),
                                           ("peak_abs_css", "peak_abs_css_ci_low", "peak_abs_css_ci_high")),
                                          start=1):
            fig.add_trace(go.Scatter(x=x, y=t[y], mode="markers", marker=dict(color=color, size=6),
                                     error_y=dict(type="data", symmetric=False, array=t[hi] - t[y],
                                                  arrayminus=t[y] - t[lo], color=color, thickness=1),
                                     name=LEVEL_TITLES.get(lv, lv), legendgroup=lv, showlegend=col == 1),
                          row=1, col=col)
    fig.update_xaxes(title_text="word position")
    fig.update_yaxes(title_text="context length N (words)", row=1, col=1)
    fig.update_yaxes(title_text="|CSS| (nats x Φ)", row=1, col=2)
    return layout(fig, "Peaks of |CSS| over context length per position (95% bootstrap CI over contexts)",
                  height=420, legend_below=True)


def phi_levels_figure(phi_tab, class_tab, layer) -> go.Figure:
    """Left: Φ per level over N with its node-shuffled null. Right: CSS of the mean loss at each context's bridge /
    anchor words against that level's Φ."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=["Φ per level and its node-shuffled null", "CSS of bridge / anchor loss"])
    t = phi_tab[phi_tab["layer"] == layer]
    c = class_tab[class_tab["layer"] == layer]
    for i, lv in enumerate(("level_1", "level_2")):
        sub = t[t["level"] == lv]
        band(fig, sub["N"], sub["phi"], sub["phi_ci_low"], sub["phi_ci_high"], name=f"Φ {LEVEL_TITLES[lv]}",
             color=PALETTE[i], row=1, col=1, marker=dict(size=6))
        band(fig, sub["N"], sub["null"], sub["null_ci_low"], sub["null_ci_high"], name=f"null {LEVEL_TITLES[lv]}",
             color=PALETTE[i], row=1, col=1, dash="dot")
        for j, cls in enumerate(("bridge", "anchor")):
            s = c[(c["level"] == lv) & (c["class"] == cls)]
            band(fig, s["N"], s["css"], s["ci_low"], s["ci_high"], name=f"{cls} words, Φ {lv.replace('_', ' ')}",
                 color=PALETTE[2 + 2 * i + j], row=1, col=2, marker=dict(size=6))
    fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=1, col=2)
    fig.update_xaxes(title_text="context length N (words)")
    fig.update_yaxes(title_text="Φ (dimensionless)", row=1, col=1)
    fig.update_yaxes(title_text="CSS (nats x Φ)", row=1, col=2)
    return layout(fig, f"Within / between: Φ per hierarchy level at layer {layer} (95% bootstrap CI)", height=480,
                  legend_below=True)


def cluster_pair_figure(pairs: dict, lengths) -> go.Figure:
    """−Cov(mean loss of cluster c1's words, ||μ_c2 − μ̄||²) per N, one heatmap per N (shared colour scale)."""
    z = np.asarray(pairs["css"], dtype=float)
    L = z.shape[0]
    cols = min(L, 4)
    rows = -(-L // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"N = {n}" for n in lengths], horizontal_spacing=0.06,
                        vertical_spacing=0.16)
    zmax = _zmax(z)
    for j in range(L):
        r, c = divmod(j, cols)
        fig.add_trace(go.Heatmap(z=z[j], x=[f"c{k}" for k in range(z.shape[2])], y=[f"c{k}" for k in range(z.shape[1])],
                                 colorscale="RdBu", zmid=0, zmin=-zmax, zmax=zmax, showscale=j == 0,
                                 colorbar=dict(title="−Cov<br>(nats x dist²)")), row=r + 1, col=c + 1)
    fig.update_xaxes(title_text="c2: spread ||μ_c2 − μ̄||²", row=rows)
    fig.update_yaxes(title_text="c1: loss", col=1)
    return layout(fig, "Stagewise cluster-pair matrix: −Cov over contexts (level-1 clusters)", height=260 * rows + 80)


def cluster_mds_figure(mds: dict) -> go.Figure:
    """Trajectories of the cluster means over N in a joint 2-D MDS (centred per N)."""
    fig = go.Figure()
    n = list(mds["N"])
    top, sub = np.asarray(mds["level_1"], dtype=float), np.asarray(mds["level_2"], dtype=float)
    for c in range(top.shape[1]):
        color = PALETTE[c % len(PALETTE)]
        fig.add_trace(go.Scatter(x=top[:, c, 0], y=top[:, c, 1], mode="lines+markers+text", text=[str(v) for v in n],
                                 textposition="top center", line=dict(color=color, width=3), marker=dict(size=8),
                                 name=f"super-cluster {c}", textfont=dict(size=9)))
    for c in range(sub.shape[1]):
        color = PALETTE[int(mds["sub_to_top"][c]) % len(PALETTE)]
        fig.add_trace(go.Scatter(x=sub[:, c, 0], y=sub[:, c, 1], mode="lines+markers", line=dict(color=color, width=1,
                                 dash="dot"), marker=dict(size=5, symbol="circle-open"), name=f"sub-cluster {c}",
                                 legendgroup="sub", showlegend=c == 0))
    fig.update_xaxes(title_text="MDS 1 (residual-stream distance)")
    fig.update_yaxes(title_text="MDS 2 (residual-stream distance)", scaleanchor="x")
    return layout(fig, "Cluster means over context length (joint MDS; labels: N in words)", height=560,
                  legend_below=True)


def bif_heatmap_figure(corr, words, is_bridge) -> go.Figure:
    """Token x token BIF (correlation mode) of one context; bridge words marked with *."""
    labels = [f"{i}:{w}{'*' if b else ''}" for i, (w, b) in enumerate(zip(words, is_bridge))]
    fig = go.Figure(go.Heatmap(z=np.asarray(corr, dtype=float), x=labels, y=labels, colorscale="RdBu", zmid=0,
                               zmin=-1, zmax=1, colorbar=dict(title="Corr of<br>loss traces")))
    fig.update_yaxes(autorange="reversed", title_text="word (position:word, * bridge)")
    fig.update_xaxes(title_text="word (position:word, * bridge)", tickangle=-60)
    return layout(fig, "Token x token BIF of one context (correlation over SGLD draws)", height=720)


def bif_comparison_figure(bridge_anchor: dict, token_phi, loo, css_p, ranks: dict, is_bridge) -> go.Figure:
    """BIF(z, Φ) at bridge / anchor words (mean over chains, 95% bootstrap CI over chains); BIF against
    leave-one-out influence and against CSS at the same positions."""
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.1, column_widths=[0.24, 0.38, 0.38], subplot_titles=[
        "BIF(z, Φ) by word class", f"vs leave-one-out (ρ = {ranks['loo']['rho']:.2f})",
        f"vs CSS (ρ = {ranks['css']['rho']:.2f})"])
    for i, cls in enumerate(("bridge", "anchor")):
        b = bridge_anchor[cls]
        mean = b["mean"] if b["mean"] is not None else np.nan
        lo = b["ci_low"] if b["ci_low"] is not None and np.isfinite(b["ci_low"]) else mean
        hi = b["ci_high"] if b["ci_high"] is not None and np.isfinite(b["ci_high"]) else mean
        fig.add_trace(go.Bar(x=[cls], y=[mean], marker_color=PALETTE[i], showlegend=False,
                             error_y=dict(type="data", symmetric=False, array=[hi - mean], arrayminus=[mean - lo])),
                      row=1, col=1)
    tp = np.asarray(token_phi, dtype=float)
    br = np.asarray(is_bridge, dtype=bool)
    for i, (mask, name) in enumerate(((br, "bridge"), (~br, "anchor"))):
        fig.add_trace(go.Scatter(x=np.asarray(loo, dtype=float)[mask], y=tp[mask], mode="markers", name=f"{name} word",
                                 marker=dict(color=PALETTE[i], size=7), legendgroup=name), row=1, col=2)
    mean_tp = np.nanmean(tp, axis=0)
    fig.add_trace(go.Scatter(x=np.asarray(css_p, dtype=float), y=mean_tp, mode="markers+text",
                             text=[str(k) for k in range(len(mean_tp))], textposition="top center",
                             textfont=dict(size=8), marker=dict(color=PALETTE[4], size=7), name="position "
                             "(BIF averaged over BIF contexts)"), row=1, col=3)
    fig.update_yaxes(title_text="BIF(z, Φ) (−Corr)", row=1, col=1)
    fig.update_yaxes(title_text="BIF(z, Φ) (−Cov, nats x Φ)", row=1, col=2)
    fig.update_xaxes(title_text="Φ(full) − Φ(without z)", row=1, col=2)
    fig.update_xaxes(title_text="CSS at the same N (nats x Φ)", row=1, col=3)
    return layout(fig, "Bayesian influence on Φ against leave-one-out and CSS", height=460, legend_below=True)


def sgld_diagnostics_figure(draws: dict, draw_steps, diagnostics: dict) -> go.Figure:
    """Sampling loss per chain over SGLD steps (draws marked), and distance from the loaded weights."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12, subplot_titles=[
        f"sampling loss (LLC estimate {diagnostics['llc']['mean']:.3g})", "||w − w*|| of the moved parameters"])
    loss, dist = np.asarray(draws["loss"], dtype=float), np.asarray(draws["distance"], dtype=float)
    steps = np.arange(loss.shape[1])
    for c in range(loss.shape[0]):
        color = PALETTE[c % len(PALETTE)]
        fig.add_trace(go.Scatter(x=steps, y=loss[c], mode="lines", line=dict(color=color), name=f"chain {c}",
                                 legendgroup=str(c)), row=1, col=1)
        fig.add_trace(go.Scatter(x=steps, y=dist[c], mode="lines", line=dict(color=color), name=f"chain {c}",
                                 legendgroup=str(c), showlegend=False), row=1, col=2)
    first = int(np.asarray(draw_steps)[0])
    fig.add_vrect(x0=0, x1=first, fillcolor="#dddddd", opacity=0.4, line_width=0, row=1, col=1)
    fig.add_vrect(x0=0, x1=first, fillcolor="#dddddd", opacity=0.4, line_width=0, row=1, col=2)
    fig.add_hline(y=float(loss[0, 0]), line=dict(color="#555", dash="dot"), row=1, col=1)
    fig.update_xaxes(title_text="SGLD step (grey: burn-in)")
    fig.update_yaxes(title_text="mean token loss (nats)", row=1, col=1)
    fig.update_yaxes(title_text="distance (parameter units)", row=1, col=2)
    return layout(fig, "SGLD diagnostics (dotted: loss at the loaded weights)", height=420, legend_below=True)
