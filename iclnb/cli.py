"""``iclnb list | run | status``: the command line around the experiment notebooks (SPEC section 9).

``iclnb run <experiment> -p NAME VALUE ... [-o DIR]`` executes ``notebooks/<experiment>.ipynb`` with papermill into
``results/<experiment>/`` (or DIR), passing ``output_dir``. Values are converted by the type of the parameter's
default in the notebook's ``parameters`` cell. Mistakes on the command line (unknown experiment or parameter, a value
of the wrong type, an output path that is a file or that a live run is writing, a directory holding a run with other
parameters) exit with status 2 and one line on stderr, before anything is written. A failure inside the notebook
exits with status 1 and names the executed notebook that holds the traceback.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import os
import socket
import sys
from pathlib import Path

from .errors import IclnbError
from .runs import CONFIG_NAME, RESULTS_NAME, _busy_message, check_resumable, lock_holder, read_json

PROG = "iclnb"


class UsageError(Exception):
    """A mistake on the command line: one line on stderr, exit status 2."""


# ------------------------------------------------------------------------------------------------- locating things


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def notebooks_dir() -> Path:
    env = os.environ.get("ICLNB_NOTEBOOKS")
    return Path(env).expanduser().resolve() if env else repo_root() / "notebooks"


def results_root() -> Path:
    env = os.environ.get("ICLNB_RESULTS")
    return Path(env).expanduser().resolve() if env else notebooks_dir().parent / "results"


def experiments() -> dict[str, Path]:
    directory = notebooks_dir()
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.ipynb")) if not p.name.startswith(".")}


def find_experiment(name: str) -> Path:
    found = experiments()
    if name in found:
        return found[name]
    if name.endswith(".ipynb") and Path(name).stem in found:
        return found[Path(name).stem]
    if not found:
        raise UsageError(f"no experiment notebooks in {notebooks_dir()} (set ICLNB_NOTEBOOKS to their directory)")
    raise UsageError(f"unknown experiment {name!r}; available: {', '.join(found)}")


def notebook_parameters(path: Path) -> dict[str, dict]:
    """``{name: {"name", "inferred_type_name", "default", "help"}}`` of the notebook's ``parameters`` cell (what
    ``papermill.inspect_notebook`` gives, also for a notebook whose metadata names no kernel)."""
    from papermill.iorw import load_notebook_node
    from papermill.translators import papermill_translators
    from papermill.utils import find_first_tagged_cell_index

    nb = load_notebook_node(str(path))
    index = find_first_tagged_cell_index(nb, "parameters")
    if index < 0:
        return {}
    spec = nb.metadata.get("kernelspec", {})
    language = spec.get("language") or nb.metadata.get("language_info", {}).get("name") or "python"
    translator = papermill_translators.find_translator(spec.get("name") or "python3", language)
    return {p.name: p._asdict() for p in translator.inspect(nb.cells[index])}


# ------------------------------------------------------------------------------------------------- parameter values


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NOT_LITERAL


_NOT_LITERAL = object()
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _expected_kind(spec: dict) -> str:
    """'int' | 'float' | 'bool' | 'str' | 'list' | 'any' for a parameter, from its annotation or default."""
    annotated = (spec.get("inferred_type_name") or "None").replace(" ", "")
    base = annotated.split("[")[0].lower()
    if base in ("int", "float", "bool", "str"):
        return base
    if base in ("list", "tuple", "sequence"):
        return "list"
    default = _literal(spec.get("default", ""))
    for kind, typ in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if type(default) is typ:
            return kind
    if isinstance(default, (list, tuple)):
        return "list"
    return "any"


def _guess(text: str):
    """A value for a parameter whose default says nothing about its type (None, an expression)."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    if text.strip().startswith("["):
        value = _literal(text)
        if isinstance(value, list):
            return value
    if "," in text:
        return [_guess(part.strip()) for part in text.split(",") if part.strip()]
    return text


def convert_value(name: str, text: str, spec: dict):
    """Convert the command-line string ``text`` for parameter ``name`` by the type of its default."""
    kind = _expected_kind(spec)
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise UsageError(f"parameter {name} expects an integer, got {text!r}") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise UsageError(f"parameter {name} expects a number, got {text!r}") from None
    if kind == "bool":
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise UsageError(f"parameter {name} expects true or false, got {text!r}")
    if kind == "str":
        return text
    if kind == "list":
        default = _literal(spec.get("default", ""))
        elems = list(default) if isinstance(default, (list, tuple)) else []
        if text.strip().startswith("["):
            value = _literal(text)
            if isinstance(value, (list, tuple)):
                return list(value)
            raise UsageError(f"parameter {name} expects comma-separated values or a [list], got {text!r}")
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if elems and all(isinstance(e, str) for e in elems):
            return parts
        if "," not in text and parts and not isinstance(_guess(parts[0]), (int, float)):
            return text  # a single word such as layers=all: the notebook decides what it means
        return [_guess(p) for p in parts]
    return _guess(text)


def _default_value(spec: dict):
    return _literal(spec.get("default", ""))


# ------------------------------------------------------------------------------------------------- commands


def cmd_list(args) -> int:
    found = experiments()
    if not found:
        raise UsageError(f"no experiment notebooks in {notebooks_dir()} (set ICLNB_NOTEBOOKS to their directory)")
    for name, path in found.items():
        print(name)
        try:
            params = notebook_parameters(path)
        except Exception as e:  # one broken notebook must not hide the others
            print(f"    (cannot read parameters: {type(e).__name__}: {e})")
            continue
        if not params:
            print("    (no parameters cell)")
        width = max((len(p) for p in params), default=0)
        for pname, spec in params.items():
            kind = _expected_kind(spec)
            line = f"    {pname.ljust(width)}  {kind:5s} = {spec.get('default', '')}"
            if spec.get("help"):
                line += f"  # {spec['help']}"
            print(line)
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


def _listing(directory: Path) -> list[str]:
    files = []
    for p in sorted(directory.rglob("*")):
        rel = p.relative_to(directory)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            files.append(str(rel))
    return files


def cmd_run(args) -> int:
    nb_path = find_experiment(args.experiment)
    name = nb_path.stem
    specs = notebook_parameters(nb_path)

    overrides: dict = {}
    out_arg = args.output
    for pname, text in args.param or []:
        if pname == "output_dir":
            out_arg = out_arg or text
            continue
        if pname not in specs:
            valid = ", ".join(p for p in specs if p != "output_dir") or "(none)"
            raise UsageError(f"unknown parameter {pname!r} for {name}; valid parameters: {valid}")
        overrides[pname] = convert_value(pname, text, specs[pname])

    out_dir = Path(out_arg).expanduser() if out_arg else results_root() / name
    out_dir = out_dir.resolve()
    if out_dir.is_file():
        raise UsageError(f"output directory {out_dir} is a file; pass a directory path with -o")
    for parent in out_dir.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"output directory {out_dir} cannot be created: {parent} is a file")
            break
    holder = lock_holder(out_dir) if out_dir.is_dir() else None
    if holder is not None and not (holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()):
        raise UsageError(_busy_message(out_dir, holder))

    # The notebook refuses a directory holding other parameters itself; checking here as well keeps papermill
    # from overwriting that run's executed notebook first.
    effective = {k: _default_value(s) for k, s in specs.items()}
    effective = {k: v for k, v in effective.items() if v is not _NOT_LITERAL}
    effective.update(overrides)
    if (out_dir / CONFIG_NAME).is_file():
        try:
            check_resumable(out_dir, name, effective, only_shared=True)
        except IclnbError as e:
            raise UsageError(str(e)) from None

    import papermill
    from papermill.exceptions import PapermillExecutionError

    out_dir.mkdir(parents=True, exist_ok=True)
    out_nb = out_dir / f"{name}.ipynb"
    kernel, language = _kernel_and_language(nb_path)
    parameters = {**overrides, "output_dir": str(out_dir)}
    os.environ.setdefault("ICLNB_PROGRESS", "text")
    print(f"running {name} -> {out_dir}", file=sys.stderr, flush=True)
    try:
        # the kernel's stdout/stderr are copied raw to ours (log_output would route them through logging, one
        # record per chunk, breaking carriage-return progress lines)
        papermill.execute_notebook(str(nb_path), str(out_nb), parameters=parameters, kernel_name=kernel, language=language,
                                   progress_bar=False,
                                   log_output=False, stdout_file=sys.stdout, stderr_file=sys.stderr,
                                   cwd=str(nb_path.parent))
    except PapermillExecutionError as e:
        print(f"{PROG}: error: {name} failed: {e.ename}: {e.evalue}", file=sys.stderr)
        print(f"the executed notebook with the full traceback is at {out_nb}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; rerun the same command to resume from the checkpoints in {out_dir}",
              file=sys.stderr)
        return 130
    except Exception as e:  # the kernel died, could not start, ...
        first = (str(e).strip().splitlines() or [""])[0]
        print(f"{PROG}: error: {name} failed: {type(e).__name__}: {first}", file=sys.stderr)
        if out_nb.exists():
            print(f"the executed notebook is at {out_nb}", file=sys.stderr)
        return 1
    print(f"results: {out_dir}")
    for f in _listing(out_dir):
        print(f"  {f}")
    return 0


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
        state = "finished"
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
    for line in status_report(args.directory):
        print(line)
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
