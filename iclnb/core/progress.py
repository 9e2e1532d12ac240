"""Progress bars: widgets in JupyterLab, plain text in terminals and in papermill logs (see the README).

``tqdm.auto`` picks the widget bar in any IPython kernel, including one that papermill (nbclient) runs headless,
where no frontend draws widgets and the log would show nothing. Kernels started by nbclient (papermill,
``nbconvert --execute``) carry ``--HistoryManager.hist_file=:memory:`` on their command line, so those get the text
bar. ``ICLNB_PROGRESS=text`` forces text (``iclnb run`` sets it), ``ICLNB_PROGRESS=widget`` forces ``tqdm.auto``.
"""

from __future__ import annotations

import os
import sys


def headless_kernel() -> bool:
    """Whether this is an IPython kernel that nbclient runs headless (papermill): no front end draws widgets."""
    return "ipykernel" in sys.modules and any(a.startswith("--HistoryManager.hist_file=:memory:") for a in sys.argv)


def progress(iterable=None, desc: str | None = None, total: int | None = None, **kwargs):
    """``tqdm`` over ``iterable``: a widget in JupyterLab, text elsewhere (updated at most every 5 s headless)."""
    mode = os.environ.get("ICLNB_PROGRESS", "").strip().lower()
    if mode == "text" or (mode != "widget" and headless_kernel()):
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", 5.0)  # the executed notebook keeps every update: keep the log short
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("ascii", True)
    else:
        from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, **kwargs)
