"""The notebooks are their own source: what is committed is what `iclnb notebooks` leaves it as, and that command
rewrites only the parameters cell, the test metadata and the outputs, keeping every edit a user made elsewhere."""

import shutil

import nbformat
import pytest

from iclnb.cli import main
from iclnb.core.errors import IclnbError
from iclnb.core.paths import notebooks_dir
from iclnb.ops.notebooks import notebook_experiments, sync_notebooks


def test_every_committed_notebook_is_what_its_experiment_module_says():
    owners = notebook_experiments()
    on_disk = sorted(p.stem for p in notebooks_dir().glob("*.ipynb"))
    assert sorted(owners) == on_disk, "a notebook without an experiment module, or a module without its notebook"
    assert sync_notebooks(check=True) == [], "run `iclnb notebooks` and commit the rewritten notebooks"


def _copy(tmp_path, name="block_permutation"):
    shutil.copy(notebooks_dir() / f"{name}.ipynb", tmp_path / f"{name}.ipynb")
    return tmp_path / f"{name}.ipynb"


def test_sync_rewrites_the_parameters_cell_and_metadata_and_keeps_a_users_edits(tmp_path):
    path = _copy(tmp_path)
    nb = nbformat.read(path, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    original = params.source
    params.source = "n_contexts = 3  # edited by hand"
    nb.metadata["iclnb"]["test_parameters"] = {"n_contexts": 99}
    code = next(c for c in nb.cells if c.cell_type == "code" and c is not params)
    code.source += "\nprint('my own line')"
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    code.execution_count = 4
    nb.cells.append(nbformat.v4.new_markdown_cell("A note of my own."))
    nbformat.write(nb, path)

    assert sync_notebooks(["block_permutation"], check=True, directory=tmp_path) == ["block_permutation"]
    assert nbformat.read(path, as_version=4).metadata["iclnb"]["test_parameters"] == {"n_contexts": 99}  # unchanged
    assert sync_notebooks(["block_permutation"], directory=tmp_path) == ["block_permutation"]
    back = nbformat.read(path, as_version=4)
    assert next(c for c in back.cells if "parameters" in c.metadata.get("tags", [])).source == original
    assert back.metadata["iclnb"]["test_parameters"]["n_contexts"] != 99
    kept = next(c for c in back.cells if c.get("id") == code.get("id"))
    assert kept.source.endswith("print('my own line')") and kept.outputs == [] and kept.execution_count is None
    assert back.cells[-1].source == "A note of my own."
    assert sync_notebooks(["block_permutation"], check=True, directory=tmp_path) == []


def test_a_notebook_without_one_parameters_cell_is_refused_with_what_to_do(tmp_path):
    path = _copy(tmp_path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("tags", None)
    nbformat.write(nb, path)
    with pytest.raises(IclnbError, match="exactly one cell tagged 'parameters'.*Cell Tags"):
        sync_notebooks(["block_permutation"], directory=tmp_path)


def test_the_cli_check_reports_an_out_of_date_notebook(tmp_path, monkeypatch, capsys):
    path = _copy(tmp_path)
    monkeypatch.setenv("ICLNB_NOTEBOOKS", str(tmp_path))
    assert main(["notebooks", "--check", "block_permutation"]) == 0
    nb = nbformat.read(path, as_version=4)
    next(c for c in nb.cells if "parameters" in c.metadata.get("tags", [])).source = "seed = 1"
    nbformat.write(nb, path)
    assert main(["notebooks", "--check", "block_permutation"]) == 1
    assert "out of date: block_permutation" in capsys.readouterr().err
    assert main(["notebooks", "block_permutation"]) == 0
    assert main(["notebooks", "--check", "block_permutation"]) == 0
