"""`iclnb sweep` and `iclnb status SWEEP_DIR` on the tiny generated experiment of tests/test_cli.py.

Each run of a sweep is an `iclnb run` in its own process; those processes find the tiny experiment through a
sitecustomize module on PYTHONPATH that gives them the same registry as this process."""

import json

import pytest

from iclnb import cli
from iclnb.core.errors import IclnbError
from iclnb.experiments import Experiment
from iclnb.experiments.params import OUTPUT_DIR, Bool, Float, Int, IntList, declare
from iclnb.ops import sweep
from iclnb.results.io import read_json
from tests import test_cli as cli_tests

notebooks = cli_tests.notebooks  # the tiny generated experiment (a fixture)

SITECUSTOMIZE = '''\
import iclnb.experiments as _experiments
from iclnb.experiments import Experiment as _Experiment
_experiments.registry = lambda: {"tiny": _Experiment("tiny", "tiny", "tiny", {})}
'''


@pytest.fixture
def tiny(notebooks, tmp_path):
    (tmp_path / "code" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return notebooks


DECLARATION = declare(Int("n", 3, "units"), Float("ratio", 0.5, "a ratio"), Bool("flag", False, "a flag"),
                      IntList("layers", "0,5", "layers", min=0), Int("seed", 42, "seed", min=0), OUTPUT_DIR)


def test_grid_from_the_command_line_and_a_file(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("layers: [[0, 5], '1,2']\nflag: true\nn: [1, 2]\n")
    grid = sweep.parse_grid(DECLARATION, [("n", "3, 4"), ("ratio", "0.5")], grid_file)
    assert grid == {"layers": ["0,5", "1,2"], "flag": ["true"], "n": ["3", "4"], "ratio": ["0.5"]}
    (tmp_path / "grid.json").write_text(json.dumps({"seed": [1, 2]}))
    assert sweep.parse_grid(DECLARATION, [], tmp_path / "grid.json") == {"seed": ["1", "2"]}
    with pytest.raises(IclnbError, match="cannot be swept"):
        sweep.parse_grid(DECLARATION, [("output_dir", "a,b")])
    with pytest.raises(IclnbError, match="empty value"):
        sweep.parse_grid(DECLARATION, [("n", "1,")])
    with pytest.raises(IclnbError, match="given twice"):
        sweep.parse_grid(DECLARATION, [("n", "1"), ("n", "2")])


def test_the_values_of_a_parameter_are_a_set_as_a_list_parameter_is(tmp_path):
    """One rule (params.distinct) for a run's list and a sweep's values: what the parameter reads alike is one."""
    assert DECLARATION.validate({"layers": "5,0,5"}).layers == [0, 5]  # the run's list rule
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text("layers: [[0, 5], [5, 0, 5], '0,5', [1]]\n")
    assert sweep.parse_grid(DECLARATION, [("n", "2, 2, 02, 3"), ("flag", "true,yes")], grid_file) == {
        "layers": ["0,5", "1"], "n": ["2", "3"], "flag": ["true"]}
    assert sweep.parse_grid(DECLARATION, [("n", "2,two,two")]) == {"n": ["2", "two"]}  # refused by expand


def test_a_grid_file_that_cannot_be_parsed_is_refused_with_its_line_and_column(tiny, tmp_path, capsys):
    bad = tmp_path / "grid.yaml"
    bad.write_text("n: [1, 2]\nlayers: [[0, 5]\nseed: 1\n")
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "tiny", "--grid", str(bad), "-o", str(out)]) == 2
    line = cli_tests.error_line(capsys)
    assert line == f"iclnb: error: grid file {bad} cannot be read: line 3, column 1: expected ',' or ']', but got " \
        f"'<scalar>'"
    bad_json = tmp_path / "grid.json"
    bad_json.write_text('{"n": [1, 2],\n "seed": [1,, 2]}')
    assert cli.main(["sweep", "tiny", "--grid", str(bad_json), "-o", str(out)]) == 2
    assert cli_tests.error_line(capsys) == (f"iclnb: error: grid file {bad_json} cannot be read: line 2, column 13: "
                                            f"Expecting value")
    assert not out.exists()


def test_a_repeated_value_is_one_run_through_the_cli(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    grid = tmp_path / "grid.yaml"
    grid.write_text("layers: [[10, 10], [10]]\n")
    assert cli.main(["sweep", "tiny", "-p", "n", "2,2,02", "--grid", str(grid), "--dry-run", "-o", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"{out / 'run'}: -p layers 10,10 -p n 2", "1 runs (dry run: nothing written)"]


def test_run_names_are_readable_safe_and_stable():
    params = {"seed": "1", "n_contexts": "10", "model": "org/Model 7B", "layers": "0,5"}
    assert sweep.run_name(params, ["seed", "n_contexts"]) == "n_contexts=10__seed=1"
    assert sweep.run_name(params, ["model", "layers"]) == "layers=0+5__model=org_Model_7B"
    assert sweep.run_name(params, []) == "run"
    long = {"words": ",".join(["word"] * 60)}
    name = sweep.run_name(long, ["words"])
    assert len(name) <= 120 and name == sweep.run_name(dict(long), ["words"])


def test_every_value_is_checked_before_anything_starts(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "tiny", "-p", "n", "2,zero", "-o", str(out)]) == 2
    line = cli_tests.error_line(capsys)
    assert "parameter n expects an integer, got 'zero' (in the run n=zero)" in line
    assert not out.exists()
    assert cli.main(["sweep", "tiny", "-p", "bogus", "1", "-o", str(out)]) == 2
    assert "unknown parameter 'bogus'" in cli_tests.error_line(capsys)
    assert not out.exists()


def test_a_local_sweep_runs_skips_finished_runs_and_shows_one_table(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "tiny", "-p", "n", "2,3", "-p", "name", "a", "--max-parallel", "2", "-o", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr()
    for n in (2, 3):
        doc = read_json(out / f"n={n}" / "results.json")
        assert doc["results"]["sum"] == n * (n - 1) / 2 * 0.5 and doc["results"]["name"] == "a"
        assert (out / "logs" / f"n={n}.log").is_file()
    manifest = read_json(out / "sweep.json")
    assert manifest["experiment"] == "tiny" and manifest["grid"] == {"n": ["2", "3"], "name": ["a"]}
    assert [(r["name"], r["params"], r["exit"]) for r in manifest["runs"]] == [
        ("n=2", {"n": "2", "name": "a"}, 0), ("n=3", {"n": "3", "name": "a"}, 0)]
    capsys.readouterr()
    assert cli.main(argv) == 0  # a rerun: nothing left to do
    assert "2 already finished" in capsys.readouterr().out
    assert cli.main(["status", str(out)]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line for line in table.splitlines() if line.startswith("n=")}
    assert set(rows) == {"n=2", "n=3"} and all("finished" in row and "(100%)" in row for row in rows.values())
    assert "2 runs: 2 finished" in table


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_a_rerun_resumes_it(tiny, tmp_path, capsys, monkeypatch):
    out = tmp_path / "sweep"
    monkeypatch.setenv("TINY_FAIL", "1")
    assert cli.main(["sweep", "tiny", "-p", "n", "2", "-o", str(out)]) == 1
    assert read_json(out / "sweep.json")["runs"][0]["exit"] == 1
    capsys.readouterr()
    assert cli.main(["status", str(out)]) == 0
    assert "failed (exit 1)" in capsys.readouterr().out
    monkeypatch.delenv("TINY_FAIL")
    assert cli.main(["sweep", "tiny", "-p", "n", "2", "-o", str(out)]) == 0
    assert read_json(out / "run" / "results.json")["results"]["sum"] == 0.5


@pytest.mark.slow
def test_the_submitit_local_executor(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "tiny", "-p", "n", "2,3", "--executor", "submitit-local", "--max-parallel", "2",
                     "-o", str(out)]) == 0, capsys.readouterr()
    manifest = read_json(out / "sweep.json")
    assert all(r["exit"] == 0 and r["job_id"] for r in manifest["runs"])
    assert read_json(out / "n=3" / "results.json")["results"]["sum"] == 1.5
    assert list((out / "submitit").glob("*_log.out"))


def test_slurm_options_reach_submitit(tiny, tmp_path, capsys, monkeypatch):
    import submitit

    made = {}

    class Job:
        def __init__(self, i):
            self.job_id = f"77_{i}"

    class FakeExecutor:
        def __init__(self, folder, cluster):
            made.update(folder=folder, cluster=cluster)

        def update_parameters(self, **params):
            made["params"] = params

        def map_array(self, fn, argvs, envs):
            made.update(fn=fn, argvs=list(argvs), envs=list(envs))
            return [Job(i) for i in range(len(made["argvs"]))]

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "tiny", "-p", "n", "2,3", "--executor", "slurm", "--partition", "gpu", "--gpus", "1",
                     "--time", "90", "--mem-gb", "64", "--max-parallel", "4", "--log", "proj", "-o", str(out)]) == 0
    assert made["cluster"] == "slurm" and made["fn"] is sweep.run_one
    assert made["params"] == {"timeout_min": 90, "name": "iclnb-tiny", "slurm_array_parallelism": 4,
                              "slurm_partition": "gpu", "gpus_per_node": 1, "mem_gb": 64.0}
    assert made["argvs"][0] == ["run", "tiny", "-p", "n", "2", "-o", str((out / "n=2").resolve())]
    assert made["envs"][0]["ICLNB_WANDB_PROJECT"] == "proj"
    assert [r["job_id"] for r in read_json(out / "sweep.json")["runs"]] == ["77_0", "77_1"]
    capsys.readouterr()
    assert cli.main(["status", str(out)]) == 0
    assert "submitted (job 77_1)" in capsys.readouterr().out


def test_a_sweep_directory_of_another_experiment_is_refused(tiny, tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"experiment": "other", "runs": []}))
    assert cli.main(["sweep", "tiny", "-p", "n", "2", "-o", str(out)]) == 2
    assert "holds a sweep of other" in cli_tests.error_line(capsys)
    assert Experiment  # the registry type the sitecustomize module uses
