"""Every notebook in JupyterLab, in a real browser: Playwright drives Chromium the way a reader would.

One JupyterLab server (free port, random token) serves copies of the notebooks with their test parameters injected
(``iclnb.test_parameters``, as in ``tests/test_notebooks.py``). For each notebook the test opens it, runs Run > Run
All Cells, waits for the kernel to go idle, saves it, and lists everything a reader would trip over: a cell that
errors or did not run; a progress bar printed as text instead of drawn as a widget; a widget that fails to draw; a
plotly figure that is not drawn, draws no data or is wider than the notebook column; a figure the run saved that the
notebook does not show; an explorer (ipywidgets slider) or animation (plotly slider) that does not redraw its figure
when its slider moves; any error the browser logs. Screenshots of the notebook, a window at a time, and of each
figure go under the test's ``tmp_path``.

Notebooks run in dependency order: the runs an analysis notebook reads (``iclnb.test_setup``) are the runs the
browser made of those notebooks; a setup run no notebook here made is executed headless by papermill first.

Needs the ``playwright`` pip package (a dependency of iclnb) and a Chromium or Chrome (``make setup`` installs
Debian's when run as root); ``playwright install`` is not needed. Without either the tests skip with one line saying
what to install.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import papermill
import pytest

from iclnb.experiments import find

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: The window of a common laptop, JupyterLab's default layout (file browser open): figures must fit its column.
VIEWPORT = {"width": 1366, "height": 900}
RUN_TIMEOUT_S = 420
SLIDER_TIMEOUT_S = 60
#: tqdm's text bar ("40%|####      | 2/5 [00:01<00:02, 1.9it/s]"), which a widget bar never prints.
TQDM_TEXT = re.compile(r"\d+%\|.*\|\s*\d+/\d+")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
#: JupyterLab settings of the test's server: every cell rendered (no windowing, so every figure is drawn and in
#: the screenshot), no news or update notifications over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                          "checkForUpdates": False},
}

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None


def _metadata(notebook: str) -> dict:
    return nbformat.read(NOTEBOOKS / f"{notebook}.ipynb", as_version=4).metadata.get("iclnb", {})


def _in_dependency_order(names: list[str]) -> list[str]:
    """Notebooks that read no other run first, so that the analysis notebooks read the runs the browser made."""
    return sorted(names, key=lambda n: (bool(_metadata(n).get("test_setup")), n))


ALL = _in_dependency_order(sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")))


def _chromium() -> str | None:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    return next((path for path in map(shutil.which, names) if path), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server over a folder of prepared notebooks, and the runs its notebooks write."""

    def __init__(self, root: Path):
        self.root, self.notebook_dir, self.runs_dir = root, root / "notebooks", root / "runs"
        self.notebook_dir.mkdir()
        self.runs_dir.mkdir()
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "jupyterlab.log"
        self.runs: dict[tuple, Path] = {}  # (experiment, parameters) -> the run's directory
        self.process = None

    def start(self, timeout_s: float = 120.0) -> None:
        settings = self.root / "lab-settings"
        for name, values in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(values))
        # kernels decide between widget and text progress bars themselves, as in a user's JupyterLab
        env = {k: v for k, v in os.environ.items() if k not in ("ICLNB_PROGRESS", "ICLNB_WIDGETS")}
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   f"--ServerApp.token={self.token}", f"--notebook-dir={self.notebook_dir}",
                   f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.root / 'workspaces'}",
                   "--LabApp.news_url=None"]
        if getattr(os, "getuid", lambda: None)() == 0:  # JupyterLab refuses root unless told
            command.append("--allow-root")
        self.process = subprocess.Popen(command, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"JupyterLab exited:\n{self.log.read_text()[-3000:]}"
            try:
                self.api("status")
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"JupyterLab did not answer within {timeout_s:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernel_state(self, notebook: str) -> str | None:
        """The execution state of ``notebook``'s kernel ("starting", "busy", "idle", ...), None without one."""
        for session in self.api("sessions"):
            if session["path"] == f"{notebook}.ipynb":
                return session["kernel"]["execution_state"]
        return None

    def shut_down(self, notebook: str) -> None:
        for session in self.api("sessions"):
            if session["path"] == f"{notebook}.ipynb":
                self.api(f"sessions/{session['id']}", method="DELETE")

    def _resolved(self, experiment: str, parameters: dict) -> tuple[tuple, dict]:
        parameters = {k: v.replace("{runs}", str(self.runs_dir)) if isinstance(v, str) else v
                      for k, v in parameters.items()}
        return (experiment, json.dumps(parameters, sort_keys=True)), parameters

    def _output_dir(self, experiment: str, parameters: dict) -> Path:
        return Path(parameters.get("output_dir") or self.runs_dir / f"{experiment}-{len(self.runs)}")

    def prepare(self, notebook: str, parameters: dict) -> tuple[tuple, Path]:
        """Write ``notebook`` with ``parameters`` injected into the served folder; returns its run's key and
        directory (recorded as a run once the notebook has run: :meth:`record`)."""
        key, parameters = self._resolved(notebook, parameters)
        exp = find(notebook)
        out_dir = self._output_dir(notebook, parameters)
        papermill.execute_notebook(str(NOTEBOOKS / f"{exp.notebook}.ipynb"),
                                   str(self.notebook_dir / f"{notebook}.ipynb"),
                                   parameters={**exp.preset, **parameters, "output_dir": str(out_dir)},
                                   prepare_only=True, progress_bar=False)
        return key, out_dir

    def record(self, key: tuple, out_dir: Path) -> None:
        self.runs[key] = out_dir

    def ensure_run(self, experiment: str, parameters: dict) -> Path:
        """The run of ``experiment`` with ``parameters``: one a notebook here made, else executed headless now."""
        key, parameters = self._resolved(experiment, parameters)
        if key not in self.runs:
            exp = find(experiment)
            out_dir = self._output_dir(experiment, parameters)
            papermill.execute_notebook(str(NOTEBOOKS / f"{exp.notebook}.ipynb"),
                                       str(self.root / f"setup-{out_dir.name}.ipynb"),
                                       parameters={**exp.preset, **parameters, "output_dir": str(out_dir)},
                                       progress_bar=False, cwd=str(self.notebook_dir))
            self.runs[key] = out_dir
        return self.runs[key]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if sync_playwright is None:
        pytest.skip("browser tests need the playwright pip package: pip install playwright (make setup installs it)")
    if _chromium() is None:
        pytest.skip("browser tests need Chromium or Chrome: apt-get install chromium (make setup does, as root)")
    server = Lab(tmp_path_factory.mktemp("jupyterlab"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(lab):
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium(),
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


# --- reading the page -------------------------------------------------------------------------------------------

#: Per notebook cell: its prompt, its figures (size, the column they sit in, how many data marks the plot area
#: draws -- legend entries aside --, whether a plotly slider drives it), progress bars, ipywidgets sliders, and
#: widgets that failed to draw.
_CELLS_JS = """() => [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')].map(cell => {
  const area = cell.querySelector('.jp-OutputArea');
  const drawn = e => !e.closest('.legend') && (e.tagName !== 'path' || !/^(M0,0Z?)?$/.test(e.getAttribute('d') || ''));
  return {
    code: cell.classList.contains('jp-CodeCell'),
    prompt: (cell.querySelector('.jp-InputPrompt') || {}).textContent || '',
    plots: [...cell.querySelectorAll('.js-plotly-plot')].map(p => {
      const svg = p.querySelector('.main-svg');
      const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
      const marks = [...p.querySelectorAll('.point, .textpoint, path.js-line, path.js-fill, .heatmaplayer image')];
      return {width: box.width, height: box.height, column: area ? area.getBoundingClientRect().width : 0,
              marks: marks.filter(drawn).length, slider: !!p.querySelector('.slider-container .slider-rail-rect'),
              title: (p.querySelector('.gtitle') || {}).textContent || ''};
    }),
    progressBars: cell.querySelectorAll('.widget-progress, .widget-hprogress').length,
    sliders: cell.querySelectorAll('.widget-slider, .widget-hslider').length,
    widgetText: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => o.textContent)
      .filter(t => /Error displaying widget|Loading widget/.test(t)),
  };
})"""
CELLS = ".jp-NotebookPanel .jp-Notebook .jp-Cell"


def _cells(page) -> list[dict]:
    return page.evaluate(_CELLS_JS)


def _run_all(page, lab: Lab, notebook: str) -> None:
    """Run > Run All Cells, then wait until no cell is queued or running and the kernel is idle."""
    deadline = time.monotonic() + 120
    while lab.kernel_state(notebook) != "idle":
        assert time.monotonic() < deadline, f"{notebook}: the kernel did not start"
        time.sleep(0.5)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while True:
        prompts = [c["prompt"] for c in _cells(page) if c["code"]]
        started = any(re.search(r"\d", p) for p in prompts)
        if started and not any("*" in p for p in prompts) and lab.kernel_state(notebook) == "idle":
            return
        assert time.monotonic() < deadline, f"{notebook}: still running after {RUN_TIMEOUT_S} s ({prompts})"
        time.sleep(1)


def _save(page, lab: Lab, notebook: str) -> nbformat.NotebookNode:
    """Save the notebook (Ctrl+S, File > Save) and read back what the browser wrote."""
    path = lab.notebook_dir / f"{notebook}.ipynb"
    before = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before:
        assert time.monotonic() < deadline, f"{notebook}: saving did not write the notebook"
        time.sleep(0.2)
    time.sleep(0.5)  # let the contents API finish writing before reading
    return nbformat.read(path, as_version=4)


def _screenshot_notebook(page, directory: Path, notebook: str) -> None:
    """``<notebook>-page<k>.png``: the notebook a window at a time, top to bottom; ``<notebook>-figure<k>.png``:
    each figure whole (shot in a window as tall as the notebook)."""
    scroller = ".jp-NotebookPanel .jp-WindowedPanel-outer"
    height = page.eval_on_selector(scroller, "n => n.scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(VIEWPORT["height"], height + 200), 16000)})
    page.wait_for_timeout(500)
    for k, plot in enumerate(page.locator(".jp-NotebookPanel .js-plotly-plot").all()):
        plot.screenshot(path=str(directory / f"{notebook}-figure{k}.png"))
    page.set_viewport_size(VIEWPORT)
    page.wait_for_timeout(500)
    height, window = page.eval_on_selector(scroller, "n => [n.scrollHeight, n.clientHeight]")
    for k, top in enumerate(range(0, height, max(window - 40, 100))):
        page.eval_on_selector(scroller, f"n => {{ n.scrollTop = {top}; }}")
        page.wait_for_timeout(200)
        page.screenshot(path=str(directory / f"{notebook}-page{k}.png"))


def _plot_state(element) -> str:
    return element.evaluate("e => [...e.querySelectorAll('.main-svg')].map(s => s.innerHTML).join('')")


def _redrawn(page, element, before: str) -> bool:
    deadline = time.monotonic() + SLIDER_TIMEOUT_S
    while _plot_state(element) == before:
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(250)
    page.wait_for_timeout(500)
    return True


def _move_widget_slider(page, cell) -> str | None:
    """Move the first ipywidgets slider of ``cell`` one step with the keyboard (left, or right when already at the
    left end) and wait until the cell's figure redraws; returns what went wrong, or None."""
    cell.scroll_into_view_if_needed()
    before = _plot_state(cell)
    readout = cell.locator(".widget-readout").first
    start = readout.text_content()
    handle = cell.locator(".widget-slider .noUi-handle, .widget-hslider .noUi-handle").first
    for key in ("ArrowLeft", "ArrowRight"):
        handle.focus()
        page.keyboard.press(key)
        page.wait_for_timeout(300)
        if readout.text_content() != start:
            break
    else:
        return "its slider does not move"
    if not _redrawn(page, cell, before):
        return f"moving its slider from {start} to {readout.text_content()} does not redraw the figure"
    return None


def _move_plotly_slider(page, plot) -> str | None:
    """Click the far end of the rail of ``plot``'s plotly slider (an animation's frames) and wait for the redraw;
    returns what went wrong, or None."""
    plot.scroll_into_view_if_needed()
    before = _plot_state(plot)
    rail = plot.locator(".slider-container .slider-rail-rect").first.bounding_box()
    page.mouse.click(rail["x"] + rail["width"] - 2, rail["y"] + rail["height"] / 2)
    return None if _redrawn(page, plot, before) else "moving its slider to the last step does not redraw it"


# --- the test ---------------------------------------------------------------------------------------------------

def _outputs(cell) -> list:
    return cell.get("outputs", []) if cell.cell_type == "code" else []


def _problems(saved, cells: list[dict], out_dir: Path) -> list[str]:
    """What a reader of the run notebook would trip over: ``saved`` is the notebook as the browser saved it,
    ``cells`` what the page shows of each cell (``_CELLS_JS``), ``out_dir`` the run's directory."""
    if len(cells) != len(saved.cells):
        return [f"the page shows {len(cells)} cells of {len(saved.cells)}"]
    problems = []
    for i, (shown, cell) in enumerate(zip(cells, saved.cells)):
        if cell.cell_type != "code":
            continue
        outputs = _outputs(cell)
        problems += [f"cell {i} raised {o.get('ename')}: {o.get('evalue')}"
                     for o in outputs if o.output_type == "error"]
        if cell.execution_count is None:
            problems.append(f"cell {i} did not run")
        if any(o.output_type == "stream" and TQDM_TEXT.search(o.get("text", "")) for o in outputs):
            problems.append(f"cell {i} shows a text progress bar, not a widget")
        if shown["widgetText"]:
            problems.append(f"cell {i} failed to draw a widget: {shown['widgetText'][0][:200]}")
        bars = [o for o in outputs
                if WIDGET_MIME in o.get("data", {}) and TQDM_TEXT.search(o["data"].get("text/plain", ""))]
        if shown["progressBars"] < len(bars):
            problems.append(f"cell {i} draws {shown['progressBars']} of its {len(bars)} progress bars")
        figures = sum(PLOTLY_MIME in o.get("data", {}) for o in outputs)
        if len(shown["plots"]) < figures:
            problems.append(f"cell {i} draws {len(shown['plots'])} of its {figures} figures")
        for plot in shown["plots"]:
            name = f"cell {i}'s figure {plot['title']!r}"
            if not (plot["width"] > 0 and plot["height"] > 0):
                problems.append(f"{name} is not drawn")
            elif not plot["marks"]:
                problems.append(f"{name} draws no data")
            if plot["width"] > plot["column"] + 1:
                problems.append(f"{name} is {plot['width']:.0f} px wide, wider than the {plot['column']:.0f} px "
                                f"notebook column of a {VIEWPORT['width']} px window")
    # what a cell writes into the results directory it shows (README): every saved figure is on the page
    saved_figures = sorted(p.stem for p in (out_dir / "figures").glob("*.html"))
    if sum(len(c["plots"]) for c in cells) < len(saved_figures):
        hiding = [i for i, c in enumerate(saved.cells) if c.source.count("save_figure(") > len(cells[i]["plots"])]
        problems.append(f"the run saved {len(saved_figures)} figures ({', '.join(saved_figures)}) and the notebook "
                        f"shows {sum(len(c['plots']) for c in cells)}"
                        + (f": cells {hiding} save more figures than they show" if hiding else ""))
    return problems


#: What this test found on its first full run and is not fixed yet: each is a strict expected failure, so the test
#: reports a fix (an unexpected pass) until its line is removed here.
KNOWN_PROBLEMS = {
    "reproduce_lee": "the joint MDS of cluster means is all NaN (unvisited clusters' NaN means times zero weight); "
                     "5 of its 10 saved figures are not shown",
    "collapse": "the probing figure is saved but not shown",
    "context_switch": "graph_pair_0_G1 is saved but not shown",
    "deep_hierarchy": "onset_by_layer is saved but not shown",
    "graph_adherence": "graph_h1 and adherence_by_window are saved but not shown",
    "superposition_collapse": "graph_h1 is saved but not shown",
    "loo_heatmap": "only the first heatmap is shown (heatmap_within is hidden)",
}


@pytest.mark.parametrize("notebook", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_PROBLEMS[name]))
    if name in KNOWN_PROBLEMS else name for name in ALL])
def test_notebook_in_jupyterlab(notebook, lab, browser, tmp_path):
    meta = _metadata(notebook)
    assert "test_parameters" in meta, f"{notebook}.ipynb has no iclnb.test_parameters metadata"
    for step in meta.get("test_setup", []):
        lab.ensure_run(step["experiment"], step["parameters"])
    key, out_dir = lab.prepare(notebook, meta["test_parameters"])

    page = browser.new_page(viewport=VIEWPORT)
    console_errors = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(f"uncaught: {e}"))
    try:
        page.goto(f"{lab.url}/lab/tree/{notebook}.ipynb?reset&token={lab.token}")
        page.wait_for_selector(CELLS, timeout=60_000)
        _run_all(page, lab, notebook)
        saved = _save(page, lab, notebook)
        page.wait_for_timeout(1500)  # let widgets and figures that came with the last messages draw
        cells = _cells(page)
        _screenshot_notebook(page, tmp_path, notebook)
        if (out_dir / "results.json").is_file():
            lab.record(key, out_dir)  # the analyses read it, whatever a reader of this notebook trips over
        problems = _problems(saved, cells, out_dir)

        dom_cells = page.locator(CELLS)
        for i, shown in enumerate(cells):
            if shown["sliders"] and shown["plots"]:
                problem = _move_widget_slider(page, dom_cells.nth(i))
                problems += [f"cell {i}'s explorer: {problem}"] if problem else []
                dom_cells.nth(i).screenshot(path=str(tmp_path / f"{notebook}-cell{i}-slider-moved.png"))
            for k, plot in enumerate(shown["plots"]):
                if plot["slider"]:
                    figure = dom_cells.nth(i).locator(".js-plotly-plot").nth(k)
                    problem = _move_plotly_slider(page, figure)
                    problems += [f"cell {i}'s figure {plot['title']!r}: {problem}"] if problem else []
                    figure.screenshot(path=str(tmp_path / f"{notebook}-cell{i}-figure{k}-slider-moved.png"))

        problems += [f"the browser logged: {e[:300]}" for e in console_errors]
        if not (out_dir / "results.json").is_file():
            problems.append(f"no results.json in {out_dir}")
        assert not problems, f"{notebook} in JupyterLab (screenshots in {tmp_path}):\n  " + "\n  ".join(problems)
    except Exception:
        page.set_viewport_size(VIEWPORT)
        page.screenshot(path=str(tmp_path / f"{notebook}-last.png"))
        raise
    finally:
        page.close()
        lab.shut_down(notebook)
