"""``iclnb list | run | status | sweep | summarize | log``: the command line around the experiment notebooks.

``iclnb run <experiment> -p NAME VALUE ... [-o DIR]`` executes the experiment's notebook with papermill into
``results/<experiment>/`` (or DIR), passing ``output_dir``; ``-p NAME=VALUE`` is the same, and a value may start
with a minus sign (``-p layers -2,-1``). Every parameter is converted and checked against the experiment's
declaration (``PARAMS`` of its module) before anything starts. Mistakes on the command line (unknown experiment or
parameter, a value of the wrong type, an output path that is a file or that a live run is writing, a directory
holding a run with other parameters) exit with status 2 and one line on stderr, before anything is written. A
failure inside the notebook exits with status 1 and names the executed notebook that holds the traceback; Ctrl-C
stops the run with one line that says how to resume it.

``iclnb sweep`` expands a grid of parameter values into runs (:mod:`iclnb.ops.sweep`), ``iclnb summarize`` drafts a
run's ``summary.md`` (:mod:`iclnb.ops.summarize`), ``iclnb log`` logs a finished run to Weights & Biases
(:mod:`iclnb.ops.tracking`); ``iclnb status`` shows a run, or every run of a sweep in one table.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from iclnb.core.errors import IclnbError, UsageError
from iclnb.core.paths import notebooks_dir, results_root
from iclnb.results.run import CONFIG_NAME, RESULTS_NAME, busy_message, check_resumable, lock_holder

PROG = "iclnb"


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


class _KernelLog:
    """The kernel process's own stderr (its log; the notebook's output reaches us through papermill), for the
    duration of a ``with`` block: a pipe copied to our stderr as it comes, until iclnb is interrupted (SIGINT). The
    kernel's shutdown then races the interrupted cell's reply and can only report sockets closed under it, and
    papermill and asyncio report the kernel's end (one of them when the process exits), so from the interrupt on
    those are dropped and the resume line stands alone."""

    LOGGERS = ("papermill", "asyncio")

    def __init__(self):
        import threading

        self._read_fd, self.fd = os.pipe()
        self._silenced = threading.Event()
        self._copier = threading.Thread(target=self._copy, name="iclnb-kernel-log", daemon=True)
        self._replaced_handler = None

    def _copy(self):
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with os.fdopen(self._read_fd, "rb", buffering=0) as pipe:
            for chunk in iter(lambda: pipe.read(1 << 16), b""):
                if not self._silenced.is_set():
                    sys.stderr.write(decoder.decode(chunk))
                    sys.stderr.flush()

    def _interrupted(self, signum, frame):
        self._silenced.set()
        self._replaced_handler(signum, frame)

    def filter(self, record) -> bool:
        """As a logging filter of :attr:`LOGGERS`: nothing once interrupted."""
        return not self._silenced.is_set()

    def __enter__(self) -> "_KernelLog":
        import logging
        import signal
        import threading

        self._copier.start()
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)
        handler = signal.getsignal(signal.SIGINT)
        # SIGINT is Python's to handle only in the main thread, and only where it is not ignored
        if threading.current_thread() is threading.main_thread() and callable(handler):
            self._replaced_handler = handler
            signal.signal(signal.SIGINT, self._interrupted)
        return self

    def __exit__(self, *exc) -> None:
        """Restore the SIGINT handler and stop copying once the kernel has gone (what it wrote last is copied
        first)."""
        import logging
        import signal

        if self._replaced_handler is not None:
            signal.signal(signal.SIGINT, self._replaced_handler)
        os.close(self.fd)
        self._copier.join(timeout=5)
        if not self._silenced.is_set():  # once interrupted, asyncio still reports the cut cell at exit
            for name in self.LOGGERS:
                logging.getLogger(name).removeFilter(self)


def _kernel_manager_class(log: _KernelLog):
    """A kernel manager that talks to its kernel over unix sockets in a private directory (no TCP ports opened, and
    no warning about unencrypted TCP in every run's log) and gives the kernel ``log`` as its stderr."""
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

        async def start_kernel(self, **kw):
            kw.setdefault("stderr", log.fd)
            return await super().start_kernel(**kw)

    return LocalSocketKernelManager


def _listing(directory: Path) -> list[str]:
    files = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append(str(rel))
    return files


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
    overrides, values = exp.checked_parameters(pairs)
    try:  # the checks that need the model's tokenizer and config, before anything is written or loaded
        from iclnb.experiments import check_before_loading

        check_before_loading(exp.load(), exp.params.validate(values))
    except IclnbError as e:
        raise UsageError(str(e)) from None

    out_dir = _output_dir(out_arg, exp.name)
    holder = lock_holder(out_dir) if out_dir.is_dir() else None
    if holder is not None and not (holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()):
        raise UsageError(busy_message(out_dir, holder))
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
    if getattr(args, "log", None):  # the kernel inherits it; Run.finish logs the run to W&B
        from iclnb.ops.tracking import ENV_PROJECT

        os.environ[ENV_PROJECT] = args.log
    print(f"running {exp.name} -> {out_dir}", file=sys.stderr, flush=True)
    try:
        # the kernel's stdout/stderr are copied raw to ours (log_output would route them through logging, one
        # record per chunk, breaking carriage-return progress lines)
        with _KernelLog() as kernel_log:
            papermill.execute_notebook(str(nb_path), str(target), parameters=parameters, kernel_name=kernel,
                                       language=language, progress_bar=False, log_output=False,
                                       stdout_file=sys.stdout, stderr_file=sys.stderr, cwd=str(nb_path.parent),
                                       kernel_manager_class=_kernel_manager_class(kernel_log))
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


def status_report(directory) -> list[str]:
    """The lines ``iclnb status`` prints for a results directory, or for a sweep directory (one table of its
    runs)."""
    from iclnb.ops import status
    from iclnb.ops.sweep import MANIFEST, read_manifest

    directory = Path(directory).expanduser().resolve()
    if (directory / MANIFEST).is_file() and not (directory / CONFIG_NAME).is_file():
        return status.format_sweep_status(directory, read_manifest(directory))
    try:
        return status.format_run_status(status.run_status(directory))
    except IclnbError as e:
        raise UsageError(str(e)) from None


def cmd_status(args) -> int:
    try:
        for line in status_report(args.directory):
            print(line, flush=True)
    except BrokenPipeError:  # `iclnb status DIR | head -3`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_summarize(args) -> int:
    from iclnb.ops.summarize import summarize

    path = summarize(args.directory, force=args.force)
    print(f"draft summary: {path} (fill in its TODO sections)")
    return 0


def cmd_log(args) -> int:
    from iclnb.ops.tracking import log_run

    where = log_run(args.directory, args.project)
    print(f"logged {Path(args.directory).resolve()} to W&B: {where}")
    if Path(where).name.startswith("offline-run"):
        print(f"offline: upload it later with `wandb sync {where}`")
    return 0


def cmd_notebooks(args) -> int:
    from iclnb.ops.notebooks import sync_notebooks

    differed = sync_notebooks(args.names or None, check=args.check)
    if args.check:
        if differed:
            print(f"out of date: {', '.join(differed)} (their parameters cell, test metadata or outputs differ from "
                  f"the experiment modules); run `iclnb notebooks` to rewrite them", file=sys.stderr)
            return 1
        print("every notebook agrees with its experiment module")
        return 0
    print(f"rewrote {', '.join(differed)}" if differed else "every notebook already agrees with its experiment module")
    return 0


def cmd_sweep(args) -> int:
    from iclnb.ops import sweep

    exp = _experiment(args.experiment)
    _notebook_path(exp)
    if args.max_parallel < 1:
        raise UsageError(f"--max-parallel must be at least 1, got {args.max_parallel}")
    grid = sweep.parse_grid(exp.params, list(args.param or []), args.grid)
    if not grid:
        raise UsageError("the grid is empty: give parameter values with -p NAME v1,v2 or a grid file with --grid")
    runs = sweep.expand(exp, grid)  # every value checked before anything starts
    sweep_dir = (Path(args.output).expanduser() if args.output else sweep.default_sweep_dir(exp.name, args.name))
    sweep_dir = sweep_dir.resolve()
    if sweep_dir.is_file():
        raise UsageError(f"sweep directory {sweep_dir} is a file; pass a directory path with -o")
    options = {k: v for k, v in (("partition", args.partition), ("time", args.time), ("gpus", args.gpus),
                                 ("mem_gb", args.mem_gb), ("cpus", args.cpus), ("account", args.account))
               if v is not None}
    if args.dry_run:
        for r in runs:
            print(f"{sweep_dir / r['name']}: " + " ".join(f"-p {k} {v}" for k, v in r["params"].items()))
        print(f"{len(runs)} runs (dry run: nothing written)")
        return 0
    manifest = sweep.prepare(exp, grid, sweep_dir, args.executor, options)
    env = {"ICLNB_PROGRESS": "text"}
    if args.log:
        from iclnb.ops.tracking import ENV_PROJECT

        env[ENV_PROJECT] = args.log
    return sweep.execute(manifest, sweep_dir, args.executor, args.max_parallel, options, env,
                         wait=True if args.wait else None)


# ------------------------------------------------------------------------------------------------- entry point


class _Parser(argparse.ArgumentParser):
    """A parser whose mistakes are UsageErrors (one line, exit 2), which knows its option words (``-o``, ``--log``)
    and its subcommands' parsers (``commands``)."""

    def __init__(self, *args, **kwargs):
        self.option_words: set[str] = set()
        self.commands: dict[str, _Parser] = {}
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.option_words.update(action.option_strings)
        return action

    def error(self, message):
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _name_value(text: str) -> tuple[str, str]:
    """The (NAME, VALUE) of one ``-p NAME=VALUE`` (what :func:`_joined_params` makes of ``-p NAME VALUE``)."""
    name, equals, value = text.partition("=")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"'{text}' names no parameter; give -p NAME VALUE or -p NAME=VALUE")
    if not equals:
        raise argparse.ArgumentTypeError(f"parameter {name} has no value; give -p {name} VALUE or -p {name}=VALUE")
    return name.strip(), value


def _joined_params(argv: list[str], parser: _Parser) -> list[str]:
    """``argv`` with each ``-p NAME VALUE`` (or ``-p NAME=VALUE``) of a command that takes ``-p`` as the one word
    ``--param=NAME=VALUE``, so that argparse takes a VALUE starting with a minus sign (``-p layers -2,-1``) for the
    value it is, not for an option. A word that is one of the command's options (``-o``, ``--log``) is never taken
    for a NAME or VALUE."""
    at = next((i for i, word in enumerate(argv) if not word.startswith("-")), None)
    command = parser.commands.get(argv[at]) if at is not None else None
    if command is None or "--param" not in command.option_words:
        return list(argv)

    def is_option(word):
        return word.startswith("--") or word[:2] in command.option_words

    out, i = list(argv[:at + 1]), at + 1
    while i < len(argv):
        word = argv[i]
        if word == "--":
            out += argv[i:]
            break
        if word in ("-p", "--param") and i + 1 < len(argv) and not is_option(argv[i + 1]):
            name = argv[i + 1]
            if "=" not in name and i + 2 < len(argv) and not is_option(argv[i + 2]):
                out.append(f"--param={name}={argv[i + 2]}")
                i += 3
            else:  # NAME=VALUE, or a NAME without a value (refused by _name_value with the right spelling)
                out.append(f"--param={name}")
                i += 2
            continue
        out.append(word)
        i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Run and inspect the iclnb experiment notebooks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parser.commands = sub.choices

    p = sub.add_parser("list", help="list the experiments and their parameters")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="execute an experiment notebook with papermill into its results directory")
    p.add_argument("experiment", help="notebook name (see `iclnb list`)")
    p.add_argument("-p", "--param", action="append", type=_name_value, metavar="NAME VALUE",
                   help="set a parameter (repeatable), also spelled -p NAME=VALUE; lists as comma-separated values, "
                   "which may start with a minus sign (-p layers -2,-1)")
    p.add_argument("-o", "--output", metavar="DIR", help="results directory (default results/<experiment>)")
    p.add_argument("--log", metavar="PROJECT", help="log the finished run to this Weights & Biases project "
                   "(offline without an account; sets ICLNB_WANDB_PROJECT)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="progress, ETA and last checkpoint of a results directory, or every run of a "
                       "sweep directory in one table")
    p.add_argument("directory")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("sweep", help="run an experiment over a grid of parameter values, one results directory per "
                       "run, here or on a Slurm cluster")
    p.add_argument("experiment", help="notebook name (see `iclnb list`)")
    p.add_argument("-p", "--param", action="append", type=_name_value, metavar="NAME VALUES",
                   help="the values of a parameter, separated by commas (repeatable), also spelled -p NAME=VALUES; "
                   "values the parameter reads alike are one run; list-valued parameters go in a grid file")
    p.add_argument("--grid", metavar="FILE", help="YAML or JSON grid file {name: [values]} (a value that is a list "
                   "is one value of a list parameter; a value that is not a list is fixed)")
    p.add_argument("-o", "--output", metavar="SWEEP_DIR", help="sweep directory (default "
                   "results/sweeps/<experiment>-<timestamp>, or results/sweeps/<name> with --name)")
    p.add_argument("--name", help="name of the sweep directory under results/sweeps/")
    p.add_argument("--executor", choices=sweep_executors(), default="local",
                   help="local: iclnb run processes here; slurm: a submitit job array; submitit-local: submitit's "
                   "local executor (default local)")
    p.add_argument("--max-parallel", type=int, default=1, metavar="K", help="runs at once (default 1)")
    p.add_argument("--partition", help="slurm: partition")
    p.add_argument("--time", type=int, metavar="MINUTES", help="slurm / submitit-local: time limit per run in "
                   "minutes (default 1440)")
    p.add_argument("--gpus", type=int, help="slurm: GPUs per run")
    p.add_argument("--mem-gb", type=float, dest="mem_gb", help="slurm: memory per run in GB")
    p.add_argument("--cpus", type=int, help="slurm: CPUs per run")
    p.add_argument("--account", help="slurm: account to charge")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and record their exit status")
    p.add_argument("--log", metavar="PROJECT", help="log every finished run to this Weights & Biases project")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their directories; write nothing")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("summarize", help="draft summary.md for a finished run: set-up, key numbers with CIs and "
                       "nulls, figures, sentences from the numbers, TODO sections")
    p.add_argument("directory")
    p.add_argument("--force", action="store_true", help="replace an existing summary.md")
    p.set_defaults(func=cmd_summarize)

    p = sub.add_parser("log", help="log a finished run to Weights & Biases: config, scalars, tables, figures "
                       "(offline without an account)")
    p.add_argument("directory")
    p.add_argument("--project", help="W&B project (default $ICLNB_WANDB_PROJECT or iclnb)")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser("notebooks", help="rewrite each notebook's parameters cell and test metadata from its "
                       "experiment module and clear its outputs (the .ipynb is the source of everything else)")
    p.add_argument("names", nargs="*", help="notebooks to rewrite (default: all)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a notebook is out of date")
    p.set_defaults(func=cmd_notebooks)
    return parser


def sweep_executors():
    from iclnb.ops.sweep import EXECUTORS

    return EXECUTORS


def main(argv=None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(_joined_params(sys.argv[1:] if argv is None else list(argv), parser))
        return args.func(args)
    except (UsageError, IclnbError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
