"""ipywidgets explorers for JupyterLab.

``pca_explorer``: sliders for layer and context length and a toggle for including the attention sink redraw a PCA
scatter of node means with the graph's edges (a plotly ``FigureWidget`` when plotly's widget backend ``anywidget`` is
installed, else the figure redrawn into an ``ipywidgets.Output``). In a headless kernel (papermill, nbval,
``nbconvert --execute``), where no frontend draws widgets, it returns a static figure of the starting view instead.
``ICLNB_WIDGETS=1`` forces the widget, ``ICLNB_WIDGETS=0`` the static figure. :func:`current_view` gives a static copy
of what an explorer shows now, to save with the run.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from iclnb.plotting.embedding import edge_lines, embedding_figure

__all__ = ["interactive_frontend", "pca_explorer", "current_view"]


def interactive_frontend() -> bool:
    """Whether widgets can be drawn: an IPython kernel that is not run headless (see ``iclnb.core.progress``)."""
    forced = os.environ.get("ICLNB_WIDGETS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    from iclnb.core.progress import headless_kernel

    return "ipykernel" in sys.modules and not headless_kernel()


def _title(sink: bool, layer, context: int) -> str:
    return f"PCA of node means: layer {layer}, {context} tokens, sink {'included' if sink else 'excluded'}"


def pca_explorer(coords: dict, graph, layers, contexts, layer=None, context=None, interactive: bool | None = None):
    """Explore PCA scatters of node means.

    coords: ``{(sink_included: bool, layer, context_tokens): (n, 2) array}`` of PCs 1-2 per view.
    layers, contexts: the slider values. layer, context: the starting view (default: last of each).
    interactive: None = :func:`interactive_frontend`. Returns an ``ipywidgets.VBox`` (sliders + the figure; its
    ``.figure`` attribute is the figure currently shown) or, headless, a static ``plotly.graph_objects.Figure`` of
    the starting view.
    """
    layers, contexts = list(layers), [int(c) for c in contexts]
    layer = layers[-1] if layer is None else layer
    context = contexts[-1] if context is None else int(context)
    start = embedding_figure(coords[(False, layer, context)], graph, _title(False, layer, context))
    if interactive is None:
        interactive = interactive_frontend()
    if not interactive:
        return start

    import ipywidgets as W
    import plotly.graph_objects as go
    from IPython.display import display

    layer_slider = W.SelectionSlider(options=layers, value=layer, description="layer",
                                     continuous_update=False)
    context_slider = W.SelectionSlider(options=contexts, value=context, description="context (tokens)",
                                       continuous_update=False, style={"description_width": "initial"})
    sink_toggle = W.ToggleButton(value=False, description="include sink")
    try:
        fig = go.FigureWidget(start)
        view = fig
    except ImportError:  # plotly's FigureWidget needs anywidget; redraw a plain figure into an Output instead
        fig, view = None, W.Output()
    box = W.VBox([W.HBox([layer_slider, context_slider, sink_toggle]), view])
    box.figure = fig if fig is not None else start

    def redraw(_=None):
        key = (bool(sink_toggle.value), layer_slider.value, context_slider.value)
        xy = np.asarray(coords[key], dtype=float)
        if fig is None:
            box.figure = embedding_figure(xy, graph, _title(*key))
            view.clear_output(wait=True)
            with view:
                display(box.figure)
            return
        edges, nodes = fig.data[0], fig.data[1]
        ex, ey = edge_lines(xy, graph.edges())
        with fig.batch_update():
            edges.x, edges.y = ex, ey
            nodes.x, nodes.y = xy[:, 0], xy[:, 1]
            fig.layout.title.text = _title(*key)

    for w in (layer_slider, context_slider, sink_toggle):
        w.observe(redraw, names="value")
    if fig is None:
        redraw()
    return box


def current_view(explorer):
    """A static ``plotly.graph_objects.Figure`` of what ``explorer`` (from :func:`pca_explorer`) shows now: the
    figure itself when headless, else a copy of the widget's current figure."""
    import plotly.graph_objects as go

    figure = getattr(explorer, "figure", explorer)
    return go.Figure(figure)
