"""Models: loading (embedded registry, dequantized cache, any Hugging Face id or local directory) and the forward
hooks that capture residual streams (``Model.run``, ``layer_hooks``)."""

from iclnb.models.hooks import Capture, layer_hooks
from iclnb.models.loading import (
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    Model,
    adds_bos,
    cache_dir,
    default_dtype,
    load_model,
    random_init_model,
)
from iclnb.models.spec import ModelSpec, locate_model, model_spec

__all__ = ["Capture", "DEFAULT_MODEL", "EMBEDDED_MODELS", "Model", "adds_bos", "cache_dir", "default_dtype",
           "layer_hooks", "load_model", "locate_model", "model_spec", "ModelSpec",
           "random_init_model"]
