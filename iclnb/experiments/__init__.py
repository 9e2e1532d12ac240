"""The experiments: one module per notebook, grouped by family, and the start every notebook shares.

Layout: ``notebooks/<name>.ipynb`` <-> ``iclnb/experiments/<family>/<name>.py`` (+ ``<family>/figures.py``) <->
``tests/experiments/test_<name>.py``. An experiment module declares

* ``PARAMS``: its parameters (:mod:`iclnb.experiments.params`), the one place their defaults are written;
* optionally ``PRESETS``: other experiment names that run the same notebook with other defaults
  (``{"loo_multilayer": {"layers": "all", ...}}``);
* optionally ``check(p, model)``: checks that need the loaded model (a context that cannot fit, say), run by
  :func:`start` before any work;

and small steps that take data and return data (tables, arrays, dicts). The notebook cell hands what a step returns
to the run (``run.save_figure``, ``run.save_table``, ``run.finish``), so every cell shows what it writes. Adding an
experiment touches no shared code: the registry below finds modules by name.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from iclnb.core.errors import IclnbError

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Experiment:
    """A runnable experiment: its name, the notebook and module that implement it, and the preset defaults (for a
    name that reuses another experiment's notebook)."""

    name: str
    notebook: str
    module: str
    preset: dict

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)

    @property
    def params(self):
        """The parameter declaration with this experiment's defaults (a preset's values replace the defaults)."""
        from iclnb.experiments.params import Declaration

        declared = self.load().PARAMS
        if not self.preset:
            return declared
        return Declaration(tuple(_with_default(p, self.preset[p.name]) if p.name in self.preset else p
                                 for p in declared.params))


def _with_default(param, default):
    from dataclasses import replace

    return replace(param, default=default)


def registry() -> dict[str, Experiment]:
    """Every experiment: the modules under ``iclnb/experiments/<family>/`` that declare ``PARAMS``, and their
    presets."""
    found = {}
    for family in sorted(p.name for p in _HERE.iterdir() if (p / "__init__.py").is_file()):
        for info in pkgutil.iter_modules([str(_HERE / family)]):
            if info.name == "figures" or info.name.startswith("_"):
                continue
            module = f"iclnb.experiments.{family}.{info.name}"
            if hasattr(importlib.import_module(module), "PARAMS"):  # helpers of a family declare none
                found[info.name] = Experiment(info.name, info.name, module, {})
    for name, exp in list(found.items()):
        presets = getattr(exp.load(), "PRESETS", {})
        for preset_name, values in presets.items():
            found[preset_name] = Experiment(preset_name, name, exp.module, dict(values))
    return dict(sorted(found.items()))


def find(name: str) -> Experiment:
    experiments = registry()
    if name not in experiments:
        raise IclnbError(f"unknown experiment {name!r}; available: {', '.join(experiments)}")
    return experiments[name]


def start(module: ModuleType, namespace: dict, device: str | None = None):
    """What every notebook does first: check every parameter, open the results directory, load the model.

    ``namespace`` is the notebook's ``globals()``: the values of the declared parameters are taken from it. Returns
    ``(p, run, model)``: the checked parameters (``p.n_contexts``), the :class:`~iclnb.results.run.Run`, and the
    loaded :class:`~iclnb.models.Model` (None for an experiment without a ``model`` parameter). Nothing is loaded
    or written before every parameter has passed its check; the experiment's ``check(p, model)`` runs before any
    work.
    """
    from iclnb.core.paths import default_output_dir
    from iclnb.results.run import Run

    name = module.__name__.rsplit(".", 1)[-1]
    declaration = module.PARAMS
    p = declaration.validate(declaration.raw(namespace))
    output_dir = p.output_dir if "output_dir" in p and p.output_dir else default_output_dir(name)
    run = Run.open(output_dir, name, {**dict(p), "output_dir": str(output_dir)})
    model = None
    if "model" in p:
        from iclnb.models import load_model

        try:
            model = load_model(p.model, dtype=(p.dtype or None) if "dtype" in p else None, device=device)
            run.record_model(model.provenance())
            if hasattr(module, "check"):
                module.check(p, model)
        except BaseException:
            run.close()
            raise
    return p, run, model
