"""The results directory of one run (SPEC section 8): config and provenance, strict atomic JSON, checkpoints, a lock.

A notebook opens its run first and finishes it last::

    run = Run.open(output_dir, "css_basic", params)
    done = run.checkpoint("contexts", total=n_contexts)
    for i in progress(range(n_contexts), "contexts"):
        if str(i) not in done:
            done[i] = measure(i)          # JSON-safe values; flushed to disk every `every_s` seconds
    run.finish(summarise(done), model=model)

Rerunning the same notebook with the same parameters into the same directory resumes from the checkpoints; values
read back from a checkpoint equal the values that were stored (floats are written with ``repr``, which is exact), so
an interrupted-then-resumed run gives the same results as an uninterrupted one. Different parameters are refused,
and so is a second run while a live process holds the directory's lock.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from .errors import IclnbError

__all__ = ["Run", "Checkpoint", "to_jsonable", "write_json", "read_json", "lock_holder"]

LOCK_NAME = ".lock"
CONFIG_NAME = "config.json"
RESULTS_NAME = "results.json"
_PACKAGES = {  # provenance key -> distribution name
    "iclnb": "iclnb",
    "torch": "torch",
    "transformers": "transformers",
    "numpy": "numpy",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "pandas": "pandas",
    "plotly": "plotly",
}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------- strict JSON


def _child(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _check_float(x: float, path: str):
    if math.isnan(x):
        return None
    if math.isinf(x):
        raise ValueError(f"{path or 'value'} is {'inf' if x > 0 else '-inf'}; results must be finite (NaN is "
                         f"written as null, infinity is refused)")
    return x


def _array_to_jsonable(arr: np.ndarray, path: str):
    if arr.dtype.kind in "fc":
        if arr.dtype.kind == "c":
            raise TypeError(f"{path or 'value'} is a complex array; store real and imaginary parts separately")
        bad = np.isinf(arr)
        if bad.any():
            idx = np.argwhere(bad)[0]
            where = (path or "value") + "".join(f"[{int(i)}]" for i in idx)
            raise ValueError(f"{where} is {'inf' if arr[tuple(idx)] > 0 else '-inf'}; results must be finite "
                             f"(NaN is written as null, infinity is refused)")
        data = arr.astype(np.float64).tolist() if arr.dtype != np.float64 else arr.tolist()
        if np.isnan(arr).any():
            return _nan_to_none(data)
        return data
    if arr.dtype.kind in "biu":
        return arr.tolist()
    if arr.dtype.kind in "USO":
        return [to_jsonable(v, f"{path}[{i}]") for i, v in enumerate(arr.tolist())] if arr.ndim == 1 else \
            [_array_to_jsonable(np.asarray(sub, dtype=arr.dtype), f"{path}[{i}]") for i, sub in enumerate(arr)]
    raise TypeError(f"{path or 'value'} is an array of dtype {arr.dtype}, which has no JSON form")


def _nan_to_none(data):
    if isinstance(data, list):
        return [_nan_to_none(v) for v in data]
    return None if isinstance(data, float) and math.isnan(data) else data


def to_jsonable(obj: Any, _path: str = "") -> Any:
    """``obj`` as plain JSON-safe Python: numpy arrays/scalars -> lists/Python numbers, NaN -> None, tuples and sets
    -> lists, paths -> str, datetimes -> ISO strings, dict keys -> str. Infinity raises ``ValueError`` naming the key
    path (``results.layer_3.phi[7] is inf``): an infinite metric is a bug upstream, never a value to store.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _check_float(float(obj), _path)
    if isinstance(obj, np.generic):
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return _check_float(float(obj), _path)
        if isinstance(obj, np.str_):
            return str(obj)
        return _array_to_jsonable(np.asarray(obj), _path)
    if isinstance(obj, np.ndarray):
        return _array_to_jsonable(obj, _path)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            key = str(k.item() if isinstance(k, np.generic) else k)
            out[key] = to_jsonable(v, _child(_path, key))
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        items = list(obj)
        try:
            items.sort()
        except TypeError:
            pass
        return [to_jsonable(v, f"{_path}[{i}]") for i, v in enumerate(items)]
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach"):  # a tensor, without importing torch
        t = obj.detach().cpu()
        if t.is_floating_point():
            t = t.double()
        return _array_to_jsonable(t.numpy(), _path)
    raise TypeError(f"{_path or 'value'} is a {type(obj).__name__}, which has no JSON form; convert it to numbers, "
                    f"strings, lists or dicts")


def write_json(path, obj) -> Path:
    """Write ``obj`` as strict JSON (no NaN/Infinity tokens), atomically: the whole text is built first, written to
    a temporary file in the same directory, fsynced, then renamed over ``path``. A failure at any step leaves the
    previous file untouched.
    """
    path = Path(path)
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def _refuse_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def read_json(path) -> Any:
    """Read strict JSON (``NaN``/``Infinity`` tokens are refused)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except ValueError as e:
        raise IclnbError(f"{path} is not valid JSON ({e}); delete it or restore it from a backup") from None


# ---------------------------------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is a zombie: dead for our purpose
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    return True


def _process_start_epoch(pid: int) -> float | None:
    """When process ``pid`` started (Linux only), to tell a live lock holder from a reused pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _holder_is_live(info: dict) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # cannot see processes on another machine: assume it runs
    pid = int(info.get("pid", -1))
    if not _pid_alive(pid):
        return False
    began = _process_start_epoch(pid)
    try:
        locked = _dt.datetime.fromisoformat(info["started"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return True
    return began is None or began <= locked + 5  # a process younger than the lock reuses a dead run's pid


def _read_lock(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) and "pid" in info else None
    except (OSError, ValueError):
        return None


def lock_holder(output_dir) -> dict | None:
    """The lock record ``{"pid", "host", "started"}`` of the live run writing ``output_dir``, or None."""
    info = _read_lock(Path(output_dir) / LOCK_NAME)
    if info is None or _holder_is_live(info):
        return info
    return None


def _busy_message(directory: Path, info: dict) -> str:
    where = f"pid {info.get('pid')}" if info.get("host") == socket.gethostname() else \
        f"pid {info.get('pid')} on host {info.get('host')}"
    msg = (f"{directory} is being written by a live run ({where} since {info.get('started')}). "
           f"Wait for it to finish or choose another output_dir.")
    if info.get("host") != socket.gethostname():
        msg += f" If that run is gone, delete {directory / LOCK_NAME}."
    return msg


class _Lock:
    """``output_dir/.lock`` naming the process that writes the directory. Taking it is serialised with ``flock`` so
    two processes racing for a stale lock cannot both win; liveness itself comes from the pid, so a killed run's
    lock is simply taken over."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / LOCK_NAME
        self.held = False

    def acquire(self):
        import fcntl

        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        for _ in range(20):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                        continue  # released (unlinked) while we waited: try the new file
                except FileNotFoundError:
                    continue
                raw = os.pread(fd, 1 << 16, 0)
                try:
                    info = json.loads(raw) if raw.strip() else None
                except ValueError:
                    info = None
                if isinstance(info, dict) and "pid" in info:
                    mine = info.get("host") == me["host"] and int(info.get("pid", -1)) == me["pid"]
                    if mine:
                        me["started"] = info.get("started", me["started"])
                    elif _holder_is_live(info):
                        raise IclnbError(_busy_message(self.directory, info))
                data = json.dumps(me).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
                self.held = True
                return
            finally:
                os.close(fd)
        raise IclnbError(f"could not take the lock {self.path}; delete it if no run is writing {self.directory}")

    def release(self):
        if not self.held:
            return
        import fcntl

        self.held = False
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            info = _read_lock(self.path)
            if info and int(info.get("pid", -1)) == os.getpid() and info.get("host") == socket.gethostname():
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)


# ---------------------------------------------------------------------------------------------------- provenance


def _package_versions() -> dict:
    from importlib import metadata

    out = {}
    for key, dist in _PACKAGES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def _git_state(root: Path) -> dict:
    if not (root / ".git").exists():
        return {"git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"git_commit": commit, "git_dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def provenance() -> dict:
    """Versions, platform, git state of the iclnb source tree, host; ``started``/``finished`` are filled by Run."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": _package_versions(),
        **_git_state(Path(__file__).resolve().parent.parent),
        "hostname": socket.gethostname(),
        "started": None,
        "finished": None,
    }


# ---------------------------------------------------------------------------------------------------- checkpoints


_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


class Checkpoint(Mapping):
    """A store of finished work units (``key -> JSON-safe value``) that survives interruption.

    Keys are ``str()``-ed; values are converted with :func:`to_jsonable` when stored, so reading a value back gives
    the same thing whether it was computed in this session or loaded from disk. Setting an item writes the file
    when ``every_s`` seconds passed since the last write (``every_s=0``: every item); :meth:`flush` writes now.
    """

    def __init__(self, path, name: str, total: int | None = None, every_s: float = 30.0):
        self.path = Path(path)
        self.name = name
        self.total = total
        self.every_s = float(every_s)
        self._items: dict[str, Any] = {}
        if self.path.exists():
            stored = read_json(self.path)
            self._items = dict(stored.get("items", {}))
            if total is None:
                self.total = stored.get("total")
        self._session_started = _now()
        self._done_at_start = len(self._items)
        self._last_flush = time.monotonic()
        self._dirty = False

    def __contains__(self, key) -> bool:
        return str(key) in self._items

    def __getitem__(self, key):
        return self._items[str(key)]

    def __setitem__(self, key, value):
        key = str(key)
        self._items[key] = to_jsonable(value, f"checkpoint_{self.name}[{key!r}]")
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.every_s:
            self.flush()

    def __delitem__(self, key):
        del self._items[str(key)]
        self._dirty = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc):
        self.flush()

    def flush(self) -> Path:
        write_json(self.path, {
            "name": self.name,
            "total": self.total,
            "done": len(self._items),
            "updated": _now(),
            "session_started": self._session_started,
            "session_done_at_start": self._done_at_start,
            "items": self._items,
        })
        self._last_flush = time.monotonic()
        self._dirty = False
        return self.path

    def __repr__(self):
        return f"Checkpoint({self.name!r}, {len(self)}/{self.total if self.total is not None else '?'} done)"


# ---------------------------------------------------------------------------------------------------- the run


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key == "output_dir":
            continue
        if key not in old:
            out.append(f"{key} (new parameter, now {new[key]!r})")
        elif key not in new:
            out.append(f"{key} (was {old[key]!r}, now not given)")
        elif old[key] != new[key]:
            out.append(f"{key} (was {old[key]!r}, now {new[key]!r})")
    return out


def holds_work(output_dir) -> bool:
    """Whether a results directory holds finished work: results.json, or a checkpoint with at least one unit."""
    directory = Path(output_dir)
    if (directory / RESULTS_NAME).exists():
        return True
    for path in directory.glob("checkpoint_*.json"):
        try:
            if read_json(path).get("items"):
                return True
        except (OSError, ValueError, AttributeError):
            return True  # unreadable: keep it rather than risk losing work
    return False


def check_resumable(output_dir, experiment: str, params: dict, only_shared: bool = False) -> None:
    """Raise IclnbError if ``output_dir`` holds a run of another experiment or with different parameters
    (``only_shared``: compare only the parameters present on both sides). A run that stopped before finishing any
    work (bad input, say) holds nothing to resume, so another run may start over there."""
    directory = Path(output_dir)
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.exists() or not holds_work(directory):
        return
    old = read_json(cfg_path)
    diffs = []
    if old.get("experiment") != experiment:
        diffs.append(f"experiment (was {old.get('experiment')!r}, now {experiment!r})")
    old_params, new_params = old.get("params") or {}, to_jsonable(params)
    if only_shared:
        old_params = {k: v for k, v in old_params.items() if k in new_params}
        new_params = {k: v for k, v in new_params.items() if k in old_params}
    diffs += _differences(old_params, new_params)
    if diffs:
        raise IclnbError(f"{directory} holds a run with different parameters: {'; '.join(diffs)}. "
                         f"Use another output_dir, or delete {directory} to start over.")


class Run:
    """One results directory: ``config.json``, ``results.json``, ``checkpoint_*.json``, ``figures/``, ``raw_data/``."""

    def __init__(self, directory: Path, experiment: str, params: dict, config: dict, lock: _Lock):
        self.dir = directory
        self.experiment = experiment
        self.params = params
        self.config = config
        self._lock = lock
        self._checkpoints: dict[str, Checkpoint] = {}
        atexit.register(self.close)

    @property
    def output_dir(self) -> Path:
        return self.dir

    @classmethod
    def open(cls, output_dir, experiment: str, params: dict) -> "Run":
        """Open (create or resume) the run of ``experiment`` with ``params`` in ``output_dir``.

        Refuses a directory that a live process is writing, and one that holds a run with other parameters
        (``output_dir`` itself is not compared). Same parameters: resume, keeping the original start time.
        """
        if output_dir is None or str(output_dir) == "":
            raise IclnbError("output_dir is empty; pass a directory path for the results")
        directory = Path(output_dir).expanduser().resolve()
        if directory.is_file():
            raise IclnbError(f"output_dir {directory} is a file; pass a directory path")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except (NotADirectoryError, FileExistsError):
            raise IclnbError(f"output_dir {directory} cannot be created: a part of the path is a file; "
                             f"pass a directory path") from None
        params = to_jsonable(dict(params))
        lock = _Lock(directory)
        lock.acquire()
        try:
            check_resumable(directory, experiment, params)
            cfg_path = directory / CONFIG_NAME
            prov = provenance()
            if cfg_path.exists() and holds_work(directory):
                config = read_json(cfg_path)
                old = config.get("provenance") or {}
                prov["started"] = old.get("started") or _now()
                prov["resumed"] = list(old.get("resumed") or []) + [_now()]
                config["params"] = params  # output_dir may differ (a moved directory)
            else:
                prov["started"] = _now()
                config = {"experiment": experiment, "params": params, "provenance": None, "model": {}}
            config["provenance"] = prov
            config.setdefault("model", {})
            write_json(cfg_path, config)
        except BaseException:
            lock.release()
            raise
        return cls(directory, experiment, params, config, lock)

    # -- config
    def _write_config(self):
        write_json(self.dir / CONFIG_NAME, self.config)

    def record_model(self, info: dict) -> None:
        """Merge ``info`` (model id, file hash, tokenizer, BOS, layer convention, device, dtype, ...) into
        ``config["model"]`` and rewrite config.json."""
        self.config.setdefault("model", {}).update(to_jsonable(dict(info), "model"))
        self._write_config()

    # -- files
    def checkpoint(self, name: str, total: int | None = None, every_s: float = 30.0) -> Checkpoint:
        """The checkpoint ``checkpoint_<name>.json`` (loaded if it exists, so a rerun resumes)."""
        if not _NAME_RE.match(name):
            raise IclnbError(f"checkpoint name {name!r} may use only letters, digits, '_', '-' and '.'")
        ck = self._checkpoints.get(name)
        if ck is None:
            ck = self._checkpoints[name] = Checkpoint(self.dir / f"checkpoint_{name}.json", name, total, every_s)
        elif total is not None:
            ck.total = total
        return ck

    def figure_path(self, name: str, ext: str) -> Path:
        figures = self.dir / "figures"
        figures.mkdir(exist_ok=True)
        return figures / f"{name}.{ext.lstrip('.')}"

    @property
    def figures_dir(self) -> Path:
        path = self.dir / "figures"
        path.mkdir(exist_ok=True)
        return path

    @property
    def raw_data_dir(self) -> Path:
        path = self.dir / "raw_data"
        path.mkdir(exist_ok=True)
        return path

    # -- end
    def finish(self, results: dict, model: str) -> Path:
        """Write results.json ``{"model", "timestamp", "config", "results"}``, mark config.json finished, release
        the lock. Returns the path of results.json."""
        doc = {"model": model, "timestamp": _now(), "config": self.params, "results": results}
        path = write_json(self.dir / RESULTS_NAME, doc)
        self.config["provenance"]["finished"] = doc["timestamp"]
        self._write_config()
        self.close()
        return path

    def close(self) -> None:
        """Flush checkpoints and release the lock (also done at interpreter exit)."""
        for ck in self._checkpoints.values():
            if ck._dirty:
                try:
                    ck.flush()
                except OSError:
                    pass
        self._lock.release()
        atexit.unregister(self.close)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Run({self.experiment!r}, {str(self.dir)!r})"
