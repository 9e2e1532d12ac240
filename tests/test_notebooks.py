"""Every notebook, executed the way a user would: parameters injected by papermill, cells run by nbval.

Each notebook carries its small test parameters in its metadata (``iclnb.test_parameters``). ``iclnb.test_setup``
lists runs an analysis notebook reads (``{"experiment", "parameters"}``); "{runs}" in a string value is the directory
where this session keeps its runs. A run is executed once per session and shared: a setup run with the same
experiment and parameters as another notebook's own test run is that run, so an upstream notebook is not run twice.
After each run, results.json must exist, be strict JSON and hold results.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

from iclnb.experiments import find

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
_RUNS: dict = {}


def _strict(path: Path):
    def refuse(token):
        raise ValueError(f"{path} holds the non-JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


def _metadata(notebook: str) -> dict:
    return nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4).metadata.get("iclnb", {})


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook_runs")


def executed(experiment: str, parameters: dict, runs_dir: Path) -> Path:
    """The results directory of ``experiment`` run under nbval with ``parameters`` (once per session)."""
    parameters = {k: v.replace("{runs}", str(runs_dir)) if isinstance(v, str) else v for k, v in parameters.items()}
    key = (experiment, json.dumps(parameters, sort_keys=True))
    if key in _RUNS:
        return _RUNS[key]
    exp = find(experiment)
    out_dir = Path(parameters.pop("output_dir", "") or runs_dir / f"{experiment}-{len(_RUNS)}")
    prepared = out_dir.parent / f".{out_dir.name}.ipynb"
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(NOTEBOOKS / f"{exp.notebook}.ipynb"), str(prepared),
                               parameters={**exp.preset, **parameters, "output_dir": str(out_dir)},
                               prepare_only=True, progress_bar=False)
    env = {**os.environ, "ICLNB_PROGRESS": "text"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-cell-timeout=600", str(prepared)], capture_output=True, text=True, env=env,
                          cwd=str(NOTEBOOKS))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    _RUNS[key] = out_dir
    return out_dir


@pytest.mark.parametrize("name", ALL)
def test_notebook_runs_under_nbval(name, runs_dir):
    meta = _metadata(name)
    assert "test_parameters" in meta, f"{name}.ipynb has no iclnb.test_parameters metadata"
    for step in meta.get("test_setup", []):
        executed(step["experiment"], step["parameters"], runs_dir)
    out_dir = executed(name, meta["test_parameters"], runs_dir)
    document = _strict(out_dir / "results.json")
    assert set(document) == {"experiment", "model", "timestamp", "config", "results"}
    assert document["results"], "results are empty"
    config = _strict(out_dir / "config.json")
    if "model" in config["params"]:  # a notebook that runs a model records where it came from
        assert config["model"].get("n_layers"), "config.json lacks the model provenance"
