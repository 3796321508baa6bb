"""hesslab.book.interactive: a figure that follows its controls lands in the Output widget's state, not in captures."""

import base64

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pytest

from hesslab.book.interactive import figure_output, live_figure


def _png(output):
    [out] = output.outputs
    assert out["output_type"] == "display_data"
    return base64.b64decode(out["data"]["image/png"])


def test_live_figure_redraws_into_outputs_and_closes_its_figures():
    calls = []

    def draw(n, colour):
        calls.append((n, colour))
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.plot(range(n), color=colour)
        return fig

    slider, dropdown = widgets.IntSlider(value=2, min=1, max=9), widgets.Dropdown(options=["red", "blue"])
    output = live_figure(draw, {"n": slider, "colour": dropdown})
    first = _png(output)
    assert first.startswith(b"\x89PNG") and calls == [(2, "red")]
    slider.value = 7
    dropdown.value = "blue"
    assert calls == [(2, "red"), (7, "red"), (7, "blue")]
    assert _png(output) != first and plt.get_fignums() == [], "figures must be closed once shown"


def test_live_figure_errors_propagate_first_then_show_in_the_widget():
    def draw(n):
        if n > 3:
            raise ValueError(f"n = {n} is too large")
        fig, ax = plt.subplots()
        ax.plot([0, n])
        return fig

    with pytest.raises(ValueError, match="n = 5"):
        live_figure(draw, {"n": widgets.IntSlider(value=5, max=9)})
    slider = widgets.IntSlider(value=1, max=9)
    output = live_figure(draw, {"n": slider})
    slider.value = 4
    [out] = output.outputs
    assert out["output_type"] == "stream" and "ValueError: n = 4 is too large" in out["text"]


def test_figure_output_is_a_display_data_output():
    fig, ax = plt.subplots()
    ax.plot([1, 2])
    out = figure_output(fig)
    plt.close(fig)
    assert out["output_type"] == "display_data" and out["metadata"] == {}
    assert base64.b64decode(out["data"]["image/png"]).startswith(b"\x89PNG")
    assert out["data"]["text/plain"].startswith("<Figure size")
