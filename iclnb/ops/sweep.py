"""Sweeps: a grid of parameter values expanded into runs of one experiment, each an ``iclnb run`` into its own
results directory inside the sweep directory.

    iclnb sweep css_basic -p n_contexts 10,20 -p seed 1,2,3 --max-parallel 2
    iclnb sweep loo --grid grid.yaml --executor slurm --partition gpu --gpus 1 --time 120 -o results/sweeps/loo-N

* ``-p NAME v1,v2``: the values of one parameter (a comma separates values). A parameter whose value is itself a
  list (``context_lengths``, ``layers``) takes its values from a grid file (YAML or JSON): ``{name: [values]}``,
  each value a list or a comma-separated string (``context_lengths: [[6, 10], [20, 50]]``); a value that is not a
  list is fixed for every run. The values of a parameter are a set, as a list parameter's numbers are
  (:func:`iclnb.experiments.params.distinct`): two values that the parameter reads alike (``2`` and ``02``,
  ``[10, 20]`` and ``[20, 10, 10]``) are one run.
* Every combination is checked against the experiment's declaration before anything starts.
* Each run's directory is named from the parameters that vary, sorted by name (``n_contexts=10__seed=1``): readable,
  filesystem-safe and stable, so a rerun of the same sweep finds its runs. Finished runs are skipped, interrupted
  ones resume from their checkpoints (``iclnb run`` into the same directory), and a run another live process holds is
  left to it.
* ``sweep.json`` in the sweep directory records the experiment, the grid, the executor and every run (its parameters,
  directory, job id and exit status); ``iclnb status SWEEP_DIR`` shows every run's state, progress and ETA.
* Executors: ``local`` runs at most ``max_parallel`` ``iclnb run`` processes on this machine (logs in ``logs/``);
  ``slurm`` submits a job array with submitit (partition, time, GPUs, memory, CPUs) and returns; ``submitit-local``
  runs the same jobs through submitit's LocalExecutor on this machine (logs in ``submitit/``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from iclnb.core.errors import IclnbError
from iclnb.experiments.params import distinct
from iclnb.results.io import read_json, write_json
from iclnb.results.run import CONFIG_NAME, RESULTS_NAME, lock_holder

__all__ = ["MANIFEST", "EXECUTORS", "parse_grid", "expand", "run_name", "default_sweep_dir", "prepare",
           "read_manifest", "run_state", "execute", "run_one"]

MANIFEST = "sweep.json"
EXECUTORS = ("local", "slurm", "submitit-local")
_SAFE = re.compile(r"[^A-Za-z0-9._+-]")
_MAX_NAME = 120


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------------- the grid


def _text(value) -> str:
    """A grid value as the text ``iclnb run -p NAME TEXT`` takes (lists joined by commas)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    if value is None:
        return ""
    return str(value)


def _grid_file_error(path: Path, error: Exception) -> str:
    """Why a grid file cannot be parsed, with the line and column where the parser stopped."""
    mark = getattr(error, "problem_mark", None)  # yaml.MarkedYAMLError
    if mark is not None:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        return f"grid file {path} cannot be read: line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if isinstance(error, json.JSONDecodeError):
        return f"grid file {path} cannot be read: line {error.lineno}, column {error.colno}: {error.msg}"
    return f"grid file {path} cannot be read: {(str(error).splitlines() or [type(error).__name__])[0]}"


def _read_grid_file(path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise IclnbError(f"grid file {path} does not exist")
    try:
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError
        raise IclnbError(_grid_file_error(path, e)) from None
    if not isinstance(data, dict) or not data:
        raise IclnbError(f"grid file {path} must map parameter names to values (a list of values to sweep, or one "
                         f"fixed value)")
    return data


def _reading(param):
    """What a value text means to ``param`` (the key under which two spellings of one value are the same); a text it
    refuses stands for itself here and is refused, with the run that holds it, by :func:`expand`."""
    def key(text):
        try:
            return "value", repr(param.normalise(text))
        except IclnbError:
            return "text", text
    return key


def parse_grid(declaration, pairs=(), grid_file=None) -> dict[str, list[str]]:
    """``{name: [value texts]}`` from a grid file and ``-p NAME v1,v2`` pairs (in that order; ``-p`` replaces a
    file's entry), for an experiment's parameter ``declaration``. Refuses a parameter given twice on the command line
    and empty values; the values of a parameter are a set (:func:`iclnb.experiments.params.distinct`): a value the
    parameter reads as an earlier one is dropped."""

    grid: dict[str, list[str]] = {}
    if grid_file:
        for name, value in _read_grid_file(grid_file).items():
            values = value if isinstance(value, list) else [value]
            grid[str(name)] = [_text(v) for v in values]
    seen = set()
    for name, text in pairs:
        if name in seen:
            raise IclnbError(f"parameter {name} is given twice; give its values once, separated by commas")
        seen.add(name)
        grid[name] = [v.strip() for v in str(text).split(",")]
    for name, values in grid.items():
        if name == "output_dir":
            raise IclnbError("output_dir cannot be swept: each run's directory is named from its parameters inside "
                             "the sweep directory (-o)")
        if not values or any(v == "" for v in values):
            raise IclnbError(f"parameter {name} has an empty value in the grid; give its values separated by commas")
        if name in declaration:
            grid[name] = distinct(values, key=_reading(declaration[name]))
    return grid


def run_name(params: dict[str, str], varied) -> str:
    """The directory name of a run: ``name=value`` of each varied parameter, sorted by name, joined by ``__``
    (commas become ``+``, other unsafe characters ``_``); ``run`` when nothing varies. A name that would be longer
    than 120 characters is cut and ends with a hash of the parameters, so it stays unique."""
    parts = [f"{k}={_SAFE.sub('_', str(params[k]).replace(',', '+')) or 'empty'}" for k in sorted(varied)]
    name = "__".join(parts) or "run"
    if len(name) > _MAX_NAME:
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
        name = name[: _MAX_NAME - 12].rstrip("_") + "__" + digest
    return name


def expand(exp, grid: dict[str, list[str]]) -> list[dict]:
    """Every combination of the grid as ``{"name", "params"}`` (params: name -> value text), each checked against
    the experiment's declaration (raises IclnbError naming the run and the parameter)."""
    from iclnb.core.errors import UsageError

    names = list(grid)
    varied = [n for n in names if len(grid[n]) > 1]
    runs, seen = [], {}
    for combo in itertools.product(*(grid[n] for n in names)):
        params = dict(zip(names, combo))
        try:
            exp.checked_parameters(list(params.items()))
        except UsageError as e:
            where = ", ".join(f"{k}={v}" for k, v in params.items() if k in varied)
            raise IclnbError(f"{e}" + (f" (in the run {where})" if where else "")) from None
        name = run_name(params, varied)
        if name in seen:  # two combinations that the safe spelling cannot tell apart
            digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
            name = f"{name}__{digest}"
        seen[name] = True
        runs.append({"name": name, "params": params})
    return runs


def default_sweep_dir(experiment: str, name: str | None = None) -> Path:
    """``<results root>/sweeps/<name>``, or ``<experiment>-<YYYYmmdd-HHMMSS>`` without a name."""
    from iclnb.core.paths import results_root

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return results_root() / "sweeps" / (name or f"{experiment}-{stamp}")


# ---------------------------------------------------------------------------------------------------- manifest


def read_manifest(sweep_dir) -> dict:
    path = Path(sweep_dir) / MANIFEST
    manifest = read_json(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("runs"), list):
        raise IclnbError(f"{path} is not a sweep manifest")
    return manifest


def _write_manifest(sweep_dir: Path, manifest: dict) -> None:
    manifest["updated"] = _now()
    write_json(sweep_dir / MANIFEST, manifest)


def prepare(exp, grid, sweep_dir, executor: str, options: dict | None = None) -> dict:
    """Write (or extend) the sweep's manifest: a rerun into the same directory keeps the runs it recorded (their job
    ids and exit statuses) and adds the new ones. Refuses a directory holding a sweep of another experiment."""
    sweep_dir = Path(sweep_dir)
    runs = expand(exp, grid)
    if (sweep_dir / CONFIG_NAME).is_file():
        raise IclnbError(f"{sweep_dir} is a run's results directory, not a sweep directory; choose another -o")
    manifest = read_manifest(sweep_dir) if (sweep_dir / MANIFEST).is_file() else None
    if manifest and manifest.get("experiment") != exp.name:
        raise IclnbError(f"{sweep_dir} holds a sweep of {manifest.get('experiment')}, not {exp.name}; choose another "
                         f"sweep directory with -o")
    if manifest is None:
        manifest = {"experiment": exp.name, "notebook": exp.notebook, "created": _now(), "runs": []}
    known = {r["name"]: r for r in manifest["runs"]}
    for r in runs:
        entry = known.get(r["name"])
        if entry is None:
            entry = {"name": r["name"], "dir": r["name"], "params": r["params"], "job_id": None, "exit": None}
            manifest["runs"].append(entry)
            known[r["name"]] = entry
        elif entry["params"] != r["params"]:
            raise IclnbError(f"{sweep_dir} records the run {r['name']} with other parameters; choose another sweep "
                             f"directory")
    manifest.update({"grid": grid, "executor": executor, "options": dict(options or {}),
                     "selected": [r["name"] for r in runs]})
    sweep_dir.mkdir(parents=True, exist_ok=True)
    _write_manifest(sweep_dir, manifest)
    return manifest


def run_state(directory) -> str:
    """"finished", "running" (a live process holds it, here or on another host), "stopped" (started, not finished)
    or "pending" (nothing there yet)."""
    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        return "pending"
    if lock_holder(directory) is not None:
        return "running"
    try:
        prov = read_json(directory / CONFIG_NAME).get("provenance") or {}
        if (directory / RESULTS_NAME).is_file() and prov.get("finished"):
            read_json(directory / RESULTS_NAME)
            return "finished"
    except (IclnbError, OSError, AttributeError):
        pass
    return "stopped"


# ---------------------------------------------------------------------------------------------------- executing


def _argv(manifest: dict, entry: dict, sweep_dir: Path) -> list[str]:
    argv = ["run", manifest["experiment"]]
    for name, text in entry["params"].items():
        argv += ["-p", name, text]
    return argv + ["-o", str((sweep_dir / entry["dir"]).resolve())]


def run_one(argv: list[str], env: dict | None = None) -> int:
    """One run of a sweep (what each job executes): ``iclnb <argv>`` in a fresh process; returns its exit status."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "iclnb", *argv], env=full_env).returncode


def execute(manifest: dict, sweep_dir, executor: str = "local", max_parallel: int = 1, options: dict | None = None,
            env: dict | None = None, wait: bool | None = None, out=None) -> int:
    """Run the manifest's selected runs that are not finished (nor running elsewhere). Returns 0 when every one of
    them finished (or was submitted, for slurm without waiting), 1 otherwise."""
    sweep_dir = Path(sweep_dir).resolve()
    out = out or sys.stdout
    if executor not in EXECUTORS:
        raise IclnbError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    selected = set(manifest.get("selected") or [r["name"] for r in manifest["runs"]])
    todo, skipped = [], {}
    for entry in manifest["runs"]:
        if entry["name"] not in selected:
            continue
        state = run_state(sweep_dir / entry["dir"])
        if state in ("finished", "running"):
            skipped[entry["name"]] = state
        else:
            todo.append(entry)
    total = len(todo) + len(skipped)
    print(f"sweep {manifest['experiment']}: {total} runs in {sweep_dir}; "
          f"{sum(s == 'finished' for s in skipped.values())} already finished, "
          f"{sum(s == 'running' for s in skipped.values())} running elsewhere, {len(todo)} to run", file=out,
          flush=True)
    if not todo:
        return 0
    if executor == "local":
        code = _execute_local(manifest, sweep_dir, todo, max_parallel, env, out)
    else:
        code = _execute_submitit(manifest, sweep_dir, todo, executor, max_parallel, options or {}, env,
                                 wait if wait is not None else executor == "submitit-local", out)
    print(f"watch: iclnb status {sweep_dir}", file=out, flush=True)
    return code


def _finish(manifest, sweep_dir, entry, code, seconds, out, index, total):
    entry["exit"] = code
    _write_manifest(sweep_dir, manifest)
    word = "finished" if code == 0 else f"failed (exit {code})"
    print(f"[{index}/{total}] {entry['name']}: {word} after {seconds:.0f}s", file=out, flush=True)


def _execute_local(manifest, sweep_dir, todo, max_parallel, env, out) -> int:
    logs = sweep_dir / "logs"
    logs.mkdir(exist_ok=True)
    pending, running, failed = list(todo), {}, 0
    done_count = 0
    full_env = {**os.environ, **(env or {})}
    try:
        while pending or running:
            while pending and len(running) < max(1, int(max_parallel)):
                entry = pending.pop(0)
                log = open(logs / f"{entry['name']}.log", "ab")
                proc = subprocess.Popen([sys.executable, "-m", "iclnb", *_argv(manifest, entry, sweep_dir)],
                                        stdout=log, stderr=subprocess.STDOUT, env=full_env)
                running[proc] = (entry, log, time.monotonic())
                entry["exit"] = None
                print(f"started {entry['name']} (log: {log.name})", file=out, flush=True)
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                entry, log, began = running.pop(proc)
                log.close()
                done_count += 1
                failed += proc.returncode != 0
                _finish(manifest, sweep_dir, entry, proc.returncode, time.monotonic() - began, out, done_count,
                        len(todo))
    except KeyboardInterrupt:
        import signal

        for proc, (entry, log, _) in running.items():
            proc.send_signal(signal.SIGINT)  # iclnb run keeps its checkpoints and says how to resume
        for proc, (entry, log, _) in running.items():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        _write_manifest(sweep_dir, manifest)
        print("interrupted; rerun the same command to resume the sweep", file=out, flush=True)
        return 130
    return 1 if failed else 0


def _submitit_executor(executor: str, folder: Path, max_parallel: int, options: dict, experiment: str):
    import submitit

    timeout = int(options.get("time") or 24 * 60)
    if executor == "submitit-local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=timeout)
        return ex
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = {"timeout_min": timeout, "name": f"iclnb-{experiment}", "slurm_array_parallelism": int(max_parallel)}
    if options.get("partition"):
        params["slurm_partition"] = options["partition"]
    if options.get("gpus") is not None:
        params["gpus_per_node"] = int(options["gpus"])
    if options.get("mem_gb") is not None:
        params["mem_gb"] = float(options["mem_gb"])
    if options.get("cpus") is not None:
        params["cpus_per_task"] = int(options["cpus"])
    if options.get("account"):
        params["slurm_account"] = options["account"]
    ex.update_parameters(**params)
    return ex


def _execute_submitit(manifest, sweep_dir, todo, executor, max_parallel, options, env, wait, out) -> int:
    folder = sweep_dir / "submitit"
    ex = _submitit_executor(executor, folder, max_parallel, options, manifest["experiment"])
    env = dict(env or {})
    if executor == "slurm":
        jobs = ex.map_array(run_one, [_argv(manifest, e, sweep_dir) for e in todo], [env] * len(todo))
        for entry, job in zip(todo, jobs):
            entry["job_id"], entry["exit"] = str(job.job_id), None
        _write_manifest(sweep_dir, manifest)
        print(f"submitted {len(jobs)} jobs (array {jobs[0].job_id.split('_')[0] if jobs else '-'}, at most "
              f"{max_parallel} at once); job logs in {folder}", file=out, flush=True)
        if not wait:
            return 0
        started = {job: (entry, time.monotonic()) for entry, job in zip(todo, jobs)}
        return _wait(manifest, sweep_dir, started, out, len(todo))
    # submitit-local: at most max_parallel jobs in flight
    pending, in_flight, tally = list(todo), {}, [0, 0]
    while pending or in_flight:
        while pending and len(in_flight) < max(1, int(max_parallel)):
            entry = pending.pop(0)
            job = ex.submit(run_one, _argv(manifest, entry, sweep_dir), env)
            entry["job_id"], entry["exit"] = str(job.job_id), None
            in_flight[job] = (entry, time.monotonic())
            _write_manifest(sweep_dir, manifest)
            print(f"submitted {entry['name']} (job {job.job_id}; logs in {folder})", file=out, flush=True)
        time.sleep(0.5)
        _record_done(manifest, sweep_dir, in_flight, out, tally, len(todo))
    return 1 if tally[1] else 0


def _job_code(job) -> int:
    try:
        return int(job.result())
    except Exception:  # the job itself failed (killed, timed out, could not start)
        return 1


def _record_done(manifest, sweep_dir, jobs: dict, out, tally: list, total: int) -> None:
    """Record the jobs of ``jobs`` ({job: (entry, start time)}) that have ended, removing them; ``tally`` is
    [ended so far, failed so far], updated in place."""
    for job in [j for j in jobs if j.done()]:
        entry, began = jobs.pop(job)
        code = _job_code(job)
        tally[0] += 1
        tally[1] += code != 0
        _finish(manifest, sweep_dir, entry, code, time.monotonic() - began, out, tally[0], total)


def _wait(manifest, sweep_dir, jobs: dict, out, total: int) -> int:
    tally = [0, 0]
    while jobs:
        time.sleep(5)
        _record_done(manifest, sweep_dir, jobs, out, tally, total)
    return 1 if tally[1] else 0
