"""Every notebook, executed the way a user would: parameters injected by papermill, cells run by nbval.

Each notebook carries its small test parameters in its metadata (``iclnb.test_parameters``); "{tmp}" in a string
value is replaced by this test's temporary directory. ``iclnb.test_setup`` lists notebooks to execute first (for the
analysis notebooks that read another run's results), each as {"notebook", "parameters"}.
After the run, results.json must exist, be strict JSON, and hold a result for every layer it names.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))


def _params(values: dict, tmp: Path) -> dict:
    return {k: v.replace("{tmp}", str(tmp)) if isinstance(v, str) else v for k, v in values.items()}


def _prepare(name: str, tmp: Path, parameters: dict) -> Path:
    target = tmp / f"{name}.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(target), parameters=parameters,
                               prepare_only=True, progress_bar=False)
    return target


def _strict(path: Path):
    def refuse(token):
        raise ValueError(f"{path} holds the non-JSON token {token}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("name", ALL)
def test_notebook_runs_under_nbval(name, tmp_path):
    meta = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).metadata.get("iclnb", {})
    assert "test_parameters" in meta, f"{name}.ipynb has no iclnb.test_parameters metadata"
    for step in meta.get("test_setup", []):
        prepared = _prepare(step["notebook"], tmp_path, _params(step["parameters"], tmp_path))
        papermill.execute_notebook(str(prepared), str(prepared), progress_bar=False, cwd=str(NOTEBOOKS))
    out_dir = tmp_path / "results" / name
    parameters = {"output_dir": str(out_dir), **_params(meta["test_parameters"], tmp_path)}
    prepared = _prepare(name, tmp_path, parameters)
    env = {**os.environ, "ICLNB_PROGRESS": "text"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-cell-timeout=600", str(prepared)], capture_output=True, text=True, env=env,
                          cwd=str(NOTEBOOKS))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    document = _strict(out_dir / "results.json")
    assert set(document) == {"model", "timestamp", "config", "results"}
    assert document["results"], "results are empty"
    config = _strict(out_dir / "config.json")
    if "model" in config["params"]:  # a notebook that runs a model records where it came from
        assert config["model"].get("n_layers"), "config.json lacks the model provenance"
