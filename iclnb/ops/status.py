"""The state of a run or of a sweep, read from files only: ``config.json``, ``results.json``, the checkpoints and
the lock. Nothing here asks the operating system about processes except for a lock taken on this host, so a run
that another machine writes to a shared filesystem is shown from its files (its lock is taken as live: see
:func:`iclnb.results.run.lock_holder`).

:func:`run_status` gathers the facts as data; :func:`format_run_status` prints one run (``iclnb status RUN``) and
:func:`format_sweep_status` a sweep's runs as one table (``iclnb status SWEEP_DIR``).
"""

from __future__ import annotations

import datetime as _dt
import socket
from pathlib import Path

from iclnb.core.errors import IclnbError
from iclnb.results.io import read_json
from iclnb.results.reader import check_one_run
from iclnb.results.run import CONFIG_NAME, RESULTS_NAME, lock_holder

__all__ = ["run_status", "format_run_status", "sweep_rows", "format_sweep_status", "parse_time", "duration"]


def parse_time(text):
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return t if t.tzinfo else t.astimezone()


def duration(seconds: float) -> str:
    seconds = int(max(0, round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def _checkpoint_progress(c: dict, started, holder, now) -> dict:
    """Done, total, and where the rate of this session allows, the ETA (live run) or the time left at the last rate
    (stopped run)."""
    done, total = int(c.get("done", len(c.get("items", {})))), c.get("total")
    out = {"name": c.get("name"), "done": done, "total": total, "updated": parse_time(c.get("updated")),
           "eta": None, "left_s": None, "complete": bool(total) and done >= total}
    if total and done < total:
        updated = out["updated"]
        since = parse_time(c.get("session_started")) or started
        base = int(c.get("session_done_at_start", 0)) if c.get("session_started") else 0
        if updated and since and done > base and (updated - since).total_seconds() > 0:
            rate = (done - base) / (updated - since).total_seconds()
            out["left_s"] = (total - done) / rate
            if holder is not None:
                out["eta"] = updated + _dt.timedelta(seconds=out["left_s"])
    return out


def run_status(directory) -> dict:
    """The facts ``iclnb status`` shows for one results directory, as a dict: ``state`` ("running", "finished",
    "damaged" or "stopped"), ``holder`` (the live lock record), ``foreign`` (the lock belongs to another host, whose
    processes cannot be checked from here), times, and per checkpoint its progress and ETA. Raises IclnbError for a
    directory that is not a results directory, and for one whose config.json and results.json come from different
    runs."""
    directory = Path(directory).expanduser().resolve()
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise IclnbError(f"{directory} is not a results directory (no {CONFIG_NAME})")
    config = read_json(cfg_path)
    prov = config.get("provenance") or {}
    now = _dt.datetime.now().astimezone()
    holder = lock_holder(directory)
    if holder is not None:
        state = "running"
    elif (directory / RESULTS_NAME).is_file() and prov.get("finished"):
        try:
            document = read_json(directory / RESULTS_NAME)
            state = "finished"
        except IclnbError:
            state = "damaged"
        else:
            check_one_run(directory, config, document)
    else:
        state = "stopped"
    started = parse_time(prov.get("started"))
    finished = parse_time(prov.get("finished")) if holder is None else None
    checkpoints, raw = [], []
    for path in sorted(directory.glob("checkpoint_*.json")):
        try:
            raw.append(read_json(path))
        except IclnbError:
            raw.append({"name": path.stem[len("checkpoint_"):], "unreadable": True})
    for c in raw:
        checkpoints.append({"name": c["name"], "unreadable": True} if c.get("unreadable")
                           else _checkpoint_progress(c, started, holder, now))
    updates = [c["updated"] for c in checkpoints if c.get("updated")]
    last = max(updates) if updates else None
    end = now if holder is not None else (finished or last or started)
    return {"directory": directory, "experiment": config.get("experiment"), "state": state, "holder": holder,
            "foreign": holder is not None and holder.get("host") != socket.gethostname(), "now": now,
            "started": started, "finished": finished,
            "elapsed_s": (end - started).total_seconds() if started and end else None, "last_update": last,
            "checkpoints": checkpoints}


def _state_text(s: dict) -> str:
    holder = s["holder"]
    if s["state"] == "running":
        return f"running (pid {holder.get('pid')} on {holder.get('host')})"
    if s["state"] == "damaged":
        return f"damaged: {RESULTS_NAME} is not valid JSON (rerun the same command to recompute it)"
    if s["state"] == "stopped":
        return "stopped (rerun the same command to resume)"
    return "finished"


def format_run_status(s: dict) -> list[str]:
    """The lines ``iclnb status RUN`` prints."""
    now = s["now"]
    lines = [f"directory:   {s['directory']}",
             f"experiment:  {s['experiment']}",
             f"state:       {_state_text(s)}"]
    if s["foreign"]:
        lines.append("             (another host's lock: its process cannot be checked from here; the last update "
                     "below tells whether it still writes)")
    if s["started"]:
        lines.append(f"started:     {s['started'].isoformat(timespec='seconds')}")
    if s["finished"]:
        lines.append(f"finished:    {s['finished'].isoformat(timespec='seconds')}")
    if s["elapsed_s"] is not None:
        lines.append(f"elapsed:     {duration(s['elapsed_s'])}")
    last = s["last_update"]
    if last:
        lines.append(f"last update: {last.isoformat(timespec='seconds')} ({duration((now - last).total_seconds())} ago)")
    for c in s["checkpoints"]:
        if c.get("unreadable"):
            lines.append(f"checkpoint {c['name']}: unreadable")
            continue
        done, total = c["done"], c["total"]
        line = f"checkpoint {c['name']}: {done}/{total if total is not None else '?'}"
        if total:
            line += f" ({100 * done / total:.0f}%)"
            if c["complete"]:
                line += ", complete"
            elif c["eta"] is not None:
                eta = c["eta"]
                line += f", ETA {eta.isoformat(timespec='seconds')} (in {duration((eta - now).total_seconds())})"
            elif c["left_s"] is not None:
                line += f", about {duration(c['left_s'])} left at the last rate"
        if c["updated"]:
            line += f", updated {c['updated'].isoformat(timespec='seconds')}"
        lines.append(line)
    if not s["checkpoints"]:
        lines.append("checkpoints: none")
    return lines


# ---------------------------------------------------------------------------------------------------- sweeps


def sweep_rows(sweep_dir, manifest: dict) -> list[dict]:
    """One row per run of a sweep: name, state, progress, ETA (or time left), last update; a run whose directory
    holds nothing yet is "pending" (or "submitted" with its job id, "failed" with the exit status its executor
    recorded)."""
    sweep_dir = Path(sweep_dir)
    rows = []
    for entry in manifest.get("runs", []):
        directory = sweep_dir / entry["dir"]
        row = {"run": entry["name"], "state": "pending", "progress": "", "eta": "", "updated": ""}
        try:
            s = run_status(directory)
        except IclnbError:
            s = None
        if s is None:
            if entry.get("exit") not in (None, 0):
                row["state"] = f"failed (exit {entry['exit']})"
            elif entry.get("job_id"):
                row["state"] = f"submitted (job {entry['job_id']})"
            rows.append(row)
            continue
        state = s["state"]
        if state == "running" and s["foreign"]:
            state = f"running on {s['holder'].get('host')}"
        elif state == "stopped" and entry.get("exit") not in (None, 0):
            state = f"failed (exit {entry['exit']})"
        row["state"] = state
        done = sum(c.get("done", 0) for c in s["checkpoints"] if not c.get("unreadable"))
        totals = [c.get("total") for c in s["checkpoints"] if not c.get("unreadable")]
        if totals and all(totals):
            total = sum(totals)
            row["progress"] = f"{done}/{total} ({100 * done / total:.0f}%)"
        elif s["checkpoints"]:
            row["progress"] = f"{done}/?"
        etas = [c["eta"] for c in s["checkpoints"] if c.get("eta") is not None]
        lefts = [c["left_s"] for c in s["checkpoints"] if c.get("left_s") is not None]
        if s["state"] == "running" and etas:
            row["eta"] = f"{max(etas).strftime('%H:%M:%S')} (in {duration((max(etas) - s['now']).total_seconds())})"
        elif s["state"] == "stopped" and lefts:
            row["eta"] = f"~{duration(max(lefts))} left"
        if s["last_update"]:
            row["updated"] = f"{duration((s['now'] - s['last_update']).total_seconds())} ago"
        elif s["finished"]:
            row["updated"] = f"{duration((s['now'] - s['finished']).total_seconds())} ago"
        rows.append(row)
    return rows


def format_sweep_status(sweep_dir, manifest: dict) -> list[str]:
    """The lines ``iclnb status SWEEP_DIR`` prints: the sweep, then its runs as one aligned table and a count per
    state."""
    rows = sweep_rows(sweep_dir, manifest)
    header = {"run": "run", "state": "state", "progress": "progress", "eta": "ETA", "updated": "last update"}
    widths = {k: max([len(header[k])] + [len(str(r[k])) for r in rows]) for k in header}
    lines = [f"sweep:       {Path(sweep_dir).resolve()}",
             f"experiment:  {manifest.get('experiment')}",
             f"executor:    {manifest.get('executor')}", ""]
    lines.append("  ".join(header[k].ljust(widths[k]) for k in header).rstrip())
    for r in rows:
        lines.append("  ".join(str(r[k]).ljust(widths[k]) for k in header).rstrip())
    counts: dict[str, int] = {}
    for r in rows:
        key = r["state"].split(" (")[0].split(" on ")[0]
        counts[key] = counts.get(key, 0) + 1
    lines.append("")
    lines.append(f"{len(rows)} runs: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return lines
