"""Figures that follow widgets, in JupyterLab and in the executed (batch) book alike.

:func:`live_figure` returns an ``ipywidgets.Output`` showing the figure that a function
draws from the current values of some controls, redrawn whenever a control changes. The
image is put into the widget's ``outputs`` from the kernel (one state update, sent on
IOPub) instead of being captured with ``with output: plt.show()``, ``clear_output`` or
``widgets.interactive_output`` (which captures the same way).

Why: capturing into an ``Output`` while a notebook is executed by papermill/nbclient
makes nbclient's ``Output`` mimic send the captured output back to the kernel as a
``comm_msg`` on the shell socket, while nbclient is waiting on that same socket for the
cell's ``execute_reply``. jupyter_client sends through a blocking shadow of nbclient's
asyncio socket, which consumes the socket's edge-triggered wake-up without pyzmq's asyncio
layer knowing; a reply that arrived during that send stays unread until the wait times out,
and with no time limit the book run hangs on an idle kernel. Measured on 2 cores: the old
block-picker and slider cells lost their reply in about 1 % of executions (6 of 620, see
``tests/test_widget_cells.py``). Setting ``outputs`` sends nothing to the kernel during the
cell, renders in the HTML book (the state is embedded) and in JupyterLab (the frontend
shows ``outputs`` set by the kernel).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping

__all__ = ["figure_output", "live_figure", "show_figure"]


def figure_output(fig) -> dict:
    """A matplotlib figure as a notebook ``display_data`` output (PNG, as the inline backend draws it).

    Args:
        fig: a ``matplotlib.figure.Figure``.

    Returns:
        ``{"output_type": "display_data", "data": {"image/png": base64, "text/plain": ...}, "metadata": {}}``.
    """
    from IPython.core.pylabtools import print_figure

    png = print_figure(fig, "png", bbox_inches="tight", base64=True)
    data = {"text/plain": repr(fig)}
    if png:  # None for a figure without axes
        data["image/png"] = png
    return {"output_type": "display_data", "data": data, "metadata": {}}


def show_figure(output, fig) -> None:
    """Replace the contents of ``output`` (an ``ipywidgets.Output``) with ``fig``, and close ``fig``.

    Args:
        output: the ``Output`` widget.
        fig: the figure; closed afterwards, so that the inline backend does not show it again.
    """
    import matplotlib.pyplot as plt

    try:
        output.outputs = (figure_output(fig),)
    finally:
        plt.close(fig)


def live_figure(draw: Callable[..., object], controls: Mapping[str, object]):
    """An ``Output`` widget showing ``draw(**values)``, redrawn when any control's value changes.

    Args:
        draw: returns a new matplotlib figure for keyword arguments named like ``controls``.
        controls: name -> widget with a ``value`` (slider, drop-down, ...).

    Returns:
        The ``ipywidgets.Output``, already showing the figure for the current values; display
        it next to the controls. An exception in ``draw`` propagates on this first drawing; on
        later ones (in a widget callback) its traceback replaces the figure.
    """
    import ipywidgets as widgets

    output = widgets.Output()

    def redraw(change=None):
        values = {name: control.value for name, control in controls.items()}
        if change is None:
            show_figure(output, draw(**values))
            return
        try:
            show_figure(output, draw(**values))
        except Exception:
            output.outputs = ({"output_type": "stream", "name": "stderr", "text": traceback.format_exc()},)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    return output
