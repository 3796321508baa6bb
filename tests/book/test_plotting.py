"""The book's figure style: one colour per optimiser kind and model family."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hesslab.book import plotting  # noqa: E402


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
    from hesslab.book.plotting import short_block_name

    assert short_block_name("bert.encoder.layer.0.attention.self.query.weight") == "L0.query"
    assert short_block_name("transformer.h.3.attn.q") == "h.3.attn.q"
    assert len(short_block_name("x" * 60, width=10)) == 10


def test_smooth_is_a_running_mean_of_valid_windows():
    values = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    assert np.allclose(plotting.smooth(values, 2), [1.5, 2.5, 3.5, 5.0])
    assert np.allclose(plotting.smooth(values, 1), values)
    assert plotting.smooth(values, 5).shape == (1,) and np.isclose(plotting.smooth(values, 5)[0], 3.2)


def _run(losses, lr):
    from types import SimpleNamespace

    return SimpleNamespace(losses=np.asarray(losses, dtype=float), config=SimpleNamespace(lr=lr))


def test_training_curves_start_at_the_end_of_the_first_window():
    from types import SimpleNamespace

    study = SimpleNamespace(adam=_run([4.0, 2.0, 1.0, 1.0], 1e-3), sgd=_run([4.0, 4.0, 2.0, 2.0], 0.1))
    fig, ax = plt.subplots()
    plotting.plot_training_curves(ax, study, window=2)
    adam, sgd = ax.get_lines()
    assert adam.get_label() == "AdamW (lr 0.001)" and sgd.get_label() == "SGD (lr 0.1)"
    assert np.array_equal(adam.get_xdata(), [1, 2, 3]) and np.allclose(adam.get_ydata(), [3.0, 1.5, 1.0])
    assert np.allclose(sgd.get_ydata(), [4.0, 3.0, 2.0])
    assert adam.get_color() != sgd.get_color()
    plt.close(fig)


def test_block_densities_draw_the_chosen_blocks_on_both_axes():
    from hesslab import SpectralDensity
    from hesslab.experiments.heterogeneity import JS_VARIANTS

    rng = np.random.default_rng(0)
    spectra = {f"layer.{i}.weight": SpectralDensity.from_eigenvalues(rng.uniform(0, 10.0 ** -i, 50))
               for i in range(3)}
    fig, (linear, log, tenth) = plt.subplots(1, 3)
    variants = {k: JS_VARIANTS[k] for k in ("linear", "log", "lambda10")}
    plotting.plot_block_densities([linear, log, tenth], spectra, ["layer.0.weight", "layer.2.weight"], variants,
                                  model="toy")
    for ax in (linear, log, tenth):
        assert [l.get_label() for l in ax.get_lines()] == ["L0", "L2"]
        assert ax.get_yscale() == "log" and ax.get_ylim()[0] == 1e-5
        assert all(np.min(l.get_ydata()) >= 1e-8 for l in ax.get_lines())
    # one shared scale for all blocks: the flattest block sits at the bottom of the log axis
    centre = [np.average(l.get_xdata(), weights=l.get_ydata()) for l in log.get_lines()]
    assert centre[0] > centre[1] + 1.5, centre
    assert linear.get_ylabel() == "toy\ndensity" and "max |λ|" in linear.get_xlabel()
    # λ₁₀ per block: every block on its own scale, so both sit around 1 whatever their size
    centre = [np.average(l.get_xdata(), weights=l.get_ydata()) for l in tenth.get_lines()]
    assert abs(centre[0] - centre[1]) < 0.5, centre
    assert "λ₁₀" in tenth.get_xlabel()
    with pytest.raises(ValueError, match="one axis per variant"):
        plotting.plot_block_densities([linear], spectra, ["layer.0.weight"], variants, model="toy")
    plt.close(fig)
