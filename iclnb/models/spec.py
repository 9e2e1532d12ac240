"""What a model is, without its weights: where transformers finds it, its tokenizer and its config.

Everything an experiment checks before any work (the model can be found, its tokenizer reads the graph's words, the
longest context fits, the layers exist) needs only this, so a bad input is refused in seconds rather than after a
minute of loading weights. A loaded :class:`~iclnb.models.Model` answers to the same attributes (``name``,
``tokenizer``, ``n_layers``, ``max_positions``, ``resolve_layers``, ``layer_index``), so a check written against a
:class:`ModelSpec` works on either.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from iclnb.core.errors import IclnbError
from iclnb.core.layers import default_layers, layer_index, resolve_layers
from iclnb.models.embedded import EMBEDDED_MODELS, embedded_model_dir

__all__ = ["ModelSpec", "hub_cached", "hub_reachable", "locate_model", "model_spec", "unknown_model_message"]


def unknown_model_message(name: str, reason: str) -> str:
    """The one line for a model name that cannot be found: what it is not, why, and what to pass instead."""
    embedded = ", ".join(EMBEDDED_MODELS)
    return (
        f"cannot load model '{name}': it is not an embedded model ({embedded}), not a local directory, and "
        f"transformers could not fetch it ({reason}). Use an embedded name, or pass the path of a local directory "
        "holding config.json, safetensors weights and the tokenizer."
    )


def hub_cached(name: str) -> bool:
    """Whether the Hugging Face cache holds the config of the Hub model ``name`` (so it loads offline)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an id that is not even valid as a repo name
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers at all (one quick TCP connect, not the library's minute of retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def locate_model(name: str) -> tuple[str, bool]:
    """Where transformers finds ``name`` and whether it must stay offline: ``(location, local_files_only)``.

    An embedded name resolves to its checked cache (made on first use), a directory to itself (it must hold
    config.json), anything else to a Hugging Face id, which needs the Hub or a cached copy. One IclnbError line for a
    name that cannot be found.
    """
    if name in EMBEDDED_MODELS:
        return str(embedded_model_dir(name)), True
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise IclnbError(f"model directory '{name}' holds no config.json; a model directory holds config.json, "
                             f"the tokenizer files and safetensors weights (what save_pretrained writes)")
        return str(path), True
    if path.exists():
        raise IclnbError(f"model path '{name}' is a file; pass a directory holding config.json and safetensors weights")
    reachable = hub_reachable()
    if not reachable and not hub_cached(name):
        raise IclnbError(unknown_model_message(name, "no network connection to the Hugging Face Hub and no cached "
                                                     "copy"))
    return name, not reachable


def text_config(config):
    """The decoder's config (a multimodal config keeps it under ``text_config``)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def n_layers_of(config) -> int:
    return int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer"))


def max_positions_of(config) -> int:
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 10**9)


@dataclass(frozen=True)
class ModelSpec:
    """A model's name, tokenizer and config, read without its weights."""

    name: str
    location: str
    local_only: bool
    tokenizer: object
    config: object

    @property
    def n_layers(self) -> int:
        return n_layers_of(self.config)

    @property
    def max_positions(self) -> int:
        return max_positions_of(self.config)

    def layer_index(self, layer) -> int | str:
        return layer_index(layer, self.n_layers, self.name)

    def resolve_layers(self, layers) -> list:
        return resolve_layers(layers, self.n_layers, self.name)

    def default_layers(self) -> list[int]:
        return default_layers(self.n_layers)


_TOKENIZERS: dict = {}


def _files_state(location: str) -> tuple:
    path = Path(location)
    if not path.is_dir():
        return ()
    return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(path.iterdir()) if f.is_file())


def load_tokenizer(location: str, local_only: bool, trust_remote_code: bool = False):
    """The tokenizer at ``location``, read once per process while its files are unchanged (the checks before
    loading and the model itself share it: a large tokenizer takes seconds to read)."""
    import warnings

    from transformers import AutoTokenizer

    key = (location, local_only, trust_remote_code, _files_state(location))
    if key not in _TOKENIZERS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _TOKENIZERS[key] = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code,
                                                             local_files_only=local_only)
    return _TOKENIZERS[key]


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name`` (an embedded name, a local directory or a Hugging Face id): its tokenizer
    and config, no weights. One IclnbError line for a name that cannot be found or read."""
    import warnings

    from transformers import AutoConfig

    location, local_only = locate_model(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = load_tokenizer(location, local_only)
            config = AutoConfig.from_pretrained(location, local_files_only=local_only)
    except (OSError, ValueError) as exc:
        raise IclnbError(unknown_model_message(name, str(exc).splitlines()[0] if str(exc) else
                                               type(exc).__name__)) from None
    return ModelSpec(name, location, local_only, tokenizer, text_config(config))
