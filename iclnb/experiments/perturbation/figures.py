"""Figures of the perturbation experiments (block_permutation, incongruous_injection)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from iclnb.core.layers import parse_layer_key
from iclnb.plotting.embedding import edge_lines
from iclnb.plotting.style import PALETTE, band, layout, log_x

CONDITION_COLORS = {"natural": PALETTE[0], "block": PALETTE[1], "shuffle": PALETTE[3]}
CONDITION_NAMES = {"natural": "natural walk", "block": "block permutation", "shuffle": "full shuffle"}
KIND_COLORS = {"wrong_cluster": PALETTE[0], "random_vocab": PALETTE[1], "semantic_outlier": PALETTE[2],
               "out_of_vocab": PALETTE[3]}


def _n_values(tabs: dict) -> list[int]:
    return sorted(int(k[2:]) for k in tabs if k.startswith("N_"))


def _layer_keys(tabs: dict) -> list[str]:
    first = tabs[f"N_{_n_values(tabs)[0]}"]
    return [k for k in first if k.startswith("layer_")]


def _stat(entries, key="mean"):
    return [e[key] for e in entries]


# ---------------------------------------------------------------------------------------------------- block


def phi_energy_figure(tabs: dict) -> go.Figure:
    """Φ (left) and E_norm (right) against N per condition with 95% CIs over contexts, one row per layer; Φ's
    node-shuffled null of the natural walk as a grey dashed band."""
    ns, keys = _n_values(tabs), _layer_keys(tabs)
    fig = make_subplots(rows=len(keys), cols=2, shared_xaxes=True, vertical_spacing=0.05, horizontal_spacing=0.1,
                        subplot_titles=[f"{t}, {k.replace('_', ' ')}" for k in keys for t in ("Φ", "E_norm")])
    for row, key in enumerate(keys, start=1):
        for col, metric in ((1, "phi"), (2, "energy_norm")):
            series = [("natural", metric, "#7f7f7f", "dash", "node-shuffled null (natural)")] if metric == "phi" else []
            series = [(c, metric, CONDITION_COLORS[c], None, CONDITION_NAMES[c]) for c in CONDITION_COLORS] + series
            for cond, m, color, dash, name in series:
                m = "phi_null" if dash else m
                e = [tabs[f"N_{n}"][key][cond][m] for n in ns]
                band(fig, ns, _stat(e), _stat(e, "ci_low"), _stat(e, "ci_high"), name=name, color=color, row=row,
                     col=col, showlegend=row == 1 and col == 1, marker=dict(size=5), dash=dash)
            log_x(fig, ns, "context length N (words)" if row == len(keys) else "", row=row, col=col)
        fig.update_yaxes(title_text="Φ (dimensionless)", row=row, col=1)
        fig.update_yaxes(title_text="E_norm (fraction)", row=row, col=2)
    return layout(fig, "Cluster separation and normalised Dirichlet energy by condition (95% bootstrap CI)",
                  height=230 * len(keys) + 140, legend_below=True)


def log_ratio_figure(tabs: dict) -> go.Figure:
    """The paired log-ratio natural / permuted of Φ (left) and of perplexity (right) against N, with 95% CIs over
    contexts; 0 = no effect of the permutation. Φ's panel per layer shares one axis."""
    ns, keys = _n_values(tabs), _layer_keys(tabs)
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.16,
                        subplot_titles=["log(Φ natural / Φ permuted), per layer",
                                        "log(perplexity natural / perplexity permuted)"])
    dashes = {"block": None, "shuffle": "dash"}
    for cond in ("block", "shuffle"):
        for i, key in enumerate(keys):
            e = [tabs[f"N_{n}"][key]["log_ratio"][cond] for n in ns]
            band(fig, ns, _stat(e), _stat(e, "ci_low"), _stat(e, "ci_high"),
                 name=f"{CONDITION_NAMES[cond]}, {key.replace('_', ' ')}", color=PALETTE[i % len(PALETTE)],
                 row=1, col=1, marker=dict(size=5), dash=dashes[cond])
        e = [tabs[f"N_{n}"]["perplexity_log_ratio"][cond] for n in ns]
        band(fig, ns, _stat(e), _stat(e, "ci_low"), _stat(e, "ci_high"), name=f"{CONDITION_NAMES[cond]} (perplexity)",
             color=CONDITION_COLORS[cond], row=2, col=1, marker=dict(size=6))
    for row in (1, 2):
        fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=row, col=1)
        log_x(fig, ns, "context length N (words)", row=row, col=1)
        fig.update_yaxes(title_text="mean paired log-ratio (nats)", row=row, col=1)
    return layout(fig, "Natural vs permuted walks: paired log-ratios (solid: block, dashed: shuffle; 95% CI)",
                  height=820, legend_below=True)


def perplexity_figure(tabs: dict) -> go.Figure:
    """Per-word perplexity against N per condition with 95% CIs over contexts (log axes)."""
    ns = _n_values(tabs)
    fig = go.Figure()
    for cond in CONDITION_COLORS:
        e = [tabs[f"N_{n}"]["perplexity"][cond] for n in ns]
        band(fig, ns, _stat(e), _stat(e, "ci_low"), _stat(e, "ci_high"), name=CONDITION_NAMES[cond],
             color=CONDITION_COLORS[cond], marker=dict(size=6))
    log_x(fig, ns, "context length N (words)")
    fig.update_yaxes(type="log", title_text="perplexity per word (exp of mean word loss, nats)")
    return layout(fig, "Perplexity by condition (95% bootstrap CI over contexts)", height=440, legend_below=True)


def junction_figure(tabs: dict) -> go.Figure:
    """Per N: the share of block junctions that are not graph edges and that merge two same-cluster runs, and the
    share of full-shuffle steps that are not graph edges; the junction count per context above each bar."""
    ns = _n_values(tabs)
    j = [tabs[f"N_{n}"]["junctions"] for n in ns]
    n_contexts = len(j[0]["per_context"]["junctions"]) if ns else 1
    x = [str(n) for n in ns]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=[e["non_edge_fraction"] for e in j], name="block junctions: not a graph edge",
                         marker_color=CONDITION_COLORS["block"],
                         text=[f"{e['junctions'] / n_contexts:.1f}/context" for e in j], textposition="outside"))
    fig.add_trace(go.Bar(x=x, y=[e["merge_fraction"] for e in j], name="block junctions: same-cluster merge",
                         marker_color=PALETTE[4]))
    fig.add_trace(go.Bar(x=x, y=[e["shuffle_non_edge_fraction"] for e in j], name="full shuffle: steps not edges",
                         marker_color=CONDITION_COLORS["shuffle"]))
    fig.update_xaxes(title_text="context length N (words)", type="category")
    fig.update_yaxes(title_text="fraction of junctions / steps", range=[0, 1.1])
    return layout(fig, "Block junctions that are not graph edges, and merges", height=420, legend_below=True,
                  barmode="group")


def mds_figure(coords: dict, graph, layer_name: str) -> go.Figure:
    """Joint classical MDS of the node means (averaged node-mean distances over contexts at the largest N): one
    panel per condition on shared axes, nodes coloured by cluster, graph edges as lines."""
    conds = list(coords)
    fig = make_subplots(rows=1, cols=len(conds), shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[CONDITION_NAMES.get(c, c) for c in conds])
    clusters = graph.labelings["cluster"]
    for col, cond in enumerate(conds, start=1):
        xy = np.asarray(coords[cond], dtype=float)
        ex, ey = edge_lines(xy, graph.edges())
        fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line=dict(color="#cccccc", width=1), hoverinfo="skip",
                                 showlegend=False), row=1, col=col)
        for c in np.unique(clusters):
            m = clusters == c
            fig.add_trace(go.Scatter(x=xy[m, 0], y=xy[m, 1], mode="markers+text",
                                     text=[graph.words[i] for i in np.flatnonzero(m)], textposition="top center",
                                     textfont=dict(size=8), marker=dict(size=8, color=PALETTE[int(c) % 10]),
                                     name=f"cluster {int(c)}", legendgroup=f"c{int(c)}", showlegend=col == 1),
                          row=1, col=col)
        fig.update_xaxes(title_text="MDS 1 (residual units)", row=1, col=col)
    fig.update_yaxes(title_text="MDS 2 (residual units)", row=1, col=1)
    return layout(fig, f"Node means by condition, joint MDS ({layer_name.replace('_', ' ')})", height=440,
                  legend_below=True)


# ---------------------------------------------------------------------------------------------------- injection


def _kind_layers(tabs: dict) -> tuple[list, list]:
    kinds = list(tabs)
    ns = sorted({int(k[2:]) for kind in kinds for k in tabs[kind]})
    return kinds, ns


def delta_phi_position_figure(tabs: dict, layer_key: str, statistic: str = "median") -> go.Figure:
    """ΔΦ against the insertion position per kind, one panel per N, at one layer: the median (or mean) over
    contexts with its 95% bootstrap CI."""
    kinds, ns = _kind_layers(tabs)
    low, high = ("median_ci_low", "median_ci_high") if statistic == "median" else ("ci_low", "ci_high")
    fig = make_subplots(rows=len(ns), cols=1, vertical_spacing=0.07, subplot_titles=[f"N = {n}" for n in ns])
    for row, n in enumerate(ns, start=1):
        for kind in kinds:
            cells = tabs[kind].get(f"N_{n}", {})
            ps = sorted(int(k[2:]) for k in cells)
            e = [cells[f"p_{q}"][layer_key]["delta_phi"] for q in ps]
            band(fig, ps, _stat(e, statistic), _stat(e, low), _stat(e, high), name=kind, color=KIND_COLORS[kind],
                 row=row, col=1, showlegend=row == 1, marker=dict(size=5))
        fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=row, col=1)
        if ps:
            log_x(fig, ps, "insertion position p (words)" if row == len(ns) else "", row=row, col=1)
        fig.update_yaxes(title_text="ΔΦ", row=row, col=1)
    return layout(fig, f"ΔΦ = Φ(with insertion) − Φ(without), {statistic} over contexts with 95% CI, "
                       f"{layer_key.replace('_', ' ')}", height=230 * len(ns) + 130, legend_below=True)


def delta_phi_layer_figure(by_layer: dict) -> go.Figure:
    """ΔΦ averaged over positions within each context, against the layer, per kind, one panel per N (mean over
    contexts with 95% CI)."""
    kinds = list(by_layer)
    ns = sorted({int(k[2:]) for kind in kinds for k in by_layer[kind]})
    fig = make_subplots(rows=1, cols=len(ns), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"N = {n}" for n in ns])
    for col, n in enumerate(ns, start=1):
        for kind in kinds:
            e = by_layer[kind].get(f"N_{n}", {})
            layers = [parse_layer_key(k) for k in e]
            s = list(e.values())
            band(fig, layers, _stat(s), _stat(s, "ci_low"), _stat(s, "ci_high"), name=kind, color=KIND_COLORS[kind],
                 row=1, col=col, showlegend=col == 1, marker=dict(size=5))
        fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=1, col=col)
        fig.update_xaxes(type="category", title_text="layer (block)", row=1, col=col)
    fig.update_yaxes(title_text="ΔΦ (mean over positions)", row=1, col=1)
    return layout(fig, "ΔΦ by layer (mean over positions, then over contexts; 95% CI)", height=420,
                  legend_below=True)


def loss_at_figure(tabs: dict) -> go.Figure:
    """The inserted word's surprisal against its position per kind (at the largest N, which holds every position;
    the surprisal depends only on what precedes it), median over contexts with 95% CI."""
    kinds, ns = _kind_layers(tabs)
    fig = go.Figure()
    ps = []
    for kind in kinds:
        cells = tabs[kind].get(f"N_{ns[-1]}", {})
        ps = sorted(int(k[2:]) for k in cells)
        e = [cells[f"p_{q}"]["loss_at"] for q in ps]
        band(fig, ps, _stat(e, "median"), _stat(e, "median_ci_low"), _stat(e, "median_ci_high"), name=kind,
             color=KIND_COLORS[kind], marker=dict(size=6))
    if ps:
        log_x(fig, ps, "insertion position p (words)")
    fig.update_yaxes(title_text="surprisal of the inserted word (nats, sum over its tokens)")
    return layout(fig, "Loss at the insertion (median over contexts, 95% CI)", height=440, legend_below=True)


def loss_after_figure(tabs: dict) -> go.Figure:
    """Mean loss of the words after the insertion minus their loss without it, against the position, per kind, one
    panel per N (mean over contexts, paired, with 95% CI)."""
    kinds, ns = _kind_layers(tabs)
    fig = make_subplots(rows=1, cols=len(ns), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[f"N = {n}" for n in ns])
    for col, n in enumerate(ns, start=1):
        ps = []
        for kind in kinds:
            cells = tabs[kind].get(f"N_{n}", {})
            ps = sorted(int(k[2:]) for k in cells)
            e = [cells[f"p_{q}"]["loss_after_delta"] for q in ps]
            band(fig, ps, _stat(e), _stat(e, "ci_low"), _stat(e, "ci_high"), name=kind, color=KIND_COLORS[kind],
                 row=1, col=col, showlegend=col == 1, marker=dict(size=5))
        fig.add_hline(y=0, line=dict(color="#999", width=1, dash="dot"), row=1, col=col)
        if ps:
            log_x(fig, ps, "insertion position p (words)", row=1, col=col)
    fig.update_yaxes(title_text="Δ mean loss of later words (nats)", row=1, col=1)
    return layout(fig, "Loss after the insertion, minus the same words' loss without it (mean, 95% CI)", height=420,
                  legend_below=True)
