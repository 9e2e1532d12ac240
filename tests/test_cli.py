"""`iclnb list | run | status` on a tiny notebook generated here (no model)."""

import os
from pathlib import Path

import nbformat
import pytest

from iclnb import cli
from iclnb.results.run import Run, read_json

PARAMS = '''\
n: int = 3  # number of work units
name = "x"  # a label
ratio = 0.5
flag = False
layers = [0, 5]  # which layers
output_dir = None
'''

BODY = '''\
from iclnb.core.errors import IclnbError
from iclnb.results.run import Run
if name == "boom":
    raise IclnbError("name 'boom' is reserved; pass another name")
run = Run.open(output_dir, "tiny", dict(n=n, name=name, ratio=ratio, flag=flag, layers=layers, output_dir=output_dir))
done = run.checkpoint("units", total=n, every_s=0)
for i in range(n):
    if i not in done:
        done[i] = i * ratio
print("units done:", len(done))
run.finish({"sum": sum(done[i] for i in range(n)), "layers": layers, "flag": flag, "name": name}, model="none")
'''


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    directory = tmp_path / "notebooks"
    directory.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"),
                nbformat.v4.new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(BODY)]
    nbformat.write(nb, directory / "tiny.ipynb")
    other = nbformat.v4.new_notebook()
    other.cells = [nbformat.v4.new_code_cell("seed = 42", metadata={"tags": ["parameters"]})]
    nbformat.write(other, directory / "other.ipynb")
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


def test_list_shows_parameters(notebooks, capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "other" in out
    assert "n " in out and "int" in out and "number of work units" in out
    assert "layers" in out and "[0, 5]" in out and "which layers" in out


def test_value_conversion():
    spec = lambda default, t="None": {"default": default, "inferred_type_name": t}  # noqa: E731
    assert cli.convert_value("n", "7", spec("3")) == 7
    assert cli.convert_value("n", "7", spec("None", "int")) == 7
    assert cli.convert_value("r", "0.25", spec("0.5")) == 0.25
    assert cli.convert_value("f", "true", spec("False")) is True
    assert cli.convert_value("f", "0", spec("True")) is False
    assert cli.convert_value("s", "0,5", spec('"all"')) == "0,5"  # a str default keeps strings as strings
    assert cli.convert_value("layers", "0,5,11", spec("[0, 5]")) == [0, 5, 11]
    assert cli.convert_value("layers", "all", spec("[0, 5]")) == "all"
    assert cli.convert_value("layers", "7", spec("[0, 5]")) == [7]
    assert cli.convert_value("models", "a,b", spec('["gemma-3-270m"]')) == ["a", "b"]
    assert cli.convert_value("x", "3", spec("None")) == 3
    with pytest.raises(cli.UsageError, match="parameter n_contexts expects an integer, got 'abc'"):
        cli.convert_value("n_contexts", "abc", spec("100"))
    with pytest.raises(cli.UsageError, match="expects true or false"):
        cli.convert_value("f", "maybe", spec("False"))


def test_run_succeeds_then_status(notebooks, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["run", "tiny", "-p", "n", "4", "-p", "layers", "1,2", "-p", "flag", "true", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(out) in captured.out and "results.json" in captured.out and "tiny.ipynb" in captured.out
    assert "units done: 4" in captured.out  # the kernel's output streams through
    doc = read_json(out / "results.json")
    assert doc["results"] == {"sum": 3.0, "layers": [1, 2], "flag": True, "name": "x"}
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


def test_failure_inside_notebook(notebooks, tmp_path, capsys):
    out = tmp_path / "boom"
    assert cli.main(["run", "tiny", "-p", "name", "boom", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "iclnb: error: tiny failed: IclnbError: name 'boom' is reserved; pass another name" in err
    assert f"the executed notebook with the full traceback is at {out / 'tiny.ipynb'}" in err
    assert (out / "tiny.ipynb").exists()


def test_default_output_dir(notebooks, tmp_path, monkeypatch):
    assert cli.results_root() == tmp_path / "results"
    monkeypatch.delenv("ICLNB_RESULTS")
    assert cli.results_root() == notebooks.parent / "results"


def test_bad_int_value(notebooks, tmp_path, capsys):
    assert cli.main(["run", "tiny", "-p", "n", "abc", "-o", str(tmp_path / "o")]) == 2
    assert error_line(capsys) == "iclnb: error: parameter n expects an integer, got 'abc'"
    assert not (tmp_path / "o").exists()


def test_unknown_parameter(notebooks, tmp_path, capsys):
    assert cli.main(["run", "tiny", "-p", "bogus", "1", "-o", str(tmp_path / "o")]) == 2
    line = error_line(capsys)
    assert "unknown parameter 'bogus'" in line and "n, name, ratio, flag, layers" in line
    assert not (tmp_path / "o").exists()


def test_unknown_experiment(notebooks, capsys):
    assert cli.main(["run", "nope"]) == 2
    line = error_line(capsys)
    assert "unknown experiment 'nope'" in line and "other, tiny" in line


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


def test_module_entry_point(notebooks):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, "-m", "iclnb", "run", "tiny", "-p", "n", "x"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "iclnb: error: parameter n expects an integer, got 'x'"


def test_notebook_without_kernelspec_runs_on_python3(notebooks, tmp_path, capsys):
    assert cli.main(["run", "other", "-p", "seed", "1", "-o", str(tmp_path / "o")]) == 0
    assert "other.ipynb" in capsys.readouterr().out
    executed = nbformat.read(str(tmp_path / "o" / "other.ipynb"), as_version=4)
    assert executed.metadata["papermill"]["parameters"]["seed"] == 1
    assert any("seed = 1" in c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
