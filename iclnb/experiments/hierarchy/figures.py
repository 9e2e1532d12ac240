"""Figures of the hierarchy family: the N-sweep panels per level and model, the CSS heatmap (N x position), Φ by
layer, the separation per level, and the animation of the node means over N."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.core.layers import layer_key
from iclnb.plotting.style import PALETTE, band, layout, log_x

N_TITLE = "context length N (words, log scale)"
LEVEL_NAMES = {"level_1": "super-clusters (level 1)", "level_2": "sub-clusters (level 2)"}


def level_name(level: str) -> str:
    return LEVEL_NAMES.get(level, level.replace("_", " "))


def _series(per_n: dict, lengths, layer, get):
    values = [get(per_n[f"N_{n}"][layer_key(layer)]) for n in lengths]
    return [np.nan if v is None else v for v in values]


def money_figure(tab: dict, lengths, levels) -> go.Figure:
    """2x2: Φ of the coarsest and of the finest level with their node-shuffled nulls (dashed), E_norm with its
    chance value (dotted), and max |CSS| (against the coarsest level's Φ) with its permutation null, each against N
    on a log axis, one colour per model, 95% bootstrap bands over contexts. Each model at the layer named in the
    legend."""
    coarse, fine = levels[0], levels[-1]
    titles = [f"Φ, {level_name(coarse)}", f"Φ, {level_name(fine)}", "normalised Dirichlet energy E_norm",
              f"max |CSS| over positions (vs Φ of {level_name(coarse)})"]
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles, horizontal_spacing=0.1, vertical_spacing=0.16)
    cells = [(1, 1), (1, 2), (2, 1), (2, 2)]
    for i, (name, mt) in enumerate(tab.items()):
        color = PALETTE[i % len(PALETTE)]
        layer = mt["figure_layer"]
        label = f"{name} (layer {layer})"
        for (row, col), level in zip(cells[:2], (coarse, fine)):
            get = lambda e, k, level=level: e["phi"][level][k]  # noqa: E731
            band(fig, lengths, *(_series(mt, lengths, layer, lambda e, k=k: get(e, k))
                                 for k in ("mean", "ci_low", "ci_high")),
                 name=label, color=color, row=row, col=col, showlegend=(row, col) == (1, 1), marker=dict(size=6))
            band(fig, lengths, *(_series(mt, lengths, layer, lambda e, k=k: get(e, k))
                                 for k in ("null_mean", "null_ci_low", "null_ci_high")),
                 name=f"{name}: node-shuffled null", color=color, row=row, col=col, dash="dash",
                 showlegend=(row, col) == (1, 1))
        band(fig, lengths, *(_series(mt, lengths, layer, lambda e, k=k: e["energy_norm"][k])
                             for k in ("mean", "ci_low", "ci_high")),
             name=label, color=color, row=2, col=1, showlegend=False, marker=dict(size=6))
        band(fig, lengths, *(_series(mt, lengths, layer, lambda e, k=k: e["css_max_abs"][coarse][k])
                             for k in ("value", "ci_low", "ci_high")),
             name=label, color=color, row=2, col=2, showlegend=False, marker=dict(size=6))
        fig.add_trace(go.Scatter(x=list(lengths), y=_series(mt, lengths, layer,
                                                             lambda e: e["css_max_abs"][coarse]["null_mean"]),
                                 mode="lines", line=dict(color=color, dash="dash"), showlegend=False,
                                 name=f"{name}: permutation null"), row=2, col=2)
    first = next(iter(tab.values()))
    chance = first[f"N_{lengths[0]}"][layer_key(first["figure_layer"])]["energy_norm"]["chance"]
    fig.add_hline(y=chance, line=dict(color="#555", dash="dot", width=1), row=2, col=1,
                  annotation_text="chance |E|/C(n,2)", annotation_position="top left")
    for row, col in cells:
        log_x(fig, lengths, N_TITLE, row=row, col=col)
    fig.update_yaxes(title_text="Φ (dimensionless)", row=1, col=1)
    fig.update_yaxes(title_text="Φ (dimensionless)", row=1, col=2)
    fig.update_yaxes(title_text="E_norm (fraction)", row=2, col=1)
    fig.update_yaxes(title_text="max |CSS| (nats x Φ)", row=2, col=2)
    return layout(fig, "Structure vs context length (mean, 95% bootstrap CI over contexts; dashed: nulls)",
                  height=760, legend_below=True)


def css_heatmap_figure(tab: dict, lengths, level: str) -> go.Figure:
    """CSS of each position's word loss against each context's Φ (of ``level``) at each N: rows N, columns word
    position, one panel per model at the layer of :func:`money_figure`; a diverging scale centred on 0 per panel."""
    names = list(tab)
    fig = make_subplots(rows=len(names), cols=1, vertical_spacing=0.2 if len(names) > 1 else 0.1,
                        subplot_titles=[f"{name}, layer {tab[name]['figure_layer']}" for name in names])
    width = max(lengths)
    for i, name in enumerate(names, start=1):
        mt = tab[name]
        lk = layer_key(mt["figure_layer"])
        z = np.full((len(lengths), width), np.nan)
        for j, n in enumerate(lengths):
            values = np.asarray(mt[f"N_{n}"][lk]["css_by_position"][level]["css"], dtype=float)
            z[j, : values.size] = values
        bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
        axis = "coloraxis" if i == 1 else f"coloraxis{i}"
        fig.add_trace(go.Heatmap(z=z, x=np.arange(width), y=[str(n) for n in lengths], coloraxis=axis,
                                 hovertemplate="N %{y}, position %{x}: CSS %{z:.3g}<extra></extra>"), row=i, col=1)
        span = 1.0 / len(names)
        fig.update_layout({axis: dict(colorscale="RdBu_r", cmid=0, cmin=-bound, cmax=bound,
                                      colorbar=dict(title="CSS", len=span * 0.8, y=1 - span * (i - 0.5),
                                                    yanchor="middle"))})
        fig.update_yaxes(title_text="N (words)", type="category", row=i, col=1)
        fig.update_xaxes(title_text="word position", row=i, col=1)
    return layout(fig, f"CSS by position and context length (vs Φ of {level_name(level)})",
                  height=330 * len(names) + 120)


def phi_by_layer_figure(tab: dict, n: int, levels) -> go.Figure:
    """Φ per level by layer at context length ``n``, one panel per model, each level's node-shuffled null dashed."""
    names = list(tab)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.08)
    for c, name in enumerate(names, start=1):
        mt = tab[name]
        layers = mt["layers"]
        x = [str(layer) for layer in layers]
        for i, level in enumerate(levels):
            color = PALETTE[(i + 2) % len(PALETTE)]
            entries = [mt[f"N_{n}"][layer_key(layer)]["phi"][level] for layer in layers]
            band(fig, x, [e["mean"] for e in entries], [e["ci_low"] for e in entries],
                 [e["ci_high"] for e in entries], name=level_name(level), color=color, row=1, col=c,
                 showlegend=c == 1, marker=dict(size=6))
            band(fig, x, [e["null_mean"] for e in entries], [e["null_ci_low"] for e in entries],
                 [e["null_ci_high"] for e in entries], name=f"null, {level_name(level)}", color=color, row=1,
                 col=c, showlegend=c == 1, dash="dash")
        fig.update_xaxes(title_text="layer (decoder block)", type="category", row=1, col=c)
    fig.update_yaxes(title_text="Φ (dimensionless)", row=1, col=1)
    return layout(fig, f"Φ by layer at N = {n} words (mean, 95% CI over contexts; dashed: node-shuffled null)",
                  height=460, legend_below=True)


def separation_figure(levels_table: dict, lengths, layer, levels, onsets: dict | None = None) -> go.Figure:
    """Separation (Φ − its node-shuffled null, paired per context) of each level against N at one layer, with 95%
    bootstrap bands; a vertical dotted line at each level's onset N where it is reached."""
    fig = go.Figure()
    lk = layer_key(layer)
    for i, level in enumerate(levels):
        color = PALETTE[i % len(PALETTE)]
        s = [levels_table[level][f"N_{n}"][lk]["separation"] for n in lengths]
        band(fig, lengths, [e["mean"] for e in s], [e["ci_low"] for e in s], [e["ci_high"] for e in s],
             name=level_name(level), color=color, marker=dict(size=6))
        on = (onsets or {}).get(level)
        if on and on.get("reached"):
            fig.add_vline(x=on["n_star"], line=dict(color=color, dash="dot", width=1))
    fig.add_hline(y=0, line=dict(color="#999", width=1))
    log_x(fig, lengths, N_TITLE)
    fig.update_yaxes(title_text="Φ − null Φ (dimensionless)")
    return layout(fig, f"Separation per level at layer {layer} (95% CI; dotted: onset N)", height=440,
                  legend_below=True)


def css_level_figure(levels_table: dict, lengths, layer, levels) -> go.Figure:
    """max |CSS| per level (against that level's Φ) vs N with its CI and the permutation null (dashed)."""
    fig = go.Figure()
    lk = layer_key(layer)
    for i, level in enumerate(levels):
        color = PALETTE[i % len(PALETTE)]
        s = [levels_table[level][f"N_{n}"][lk]["css_max_abs"] for n in lengths]
        band(fig, lengths, [e["value"] for e in s], [e["ci_low"] for e in s], [e["ci_high"] for e in s],
             name=level_name(level), color=color, marker=dict(size=6))
        fig.add_trace(go.Scatter(x=list(lengths), y=[e["null_mean"] for e in s], mode="lines",
                                 line=dict(color=color, dash="dash"), name=f"permutation null, {level_name(level)}"))
    log_x(fig, lengths, N_TITLE)
    fig.update_yaxes(title_text="max |CSS| (nats x Φ)")
    return layout(fig, f"CSS per level at layer {layer}: max |CSS| over positions (95% CI; dashed: null)",
                  height=440, legend_below=True)


# ------------------------------------------------------------------------------------------ animation


def _shades(base: str, count: int) -> list[str]:
    """``count`` solid shades of ``base``, from the colour itself towards white (at most 60% of the way)."""
    h = base.lstrip("#")
    rgb = np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], dtype=float)
    out = []
    for i in range(count):
        mix = rgb + (255 - rgb) * 0.6 * i / max(count - 1, 1)
        out.append("#" + "".join(f"{int(round(v)):02x}" for v in mix))
    return out


def node_colors(labelings: dict, levels) -> tuple[list[str], list[str]]:
    """A colour per node by its finest cluster (shades of its top-level cluster's hue) and a marker symbol per node
    by its top-level cluster."""
    top = np.asarray(labelings[levels[0]])
    fine = np.asarray(labelings[levels[-1]])
    symbols = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon")
    colors = [None] * len(top)
    for t in np.unique(top):
        subs = list(dict.fromkeys(fine[top == t]))
        shades = _shades(PALETTE[int(t) % len(PALETTE)], len(subs))
        for node in np.flatnonzero(top == t):
            colors[node] = shades[subs.index(fine[node])]
    return colors, [symbols[int(t) % len(symbols)] for t in top]


def animation_figure(frames: dict, words, labelings: dict, levels, layer, explained=None) -> go.Figure:
    """One frame per N of the node means in a joint 2-D embedding (``frames``: ``{N: (n_nodes, 2)}``, NaN rows for
    nodes not yet seen), with a slider and a play button. Colour: finest cluster (shades of the top-level cluster's
    hue); symbol: top-level cluster; text: the node's word."""
    lengths = sorted(frames)
    colors, symbols = node_colors(labelings, levels)
    top = np.asarray(labelings[levels[0]])
    fine = np.asarray(labelings[levels[-1]])
    groups = [(int(t), int(f)) for t, f in dict.fromkeys(zip(top.tolist(), fine.tolist()))]

    def traces(n):
        xy = np.asarray(frames[n], dtype=float)
        out = []
        for t, f in groups:
            idx = np.flatnonzero((top == t) & (fine == f))
            out.append(go.Scatter(x=xy[idx, 0], y=xy[idx, 1], mode="markers+text", text=[words[i] for i in idx],
                                  textposition="top center", textfont=dict(size=10),
                                  marker=dict(size=13, color=colors[idx[0]], symbol=symbols[idx[0]],
                                              line=dict(width=1, color="#333")),
                                  name=f"level 1: cluster {t}, level {len(levels)}: cluster {f}"))
        return out

    every = np.concatenate([np.asarray(frames[n], dtype=float) for n in lengths])
    every = every[np.isfinite(every).all(axis=1)]
    lo, hi = (every.min(axis=0), every.max(axis=0)) if every.size else (np.array([-1, -1]), np.array([1, 1]))
    pad = 0.12 * (hi - lo + 1e-9)
    fig = go.Figure(data=traces(lengths[0]),
                    frames=[go.Frame(data=traces(n), name=str(n)) for n in lengths])
    steps = [dict(method="animate", label=str(n), args=[[str(n)], dict(mode="immediate", frame=dict(duration=600,
                  redraw=True), transition=dict(duration=300))]) for n in lengths]
    fig.update_layout(
        sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="N = ", suffix=" words"), pad=dict(t=110, l=170),
                      x=0, len=1.0)],
        updatemenus=[dict(type="buttons", direction="left", x=0, y=-0.2, xanchor="left", yanchor="top",
                          buttons=[dict(label="▶ play", method="animate",
                                        args=[None, dict(frame=dict(duration=700, redraw=True),
                                                         transition=dict(duration=300), fromcurrent=True)]),
                                   dict(label="❚❚ pause", method="animate",
                                        args=[[None], dict(mode="immediate", frame=dict(duration=0))])])])
    def axis(i):
        share = "" if explained is None or not np.isfinite(explained[i]) else f", {100 * explained[i]:.0f}% of variance"
        return f"PC {i + 1} (residual units{share})"

    fig.update_xaxes(title_text=axis(0), range=[lo[0] - pad[0], hi[0] + pad[0]])
    fig.update_yaxes(title_text=axis(1), range=[lo[1] - pad[1], hi[1] + pad[1]])
    return layout(fig, f"Node means by context length, layer {layer} (PCA fitted on all frames, aligned frame to "
                       f"frame)", height=700, legend=dict(orientation="v", x=1.02, y=1, xanchor="left"),
                  margin=dict(b=190))


def hierarchy_graph_figure(graph, levels) -> go.Figure:
    """The graph (``iclnb.plotting.graph.graph_figure``) with each node coloured by its finest cluster in shades of
    its top-level cluster's hue and shaped by its top-level cluster, as in the animation."""
    from iclnb.plotting.graph import graph_figure

    fig = graph_figure(graph, labeling=None,
                       title=f"The hierarchy: symbol = {level_name(levels[0])}, colour = {level_name(levels[-1])}")
    colors, symbols = node_colors(graph.labelings, levels)
    fig.data[1].marker.color = colors
    fig.data[1].marker.symbol = symbols
    fig.data[1].marker.size = 13
    return fig


def onset_figure(onset: dict, lengths, levels) -> go.Figure:
    """Per layer and level, the context length at which the level separates (Φ − null above 0 from there on) with
    its 95% bootstrap interval over contexts; "not reached" (within the lengths measured) is drawn above the axis'
    longest length. Levels are offset slightly so their bars do not hide each other."""
    top = max(lengths) * 1.6

    def y(v):
        return top if v is None else v

    fig = go.Figure()
    layers = [key.removeprefix("layer_") for key in onset]
    for i, level in enumerate(levels):
        entries = [onset[key]["levels"][level] for key in onset]
        point = [y(e["n_star"]) for e in entries]
        low = [y(e["ci_low"]) for e in entries]
        high = [y(e["ci_high"]) for e in entries]
        fig.add_trace(go.Scatter(
            x=layers, y=point, mode="markers", name=level_name(level),
            marker=dict(size=10, color=PALETTE[i % len(PALETTE)],
                        symbol=["x" if e["n_star"] is None else "circle" for e in entries]),
            error_y=dict(type="data", symmetric=False, array=[h - p for h, p in zip(high, point)],
                         arrayminus=[p - lo for p, lo in zip(point, low)], thickness=1.5),
            customdata=[[e["fraction_reached"]] for e in entries],
            hovertemplate="layer %{x}: onset N %{y} (reached in %{customdata[0]:.0%} of resamples)<extra></extra>",
            offsetgroup=str(i)))
    ticks = sorted(set(lengths)) + [top]
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{v:g}" for v in lengths] + ["not reached"],
                     title_text="onset context length N (words, log scale)")
    fig.update_xaxes(type="category", title_text="layer (decoder block)")
    fig.update_layout(scattermode="group")
    return layout(fig, "When each level separates (onset N with 95% bootstrap CI over contexts)", height=460,
                  legend_below=True)
