"""Where things live: the notebooks, and the one results root every part of iclnb writes under and reads from.

``ICLNB_RESULTS`` moves the results root, ``ICLNB_NOTEBOOKS`` the notebooks. Without them, the results root is
``results/`` of the iclnb checkout (or of the working directory for an installed package).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
#: Names a W&B project that every finished run is logged to (``iclnb run --log`` sets it).
ENV_PROJECT = "ICLNB_WANDB_PROJECT"
REPO_ROOT = PACKAGE_ROOT.parent


def _in_checkout() -> bool:
    return (REPO_ROOT / "notebooks").is_dir()


def notebooks_dir() -> Path:
    env = os.environ.get("ICLNB_NOTEBOOKS")
    if env:
        return Path(env).expanduser().resolve()
    return REPO_ROOT / "notebooks" if _in_checkout() else Path.cwd() / "notebooks"


def results_root() -> Path:
    env = os.environ.get("ICLNB_RESULTS")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT if _in_checkout() else Path.cwd()) / "results"


def default_output_dir(experiment: str) -> Path:
    """``<results root>/<experiment>``."""
    return results_root() / experiment


def results_dir(path, default_experiment: str | None = None) -> Path:
    """A results directory named by a user: empty means ``<results root>/<default_experiment>``; a relative path is
    taken from the working directory when it exists there, else from the results root (``loo_multilayer`` names
    ``<results root>/loo_multilayer``), else from the checkout (``results/loo``)."""
    text = str(path or "").strip()
    if not text:
        if default_experiment is None:
            raise ValueError("no results directory given")
        return default_output_dir(default_experiment)
    directory = Path(text).expanduser()
    if directory.is_absolute() or directory.exists():
        return directory.resolve()
    for base in (results_root(), REPO_ROOT):
        if (base / directory).exists():
            return (base / directory).resolve()
    return directory.resolve()
