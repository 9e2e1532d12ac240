"""Layer spellings, resolved in one place.

Layer k is the residual-stream output of decoder block k, counted from 0, before the model's final norm; negative
indices count from the end (-1 is the last block); ``"embed"`` is the token embeddings (the input of block 0).
``"all"`` is every block and ``"default"`` the five blocks 0, L/4, L/2, 3L/4, L-1. Results key a layer as
``layer_<k>`` with k canonical (``layer_17``, never ``layer_-1``).
"""

from __future__ import annotations

from iclnb.core.errors import IclnbError

EMBED = "embed"


def layer_index(layer, n_layers: int, model_name: str = "the model") -> int | str:
    """Canonical index of one layer: ``"embed"`` or an int in [0, n_layers)."""
    if isinstance(layer, str):
        text = layer.strip()
        if text == EMBED:
            return EMBED
        if text.startswith("layer_"):
            text = text[len("layer_"):]
        try:
            layer = int(text)
        except ValueError:
            raise IclnbError(f"layer '{layer}' is not an integer, 'embed' or 'all'") from None
    if isinstance(layer, bool) or not isinstance(layer, int):
        try:
            layer = int(layer)
        except (TypeError, ValueError):
            raise IclnbError(f"layer {layer!r} is not an integer, 'embed' or 'all'") from None
    if not -n_layers <= layer < n_layers:
        raise IclnbError(f"layer {layer} is out of range: {model_name} has {n_layers} blocks, so layers are "
                         f"0..{n_layers - 1} (or -{n_layers}..-1 from the end, or 'embed')")
    return layer % n_layers


def default_layers(n_layers: int) -> list[int]:
    return sorted({0, n_layers // 4, n_layers // 2, (3 * n_layers) // 4, n_layers - 1})


def resolve_layers(layers, n_layers: int, model_name: str = "the model") -> list:
    """Layers as a sorted list of canonical indices (``"embed"`` first).

    Accepts ``"all"``, ``"default"`` (or None), a comma-separated string, an int, or a list.
    """
    if layers is None or (isinstance(layers, str) and layers.strip() == "default"):
        return default_layers(n_layers)
    if isinstance(layers, str):
        if layers.strip() == "all":
            return list(range(n_layers))
        parts = [p for p in layers.replace(" ", "").split(",") if p]
        if not parts:
            raise IclnbError("layers is empty; give e.g. 'all', 'default' or '0,5,11'")
        layers = parts
    elif isinstance(layers, int):
        layers = [layers]
    resolved = {layer_index(layer, n_layers, model_name) for layer in layers}
    return ([EMBED] if EMBED in resolved else []) + sorted(x for x in resolved if x != EMBED)


def layer_key(layer) -> str:
    """The results key of a canonical layer: ``layer_<k>`` or ``layer_embed``."""
    return f"layer_{layer}"


def parse_layer_key(key: str) -> int | str:
    """The layer of a results key, the inverse of :func:`layer_key`: ``"layer_17"`` -> 17, ``"layer_embed"`` ->
    ``"embed"``."""
    text = str(key)
    if not text.startswith("layer_"):
        raise IclnbError(f"'{key}' is not a layer key (layer_<k> or layer_embed)")
    body = text[len("layer_"):]
    if body == EMBED:
        return EMBED
    try:
        return int(body)
    except ValueError:
        raise IclnbError(f"'{key}' is not a layer key (layer_<k> or layer_embed)") from None


def check_layers_spec(value) -> str:
    """Check the spelling of a ``layers`` parameter before any model is loaded (its range is checked later)."""
    text = str(value).strip()
    if text in ("all", "default"):
        return text
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise IclnbError("layers is empty; give 'all', 'default' or indices such as '0,5,11' (negatives count from "
                         "the end, 'embed' is the embeddings)")
    for part in parts:
        if part != EMBED:
            try:
                int(part)
            except ValueError:
                raise IclnbError(f"layers: '{part}' is not an integer, 'embed', 'all' or 'default'") from None
    return ",".join(parts)


class LayerDict(dict):
    """A dict keyed by canonical layers that also answers to the other spellings of a layer (-1, "17", "embed")."""

    def __init__(self, data=(), *, n_layers: int, model_name: str = "the model"):
        super().__init__(data)
        self.n_layers = n_layers
        self.model_name = model_name

    def _canonical(self, key):
        return layer_index(key, self.n_layers, self.model_name)

    def __getitem__(self, key):
        canonical = self._canonical(key)
        if not dict.__contains__(self, canonical):
            raise KeyError(f"layer {key!r} (block {canonical}) was not captured; captured: {sorted(self, key=str)}")
        return dict.__getitem__(self, canonical)

    def __contains__(self, key):
        try:
            return dict.__contains__(self, self._canonical(key))
        except IclnbError:
            return False

    def get(self, key, default=None):
        return self[key] if key in self else default
