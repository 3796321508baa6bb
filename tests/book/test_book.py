"""The book end to end: chapters execute (papermill, smoke profile), their outputs
reproduce (nbval), the HTML builds with warnings as errors, and a headless Chromium
sees every chapter page with decoded figures and no error output.

One execution of the book is shared by all tests in this module.
"""

import html as html_lib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hesslab.book import runner as book

pytestmark = pytest.mark.book
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=15000"]
# Runs after the page (and the widget manager) loaded: counts images that did not decode. The
# report goes into a <div>, not a <pre>: the theme later adds tabindex to every <pre>.
PROBE = """<script>window.addEventListener("load", function () { setTimeout(function () {
  var imgs = Array.from(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                   .map(function (i) { return i.src.slice(0, 100); });
  var widgets = document.querySelectorAll(".jupyter-widgets").length;
  var widgetFigures = Array.from(document.querySelectorAll(".widget-output img"))
                           .filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var p = document.createElement("div"); p.id = "hesslab-probe";
  p.textContent = JSON.stringify({images: imgs.length, broken: broken, widgets: widgets,
                                  widgetFigures: widgetFigures});
  document.body.appendChild(p); }, 2000); });</script></body>"""


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Run every chapter at the smoke profile once; the output folder."""
    out = tmp_path_factory.mktemp("book")
    results = book.run("smoke", out=out)
    failed = [f"{r.chapter} (cell {r.failed_cell}): {r.error}" for r in results if not r.ok]
    assert not failed, "chapters failed at the smoke profile:\n" + "\n".join(failed)
    return out


@pytest.fixture(scope="session")
def html(executed):
    """The HTML book built from the executed chapters."""
    return book.build(executed)


def test_every_chapter_executes_and_has_a_parameters_cell(executed):
    names = book.chapters()
    assert names, "no chapters in _toc.yml"
    summary = json.loads((executed / "executed" / "summary.json").read_text())
    for name in names:
        nb = json.loads((executed / "executed" / f"{name}.ipynb").read_text())
        tags = [set(c.get("metadata", {}).get("tags", [])) for c in nb["cells"]]
        assert any("parameters" in t for t in tags), f"{name}: no cell tagged 'parameters'"
        assert any("injected-parameters" in t for t in tags), f"{name}: papermill injected no parameters"
        assert summary[name]["ok"] and summary[name]["profile"] == "smoke"


def test_executed_outputs_reproduce_under_nbval(executed):
    notebooks = sorted(str(p) for p in (executed / "executed").glob("*.ipynb"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval", *notebooks, "-q", "-p", "no:cacheprovider",
         "--nbval-cell-timeout=300", "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"),
         "--rootdir", str(executed)],
        capture_output=True, text=True, cwd=executed, timeout=1200)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_book_builds_with_warnings_as_errors(html):
    assert (html / "index.html").exists()
    for name in book.chapters():
        assert (html / "notebooks" / f"{name}.html").exists(), f"no page for chapter {name}"
    stats = (html / "book" / "execution-statistics.html").read_text()
    assert all(name in stats for name in book.chapters())
    assert "widgets/embed-amd.js" in (html / "notebooks" / "quadratic.html").read_text(), \
        "the offline widget manager is not loaded"


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")
def test_chapter_pages_show_their_figures_in_a_browser(html, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    for name in book.chapters():
        page = html / "notebooks" / f"{name}.html"
        probe = page.with_name(f".probe-{name}.html")
        probe.write_text(page.read_text().replace("</body>", PROBE))
        dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                              "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
        probe.unlink()
        found = re.search(r'<div id="hesslab-probe"[^>]*>(.*?)</div>', dom, re.S)
        assert found, f"{name}: the page did not finish loading"
        report = json.loads(html_lib.unescape(found.group(1)))
        assert report["images"] > 0, f"{name}: no figures on the page"
        assert not report["broken"], f"{name}: figures that do not decode: {report['broken']}"
        if "application/vnd.jupyter.widget-view+json" in page.read_text():
            assert report["widgets"] > 0, f"{name}: embedded widgets did not render offline"
        if "live_figure(" in (ROOT / "notebooks" / f"{name}.md").read_text():
            assert report["widgetFigures"] > 0, f"{name}: the figure inside its Output widget is not shown"
        for error in ("Traceback (most recent call last)", 'class="output traceback"', "Error rendering"):
            assert error not in dom, f"{name}: the page shows error output ({error!r})"
        subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                        "--window-size=1280,3000", f"--screenshot={ARTIFACTS / (name + '.png')}", page.as_uri()],
                       capture_output=True, timeout=120, check=True)
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000


def test_api_reference_page_renders_the_docstrings(html):
    """book/api.md in the built book: an entry per public name, signatures and parameter lists."""
    import hesslab

    page = (html / "book" / "api.html").read_text()
    missing = [n for n in hesslab.__all__ if n != "__version__" and f'id="hesslab.{n}"' not in page]
    assert not missing, f"no rendered entry on the API page for {missing}"
    signatures = {"slq": ("op", "num_steps", "num_probes"), "HessianOperator": ("model", "loss_fn", "data")}
    for name, params in signatures.items():
        entry = re.search(rf'<dt class="sig sig-object py" id="hesslab\.{name}">(.*?)</dt>\s*<dd>(.*?)</dd>',
                          page, re.S)
        assert entry, f"no signature for hesslab.{name}"
        signature = re.sub(r"<[^>]+>", "", entry.group(1))
        assert all(p in signature for p in params), signature
        assert "Parameters" in entry.group(2), f"hesslab.{name}: its Args: were not rendered as a parameter list"
