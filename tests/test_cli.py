"""`iclnb list | run | status` on a tiny experiment generated here (a module and its notebook; no model)."""

import os
import sys
from pathlib import Path

import nbformat
import pytest

import iclnb.experiments
from iclnb import cli
from iclnb.experiments import Experiment
from iclnb.results.io import read_json
from iclnb.results.run import Run

MODULE = '''\
from iclnb.experiments.params import Bool, Float, Int, IntList, Str, OUTPUT_DIR, declare
PARAMS = declare(Int("n", 3, "number of work units"), Str("name", "x", "a label"),
                 Float("ratio", 0.5, "a ratio", min=0.0), Bool("flag", False, "a flag"),
                 IntList("layers", "0,5", "which layers", min=0), Int("parts", 1, "parts of each unit", max="n"),
                 OUTPUT_DIR)
PRESETS = {"tiny_big": {"n": 6}}
'''

BODY = '''\
import tiny
from iclnb.core.errors import IclnbError
from iclnb.experiments import start
p, run, _ = start(tiny, globals())
if p.name == "boom":
    raise IclnbError("name 'boom' is reserved; pass another name")
import os
if os.environ.get("TINY_FAIL"):
    raise RuntimeError("failing on purpose")
done = run.checkpoint("units", total=p.n, every_s=0)
for i in range(p.n):
    if i not in done:
        done[i] = i * p.ratio
print("units done:", len(done))
if os.environ.get("TINY_SLEEP"):
    import time
    print("sleeping", flush=True)
    time.sleep(float(os.environ["TINY_SLEEP"]))
run.finish({"sum": sum(done[i] for i in range(p.n)), "layers": p.layers, "flag": p.flag, "name": p.name}, model="none")
'''


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    """A tiny experiment: module ``tiny`` (with a preset ``tiny_big``) and ``notebooks/tiny.ipynb``; the
    registry lists only it."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "tiny.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(code), str(Path(cli.__file__).resolve().parents[1])]))
    directory = tmp_path / "notebooks"
    directory.mkdir()
    import importlib

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    sys.modules.pop("tiny", None)  # another test's tmp_path held the last one
    declaration = importlib.import_module("tiny").PARAMS
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"),
                nbformat.v4.new_code_cell(declaration.parameters_cell(), metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(BODY)]
    nbformat.write(nb, directory / "tiny.ipynb")
    experiments = {"tiny": Experiment("tiny", "tiny", "tiny", {}),
                   "tiny_big": Experiment("tiny_big", "tiny", "tiny", {"n": 6})}
    monkeypatch.setattr(iclnb.experiments, "registry", lambda: experiments)
    monkeypatch.setenv("ICLNB_NOTEBOOKS", str(directory))
    monkeypatch.setenv("ICLNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("ICLNB_PROGRESS", "text")
    return directory


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("iclnb: error: ")
    assert "Traceback" not in err[0]
    return err[0]


def test_list_shows_the_declarations(notebooks, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tiny\n" in out and "tiny_big  (notebook tiny with other defaults)" in out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "n int = 3 # number of work units [integer >= 1]" in lines
    assert "n int = 6 # number of work units [integer >= 1]" in lines  # the preset's default
    assert 'layers str = "0,5" # which layers [comma-separated integers >= 0]' in lines
    assert "parts int = 1 # parts of each unit [integer in [1, n]]" in lines  # a bound another parameter sets


def test_run_succeeds_then_status(notebooks, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["run", "tiny", "-p", "n", "4", "-p", "layers=1,2", "--param", "flag", "true", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(out) in captured.out and "results.json" in captured.out and "tiny.ipynb" in captured.out
    assert "units done: 4" in captured.out  # the kernel's output streams through
    doc = read_json(out / "results.json")
    assert doc["results"] == {"sum": 3.0, "layers": [1, 2], "flag": True, "name": "x"}
    assert doc["experiment"] == "tiny"  # results.json says which experiment made it, as config.json does
    assert read_json(out / "config.json")["params"]["layers"] == [1, 2]
    assert read_json(out / "config.json")["params"]["output_dir"] == str(out)
    assert (out / "tiny.ipynb").exists() and not (out / ".lock").exists()

    assert cli.main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert "finished" in status and "tiny" in status and "checkpoint units: 4/4" in status

    # other parameters into the same directory: refused before the executed notebook is overwritten
    before = (out / "tiny.ipynb").stat().st_mtime_ns
    assert cli.main(["run", "tiny", "-p", "n", "5", "-o", str(out)]) == 2
    line = error_line(capsys)
    assert "n (was 4, now 5)" in line and "delete" in line
    assert (out / "tiny.ipynb").stat().st_mtime_ns == before


def test_a_failed_rerun_never_overwrites_a_finished_notebook(notebooks, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert cli.main(["run", "tiny", "-o", str(out)]) == 0
    finished = (out / "tiny.ipynb").read_bytes()
    capsys.readouterr()
    monkeypatch.setenv("TINY_FAIL", "1")  # the same parameters, but this time the notebook fails
    assert cli.main(["run", "tiny", "-o", str(out)]) == 1
    assert "the executed notebook with the full traceback is at " + str(out / "tiny.failed.ipynb") in \
        capsys.readouterr().err
    assert (out / "tiny.ipynb").read_bytes() == finished


def test_failure_inside_notebook(notebooks, tmp_path, capsys):
    out = tmp_path / "boom"
    assert cli.main(["run", "tiny", "-p", "name", "boom", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "iclnb: error: tiny failed: IclnbError: name 'boom' is reserved; pass another name" in err
    assert f"the executed notebook with the full traceback is at {out / 'tiny.ipynb'}" in err
    assert (out / "tiny.ipynb").exists()


def test_one_results_root_honours_iclnb_results(notebooks, tmp_path, monkeypatch):
    from iclnb.core import paths

    assert paths.results_root() == tmp_path / "results"
    assert paths.default_output_dir("tiny") == tmp_path / "results" / "tiny"
    monkeypatch.delenv("ICLNB_RESULTS")
    assert paths.results_root() == Path(cli.__file__).resolve().parents[1] / "results"


def test_bad_int_value(notebooks, tmp_path, capsys):
    assert cli.main(["run", "tiny", "-p", "n", "abc", "-o", str(tmp_path / "o")]) == 2
    assert error_line(capsys) == "iclnb: error: parameter n expects an integer, got 'abc'"
    assert not (tmp_path / "o").exists()


def test_unknown_parameter(notebooks, tmp_path, capsys):
    assert cli.main(["run", "tiny", "-p", "bogus", "1", "-o", str(tmp_path / "o")]) == 2
    line = error_line(capsys)
    assert "unknown parameter 'bogus'" in line and "n, name, ratio, flag, layers" in line


def test_every_parameter_is_checked_before_anything_starts(notebooks, tmp_path, capsys):
    assert cli.main(["run", "tiny", "-p", "ratio", "-1", "-o", str(tmp_path / "o")]) == 2
    assert error_line(capsys) == "iclnb: error: parameter ratio must be at least 0.0, got -1.0"
    assert cli.main(["run", "tiny", "-p", "layers", "1,x", "-o", str(tmp_path / "o")]) == 2
    assert "parameter layers expects comma-separated integers, got 'x'" in error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_a_preset_runs_the_notebook_with_its_defaults(notebooks, tmp_path, capsys):
    out = tmp_path / "big"
    assert cli.main(["run", "tiny_big", "-o", str(out)]) == 0
    assert "units done: 6" in capsys.readouterr().out
    assert (out / "tiny_big.ipynb").exists() and read_json(out / "config.json")["params"]["n"] == 6
    assert not (tmp_path / "o").exists()


def test_unknown_experiment(notebooks, capsys):
    assert cli.main(["run", "nope"]) == 2
    line = error_line(capsys)
    assert "unknown experiment 'nope'" in line and "tiny, tiny_big" in line


def test_output_path_is_a_file(notebooks, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("precious")
    assert cli.main(["run", "tiny", "-o", str(f)]) == 2
    assert "is a file" in error_line(capsys)
    assert f.read_text() == "precious"
    assert cli.main(["run", "tiny", "-o", str(f / "sub")]) == 2
    assert "is a file" in error_line(capsys)
    assert f.read_text() == "precious"


def test_run_refuses_a_live_directory(notebooks, tmp_path, capsys, monkeypatch):
    out = tmp_path / "live"
    run = Run.open(out, "tiny", {"n": 3})
    try:
        monkeypatch.setattr(cli.os, "getpid", lambda: -1)  # pretend the CLI is another process
        assert cli.main(["run", "tiny", "-o", str(out)]) == 2
        assert "is being written by a live run" in error_line(capsys)
        assert not (out / "tiny.ipynb").exists()
    finally:
        monkeypatch.undo()
        run.close()


def test_status_running_and_stopped(tmp_path, capsys):
    out = tmp_path / "run"
    run = Run.open(out, "demo", {"n": 20})
    ck = run.checkpoint("units", total=20, every_s=0)
    for i in range(5):
        ck[i] = float(i)
    assert cli.main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "running" in text and "demo" in text and "checkpoint units: 5/20 (25%)" in text
    assert "last update" in text and "elapsed" in text
    run.close()
    assert cli.main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stopped" in text and "5/20" in text


def test_status_of_a_non_results_dir(tmp_path, capsys):
    assert cli.main(["status", str(tmp_path)]) == 2
    assert "not a results directory" in error_line(capsys)


def test_module_entry_point():
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-m", "iclnb", "run", "css_basic", "-p", "n_contexts", "x"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "iclnb: error: parameter n_contexts expects an integer, got 'x'"


def test_two_names_for_the_output_directory_are_refused(notebooks, tmp_path, capsys):
    assert cli.main(["run", "tiny", "-o", str(tmp_path / "a"), "-p", "output_dir", str(tmp_path / "b")]) == 2
    assert "name different directories" in error_line(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_truncated_executed_notebook_never_replaces_a_whole_one(tmp_path):
    final = tmp_path / "x.ipynb"
    final.write_text('{"whole": "notebook"}')
    target = tmp_path / ".x.running.ipynb"
    target.write_text('{"cells": [')  # what a full disk leaves
    assert cli._settle(target, final) is None
    assert final.read_text() == '{"whole": "notebook"}' and not target.exists()
    nb = nbformat.v4.new_notebook()
    nbformat.write(nb, target)
    assert cli._settle(target, final) == final and nbformat.read(final, as_version=4).cells == []


def test_status_of_a_run_another_host_writes(tmp_path, capsys):
    """A run on another machine writing to a shared filesystem: status reads only its files and takes the foreign
    lock as live (no local pid is consulted)."""
    import json

    from iclnb.results.run import _now

    out = tmp_path / "shared" / "run"
    run = Run.open(out, "demo", {"n": 10})
    ck = run.checkpoint("units", total=10, every_s=0)
    for i in range(4):
        ck[i] = float(i)
    run.close()
    (out / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": "node-17.cluster", "started": _now()}))
    assert cli.main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "running (pid " + str(os.getpid()) + " on node-17.cluster)" in text
    assert "another host's lock" in text and "checkpoint units: 4/10 (40%)" in text
    (out / ".lock").write_text(json.dumps({"pid": 999999999, "host": "node-17.cluster", "started": _now()}))
    assert "running (pid 999999999 on node-17.cluster)" in "\n".join(cli.status_report(out))  # no such pid here
    (tmp_path / "shared" / "sweep.json").write_text(json.dumps(
        {"experiment": "demo", "executor": "slurm", "runs": [{"name": "run", "dir": "run"},
                                                              {"name": "next", "dir": "next"}]}))
    table = "\n".join(cli.status_report(tmp_path / "shared"))
    assert "running on node-17.cluster" in table and "4/10 (40%)" in table and "pending" in table


def test_an_unwritable_output_directory_gets_one_line(notebooks, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "readonly"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False if Path(path) == parent else real_access(path, mode))
    assert cli.main(["run", "tiny", "-o", str(parent / "out")]) == 2
    assert "is not writable; choose another directory with -o" in error_line(capsys)


def test_run_open_on_a_read_only_filesystem_gets_one_line(tmp_path, monkeypatch):
    from iclnb.core.errors import IclnbError

    def refuse(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(IclnbError, match="cannot be created \\(Read-only file system\\); choose a writable"):
        Run.open(tmp_path / "x", "demo", {})


def test_status_names_a_damaged_results_file_and_survives_a_closed_pipe(tmp_path):
    import subprocess

    run = Run.open(tmp_path / "r", "demo", {"n": 1})
    run.finish({"x": 1.0}, model="none")
    (tmp_path / "r" / "results.json").write_text('{"model": "none", "res')  # truncated
    assert any("damaged: results.json is not valid JSON" in line for line in cli.status_report(tmp_path / "r"))
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parent.parent)}
    # the reader is gone before iclnb writes its first line (as `| head -1` is after its line)
    proc = subprocess.Popen([sys.executable, "-m", "iclnb", "status", str(tmp_path / "r")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


def test_a_value_may_start_with_a_minus_sign(notebooks, tmp_path, capsys):
    """`-p NAME VALUE` and `-p NAME=VALUE` take any VALUE, "-2,-1" included: the declaration judges it, not argparse."""
    out = tmp_path / "o"
    for spelling in (["-p", "layers", "-2,-1"], ["-p", "layers=-2,-1"], ["--param=layers=-2,-1"]):
        assert cli.main(["run", "tiny", *spelling, "-o", str(out)]) == 2
        assert error_line(capsys) == "iclnb: error: parameter layers must be at least 0, got -2"
    assert cli.main(["run", "tiny", "-p", "n", "-o", str(out)]) == 2  # a NAME without its VALUE
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        "iclnb: error: argument -p/--param: parameter n has no value; give -p n VALUE or -p n=VALUE"
    assert not out.exists()


def test_negative_layers_pass_the_checks_of_a_real_experiment(tmp_path, capsys):
    taken = tmp_path / "file"
    taken.write_text("")
    # every parameter passes its check; only then is the output path refused
    assert cli.main(["run", "css_basic", "-p", "layers", "-2,-1", "-p", "n_contexts", "4", "-o", str(taken)]) == 2
    assert "is a file" in error_line(capsys)
    assert cli.main(["sweep", "css_basic", "-p", "layers", "-2,-1", "--dry-run", "-o", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "-p layers -2\n" in out and "-p layers -1\n" in out and "2 runs (dry run" in out


def test_a_bound_set_by_another_parameter_is_the_one_listed_and_checked(notebooks, tmp_path, capsys):
    out = tmp_path / "o"
    assert cli.main(["run", "tiny", "-p", "parts", "4", "-o", str(out)]) == 2
    assert error_line(capsys) == "iclnb: error: parameter parts must be at most n (3), got 4"
    taken = tmp_path / "file"
    taken.write_text("")
    assert cli.main(["run", "tiny_big", "-p", "parts", "4", "-o", str(taken)]) == 2  # the preset's n = 6 admits it
    assert "is a file" in error_line(capsys)
    assert cli.main(["sweep", "tiny", "-p", "n", "4,3", "-p", "parts", "4", "--dry-run", "-o", str(out)]) == 2
    assert error_line(capsys) == "iclnb: error: parameter parts must be at most n (3), got 4 (in the run n=3)"
    assert not out.exists()


def test_ctrl_c_prints_only_the_resume_line(notebooks, tmp_path):
    """SIGINT while the notebook runs: the kernel's shutdown noise (zmq's "Socket operation on non-socket",
    "Kernel died") is dropped; the one line says how to resume, and the checkpoints and the lock are left sound."""
    import signal
    import subprocess

    (tmp_path / "code" / "sitecustomize.py").write_text(
        "import iclnb.experiments as _e\nfrom iclnb.experiments import Experiment as _E\n"
        "_e.registry = lambda: {'tiny': _E('tiny', 'tiny', 'tiny', {})}\n")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "iclnb", "run", "tiny", "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TINY_SLEEP": "60"},
                            start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("sleeping"):
                break
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        f"running tiny -> {out}",
        f"iclnb: interrupted; rerun the same command to resume from the checkpoints in {out}"], stderr
    assert len(read_json(out / "checkpoint_units.json")["items"]) == 3 and not (out / ".lock").exists()
