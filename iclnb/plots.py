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
import tempfile
import warnings
from pathlib import Path

__all__ = ["save_figure", "find_browser"]

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


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(fig, directory, name: str, *, png: bool = True, scale: float = 2.0) -> dict:
    """Write ``<directory>/<name>.html`` and, when a browser is available, ``<directory>/<name>.png``.

    Returns ``{"html": Path, "png": Path or None}``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html = directory / f"{name}.html"
    _write_text_atomic(html, fig.to_html(include_plotlyjs="directory", full_html=True))
    bundle = directory / "plotly.min.js"
    if not bundle.exists():
        from plotly.offline import get_plotlyjs

        _write_text_atomic(bundle, get_plotlyjs())

    out = {"html": html, "png": None}
    if not png:
        return out
    if find_browser() is None:
        _warn_once("no-browser",
                   "PNG export skipped: kaleido needs Chrome or Chromium to render static images and none was found "
                   "(searched BROWSER_PATH, PATH and kaleido's download folder). Install one (Debian/Ubuntu: "
                   "`apt-get install chromium`; any system: `plotly_get_chrome`) or set BROWSER_PATH to its "
                   "executable. The interactive HTML figures are written regardless.")
        return out
    path = directory / f"{name}.png"
    try:
        fig.write_image(path, format="png", scale=scale)
    except Exception as e:  # a browser that fails to start must not lose the run's results
        _warn_once(f"png-failed:{type(e).__name__}",
                   f"PNG export of {name} failed ({type(e).__name__}: {str(e).strip()[:300]}); further PNG failures "
                   f"of this kind are not reported. The HTML figure is written.")
        return out
    out["png"] = path
    return out
