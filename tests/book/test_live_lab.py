"""The chapters in JupyterLab, as a reader uses them: opened as notebooks, run, a slider moved.

``python -m hesslab.book lab`` (what ``make lab`` runs) is started headless on a free local
port, with its own Jupyter config, runtime, workspace and user-settings folders (autosave
off, so that the chapter opened is never rewritten), and Debian's Chromium is
driven by Playwright (``executable_path``: no browser is downloaded). Asserted:

- the knob chapter (``notebooks/heterogeneous_mlp.md`` at the ``smoke`` profile, with
  papermill's injected parameters, up to its slider cell) runs from JupyterLab's own
  "run all cells" command without an error, and shows its slider and figure ("run all"
  runs the current notebook: the test waits until the prepared one is current);
- moving the slider with the keyboard, as a reader would, changes the figure (another PNG)
  and the slider's readout. Screenshots before and after go to ``test-artifacts/``;
- then, last, so that no "run all" can reach it (it is at the ``cpu`` profile), the
  chapter's ``.md`` file opens as a notebook: jupytext's viewer is the default one.

Everything that can wait has a limit: the server's start, page loads, the kernel, the
chapter's cells, the redraw; the server and its kernels are killed at the end. Skipped,
saying why, where Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jupytext
import nbformat
import pytest
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from hesslab.experiments.profiles import parameters_for

pytestmark = pytest.mark.book
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHAPTER = "heterogeneous_mlp"
#: seconds for: the server to answer, a page to show its cells, the kernel to start, the
#: chapter's cells at smoke (about 20 s on 2 idle cores), the figure to follow the slider
SERVER_START, PAGE_LOAD, KERNEL_START, RUN_CELLS, REDRAW = 90, 90, 120, 400, 60
TOKEN = "hesslab-live-test"

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
except ImportError:  # the [test] extra installs it
    sync_playwright = None

KERNEL_IDLE = """() => { const w = window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle'; }"""
#: true once no cell is queued or running (an executed cell's prompt is [n], a waiting one [*])
CELLS_DONE = """() => { const prompts = Array.from(document.querySelectorAll('.jp-NotebookPanel .jp-InputPrompt'));
  return prompts.length > 0 && prompts.every(p => !p.textContent.includes('*')); }"""
#: true once the current main-area widget is the notebook at a path ending in the argument
CURRENT_IS = """(name) => { const w = window.jupyterapp.shell.currentWidget;
  return !!w && !!w.context && w.context.path.endsWith(name) && !!w.content && !!w.content.widgets; }"""
SEVERAL_CELLS = "() => document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length >= 3"
NEW_IMAGE = "([sel, old]) => { const i = document.querySelector(sel); return !!i && i.src !== old; }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with code {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START} s:\n{log.read_text()[-3000:]}")


def _smoke_notebook(path: Path) -> None:
    """The chapter with the smoke profile's parameters injected (as papermill does), up to its slider cell."""
    jupytext.write(jupytext.read(ROOT / "notebooks" / f"{CHAPTER}.md"), path)
    nb = parameterize_notebook(load_notebook_node(str(path)), parameters_for(CHAPTER, "smoke"),
                               kernel_name="python3", language="python")
    last = max(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "live_figure(" in c.source)
    del nb.cells[last + 1:]
    nbformat.write(nb, path)


@pytest.fixture
def lab(tmp_path):
    """A headless ``python -m hesslab.book lab`` on a free port; its base URL (killed with its kernels after)."""
    port, log = _free_port(), tmp_path / "lab.log"
    # no autosave: opening a chapter marks it modified, and a save would rewrite its source through jupytext
    settings = tmp_path / "settings" / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
    settings.parent.mkdir(parents=True)
    settings.write_text('{"autosave": false}')
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"), JUPYTERLAB_SETTINGS_DIR=str(tmp_path / "settings"))
    cmd = [sys.executable, "-m", "hesslab.book", "lab", "--no-browser", "--port", str(port), "--ip", "127.0.0.1",
           "--", f"--IdentityProvider.token={TOKEN}", "--expose-app-in-browser"]
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(f"{base}/api/status?token={TOKEN}", server, log)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)


@pytest.mark.timeout(SERVER_START + PAGE_LOAD * 2 + KERNEL_START + RUN_CELLS + REDRAW + 120)
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")
@pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (it is in the [test] extra)")
def test_a_slider_moved_in_jupyterlab_changes_the_figure(lab):
    ARTIFACTS.mkdir(exist_ok=True)
    name = f"_live_test_{os.getpid()}.ipynb"  # notebooks/*.ipynb is ignored by git
    source = (ROOT / "notebooks" / f"{CHAPTER}.md").read_bytes()
    _smoke_notebook(ROOT / "notebooks" / name)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"],
                                        timeout=60_000)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(PAGE_LOAD * 1000)

                page.goto(f"{lab}/lab/tree/notebooks/{name}?token={TOKEN}")
                page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell")
                # "run all" runs the current notebook: make sure it is this one, not a restored tab
                page.wait_for_function(CURRENT_IS, arg=name)
                page.wait_for_function(KERNEL_IDLE, timeout=KERNEL_START * 1000)
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
                page.wait_for_selector(".widget-vbox .widget-output img", timeout=RUN_CELLS * 1000)
                page.wait_for_function(CELLS_DONE, timeout=RUN_CELLS * 1000)
                text = page.locator(".jp-NotebookPanel .jp-OutputArea").all_inner_texts()
                failed = [t for t in text if "Traceback" in t]
                assert not failed, "a cell failed in JupyterLab:\n" + "\n".join(failed)[-3000:]

                box = page.locator(".widget-vbox").filter(has=page.locator(".widget-output img")).first
                box.scroll_into_view_if_needed()
                before, readout = box.locator(".widget-output img").get_attribute("src"), \
                    box.locator(".widget-readout").inner_text()
                box.screenshot(path=str(ARTIFACTS / "live-slider-before.png"))
                box.locator(".noUi-handle").first.focus()
                page.keyboard.press("ArrowLeft")  # the slider starts at the largest c
                page.wait_for_function(NEW_IMAGE, arg=[".widget-vbox .widget-output img", before],
                                       timeout=REDRAW * 1000)
                box.screenshot(path=str(ARTIFACTS / "live-slider-after.png"))
                after = box.locator(".widget-output img").get_attribute("src")
                assert after.startswith("data:image/png") and after != before
                assert box.locator(".widget-readout").inner_text() != readout, "the slider's readout did not move"

                # last, so that no "run all" can reach it: the chapter's source opens as a notebook
                page.goto(f"{lab}/lab/tree/notebooks/{CHAPTER}.md?token={TOKEN}")
                try:  # the notebook renders its cells one after another
                    page.wait_for_function(SEVERAL_CELLS)
                    page.wait_for_function(CURRENT_IS, arg=f"{CHAPTER}.md")
                except PlaywrightTimeout:
                    pytest.fail(f"{CHAPTER}.md did not open as a notebook (no code cells in {PAGE_LOAD} s)")
            finally:
                browser.close()
    finally:
        (ROOT / "notebooks" / name).unlink(missing_ok=True)
    assert (ROOT / "notebooks" / f"{CHAPTER}.md").read_bytes() == source, "JupyterLab rewrote the chapter's source"
    for shot in ("before", "after"):
        assert (ARTIFACTS / f"live-slider-{shot}.png").stat().st_size > 5_000
