"""The results directory of one run: config and provenance, strict atomic JSON, checkpoints, a lock.

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
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from iclnb.core.errors import IclnbError
from iclnb.core.paths import REPO_ROOT
from iclnb.results.io import read_json, to_jsonable, write_csv, write_json, write_npz

__all__ = ["Run", "Checkpoint", "lock_holder", "holds_work", "check_resumable", "busy_message"]

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


def busy_message(directory: Path, info: dict) -> str:
    """The one line that refuses ``directory`` while the live run its lock describes (``info``) writes it."""
    where = f"pid {info.get('pid')}" if info.get("host") == socket.gethostname() else \
        f"pid {info.get('pid')} on host {info.get('host')}"
    msg = (f"{directory} is being written by a live run ({where} since {info.get('started')}). "
           f"Wait for it to finish or choose another output_dir.")
    if info.get("host") != socket.gethostname():
        msg += f" If that run is gone, delete {directory / LOCK_NAME}."
    return msg


#: How many open Run objects of this process hold each directory's lock (a notebook rerun in the same kernel opens
#: a second Run on the directory the first still holds): the file goes only when the last of them is closed.
_HELD: dict[Path, int] = {}


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
                        raise IclnbError(busy_message(self.directory, info))
                data = json.dumps(me).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
                self.held = True
                _HELD[self.path] = _HELD.get(self.path, 0) + 1
                return
            finally:
                os.close(fd)
        raise IclnbError(f"could not take the lock {self.path}; delete it if no run is writing {self.directory}")

    def release(self):
        if not self.held:
            return
        import fcntl

        self.held = False
        _HELD[self.path] = _HELD.get(self.path, 1) - 1
        if _HELD[self.path] > 0:
            return
        del _HELD[self.path]
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
        **_git_state(REPO_ROOT),
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

    def __init__(self, path, name: str, total: int | None = None, every_s: float = 30.0,
                 fingerprint: str | None = None):
        self.path = Path(path)
        self.name = name
        self.total = total
        self.every_s = float(every_s)
        self.fingerprint = fingerprint
        self._items: dict[str, Any] = {}
        if self.path.exists():
            stored = read_json(self.path)
            made_by = stored.get("fingerprint")
            if fingerprint is not None and stored.get("items") and made_by != fingerprint:
                raise IclnbError(f"{self.path} was made by a run with other parameters (or by an older iclnb), so its "
                                 f"work cannot be reused; delete it (or the whole directory) or choose another "
                                 f"output_dir")
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
            "fingerprint": self.fingerprint,
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


#: Parameters that say where a run writes and where it reports, not what it computes: a run may move, and logging
#: may be switched on for a rerun, without its work being redone.
NOT_COMPARED = ("output_dir", "log")


def params_fingerprint(experiment: str, params: dict) -> str:
    """A short hash of the experiment and its parameters (:data:`NOT_COMPARED` aside), stored in every checkpoint so
    that work done with other parameters is never taken for this run's."""
    import hashlib

    payload = {k: v for k, v in to_jsonable(params).items() if k not in NOT_COMPARED}
    text = json.dumps([experiment, payload], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _differences(old: dict, new: dict) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key in NOT_COMPARED:
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
    """One results directory: ``config.json``, ``results.json``, ``checkpoint_*.json``, ``figures/``, ``raw_data/``.

    Everything a run writes goes through it, so every notebook cell shows what it writes: :meth:`save_figure`
    (HTML now, the PNG copies of all figures in one browser session at :meth:`finish`), :meth:`save_table` (CSV),
    :meth:`save_arrays` (npz), :meth:`checkpoint`, and :meth:`finish` (results.json).
    """

    def __init__(self, directory: Path, experiment: str, params: dict, config: dict, lock: _Lock):
        self.dir = directory
        self.experiment = experiment
        self.params = params
        self.config = config
        self._lock = lock
        self._checkpoints: dict[str, Checkpoint] = {}
        self._pending_png: dict[str, Any] = {}
        self._on_finish: list = []
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
        except OSError as e:
            raise IclnbError(f"output_dir {directory} cannot be created ({e.strerror}); choose a writable "
                             f"directory") from None
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

    def update_config(self, **entries) -> dict:
        """Set top-level entries of config.json (``run.update_config(sgld={...})``) and rewrite it; returns the
        config. ``params``, ``experiment``, ``provenance`` and ``model`` belong to the run and are refused."""
        reserved = sorted(set(entries) & {"params", "experiment", "provenance", "model"})
        if reserved:
            raise IclnbError(f"config entries {reserved} are written by the run itself; use record_model for the "
                             f"model's")
        self.config.update(to_jsonable(dict(entries), "config"))
        self._write_config()
        return self.config

    def on_finish(self, callback) -> None:
        """Call ``callback(directory, params)`` after :meth:`finish` has written results.json and released the lock
        (experiment tracking registers itself here, so results never imports the layers above it)."""
        self._on_finish.append(callback)

    def record_model(self, info: dict) -> None:
        """Merge ``info`` (model id, file hash, tokenizer, BOS, layer convention, device, dtype, ...) into
        ``config["model"]`` and rewrite config.json."""
        self.config.setdefault("model", {}).update(to_jsonable(dict(info), "model"))
        self._write_config()

    # -- files
    def checkpoint(self, name: str, total: int | None = None, every_s: float = 30.0) -> Checkpoint:
        """The checkpoint ``checkpoint_<name>.json`` (loaded if it exists, so a rerun resumes)."""
        _check_name(name, "checkpoint")
        ck = self._checkpoints.get(name)
        if ck is None:
            ck = self._checkpoints[name] = Checkpoint(self.dir / f"checkpoint_{name}.json", name, total, every_s,
                                                      fingerprint=params_fingerprint(self.experiment, self.params))
        elif total is not None:
            ck.total = total
        return ck

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

    def save_figure(self, fig, name: str):
        """Write ``figures/<name>.html`` now and ``figures/<name>.png`` with the others at :meth:`finish` (one browser
        session for every PNG of the run); returns ``fig`` so that a cell can show what it saved."""
        from iclnb.plotting.save import write_html

        _check_name(name, "figure")
        write_html(fig, self.figures_dir, name)
        self._pending_png[name] = fig
        return fig

    def export_figures(self) -> list[Path]:
        """Write the PNG copies of the figures saved since the last export (done by :meth:`finish` and
        :meth:`close`)."""
        from iclnb.plotting.save import export_pngs

        pending, self._pending_png = self._pending_png, {}
        if not pending:
            return []
        return export_pngs([(fig, self.figures_dir / f"{name}.png") for name, fig in pending.items()])

    def save_table(self, table, name: str):
        """Write a pandas DataFrame to ``raw_data/<name>.csv``; returns the table."""
        _check_name(name, "table")
        write_csv(self.raw_data_dir / f"{name}.csv", table)
        return table

    def save_arrays(self, name: str, **arrays) -> Path:
        """Write numpy arrays to ``raw_data/<name>.npz`` (no pickle)."""
        _check_name(name, "arrays")
        return write_npz(self.raw_data_dir / f"{name}.npz", **arrays)

    # -- end
    def finish(self, results: dict, model: str | None = None) -> Path:
        """Write results.json ``{"experiment", "model", "timestamp", "config", "results"}``, the figures' PNG
        copies, mark config.json finished and release the lock. ``model`` defaults to the recorded model's name.
        Returns the path of results.json, then calls the callbacks registered with :meth:`on_finish` (W&B logging,
        when a ``log`` parameter or ``ICLNB_WANDB_PROJECT`` names a project)."""
        if model is None:
            model = (self.config.get("model") or {}).get("name")
        doc = {"experiment": self.experiment, "model": model, "timestamp": _now(), "config": self.params,
               "results": results}
        path = write_json(self.dir / RESULTS_NAME, doc)
        self.export_figures()
        self.config["provenance"]["finished"] = doc["timestamp"]
        self._write_config()
        self.close()
        for callback in self._on_finish:
            callback(self.dir, self.params)
        return path

    def close(self) -> None:
        """Flush checkpoints, export pending PNGs and release the lock (also done at interpreter exit)."""
        for ck in self._checkpoints.values():
            if ck._dirty:
                try:
                    ck.flush()
                except OSError:
                    pass
        try:
            self.export_figures()
        except Exception:  # the HTML figures are written; a PNG failure must not lose the lock release
            pass
        self._lock.release()
        atexit.unregister(self.close)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"Run({self.experiment!r}, {str(self.dir)!r})"


def _check_name(name: str, what: str) -> None:
    if not _NAME_RE.match(name):
        raise IclnbError(f"{what} name {name!r} may use only letters, digits, '_', '-' and '.'")
