"""Models: loading (embedded registry, dequantized cache, any Hugging Face id or local directory) and the forward
hooks that capture residual streams (``Model.run``, ``layer_hooks``); ``MovingTail``: the last blocks moving over a
trunk computed once."""

from iclnb.models.embedded import EMBEDDED_MODELS, cache_dir
from iclnb.models.hooks import Capture, layer_hooks
from iclnb.models.loading import DEFAULT_MODEL, Model, adds_bos, default_dtype, load_model, random_init_model
from iclnb.models.spec import ModelSpec, locate_model, model_spec
from iclnb.models.trunk import MovingTail

__all__ = ["Capture", "DEFAULT_MODEL", "EMBEDDED_MODELS", "Model", "adds_bos", "cache_dir", "default_dtype",
           "layer_hooks", "load_model", "locate_model", "model_spec", "ModelSpec", "MovingTail",
           "random_init_model"]
