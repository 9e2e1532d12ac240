"""The experiments: one module per notebook, grouped by family, the kit they are built from, and the start every
notebook shares.

Layout: ``notebooks/<name>.ipynb`` <-> ``iclnb/experiments/<family>/<name>.py`` (+ ``<family>/figures.py``, and
helper modules of the family that declare no ``PARAMS``) <-> ``tests/experiments/test_<name>.py``. Families never
import each other; what two families share lives in the kit (:mod:`iclnb.experiments.kit`) or lower.

The protocol every experiment module follows:

* ``PARAMS``: its parameters (:mod:`iclnb.experiments.params`), the one place their defaults are written;
* optionally ``PRESETS``: other experiment names that run the same notebook with other defaults
  (``{"loo_multilayer": {"layers": "all", ...}}``);
* optionally ``check(p, model) -> None``: the checks across parameters and those that need the model's tokenizer,
  context window or layer count (a context that cannot fit, say), given the checked parameters ``p`` and a
  :class:`~iclnb.models.ModelSpec` (``tokenizer``, ``name``, ``n_layers``, ``max_positions``, ``resolve_layers``:
  the model's files without its weights; None for an experiment without a ``model`` parameter). ``iclnb run`` and
  :func:`start` call it before a directory is written or a weight is loaded; it raises
  :class:`~iclnb.core.errors.IclnbError` with one line that says what to use instead, and returns nothing;
* the measure step: a function taking ``(run, model, ..., p)`` that runs every unit of work through
  :func:`~iclnb.experiments.kit.measure_contexts` (forward passes) or :func:`~iclnb.experiments.kit.resume_units`
  (anything else), under the experiment's own checkpoint name, and returns the per-unit items (or a small dataclass
  built from them). A rerun with the same parameters resumes from the checkpoint;
* small steps after it that take data and return data (tables, arrays, dicts), the last one building the
  ``results`` part of results.json. The notebook cell hands what a step returns to the run (``run.save_figure``,
  ``run.save_table``, ``run.finish``), so every cell shows what it writes;
* optionally ``tidy_rows(r, n_boot, seed) -> list[dict]``: the long-format rows of a finished run ``r``
  (:class:`~iclnb.results.reader.RunResults`) that ``iclnb summarize`` and compare_experiments read, one dict per
  (metric, layer, N, ...) with ``mean``, ``ci_low``, ``ci_high``, each made by :func:`iclnb.experiments.kit.row`
  (:mod:`iclnb.ops.tidy` says which keys).

Adding an experiment touches no shared code: the registry below finds modules by name.
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

    def checked_parameters(self, pairs) -> tuple[dict, dict]:
        """``(overrides, values)`` of ``(NAME, TEXT)`` pairs given on a command line or in a sweep file: the
        notebook values of the overrides (each converted to its parameter's kind, the preset's included), and every
        parameter checked and normalised as the notebook will record it (defaults included). Raises
        :class:`~iclnb.core.errors.UsageError` with one line for an unknown name or a bad value."""
        from iclnb.core.errors import UsageError

        declaration = self.params
        overrides = dict(self.preset)
        for name, text in pairs:
            if name not in declaration:
                valid = ", ".join(n for n in declaration.names if n != "output_dir")
                raise UsageError(f"unknown parameter {name!r} for {self.name}; valid parameters: {valid}")
            try:
                overrides[name] = declaration[name].coerce(text)
            except IclnbError as e:
                raise UsageError(str(e)) from None
        try:
            values = declaration.validate({**declaration.defaults(), **overrides})
        except IclnbError as e:
            raise UsageError(str(e)) from None
        return overrides, dict(values)


def _with_default(param, default):
    from dataclasses import replace

    return replace(param, default=default)


def registry() -> dict[str, Experiment]:
    """Every experiment: the modules under ``iclnb/experiments/<family>/`` and ``iclnb/analyses/`` (the notebooks
    that read other runs, a layer above :mod:`iclnb.ops`, found by name like the families) that declare ``PARAMS``,
    and their presets."""
    found = {}
    packages = [(f"iclnb.experiments.{p.name}", p) for p in sorted(_HERE.iterdir()) if (p / "__init__.py").is_file()]
    for package, directory in [*packages, ("iclnb.analyses", _HERE.parent / "analyses")]:
        for info in pkgutil.iter_modules([str(directory)]):
            if info.name == "figures" or info.name.startswith("_"):
                continue
            module = f"{package}.{info.name}"
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


def check_before_loading(module: ModuleType, p):
    """Run the experiment's ``check(p, model)`` on what the model's files say without its weights: a
    :class:`~iclnb.models.ModelSpec` (tokenizer, config, block count, context window), or None for an experiment
    without a ``model`` parameter. Raises IclnbError with one line; nothing is loaded or written."""
    if not hasattr(module, "check"):
        return
    spec = None
    if "model" in p:
        from iclnb.models import model_spec

        spec = model_spec(p.model)
    module.check(p, spec)


def start(module: ModuleType, namespace: dict, device: str | None = None):
    """What every notebook does first: check every parameter, open the results directory, load the model.

    ``namespace`` is the notebook's ``globals()``: the values of the declared parameters are taken from it. Returns
    ``(p, run, model)``: the checked parameters (``p.n_contexts``), the :class:`~iclnb.results.run.Run`, and the
    loaded :class:`~iclnb.models.Model` (None for an experiment without a ``model`` parameter). Every check, the
    experiment's ``check(p, model)`` included (on the model's tokenizer and config:
    :func:`check_before_loading`), passes before a directory is written or a weight is loaded.
    """
    from iclnb.core.paths import default_output_dir
    from iclnb.results.run import Run

    name = module.__name__.rsplit(".", 1)[-1]
    declaration = module.PARAMS
    raw = declaration.raw(namespace)
    p = declaration.validate(raw)
    for note in declaration.notes(raw):  # repeats merged or values sorted: said once, in the notebook's output
        print(note, flush=True)
    check_before_loading(module, p)
    output_dir = p.output_dir if "output_dir" in p and p.output_dir else default_output_dir(name)
    run = Run.open(output_dir, name, {**dict(p), "output_dir": str(output_dir)})
    run.on_finish(log_when_finished)
    model = None
    if "model" in p:
        from iclnb.models import load_model

        try:
            model = load_model(p.model, dtype=(p.dtype or None) if "dtype" in p else None, device=device)
            run.record_model(model.provenance())
        except BaseException:
            run.close()
            raise
    return p, run, model


def log_when_finished(directory, params: dict) -> None:
    """Registered by :func:`start`: when the run's ``log`` parameter (or ``ICLNB_WANDB_PROJECT``) names a W&B
    project, log the finished run with ``iclnb log`` in a separate process (W&B never runs inside a notebook's
    kernel). A failure to log is reported and does not fail the run, whose results are already written."""
    import os
    import subprocess
    import sys

    from iclnb.core.paths import ENV_PROJECT

    project = params.get("log") or os.environ.get(ENV_PROJECT)
    if not project:
        return
    proc = subprocess.run([sys.executable, "-m", "iclnb", "log", str(directory), "--project", project],
                          capture_output=True, text=True)
    if proc.stdout.strip():
        print(proc.stdout.strip(), flush=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"warning: logging {directory} to W&B project {project} failed: {last} "
              f"(the run's results are written; retry with `iclnb log {directory} --project {project}`)",
              file=sys.stderr, flush=True)
