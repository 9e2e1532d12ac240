"""``iclnb list | run | status``: the command line around the experiment notebooks.

``iclnb run <experiment> -p NAME VALUE ... [-o DIR]`` executes the experiment's notebook with papermill into
``results/<experiment>/`` (or DIR), passing ``output_dir``. Every parameter is converted and checked against the
experiment's declaration (``PARAMS`` of its module) before anything starts. Mistakes on the command line (unknown experiment or parameter, a value
of the wrong type, an output path that is a file or that a live run is writing, a directory holding a run with other
parameters) exit with status 2 and one line on stderr, before anything is written. A failure inside the notebook
exits with status 1 and names the executed notebook that holds the traceback.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import socket
import sys
from pathlib import Path

from iclnb.core.errors import IclnbError
from iclnb.core.paths import notebooks_dir, results_root
from iclnb.results.io import read_json
from iclnb.results.run import CONFIG_NAME, RESULTS_NAME, _busy_message, check_resumable, lock_holder

PROG = "iclnb"


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit status 2."""


# ------------------------------------------------------------------------------------------------- experiments


def _experiment(name: str):
    from iclnb.experiments import find

    if name.endswith(".ipynb"):
        name = Path(name).stem
    try:
        return find(name)
    except IclnbError as e:
        raise UsageError(str(e)) from None


def _notebook_path(exp) -> Path:
    path = notebooks_dir() / f"{exp.notebook}.ipynb"
    if not path.is_file():
        raise UsageError(f"the notebook of {exp.name} is missing: {path} (set ICLNB_NOTEBOOKS to the notebooks "
                         f"directory of an iclnb checkout)")
    return path


def cmd_list(args) -> int:
    from iclnb.experiments import registry

    for name, exp in registry().items():
        title = name if exp.notebook == name else f"{name}  (notebook {exp.notebook} with other defaults)"
        print(title)
        declaration = exp.params
        width = max((len(p.name) for p in declaration.params), default=0)
        for param in declaration.params:
            default = f'"{param.default}"' if isinstance(param.default, str) else repr(param.default)
            print(f"    {param.name.ljust(width)}  {param.kind_name:5s} = {default}  # {param.help} "
                  f"[{param.describe}]")
    return 0


def _kernel_and_language(path: Path) -> tuple[str | None, str | None]:
    """Overrides for a notebook whose metadata names no kernel or language: the "python3" kernel, which runs the
    interpreter running iclnb (see the Makefile). None keeps what the notebook says."""
    import nbformat

    try:
        meta = nbformat.read(str(path), as_version=4).metadata
    except Exception:
        return None, None
    kernel = None if meta.get("kernelspec", {}).get("name") else "python3"
    has_language = meta.get("kernelspec", {}).get("language") or meta.get("language_info", {}).get("name")
    return kernel, None if has_language else "python"


def _kernel_manager_class():
    """A kernel manager that talks to its kernel over unix sockets in a private directory: no TCP ports opened, and
    no warning about unencrypted TCP in every run's log."""
    import atexit
    import shutil
    import tempfile

    from jupyter_client.manager import AsyncKernelManager

    sockets = tempfile.mkdtemp(prefix="iclnb-kernel-")
    atexit.register(shutil.rmtree, sockets, ignore_errors=True)

    class LocalSocketKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(Path(sockets) / "kernel")

    return LocalSocketKernelManager


def _listing(directory: Path) -> list[str]:
    files = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append(str(rel))
    return files


def checked_parameters(exp, pairs) -> tuple[dict, dict]:
    """``(overrides, values)``: the notebook values of ``-p NAME VALUE`` pairs (converted to each parameter's kind),
    and every parameter of the experiment checked and normalised as the notebook will record it (defaults
    included). Raises UsageError."""
    declaration = exp.params
    overrides = dict(exp.preset)
    for name, text in pairs:
        if name not in declaration:
            valid = ", ".join(n for n in declaration.names if n != "output_dir")
            raise UsageError(f"unknown parameter {name!r} for {exp.name}; valid parameters: {valid}")
        try:
            overrides[name] = declaration[name].coerce(text)
        except IclnbError as e:
            raise UsageError(str(e)) from None
    try:
        values = declaration.validate({**declaration.defaults(), **overrides})
    except IclnbError as e:
        raise UsageError(str(e)) from None
    return overrides, dict(values)


def _output_dir(out_arg, name: str) -> Path:
    out_dir = (Path(out_arg).expanduser() if out_arg else results_root() / name).resolve()
    if out_dir.is_file():
        raise UsageError(f"output directory {out_dir} is a file; pass a directory path with -o")
    for parent in out_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"output directory {out_dir} cannot be created: {parent} is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"output directory {out_dir} cannot be created: {parent} is not writable; "
                                 f"choose another directory with -o")
            break
    if out_dir.is_dir() and not os.access(out_dir, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {out_dir} is not writable; choose another directory with -o")
    return out_dir


def cmd_run(args) -> int:
    exp = _experiment(args.experiment)
    nb_path = _notebook_path(exp)
    pairs = list(args.param or [])
    out_arg = args.output
    for pname, text in pairs:
        if pname == "output_dir":
            if out_arg and Path(out_arg).expanduser().resolve() != Path(text).expanduser().resolve():
                raise UsageError(f"-o {out_arg} and -p output_dir {text} name different directories; give one")
            out_arg = text
    pairs = [(n, t) for n, t in pairs if n != "output_dir"]
    overrides, values = checked_parameters(exp, pairs)

    out_dir = _output_dir(out_arg, exp.name)
    holder = lock_holder(out_dir) if out_dir.is_dir() else None
    if holder is not None and not (holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()):
        raise UsageError(_busy_message(out_dir, holder))
    # The notebook refuses a directory holding other parameters itself; checking here as well keeps papermill
    # from overwriting that run's executed notebook first.
    if (out_dir / CONFIG_NAME).is_file():
        try:
            check_resumable(out_dir, exp.notebook, {**values, "output_dir": str(out_dir)})
        except IclnbError as e:
            raise UsageError(str(e)) from None

    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / f"{exp.name}.ipynb"
    # The executed notebook is written beside its final name and moved there when the run ends, so a full disk
    # or a kill never leaves a truncated notebook under that name; a finished run's executed notebook is replaced
    # only by a rerun that succeeds.
    finished = (out_dir / RESULTS_NAME).is_file()
    target = out_dir / f".{exp.name}.running.ipynb"
    kernel, language = _kernel_and_language(nb_path)
    parameters = {**overrides, "output_dir": str(out_dir)}
    os.environ.setdefault("ICLNB_PROGRESS", "text")
    print(f"running {exp.name} -> {out_dir}", file=sys.stderr, flush=True)
    try:
        # the kernel's stdout/stderr are copied raw to ours (log_output would route them through logging, one
        # record per chunk, breaking carriage-return progress lines)
        papermill.execute_notebook(str(nb_path), str(target), parameters=parameters, kernel_name=kernel,
                                   language=language, progress_bar=False, log_output=False, stdout_file=sys.stdout,
                                   stderr_file=sys.stderr, cwd=str(nb_path.parent),
                                   kernel_manager_class=_kernel_manager_class())
    except PapermillExecutionError as e:
        kept = _keep_failed(target, out_nb, finished)
        print(f"{PROG}: error: {exp.name} failed: {e.ename}: {e.evalue}", file=sys.stderr)
        if kept:
            print(f"the executed notebook with the full traceback is at {kept}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _keep_failed(target, out_nb, finished)
        print(f"{PROG}: interrupted; rerun the same command to resume from the checkpoints in {out_dir}",
              file=sys.stderr)
        return 130
    except Exception as e:  # the kernel died, could not start, ...
        kept = _keep_failed(target, out_nb, finished)
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"{PROG}: error: {exp.name} failed: {type(e).__name__}: {first}", file=sys.stderr)
        if kept:
            print(f"the executed notebook is at {kept}", file=sys.stderr)
        return 1
    if _settle(target, out_nb) is None:
        print(f"{PROG}: error: the executed notebook could not be written to {out_nb} (is the disk full?)",
              file=sys.stderr)
        return 1
    print(f"results: {out_dir}")
    for f in _listing(out_dir):
        print(f"  {f}")
    return 0


def _readable(path: Path) -> bool:
    import nbformat

    try:
        nbformat.read(str(path), as_version=4)
        return True
    except Exception:  # truncated (a full disk) or never written
        return False


def _settle(target: Path, final: Path) -> Path | None:
    """Move the executed notebook to its final name when it is a whole notebook (returns that name); otherwise
    drop it and leave what is there (returns None)."""
    if _readable(target):
        os.replace(target, final)
        return final
    target.unlink(missing_ok=True)
    return None


def _keep_failed(target: Path, out_nb: Path, finished: bool) -> Path | None:
    """Where a failed run's executed notebook stays: beside a finished run's notebook, never over it."""
    return _settle(target, out_nb.with_name(f"{out_nb.stem}.failed.ipynb") if finished else out_nb)


def _parse_time(text):
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.astimezone()


def _duration(seconds: float) -> str:
    seconds = int(max(0, round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def status_report(directory) -> list[str]:
    """The lines ``iclnb status`` prints for a results directory."""
    directory = Path(directory).expanduser().resolve()
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise UsageError(f"{directory} is not a results directory (no {CONFIG_NAME})")
    try:
        config = read_json(cfg_path)
    except IclnbError as e:
        raise UsageError(str(e)) from None
    prov = config.get("provenance") or {}
    now = _dt.datetime.now().astimezone()
    holder = lock_holder(directory)
    if holder is not None:
        state = f"running (pid {holder.get('pid')} on {holder.get('host')})"
    elif (directory / RESULTS_NAME).is_file() and prov.get("finished"):
        try:
            read_json(directory / RESULTS_NAME)
            state = "finished"
        except IclnbError:
            state = f"damaged: {RESULTS_NAME} is not valid JSON (rerun the same command to recompute it)"
    else:
        state = "stopped (rerun the same command to resume)"
    started = _parse_time(prov.get("started"))
    finished = _parse_time(prov.get("finished")) if holder is None else None

    checkpoints = []
    for path in sorted(directory.glob("checkpoint_*.json")):
        try:
            checkpoints.append(read_json(path))
        except IclnbError:
            checkpoints.append({"name": path.stem[len("checkpoint_"):], "unreadable": True})
    updates = [t for t in (_parse_time(c.get("updated")) for c in checkpoints) if t]
    last = max(updates) if updates else None

    end = now if holder is not None else (finished or last or started)
    lines = [f"directory:   {directory}",
             f"experiment:  {config.get('experiment')}",
             f"state:       {state}"]
    if started:
        lines.append(f"started:     {started.isoformat(timespec='seconds')}")
    if finished:
        lines.append(f"finished:    {finished.isoformat(timespec='seconds')}")
    if started and end:
        lines.append(f"elapsed:     {_duration((end - started).total_seconds())}")
    if last:
        lines.append(f"last update: {last.isoformat(timespec='seconds')} ({_duration((now - last).total_seconds())} ago)")
    for c in checkpoints:
        if c.get("unreadable"):
            lines.append(f"checkpoint {c['name']}: unreadable")
            continue
        done, total = int(c.get("done", len(c.get("items", {})))), c.get("total")
        line = f"checkpoint {c.get('name')}: {done}/{total if total is not None else '?'}"
        if total:
            line += f" ({100 * done / total:.0f}%)"
            updated = _parse_time(c.get("updated"))
            since = _parse_time(c.get("session_started")) or started
            base = int(c.get("session_done_at_start", 0)) if c.get("session_started") else 0
            if done >= total:
                line += ", complete"
            elif updated and since and done > base and (updated - since).total_seconds() > 0:
                rate = (done - base) / (updated - since).total_seconds()
                eta = updated + _dt.timedelta(seconds=(total - done) / rate)
                if holder is not None:
                    line += f", ETA {eta.isoformat(timespec='seconds')} (in {_duration((eta - now).total_seconds())})"
                else:
                    line += f", about {_duration((total - done) / rate)} left at the last rate"
        checkpoints_time = _parse_time(c.get("updated"))
        if checkpoints_time:
            line += f", updated {checkpoints_time.isoformat(timespec='seconds')}"
        lines.append(line)
    if not checkpoints:
        lines.append("checkpoints: none")
    return lines


def cmd_status(args) -> int:
    try:
        for line in status_report(args.directory):
            print(line, flush=True)
    except BrokenPipeError:  # `iclnb status DIR | head -3`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


# ------------------------------------------------------------------------------------------------- entry point


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run and inspect the iclnb experiment notebooks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list the experiments and their parameters")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="execute an experiment notebook with papermill into its results directory")
    p.add_argument("experiment", help="notebook name (see `iclnb list`)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="set a parameter (repeatable); lists as comma-separated values")
    p.add_argument("-o", "--output", metavar="DIR", help="results directory (default results/<experiment>)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="progress, ETA and last checkpoint of a results directory")
    p.add_argument("directory")
    p.set_defaults(func=cmd_status)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, IclnbError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
