"""The results directory: strict atomic JSON, the lock, parameter checks, checkpoints and exact resume."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from iclnb.core import files
from iclnb.core.errors import IclnbError
from iclnb.results import run as runs
from iclnb.results.io import read_json, to_jsonable, write_json
from iclnb.results.run import Checkpoint, Run

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}


# ------------------------------------------------------------------------------------------ strict JSON


def test_nan_becomes_null_and_numpy_types_convert():
    data = {
        "phi": np.array([[1.5, np.nan], [0.25, 3.0]], dtype=np.float32),
        "n": np.int64(7),
        "ok": np.bool_(True),
        "x": np.float64("nan"),
        "t": (1, 2.5, "a"),
        "p": Path("a/b"),
        3: "int key",
        np.int64(4): "numpy key",
        "ids": np.arange(3),
    }
    out = to_jsonable(data)
    assert out["phi"] == [[1.5, None], [0.25, 3.0]]
    assert out["n"] == 7 and type(out["n"]) is int
    assert out["ok"] is True
    assert out["x"] is None
    assert out["t"] == [1, 2.5, "a"]
    assert out["p"] == "a/b"
    assert out["3"] == "int key" and out["4"] == "numpy key"
    assert out["ids"] == [0, 1, 2]
    json.dumps(out, allow_nan=False)


def test_inf_raises_with_key_path():
    phi = np.zeros(10)
    phi[7] = np.inf
    with pytest.raises(ValueError, match=r"results\.layer_3\.phi\[7\] is inf"):
        to_jsonable({"results": {"layer_3": {"phi": phi}}})
    with pytest.raises(ValueError, match=r"a\[1\]\.b is -inf"):
        to_jsonable({"a": [1, {"b": -math.inf}]})


def test_floats_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    values = {"f64": rng.standard_normal(50), "f32": rng.standard_normal(5).astype(np.float32),
              "tiny": 5e-324, "big": 1.7976931348623157e308, "third": 1 / 3}
    write_json(tmp_path / "x.json", values)
    back = read_json(tmp_path / "x.json")
    assert back["f64"] == values["f64"].tolist()
    assert back["f32"] == [float(v) for v in values["f32"]]
    assert back["tiny"] == 5e-324 and back["big"] == 1.7976931348623157e308 and back["third"] == 1 / 3


def test_strict_json_on_disk(tmp_path):
    write_json(tmp_path / "x.json", {"a": float("nan")})
    text = (tmp_path / "x.json").read_text()
    assert "NaN" not in text and "null" in text
    (tmp_path / "bad.json").write_text('{"a": NaN}')
    with pytest.raises(IclnbError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_atomic_write_keeps_old_file_when_serialisation_fails(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"ok": 1})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="deep.list\\[2\\] is inf"):
        write_json(path, {"deep": {"list": [1.0, 2.0, float("inf")]}})
    with pytest.raises(TypeError, match="object"):
        write_json(path, {"later": [1, 2, object()]})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary files left behind


def test_atomic_write_keeps_old_file_when_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json(path, {"ok": 1})

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken)
    with pytest.raises(OSError):
        write_json(path, {"ok": 2})
    monkeypatch.undo()
    assert read_json(path) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


# ------------------------------------------------------------------------------------------ run directory


def test_open_writes_config_and_finish_writes_results(tmp_path):
    out = tmp_path / "run"
    run = Run.open(out, "demo", {"n": 3, "layers": (0, 5), "output_dir": str(out)})
    cfg = read_json(out / "config.json")
    assert cfg["experiment"] == "demo"
    assert cfg["params"] == {"n": 3, "layers": [0, 5], "output_dir": str(out)}
    prov = cfg["provenance"]
    assert prov["started"] and prov["finished"] is None
    assert set(prov["packages"]) >= {"iclnb", "torch", "transformers", "numpy", "scipy", "sklearn", "pandas",
                                     "plotly"}
    assert "git_commit" in prov and "hostname" in prov and "python" in prov
    from iclnb.core.paths import REPO_ROOT

    if (REPO_ROOT / ".git").exists():  # run from a checkout: the commit that made the results is recorded
        assert len(prov["git_commit"] or "") == 40 and prov["git_dirty"] in (True, False)
    assert (out / ".lock").exists()
    run.record_model({"name": "tiny", "n_layers": np.int64(2)})
    run.record_model({"dtype": "float32"})
    assert read_json(out / "config.json")["model"] == {"name": "tiny", "n_layers": 2, "dtype": "float32"}
    assert run.figures_dir == out / "figures"
    assert run.raw_data_dir.is_dir()
    path = run.finish({"layer_0": {"phi": np.array([1.0, np.nan])}}, model="tiny")
    doc = read_json(path)
    assert doc["model"] == "tiny" and doc["config"]["n"] == 3
    assert doc["results"] == {"layer_0": {"phi": [1.0, None]}} and doc["timestamp"]
    assert read_json(out / "config.json")["provenance"]["finished"]
    assert not (out / ".lock").exists()


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_text("keep")
    with pytest.raises(IclnbError, match="is a file; pass a directory path"):
        Run.open(f, "demo", {})
    assert f.read_text() == "keep"


def test_different_params_refused_same_params_resume(tmp_path):
    out = tmp_path / "run"
    run = Run.open(out, "demo", {"n": 1, "seed": 42, "output_dir": "a"})
    started = run.config["provenance"]["started"]
    run.finish({}, model="m")
    with pytest.raises(IclnbError) as err:
        Run.open(out, "demo", {"n": 2, "seed": 42, "output_dir": "a"})
    msg = str(err.value)
    assert "n (was 1, now 2)" in msg and "seed" not in msg
    assert f"use another output_dir, or delete {out.resolve()} to start over" in msg.lower()
    with pytest.raises(IclnbError, match="experiment"):
        Run.open(out, "other", {"n": 1, "seed": 42})
    # same parameters (output_dir is not compared): resume, keeping the first start time
    run = Run.open(out, "demo", {"n": 1, "seed": 42, "output_dir": "b"})
    assert run.config["provenance"]["started"] == started
    assert run.config["provenance"]["resumed"]
    run.close()
    assert not (out / ".lock").exists()


def test_a_run_that_did_no_work_can_be_started_over(tmp_path):
    """Bad input stops a run before any work: the next run, with corrected parameters, may use the directory."""
    out = tmp_path / "run"
    Run.open(out, "demo", {"layers": "0,40"}).close()
    run = Run.open(out, "demo", {"layers": "0,5"})
    assert run.config["params"]["layers"] == "0,5"
    store = run.checkpoint("units", every_s=0)
    store["0"] = 1.5  # now it holds work, which a different run must not take over
    run.close()
    with pytest.raises(IclnbError, match="different parameters"):
        Run.open(out, "demo", {"layers": "all"})


def test_same_process_reacquires_its_lock_and_keeps_it_until_the_last_run_closes(tmp_path):
    lock = tmp_path / "run" / ".lock"
    first = Run.open(tmp_path / "run", "demo", {"n": 1})
    second = Run.open(tmp_path / "run", "demo", {"n": 1})  # a JupyterLab kernel rerunning the notebook
    assert runs.lock_holder(tmp_path / "run")["pid"] == os.getpid()
    second.close()
    assert lock.exists(), "closing the second Run released the lock the first still holds"
    first.close()
    assert not lock.exists()


def test_files_are_written_with_the_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        files.write_text(tmp_path / "b.txt", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o644


def test_run_saves_tables_arrays_and_figures_through_one_writer(tmp_path):
    import pandas as pd
    import plotly.graph_objects as go

    run = Run.open(tmp_path / "run", "demo", {"n": 1})
    table = pd.DataFrame({"a": [1.0, np.nan], "b": ["x", "y"]})
    assert run.save_table(table, "t") is table
    back = pd.read_csv(tmp_path / "run" / "raw_data" / "t.csv")
    assert back["b"].tolist() == ["x", "y"] and np.isnan(back["a"][1])
    run.save_arrays("arr", x=np.arange(3))
    with np.load(tmp_path / "run" / "raw_data" / "arr.npz", allow_pickle=False) as f:
        assert f["x"].tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="pickling"):
        run.save_arrays("bad", x=np.array([object()]))
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    assert run.save_figure(fig, "f") is fig
    assert (tmp_path / "run" / "figures" / "f.html").exists()
    with pytest.raises(IclnbError, match="may use only"):
        run.save_table(table, "../escape")
    run.close()


def test_live_lock_refuses_a_second_run(tmp_path):
    out = tmp_path / "run"
    run = Run.open(out, "demo", {"n": 1})
    try:
        code = f"from iclnb.results.run import Run; Run.open({str(out)!r}, 'demo', {{'n': 1}})"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
        assert proc.returncode != 0
        assert f"is being written by a live run (pid {os.getpid()} since" in proc.stderr
        assert "Wait for it to finish or choose another output_dir." in proc.stderr
    finally:
        run.close()


def test_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_json(out / ".lock", {"pid": dead.pid, "host": runs.socket.gethostname(), "started": runs._now()})
    assert runs.lock_holder(out) is None
    run = Run.open(out, "demo", {"n": 1})
    assert read_json(out / ".lock")["pid"] == os.getpid()
    assert runs.lock_holder(out)["pid"] == os.getpid()
    run.close()
    assert not (out / ".lock").exists()


# ------------------------------------------------------------------------------------------ checkpoints


def test_checkpoint_flush_policy_and_reload(tmp_path):
    path = tmp_path / "checkpoint_a.json"
    ck = Checkpoint(path, "a", total=4, every_s=3600)
    ck[0] = {"x": np.float32(0.5), "v": np.array([1.0, np.nan])}
    assert not path.exists()  # not yet due
    assert 0 in ck and "0" in ck and ck[0] == {"x": 0.5, "v": [1.0, None]}
    ck.flush()
    doc = read_json(path)
    assert doc["name"] == "a" and doc["total"] == 4 and doc["done"] == 1 and doc["updated"]
    assert doc["items"] == {"0": {"x": 0.5, "v": [1.0, None]}}
    eager = Checkpoint(path, "a", every_s=0)
    assert eager.total == 4 and len(eager) == 1
    eager[1] = 2.5
    assert read_json(path)["items"]["1"] == 2.5
    assert dict(eager.items()) == {"0": {"x": 0.5, "v": [1.0, None]}, "1": 2.5}
    with pytest.raises(ValueError, match="is inf"):
        eager[2] = float("inf")


def test_run_checkpoint_is_flushed_on_finish(tmp_path):
    run = Run.open(tmp_path / "run", "demo", {})
    ck = run.checkpoint("units", total=2)
    ck["a"] = 1
    assert run.checkpoint("units") is ck
    run.finish({"a": ck["a"]}, model="m")
    assert read_json(tmp_path / "run" / "checkpoint_units.json")["items"] == {"a": 1}


WORKER = textwrap.dedent("""
    import sys, time
    from iclnb.results.run import Run
    from iclnb.core.seeding import stream

    out, delay = sys.argv[1], float(sys.argv[2])
    run = Run.open(out, "units", {"seed": 7, "n_units": 20})
    done = run.checkpoint("units", total=20, every_s=0)
    for i in range(20):
        if i in done:
            continue
        rng = stream(7, "unit", i)
        done[i] = {"value": float(rng.standard_normal() / 3), "vec": rng.random(3)}
        print(i, flush=True)
        time.sleep(delay)
    items = [done[i] for i in range(20)]
    run.finish({"total": sum(it["value"] for it in items), "items": items}, model="none")
""")


def test_kill_and_resume_gives_identical_results(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    resumed, clean = tmp_path / "resumed", tmp_path / "clean"

    proc = subprocess.Popen([sys.executable, str(script), str(resumed), "0.05"], stdout=subprocess.PIPE,
                            text=True, env=ENV)
    first = []
    for line in proc.stdout:
        first.append(int(line))
        if len(first) == 6:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (resumed / "results.json").exists()
    assert (resumed / ".lock").exists()  # left behind by the killed run, taken over below
    saved = read_json(resumed / "checkpoint_units.json")["done"]
    assert 6 <= saved < 20

    again = subprocess.run([sys.executable, str(script), str(resumed), "0"], capture_output=True, text=True,
                           env=ENV, timeout=120)
    assert again.returncode == 0, again.stderr
    recomputed = [int(x) for x in again.stdout.split()]
    assert recomputed and min(recomputed) >= saved  # finished units were not recomputed

    full = subprocess.run([sys.executable, str(script), str(clean), "0"], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert full.returncode == 0, full.stderr
    a, b = read_json(resumed / "results.json"), read_json(clean / "results.json")
    assert a["results"] == b["results"]
    assert (resumed / "checkpoint_units.json").exists() and not (resumed / ".lock").exists()


# ------------------------------------------------------------------------------------------ figures


def test_save_figure_without_browser_writes_html_and_warns_once(tmp_path, monkeypatch):
    import warnings

    import plotly.graph_objects as go

    from iclnb.plotting import save as plots

    monkeypatch.setattr(plots, "find_browser", lambda: None)
    monkeypatch.setattr(plots, "_warned", set())
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = plots.save_figure(fig, tmp_path / "figures", "a")
        second = plots.save_figure(fig, tmp_path / "figures", "b")
    assert first == {"html": tmp_path / "figures" / "a.html", "png": None} and second["png"] is None
    assert [str(w.message) for w in caught if "PNG export skipped" in str(w.message)].__len__() == 1
    assert "chromium" in str(caught[0].message).lower()
    html = (tmp_path / "figures" / "a.html").read_text()
    assert 'src="plotly.min.js"' in html and "cdn" not in html.lower()
    assert (tmp_path / "figures" / "plotly.min.js").stat().st_size > 1_000_000


def test_a_checkpoint_made_with_other_parameters_is_never_reused(tmp_path):
    out = tmp_path / "run"
    run = Run.open(out, "demo", {"context_length": 20})
    run.checkpoint("contexts", total=2, every_s=0)["0"] = {"walk": [1, 2]}
    run.close()
    (out / "config.json").unlink()  # the directory no longer says which parameters made its checkpoint
    run = Run.open(out, "demo", {"context_length": 30})
    with pytest.raises(IclnbError, match="checkpoint_contexts.json was made by a run with other parameters"):
        run.checkpoint("contexts", total=2)
    run.close()
    (out / "config.json").unlink()
    run = Run.open(out, "demo", {"context_length": 20})  # the parameters that made it: resumed
    assert run.checkpoint("contexts", total=2)["0"] == {"walk": [1, 2]}
    run.close()


def test_the_log_parameter_logs_the_finished_run_and_never_blocks_a_resume(tmp_path, monkeypatch):
    import subprocess

    from iclnb.experiments import log_when_finished

    calls, real_run = [], subprocess.run

    def fake_run(cmd, **kwargs):
        if "iclnb" not in cmd:  # provenance asks git
            return real_run(cmd, **kwargs)
        calls.append((Path(cmd[cmd.index("log") + 1]), cmd[cmd.index("--project") + 1]))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.delenv("ICLNB_WANDB_PROJECT", raising=False)
    out = tmp_path / "run"
    run = Run.open(out, "demo", {"n": 1, "log": ""})
    run.on_finish(log_when_finished)
    run.checkpoint("units", every_s=0)["0"] = 1.0
    run.close()
    run = Run.open(out, "demo", {"n": 1, "log": "my-project"})  # logging switched on for the rerun: resumed
    run.on_finish(log_when_finished)
    assert run.checkpoint("units")["0"] == 1.0
    run.finish({"x": 1.0}, model="none")
    assert calls == [(out.resolve(), "my-project")]
    run = Run.open(tmp_path / "quiet", "demo", {"n": 1, "log": ""})
    run.on_finish(log_when_finished)
    run.finish({"x": 1.0}, model="none")
    assert len(calls) == 1


def test_update_config_sets_entries_and_refuses_the_runs_own(tmp_path):
    run = Run.open(tmp_path / "run", "demo", {"n": 1})
    run.update_config(sgld={"step_size": 1e-4})
    assert read_json(tmp_path / "run" / "config.json")["sgld"] == {"step_size": 1e-4}
    with pytest.raises(IclnbError, match="written by the run itself"):
        run.update_config(params={"n": 2})
    run.close()
