"""Write a notebook from (kind, source) cells; its parameters cell comes from the experiment's declaration, so
the two can never disagree. Each sibling script writes one family's notebooks: ``python tools/notebooks/<family>.py``
from the repository root, after changing an experiment's declaration or its cells."""
import importlib

import nbformat
from nbformat.v4 import new_notebook, new_markdown_cell, new_code_cell

def write(name, module, cells, test_parameters, test_setup=None):
    mod = importlib.import_module(module)
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    meta = {"test_parameters": test_parameters}
    if test_setup:
        meta["test_setup"] = test_setup
    nb.metadata["iclnb"] = meta
    out = []
    for i, (kind, src) in enumerate(cells):
        src = src.strip("\n")
        if kind == "md":
            out.append(new_markdown_cell(src))
        elif kind == "params":
            c = new_code_cell(mod.PARAMS.parameters_cell())
            c.metadata["tags"] = ["parameters"]
            out.append(c)
        else:
            out.append(new_code_cell(src))
    for i, c in enumerate(out):
        c["id"] = f"{name}-{i:02d}"
    nb.cells = out
    nbformat.write(nb, f"notebooks/{name}.ipynb")
