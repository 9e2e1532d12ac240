"""Logging finished runs to Weights & Biases: ``iclnb log DIR [--project P]``, ``iclnb run --log P`` and
``iclnb sweep --log P``, or for every run the environment variable ``ICLNB_WANDB_PROJECT``.

What a run logs: its config (every parameter, the model's provenance, versions, git commit), its numbers from the
tidy table (:func:`iclnb.ops.tidy.tidy`) as scalars ``<metric>/layer_<k>[/<word set>]`` (with ``.../ci_low`` and
``.../ci_high``) over N (W&B's x axis ``N``; the summary holds the values at the largest N), the tidy table and every
``raw_data/*.csv`` as tables, and every ``figures/*.png`` as images. A run of an experiment without a tidy extractor
logs the numbers its results.json holds directly (``results/<key>``) in the summary.

No account is needed: without W&B credentials (``WANDB_API_KEY`` or a ``wandb login``) the run is logged offline
into ``$WANDB_DIR/wandb/offline-run-*`` (``WANDB_DIR`` defaults to the working directory), and ``wandb sync
<that directory>`` uploads it later. ``WANDB_MODE`` (offline, online, disabled) overrides the choice.
"""

from __future__ import annotations

import os
from pathlib import Path

from iclnb.core.errors import IclnbError
from iclnb.core.paths import ENV_PROJECT

__all__ = ["ENV_PROJECT", "log_run", "scalar_rows", "plain_scalars"]

#: Set to a W&B project name, every run logs itself there when it finishes.
DEFAULT_PROJECT = "iclnb"
#: Rows of a CSV table logged at most (W&B tables are meant for browsing, the CSV stays the record).
MAX_TABLE_ROWS = 50_000


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _key(row) -> str:
    key = f"{row['metric']}/layer_{row['layer']}"
    return key + (f"/{row['condition']}" if row["condition"] else "")


def scalar_rows(table) -> list[dict]:
    """The tidy table as W&B log calls, one per N in increasing order: ``{"N": n, "<metric>/layer_<k>": mean,
    ".../ci_low": ..., ".../ci_high": ..., ".../null": ...}`` (undefined values left out)."""
    import math

    out = []
    for n_words, sub in table.sort_values("N").groupby("N", sort=True, dropna=False):
        entry = {"N": float(n_words)} if not (isinstance(n_words, float) and math.isnan(n_words)) else {}
        for _, row in sub.iterrows():
            key = _key(row)
            for suffix, column in (("", "mean"), ("/ci_low", "ci_low"), ("/ci_high", "ci_high"), ("/null", "null")):
                value = row[column]
                if value == value:  # not NaN
                    entry[key + suffix] = float(value)
        out.append(entry)
    return out


def plain_scalars(results: dict, prefix: str = "results", depth: int = 3) -> dict:
    """The numbers stored directly in results.json (not in lists), as ``results/<key>/<key>``: what a run of an
    experiment without a tidy extractor logs."""
    import numbers

    out = {}
    for key, value in results.items():
        name = f"{prefix}/{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, numbers.Real):
            out[name] = float(value)
        elif isinstance(value, dict) and depth > 1:
            out.update(plain_scalars(value, name, depth - 1))
    return out


def _csv_table(wandb, path: Path):
    import pandas as pd

    table = pd.read_csv(path)
    truncated = len(table) > MAX_TABLE_ROWS
    return wandb.Table(dataframe=table.head(MAX_TABLE_ROWS)), truncated


def log_run(directory, project: str | None = None, quiet: bool = False) -> Path:
    """Log the finished run in ``directory`` to W&B project ``project`` (default ``$ICLNB_WANDB_PROJECT`` or
    "iclnb"); returns the W&B run's local directory (what ``wandb sync`` takes when it was logged offline)."""
    try:
        import wandb
    except ImportError:
        raise IclnbError("wandb is not installed: `make setup` installs it, or `pip install 'iclnb[wandb]'`") from None
    from iclnb.ops.tidy import tidy
    from iclnb.results.reader import load

    r = load(directory)
    project = project or os.environ.get(ENV_PROJECT) or DEFAULT_PROJECT
    mode = os.environ.get("WANDB_MODE") or ("online" if _has_credentials() else "offline")
    table = tidy(r)
    prov = r.config.get("provenance") or {}
    config = {"experiment": r.experiment, "results_dir": str(r.dir), "params": r.params,
              "model": r.config.get("model") or {}, "provenance": prov}
    settings = wandb.Settings(save_code=False, silent=quiet, console="off", x_disable_stats=True)
    run = wandb.init(project=project, name=f"{r.experiment}/{r.dir.name}", job_type=r.experiment,
                     group=r.dir.parent.name if (r.dir.parent / "sweep.json").is_file() else None, config=config,
                     mode=mode, dir=os.environ.get("WANDB_DIR") or None, settings=settings,
                     tags=[t for t in (r.experiment, r.model) if t])
    try:
        run.define_metric("N")
        run.define_metric("*", step_metric="N")
        for entry in scalar_rows(table):
            run.log(entry)
        if table.empty:  # an experiment without a tidy extractor: the numbers results.json holds directly
            for key, value in plain_scalars(r.results).items():
                run.summary[key] = value
        tables = {"tables/tidy": wandb.Table(dataframe=table.astype({"layer": str}))}
        for path in sorted((r.dir / "raw_data").glob("*.csv")):
            tables[f"tables/{path.stem}"], truncated = _csv_table(wandb, path)
            if truncated:
                run.summary[f"tables/{path.stem}_truncated_to_rows"] = MAX_TABLE_ROWS
        images = {f"figures/{p.stem}": wandb.Image(str(p)) for p in sorted((r.dir / "figures").glob("*.png"))}
        run.log({**tables, **images})
        run.summary["results_dir"] = str(r.dir)
        where = Path(run.dir).parent
    finally:
        run.finish()
    return where
