"""Loading language models: an embedded model from its checked cache (:mod:`iclnb.models.embedded`), any other
name handed to transformers as a Hugging Face id or a local directory (:func:`~iclnb.models.spec.locate_model`).

``load_model("gemma-3-270m")`` works with no network: the first load dequantizes the embedded GGUF weights (about a
minute on a laptop CPU) and caches them, so later loads take seconds. The model's provenance (``source``) carries the
GGUF file's sha256 and the cached weights'.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from iclnb.models.hooks import CaptureMixin
from iclnb.core.errors import IclnbError
from iclnb.core.layers import default_layers, layer_index, resolve_layers
from iclnb.models.embedded import EMBEDDED_MODELS, cache_dir, embedded_cache, rebuild_embedded_cache
from iclnb.models.spec import load_tokenizer, locate_model, max_positions_of, text_config, unknown_model_message

DEFAULT_MODEL = "gemma-3-270m"


def default_dtype(device: str | torch.device) -> torch.dtype:
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def _parse_dtype(dtype) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16, "auto": None}
    if str(dtype) not in names:
        raise IclnbError(f"unknown dtype '{dtype}'; use one of float32, bfloat16, float16 or auto")
    return names[str(dtype)]


def load_model(
    name: str = DEFAULT_MODEL,
    dtype=None,
    device: str | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
) -> "Model":
    """Load a causal language model for capture.

    name: an embedded name (``gemma-3-270m``, ``smollm2-135m``), a Hugging Face id, or a local directory.
    dtype: float32 / bfloat16 / float16 / ``auto``; default float32 on CPU and bfloat16 on CUDA.
    device: ``cpu``, ``cuda``, ``cuda:1`` ...; default CUDA when available. ``device_map="auto"`` shards a large
    model over the GPUs of one machine (accelerate) and then ``device`` is ignored.
    """
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = _parse_dtype(dtype)
    if torch_dtype is None and dtype != "auto":
        torch_dtype = default_dtype(device)
    source: dict = {"requested": name}
    embedded = name in EMBEDDED_MODELS
    if embedded:
        path, cached = embedded_cache(name)
        source.update(cached)
        location, local_only = str(path), True
    else:
        location, local_only = locate_model(name)
        if Path(location).is_dir():
            source["path"] = location
    kwargs = dict(dtype=torch_dtype if torch_dtype is not None else "auto", trust_remote_code=trust_remote_code,
                  local_files_only=local_only)
    if device_map is not None:
        kwargs["device_map"] = device_map
    from safetensors import SafetensorError

    for attempt in (1, 2):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tokenizer = load_tokenizer(location, local_only, trust_remote_code)
                hf = AutoModelForCausalLM.from_pretrained(location, **kwargs)
            break
        except SafetensorError as exc:  # a truncated or garbled weights file
            reason = f"its weights are unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            if embedded and attempt == 1:
                source["weights_sha256"] = rebuild_embedded_cache(name, path, reason)
                continue
            if embedded:
                raise IclnbError(f"the cached copy of {name} in {path} is unreadable even rebuilt ({reason}); "
                                 f"delete {path} and load again") from None
            raise IclnbError(f"cannot load the model in '{name}': {reason}; replace its safetensors files") from None
        except (OSError, ValueError) as exc:
            if local_only and not embedded:
                raise IclnbError(f"cannot load the model in '{name}': {str(exc).splitlines()[0]}") from None
            if local_only:
                raise IclnbError(
                    f"the cached copy of {name} is unreadable ({str(exc).splitlines()[0]}); delete "
                    f"{cache_dir() / 'models' / name} and load again"
                ) from None
            raise IclnbError(unknown_model_message(name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from None
    if device_map is None:
        hf.to(device)
    hf.eval()
    return Model(hf, tokenizer, name=name, source=source)


# Real shapes for speed and memory measurements on machines without the weights (random init, nothing downloaded).
RANDOM_INIT_SHAPES = {
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                       bos_token_id=128000, eos_token_id=128001, rms_norm_eps=1e-5),
    "llama-3-8b-tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=128256, max_position_embeddings=8192,
                            bos_token_id=128000, eos_token_id=128001),
}


def random_init_model(shapes: str = "llama-3-8b", dtype=None, device: str | None = None, seed: int = 0) -> "Model":
    """A Llama-architecture model with real shapes and random weights, built directly on ``device`` in ``dtype``.

    For measuring speed and memory where no weights exist; it has no tokenizer, so feed it token ids.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    if shapes not in RANDOM_INIT_SHAPES:
        raise IclnbError(f"unknown shapes '{shapes}'; known: {', '.join(RANDOM_INIT_SHAPES)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = _parse_dtype(dtype) or default_dtype(device)
    config = LlamaConfig(**RANDOM_INIT_SHAPES[shapes])
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # no float32 copy of 8B weights on the way
    try:
        with torch.device(device):
            hf = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)
    return Model(hf, None, name=f"random-init {shapes}", source={"random_init": shapes, "seed": seed})


def _find_blocks(hf) -> torch.nn.ModuleList:
    """The decoder blocks: the ModuleList whose length is the configured number of layers."""
    config = text_config(hf.config)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    for _, module in hf.base_model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise IclnbError(f"cannot find the {n} decoder blocks of {type(hf).__name__}; iclnb supports decoder-only models")


class Model(CaptureMixin):
    """A loaded causal LM with the handles iclnb needs: ``.hf``, ``.tokenizer``, ``.n_layers``, ``.d_model``, ``.name``.

    Layer k is the residual stream output of decoder block k (0-based, before the final norm); ``"embed"`` is the
    input of block 0 (token embeddings, plus position embeddings where the model adds them).
    """

    def __init__(self, hf, tokenizer, name: str, source: dict | None = None):
        self.hf = hf
        self.tokenizer = tokenizer
        self.name = name
        self.source = source or {}
        self.config = text_config(hf.config)
        self.blocks = _find_blocks(hf)
        self.n_layers = len(self.blocks)
        self.d_model = getattr(self.config, "hidden_size", None) or getattr(self.config, "n_embd")
        self.max_positions = max_positions_of(self.config)

    def __repr__(self) -> str:
        return (f"Model({self.name!r}, {type(self.hf).__name__}, n_layers={self.n_layers}, d_model={self.d_model}, "
                f"dtype={self.dtype}, device={self.device})")

    @property
    def device(self) -> torch.device:
        return self.hf.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf.get_input_embeddings().weight.dtype

    # ---- layers -----------------------------------------------------------------------------------------------
    def layer_index(self, layer) -> int | str:
        """Canonical index of one layer: ``"embed"`` or an int in [0, n_layers); negative ints count from the end."""
        return layer_index(layer, self.n_layers, self.name)

    def resolve_layers(self, layers) -> list:
        """Layers as a sorted list of canonical indices (``"embed"`` first): ``"all"``, ``"default"`` (0, L/4, L/2,
        3L/4, L-1), a comma-separated string, an int, or a list (see :mod:`iclnb.core.layers`)."""
        return resolve_layers(layers, self.n_layers, self.name)

    def default_layers(self) -> list[int]:
        return default_layers(self.n_layers)

    # ---- provenance -------------------------------------------------------------------------------------------
    def provenance(self) -> dict:
        tok = self.tokenizer
        if tok is None:
            return {"name": self.name, "class": type(self.hf).__name__, "source": self.source,
                    "n_layers": self.n_layers, "d_model": self.d_model, "dtype": str(self.dtype).replace("torch.", ""),
                    "device": str(self.device), "tokenizer": None}
        return {
            "name": self.name,
            "class": type(self.hf).__name__,
            "source": self.source,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "vocab_size": getattr(self.config, "vocab_size", None),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "tokenizer": type(tok).__name__,
            "bos_token": tok.bos_token,
            "adds_bos": adds_bos(tok),
            "layer_convention": "layer k = residual output of decoder block k (0-based), before the final norm; "
            "'embed' = input of block 0",
        }


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer itself prepends its BOS token (the model was trained that way)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos
