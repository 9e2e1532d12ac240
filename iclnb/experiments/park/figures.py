"""reproduce_park's figures (data in, ``go.Figure`` out; the notebook saves them through the run).

* :func:`accuracy_figure`: rule-following accuracy against context with its band, the renormalised curve, the
  copying baseline and chance;
* :func:`geometry_heatmap`: E_norm and distance correlation, layer x context length;
* :func:`geometry_curves`: the same for a few layers as curves with bands;
* :func:`pca_figure`: PCA of node means with the graph's edges drawn at each context length, next to the graph's
  spectral embedding.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.core.layers import layer_key
from iclnb.plotting.embedding import embedding_traces
from iclnb.plotting.style import COLUMN_WIDTH, PALETTE, band, layout, log_x

__all__ = ["accuracy_figure", "geometry_heatmap", "geometry_curves", "pca_figure"]

ENERGY_TITLE = "E_norm (fraction of all-pair distance²)"
DCORR_TITLE = "distance correlation (Spearman ρ)"


def _legend_at_bottom(rows: int = 1) -> dict:
    """A horizontal legend at the bottom of the figure, under the x-axis title (clear of the data and of any colour
    bar), and the bottom margin it needs."""
    return dict(legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.01, xanchor="left", x=0),
                margin=dict(b=80 + 24 * rows))


def accuracy_figure(acc: dict) -> go.Figure:
    """``acc`` as :func:`~iclnb.experiments.park.reproduce_park.accuracy` returns it."""
    x = np.asarray(acc["context_tokens"], dtype=float)
    fig = go.Figure()
    band(fig, x, acc["mean"], acc["ci_low"], acc["ci_high"], name="next-token mass on valid neighbours",
         color=PALETTE[0])
    fig.add_trace(go.Scatter(x=x, y=acc["renormalized"], mode="lines", name="the same, renormalised over graph words",
                             line=dict(color=PALETTE[0], dash="dot")))
    band(fig, x, acc["copy_baseline"], acc["copy_baseline_ci_low"], acc["copy_baseline_ci_high"],
         name="copying baseline", color=PALETTE[3])
    band(fig, x, acc["chance"], acc["chance_ci_low"], acc["chance_ci_high"], name="chance, E[deg(node)] / n",
         color=PALETTE[7], dash="dash")
    fig.update_xaxes(title_text="context (tokens)")
    fig.update_yaxes(title_text="probability mass on valid next words", range=[0, 1.03])
    return layout(fig, f"Rule-following accuracy against context (bins of {acc['bin_words']} words; 95% bootstrap "
                  "CI over contexts)", height=500, **_legend_at_bottom(rows=2))


def geometry_heatmap(geo: dict) -> go.Figure:
    """E_norm and distance correlation of the node means (means over contexts), layer (rows) x context length
    (columns), each panel with its own colour bar beside it."""
    layers, ctx = geo["layers"], geo["context_tokens"]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.2,
                        subplot_titles=("E_norm (lower: smoother on the graph)", "distance correlation (Spearman ρ)"))
    xs = [str(int(t)) for t in ctx]
    ys = [str(k) for k in layers]
    for col, (key, scale, title) in enumerate((("energy_norm", "Viridis_r", "E_norm"),
                                               ("distance_correlation", "RdBu_r", "ρ")), start=1):
        z = np.array([np.asarray(geo["per_layer"][layer_key(k)][key], dtype=float) for k in layers])
        kw = dict(zmid=0) if key == "distance_correlation" else {}
        domain_end = 0.4 if col == 1 else 1.0
        fig.add_trace(go.Heatmap(z=z, x=xs, y=ys, colorscale=scale, **kw,
                                 colorbar=dict(x=domain_end + 0.015, xanchor="left", len=0.85, thickness=14,
                                               title=dict(text=title, side="top")),
                                 hovertemplate="layer %{y}<br>%{x} tokens<br>%{z:.3f}<extra></extra>"),
                      row=1, col=col)
        fig.update_xaxes(title_text="context (tokens)", type="category", row=1, col=col)
    fig.update_yaxes(title_text="layer (decoder block)", type="category", row=1, col=1)
    return layout(fig, "Geometry of node means by layer and context (mean over contexts)",
                  height=max(420, 22 * len(layers) + 180), margin=dict(r=70))


def _curve_layers(layers: list, most: int = 5) -> list:
    if len(layers) <= most:
        return list(layers)
    picks = np.unique(np.round(np.linspace(0, len(layers) - 1, most)).astype(int))
    return [layers[i] for i in picks]


def geometry_curves(geo: dict, layers=None) -> go.Figure:
    """E_norm and distance correlation against context for a few layers (default: five spread over the run's
    layers), with 95% bootstrap bands over contexts; E_norm's chance level and ρ = 0 dashed."""
    layers = _curve_layers(geo["layers"]) if layers is None else list(layers)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.13, subplot_titles=("E_norm", "distance correlation"))
    for i, k in enumerate(layers):
        lay = geo["per_layer"][layer_key(k)]
        color = PALETTE[i % len(PALETTE)]
        x = np.asarray(lay["context_tokens"], dtype=float)
        for col, key in enumerate(("energy_norm", "distance_correlation"), start=1):
            band(fig, x, lay[key], lay[f"{key}_ci_low"], lay[f"{key}_ci_high"], name=f"layer {k}", color=color,
                 row=1, col=col, showlegend=col == 1, marker=dict(size=5))
    span = [float(np.min(geo["context_tokens"])), float(np.max(geo["context_tokens"]))]
    fig.add_trace(go.Scatter(x=span, y=[geo["energy_norm_chance"]] * 2, mode="lines", hoverinfo="skip",
                             name="E_norm chance (fraction of node pairs that are edges)",
                             line=dict(color="#7f7f7f", dash="dash")), row=1, col=1)
    fig.add_hline(y=0, line=dict(color="#999999", width=1), row=1, col=2)
    log_x(fig, geo["context_tokens"], "context (tokens)")
    fig.update_yaxes(title_text=ENERGY_TITLE, row=1, col=1)
    fig.update_yaxes(title_text=DCORR_TITLE, row=1, col=2)
    return layout(fig, "Node-mean geometry against context (95% bootstrap CI over contexts)", height=500,
                  **_legend_at_bottom(rows=2))


def pca_figure(geo: dict, graph, layer, cols: int = 3) -> go.Figure:
    """PCs 1-2 of the node means averaged over contexts at ``layer``, one panel per context length (titled with its
    Procrustes r2 to the spectral embedding), and a last panel with the graph's spectral embedding."""
    mean = geo["per_layer"][layer_key(layer)]["pca"]["mean_over_contexts"]
    coords = [np.asarray(c, dtype=float)[:, :2] for c in mean["coords"]]
    titles = [f"{int(t)} tokens, r² {r:.2f}" for t, r in zip(geo["context_tokens"], mean["procrustes_r2"])]
    panels = coords + [np.asarray(geo["spectral_embedding"], dtype=float)]
    titles += ["spectral embedding"]
    cols = min(cols, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.3 / rows)
    for p, xy in enumerate(panels):
        r, c = divmod(p, cols)
        spectral = p == len(panels) - 1
        for trace in embedding_traces(xy, graph, color=PALETTE[3] if spectral else PALETTE[0], text_size=8):
            fig.add_trace(trace, row=r + 1, col=c + 1)
        fig.update_xaxes(title_text="eigenvector 2" if spectral else "PC1", title_standoff=2, row=r + 1, col=c + 1)
        fig.update_yaxes(title_text="eigenvector 3" if spectral else "PC2", title_standoff=2, row=r + 1, col=c + 1)
    fig.update_xaxes(showticklabels=False, zeroline=False, title_font=dict(size=11))
    fig.update_yaxes(showticklabels=False, zeroline=False, title_font=dict(size=11))
    for p in range(len(panels), rows * cols):  # the empty cells of the last row
        r, c = divmod(p, cols)
        fig.update_xaxes(visible=False, row=r + 1, col=c + 1)
        fig.update_yaxes(visible=False, row=r + 1, col=c + 1)
    fig.update_annotations(font_size=13)  # the panel titles
    width = COLUMN_WIDTH
    return layout(fig, f"PCA of node means at layer {layer} (mean over contexts)<br><sup>r²: Procrustes fit of PCs "
                  "1-2 to the spectral embedding; PCs in residual-stream units, eigenvectors of unit norm</sup>",
                  width=width, height=int(width / cols * 0.95 * rows) + 110, showlegend=False,
                  margin=dict(t=110, l=40, r=20))
