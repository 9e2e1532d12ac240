"""Saving plotly figures into a run's ``figures/`` directory: interactive HTML plus a static PNG.

HTML uses ``include_plotlyjs="directory"``: one ``plotly.min.js`` (about 4.6 MB) sits next to the HTML files and each
figure references it, so the figures work offline and a run with twenty figures does not carry twenty copies of
plotly.js. Keep the ``figures/`` directory together when copying a figure elsewhere.

PNG export goes through kaleido, which drives a Chrome/Chromium. Without one the PNG is skipped with a single warning
that says how to get one; the HTML is always written.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

from iclnb.core.files import write_text

__all__ = ["save_figure", "write_html", "export_pngs", "find_browser"]

#: Pixel scale of the PNG copies: figures are laid out for a notebook column (<= 900 px) and exported at 2x.
PNG_SCALE = 2.0

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido will use (``BROWSER_PATH``, ``PATH``, standard locations, kaleido's own
    download), or None."""
    try:
        from choreographer.browsers.chromium import Chromium

        found = Chromium.find_browser(skip_local=False)
        if found:
            return str(found)
    except Exception:  # an internal API of kaleido's browser driver: fall back to a PATH search
        pass
    env = os.environ.get("BROWSER_PATH")
    if env and os.access(env, os.X_OK):
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def write_html(fig, directory, name: str) -> Path:
    """``<directory>/<name>.html``, referencing the ``plotly.min.js`` written once beside it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html = directory / f"{name}.html"
    write_text(html, fig.to_html(include_plotlyjs="directory", full_html=True))
    bundle = directory / "plotly.min.js"
    if not bundle.exists():
        from plotly.offline import get_plotlyjs

        write_text(bundle, get_plotlyjs())
    return html


def export_pngs(jobs, scale: float = PNG_SCALE) -> list[Path]:
    """Write ``[(figure, png_path), ...]`` in one browser session (starting Chromium costs seconds per session).

    Without a browser, or if it fails, one warning says why and what to do; the HTML figures are unaffected.
    Returns the paths written.
    """
    jobs = [(fig, Path(path)) for fig, path in jobs]
    if not jobs:
        return []
    if find_browser() is None:
        _warn_once("no-browser",
                   "PNG export skipped: kaleido needs Chrome or Chromium to render static images and none was found "
                   "(searched BROWSER_PATH, PATH and kaleido's download folder). Install one (Debian/Ubuntu: "
                   "`apt-get install chromium`; any system: `plotly_get_chrome`) or set BROWSER_PATH to its "
                   "executable. The interactive HTML figures are written regardless.")
        return []
    import kaleido

    tmp = [path.with_name(f".{path.stem}.tmp.png") for _, path in jobs]
    specs = [{"fig": fig.to_dict(), "path": str(t), "opts": {"format": "png", "scale": scale}}
             for (fig, _), t in zip(jobs, tmp)]
    try:
        kaleido.write_fig_from_object_sync(specs)
    except Exception as e:  # a browser that fails to start must not lose the run's results
        for t in tmp:
            t.unlink(missing_ok=True)
        _warn_once(f"png-failed:{type(e).__name__}",
                   f"PNG export failed ({type(e).__name__}: {str(e).strip()[:300]}); further PNG failures of this "
                   f"kind are not reported. The HTML figures are written.")
        return []
    written = []
    for (_, path), t in zip(jobs, tmp):
        if t.exists():
            os.chmod(t, 0o644)
            os.replace(t, path)
            written.append(path)
    return written


def save_figure(fig, directory, name: str, *, png: bool = True) -> dict:
    """Write ``<directory>/<name>.html`` and, when a browser is available, ``<directory>/<name>.png`` (outside a
    run; a run's :meth:`~iclnb.results.run.Run.save_figure` batches the PNGs). Returns ``{"html", "png"}``."""
    html = write_html(fig, directory, name)
    written = export_pngs([(fig, Path(directory) / f"{name}.png")]) if png else []
    return {"html": html, "png": written[0] if written else None}
