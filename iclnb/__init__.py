"""iclnb: measure how in-context examples reshape the hidden representations of language models.

The everyday entry points are here: ``iclnb.load_model``, ``iclnb.encode_walk``, ``iclnb.graphs``, ``iclnb.stream``
and ``iclnb.results.load``. Imports are lazy, so ``import iclnb`` stays cheap.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "load_model": ("iclnb.models", "load_model"),
    "random_init_model": ("iclnb.models", "random_init_model"),
    "encode_walk": ("iclnb.prompts", "encode_walk"),
    "represent_walks": ("iclnb.represent", "represent_walks"),
    "stream": ("iclnb.core.seeding", "stream"),
    "IclnbError": ("iclnb.core.errors", "IclnbError"),
    "load_results": ("iclnb.results", "load"),
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    try:
        return importlib.import_module(f"iclnb.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"iclnb.{name}":  # a missing dependency of a real submodule: say so
            raise
        raise AttributeError(f"module 'iclnb' has no attribute {name!r}") from None
