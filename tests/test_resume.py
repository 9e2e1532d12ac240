"""Kill `iclnb run` (kernel included) mid-way, rerun the same command, and compare with an unbroken run."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CASES = {
    "css_basic": ["-p", "n_contexts", "12", "-p", "context_length", "12", "-p", "layers", "0,-1", "-p", "batch_size", "2",
                  "-p", "n_boot", "20", "-p", "n_perm", "20"],
    "loo_multilayer": ["-p", "context_lengths", "6,9", "-p", "n_contexts", "3", "-p", "layers", "0,8,-1",
                       "-p", "n_boot", "50"],
}


def _env():
    return {**os.environ, "ICLNB_PROGRESS": "text"}


def _partial(directory: Path) -> bool:
    """Some work units are checkpointed and the run is not finished."""
    done = 0
    for path in directory.glob("checkpoint_*.json"):
        try:
            done += len(json.loads(path.read_text())["items"])
        except (ValueError, KeyError):
            continue  # being replaced right now
    return done >= 1 and not (directory / "results.json").exists()


def _without_timings(value):
    """The results minus wall-clock measurements (the only thing two identical runs may differ in)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k not in ("seconds", "timing")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _strict(path: Path):
    def refuse(token):
        raise ValueError(f"{path} holds {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def killed_and_resumed(experiment: str, params: list, tmp_path: Path) -> tuple[dict, dict, Path, Path]:
    """Kill ``iclnb run experiment *params`` (kernel included) once a work unit is checkpointed, rerun it to the
    end, and run the same command unbroken elsewhere. Returns both results.json documents and both directories;
    each experiment's own test compares them (tests/experiments/test_<name>.py may call this too)."""
    args = ["run", experiment, *params]
    broken, whole = tmp_path / "broken", tmp_path / "whole"
    proc = subprocess.Popen([sys.executable, "-m", "iclnb", *args, "-o", str(broken)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    deadline = time.time() + 300
    while time.time() < deadline and not _partial(broken):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and the notebook's kernel
    proc.wait()
    assert _partial(broken), "the run never stopped half-way with a checkpoint"
    for out in (broken, whole):
        done = subprocess.run([sys.executable, "-m", "iclnb", *args, "-o", str(out)], capture_output=True, text=True,
                              env=_env())
        assert done.returncode == 0, done.stderr[-3000:]
    return _strict(broken / "results.json"), _strict(whole / "results.json"), broken, whole


def same_results(a: dict, b: dict) -> bool:
    """Two results.json documents agree on everything but wall-clock timings."""
    return _without_timings(a["results"]) == _without_timings(b["results"])


@pytest.mark.parametrize("experiment", list(CASES))
def test_killed_run_resumes_to_identical_results(experiment, tmp_path):
    a, b, broken, whole = killed_and_resumed(experiment, CASES[experiment], tmp_path)
    assert same_results(a, b)
    if experiment == "loo_multilayer":
        rows = list(csv.DictReader((broken / "raw_data" / "influence.csv").open()))
        assert rows == list(csv.DictReader((whole / "raw_data" / "influence.csv").open()))
        assert all(r["influence"] not in ("", "inf", "-inf", "nan") for r in rows if r["full"] and r["loo"]), \
            "an influence is missing where both of its metrics are defined"
        assert not any("inf" in v.lower() for r in rows for v in r.values())
