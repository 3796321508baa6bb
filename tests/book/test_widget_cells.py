"""The chapters' widget cells execute many times in a row under stock nbclient without losing a reply.

The block picker of ``notebooks/blockwise.md`` and the sliders of ``notebooks/quadratic.md``
used to capture their figure into an ``ipywidgets.Output`` (``with output:`` after
``clear_output(wait=True)``; ``widgets.interactive_output``). nbclient's ``Output`` mimic
then sent the captured figure back to the kernel as a ``comm_msg`` on the shell socket
while it waited on that socket for the cell's ``execute_reply``, and now and then the reply
was never noticed: the book run hung on an idle kernel (see ``hesslab/interactive.py``).

Here the chapters' actual widget cells (read from the ``.md`` files) run :data:`REPEATS`
times each in one kernel with plain nbclient, as ``papermill chapter.ipynb`` would, after a
stand-in for the chapter state they need. Asserted: nbclient sends nothing but requests to
the kernel (the precondition of the lost reply, deterministic), no cell waits longer than
:data:`STALL` seconds (a lost reply waits for the cell limit, :data:`CELL_LIMIT`), and the
figure is in the widget state that the HTML book embeds.

Measured with this harness on 2 shared cores (a stall: the cell took the whole cell limit;
where timed, the kernel had sent its execute_reply within 0.5 s of the start): the old cells (git 012d571) sent a
``comm_msg`` in every widget cell and lost the reply in 6 of 620 executions (about 1 %);
the current cells sent none and lost none in 600. The ``comm_msg`` check fails the old
cells on their first execution; the stall check alone would have caught them in these
2 x 60 executions with probability 1 - 0.99^120, about 70 % (a pattern-only notebook, 1500
executions each: old pattern 11 stalls, old pattern with the socket re-checked after
nbclient's send 0, current pattern 0).
"""

import base64
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.book
ROOT = Path(__file__).resolve().parents[2]
#: executions of each widget cell
REPEATS = 60
#: the cell limit; a lost execute_reply is only noticed when it expires
CELL_LIMIT = 20
#: a widget cell takes about 0.1 s; one that takes this long waited for a lost reply
STALL = 8.0

#: what blockwise.md's widget cell needs from the chapter: models, spectra, draw (cheap stand-ins)
BLOCKWISE_STATE = """
import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
from hesslab.book.interactive import live_figure

models = ["vgg16", "bert"]
spectra = {m: {f"block{i}": None for i in range(4)} for m in models}


def draw(axes, name, blocks):
    for ax in axes:
        for i, block in enumerate(blocks):
            ax.semilogy(np.linspace(0, 1, 20), np.exp(-np.linspace(0, 4 + i, 20)), label=block)
"""


def _code_cells(chapter: str) -> list[str]:
    nb = jupytext.read(ROOT / "notebooks" / f"{chapter}.md")
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _widget_cell(chapter: str) -> str:
    [cell] = [c for c in _code_cells(chapter) if "widgets.VBox" in c]
    return cell


def _setup() -> list[str]:
    quadratic = _code_cells("quadratic")
    parameters, imports = quadratic[0], quadratic[1]
    assert "parameters" not in imports and "import ipywidgets" in imports
    # the quadratic chapter's own parameters and imports, with a small problem behind the sliders
    return [BLOCKWISE_STATE, parameters + "\nwidget_block_size = 10\nwidget_max_iter = 200\n", imports]


def test_widget_cells_execute_many_times_without_a_lost_reply():
    cells = {"blockwise": _widget_cell("blockwise"), "quadratic": _widget_cell("quadratic")}
    sources = _setup() + [cells[name] for _ in range(REPEATS) for name in cells]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}})
    client = NotebookClient(nb, timeout=CELL_LIMIT, kernel_name="python3", startup_timeout=60,
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    sent, slow = [], []
    with client.setup_kernel():
        shell_send = client.kc.shell_channel.send

        def record(msg):
            sent.append(msg["header"]["msg_type"])
            shell_send(msg)

        client.kc.shell_channel.send = record
        for index, cell in enumerate(nb.cells):
            start = time.monotonic()
            client.execute_cell(cell, index)
            if index >= 3 and time.monotonic() - start > STALL:
                slow.append((index, round(time.monotonic() - start, 1)))
        client.set_widgets_metadata()
    assert set(sent) == {"execute_request"}, \
        f"nbclient sent {sorted(set(sent) - {'execute_request'})} to the kernel during the widget cells"
    assert not slow, f"widget cells (index, seconds) that waited for a lost execute_reply: {slow}"

    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    figures = [o["data"]["image/png"] for w in state.values() if w["model_name"] == "OutputModel"
               for o in w["state"].get("outputs", [])]
    assert len(figures) == 2 * REPEATS, "every widget cell's Output must hold its figure in the saved state"
    assert all(base64.b64decode(png).startswith(b"\x89PNG") for png in figures)
    for index in range(3, len(nb.cells)):
        views = [o for o in nb.cells[index].outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert views and not any(o.output_type == "error" for o in nb.cells[index].outputs)
