"""The book's figure style: one colour per optimiser kind and model family."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hesslab import plotting  # noqa: E402


@pytest.mark.parametrize("name, kind", [
    ("GD", "gd"), ("SGD", "gd"), ("GD + momentum 0.9", "momentum"), ("SGD-m", "momentum"),
    ("Adam", "adam"), ("AdamW", "adam"), ("Adam (no bias corr.)", "adam-variant"),
    ("Adam β=(0, 1)", "adam-theory"), ("sign descent", "sign"), ("Signum", "sign"),
    ("blockwise GD", "blockwise"),
])
def test_optimiser_labels_map_to_one_colour_each(name, kind):
    assert plotting.optimiser_kind(name) == kind
    assert plotting.optimiser_color(name) == plotting.OPTIMISER_COLORS[kind]


def test_family_names_map_to_cnn_or_transformer_colours():
    assert plotting.family_color("ResNet18") == plotting.family_color("VGG16") == plotting.FAMILY_COLORS["cnn"]
    assert plotting.family_color("GPT2-nano") == plotting.family_color("ViT-base") == plotting.FAMILY_COLORS["transformer"]
    with pytest.raises(ValueError, match="no colour"):
        plotting.family_color("LSTM")
    with pytest.raises(ValueError, match="no colour"):
        plotting.optimiser_color("LBFGS")


def test_plot_histories_draws_relative_log_curves():
    plotting.use_book_style()
    fig, ax = plt.subplots()
    plotting.plot_histories(ax, {"GD": [2.0, 1.0, 0.5], "Adam": [4.0, 1.0]})
    assert ax.get_yscale() == "log"
    lines = ax.get_lines()
    assert [l.get_label() for l in lines] == ["GD", "Adam"]
    assert np.allclose(lines[0].get_ydata(), [1.0, 0.5, 0.25]) and np.allclose(lines[1].get_ydata(), [1.0, 0.25])
    plt.close(fig)


def test_short_block_name():
    from hesslab.plotting import short_block_name

    assert short_block_name("bert.encoder.layer.0.attention.self.query.weight") == "L0.query"
    assert short_block_name("transformer.h.3.attn.q") == "h.3.attn.q"
    assert len(short_block_name("x" * 60, width=10)) == 10
