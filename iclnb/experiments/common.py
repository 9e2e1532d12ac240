"""The start every notebook shares: parameters checked, results directory opened, model loaded and recorded."""

from __future__ import annotations

from pathlib import Path

from iclnb.errors import IclnbError
from iclnb.models import load_model
from iclnb.runs import Run

REPO_ROOT = Path(__file__).resolve().parents[2]


def default_output_dir(experiment: str) -> Path:
    """``results/<experiment>`` of the iclnb checkout (or of the working directory for an installed package)."""
    root = REPO_ROOT if (REPO_ROOT / "notebooks").is_dir() else Path.cwd()
    return root / "results" / experiment


def positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise IclnbError(f"parameter {name} expects an integer, got {value!r}")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise IclnbError(f"parameter {name} expects an integer, got {value!r}") from None
    if number < minimum:
        raise IclnbError(f"parameter {name} must be at least {minimum}, got {number}")
    return number


def int_list(name: str, value, minimum: int = 1) -> list[int]:
    """A list of integers from a list or a comma-separated string ("10,20,50")."""
    items = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
    items = [i for i in items if i != ""]
    if not items:
        raise IclnbError(f"parameter {name} is empty; give comma-separated integers such as 10,20,50")
    return [positive_int(name, i, minimum) for i in items]


def choice(name: str, value, options) -> str:
    if value not in options:
        raise IclnbError(f"parameter {name} must be one of {', '.join(map(str, options))}; got {value!r}")
    return value


def start(experiment: str, params: dict):
    """Open the results directory (lock, config.json, resume) and load the model; returns (run, model).

    ``params`` is every parameter of the notebook; ``output_dir`` empty means ``results/<experiment>``, ``dtype``
    empty means float32 on CPU and bfloat16 on GPU.
    """
    params = dict(params)
    params["output_dir"] = str(params.get("output_dir") or default_output_dir(experiment))
    run = Run.open(params["output_dir"], experiment, params)
    model = load_model(params.get("model") or "gemma-3-270m", dtype=params.get("dtype") or None,
                       device=params.get("device") or None)
    run.record_model(model.provenance())
    return run, model
