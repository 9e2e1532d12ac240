"""The notebooks are their own source: edit ``notebooks/<name>.ipynb`` in JupyterLab and commit it.

Two parts of a notebook are written from its experiment module, so that they can never disagree with it, and
``iclnb notebooks`` rewrites exactly those (``--check`` only reports):

* the cell tagged ``parameters`` (what papermill replaces): one line per declared parameter with its default and
  meaning, from ``PARAMS``;
* the notebook metadata ``iclnb.test_parameters`` / ``iclnb.test_setup`` that the notebook tests run it with, from
  the module's ``TEST_PARAMETERS`` and optional ``TEST_SETUP`` (a list of ``{"experiment", "parameters"}``: runs an
  analysis notebook reads; ``"{runs}"`` in a value is the tests' runs directory). Every name must be a declared
  parameter of its experiment.

A committed notebook carries no outputs: they are cleared too (a run's executed copy lives in its results directory).
Everything else (markdown, code cells, their ids) is the user's and is left as it is.
"""

from __future__ import annotations

from pathlib import Path

from iclnb.core.errors import IclnbError
from iclnb.core.paths import notebooks_dir

__all__ = ["synced", "sync_notebooks", "notebook_experiments"]


def notebook_experiments() -> dict:
    """``{notebook name: Experiment}`` for every experiment that owns a notebook (presets reuse another's)."""
    from iclnb.experiments import registry

    return {e.notebook: e for e in registry().values() if not e.preset and e.notebook == e.name}


def _check_test_parameters(name: str, experiment, values: dict, where: str) -> None:
    declared = experiment.params
    unknown = [k for k in values if k not in declared]
    if unknown:
        raise IclnbError(f"{where} of {name} names {unknown}, which {experiment.name} does not declare; valid: "
                         f"{', '.join(declared.names)}")


def synced(name: str, notebook):
    """A copy of ``notebook`` (an nbformat NotebookNode of experiment ``name``) with its parameters cell, its test
    metadata and its cleared outputs as the experiment module says."""
    import copy

    from iclnb.experiments import find

    experiment = find(name)
    module = experiment.load()
    nb = copy.deepcopy(notebook)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise IclnbError(f"{name}.ipynb must have exactly one cell tagged 'parameters' (it has {len(tagged)}); tag "
                         f"the cell that assigns the parameters (JupyterLab: Property Inspector > Cell Tags)")
    tagged[0].source = module.PARAMS.parameters_cell()
    test_parameters = getattr(module, "TEST_PARAMETERS", None)
    if test_parameters is None:
        raise IclnbError(f"{experiment.module} declares no TEST_PARAMETERS (the small parameters the notebook tests "
                         f"run it with)")
    _check_test_parameters(name, experiment, test_parameters, "TEST_PARAMETERS")
    meta = {"test_parameters": dict(test_parameters)}
    setup = getattr(module, "TEST_SETUP", None)
    if setup:
        for step in setup:
            _check_test_parameters(name, find(step["experiment"]), step["parameters"], "TEST_SETUP")
        meta["test_setup"] = [dict(step) for step in setup]
    nb.metadata["iclnb"] = meta
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def sync_notebooks(names=None, *, check: bool = False, directory: Path | None = None) -> list[str]:
    """Rewrite each notebook (all of them by default) whose parameters cell, test metadata or outputs differ from
    what its module says; with ``check``, write nothing. Returns the names of the notebooks that differed."""
    import nbformat

    directory = Path(directory) if directory else notebooks_dir()
    owners = notebook_experiments()
    unknown = [n for n in (names or []) if n not in owners]
    if unknown:
        raise IclnbError(f"no notebook experiment named {unknown}; available: {', '.join(owners)}")
    differed = []
    for name in names or owners:
        path = directory / f"{name}.ipynb"
        if not path.is_file():
            raise IclnbError(f"{path} is missing: every experiment module has its notebook")
        text = path.read_text()
        new = nbformat.writes(synced(name, nbformat.reads(text, as_version=4))) + "\n"
        if new != text:
            differed.append(name)
            if not check:
                from iclnb.core.files import write_text

                write_text(path, new)
    return differed
