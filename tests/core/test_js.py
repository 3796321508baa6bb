"""Jensen–Shannon distances between spectra and JS⁰."""

import numpy as np
import pytest
import torch

from hesslab import SpectralDensity, js0, js_distance, js_divergence, js_matrix, slq, spectra_js


def block_spectra(scales, n=80, seed=0):
    """Exact spectra of blocks whose eigenvalues are Gamma(2) draws times a per-block scale."""
    rng = np.random.default_rng(seed)
    return {f"b{i}": SpectralDensity.from_eigenvalues(s * rng.gamma(2.0, size=n)) for i, s in enumerate(scales)}


def test_js_is_symmetric_zero_on_identical_and_bounded():
    rng = np.random.default_rng(0)
    p = SpectralDensity.from_eigenvalues(rng.normal(size=50))
    q = SpectralDensity.from_eigenvalues(rng.normal(3, 1, size=50))
    assert spectra_js(p, p) == pytest.approx(0.0, abs=1e-12)
    assert spectra_js(p, q) == pytest.approx(spectra_js(q, p), rel=1e-12)
    far = SpectralDensity.from_eigenvalues(rng.normal(1e3, 1, size=50))
    d = spectra_js(p, far, sigma=0.01)
    assert 0 < d <= np.log(2) + 1e-12
    assert d == pytest.approx(np.log(2), rel=1e-6), "disjoint supports reach ln 2"
    assert spectra_js(p, far, sigma=0.01, sqrt=True) == pytest.approx(np.sqrt(d))
    assert js_distance(p, far, sigma=0.01) == pytest.approx(np.sqrt(d))


def test_density_mode_is_probability_mode_over_grid_step():
    rng = np.random.default_rng(1)
    p, q = rng.uniform(size=200), rng.uniform(size=200)
    p, q = p / p.sum() / 0.01, q / q.sum() / 0.01  # densities with unit integral, dx = 0.01
    assert js_divergence(p, q, 0.01, "density") == pytest.approx(js_divergence(p, q, 0.01) / 0.01, rel=1e-10)


def test_js_matrix_properties():
    spectra = block_spectra([1, 1, 10, 100])
    m = js_matrix(spectra)
    assert list(m.index) == list(spectra)
    assert np.allclose(m.to_numpy(), m.to_numpy().T)
    assert np.allclose(np.diag(m.to_numpy()), 0)
    assert (m.to_numpy() <= np.log(2) + 1e-12).all()
    assert m.loc["b0", "b1"] < m.loc["b0", "b3"], "same-scale blocks must be closer"


@pytest.mark.parametrize("normalize, factor", [("shared-max", 3.0), ("per-block-max", 1.5)])
def test_heterogeneous_block_diagonal_scores_higher_js0_than_homogeneous(normalize, factor):
    """SLQ on two block-diagonal matrices: blocks with different spectra vs the same spectrum."""
    rng = np.random.default_rng(2)

    def spectra_of(block_eigs):
        out = {}
        for i, ev in enumerate(block_eigs):
            q, _ = torch.linalg.qr(torch.randn(len(ev), len(ev), dtype=torch.float64))
            A = q @ torch.diag(torch.tensor(ev)) @ q.T
            out[f"b{i}"] = slq(A, num_steps=30, num_probes=5, seed=i, progress=False)
        return out

    homogeneous = [rng.gamma(2.0, size=60) for _ in range(4)]
    heterogeneous = [rng.gamma(2.0, size=60) * 10.0**i for i in range(2)] + \
                    [rng.uniform(0, 1, size=60), rng.normal(0, 1, size=60)]
    hom, het = js0(spectra_of(homogeneous), normalize=normalize), js0(spectra_of(heterogeneous), normalize=normalize)
    # per-block normalisation removes the scale differences, so only shapes count there
    assert het > factor * hom, f"JS0 heterogeneous {het:.3f} vs homogeneous {hom:.3f}"


def test_js_input_errors():
    with pytest.raises(ValueError, match="mode"):
        js_divergence(np.ones(3), np.ones(3), mode="bits")
    with pytest.raises(ValueError, match="nonnegative"):
        js_divergence(np.array([1.0, -1.0]), np.ones(2))
    with pytest.raises(ValueError, match="two blocks"):
        js0(block_spectra([1]))
    with pytest.raises(ValueError, match="normalize"):
        js_matrix(block_spectra([1, 2]), normalize="lambda")


def test_log_axis_separates_scales_that_the_linear_axis_merges():
    """Two blocks 4 decades apart, both next to a dominant block: on the linear axis with
    1 % smoothing they are the same spike at 0; on the log axis they are far apart."""
    rng = np.random.default_rng(0)
    big = SpectralDensity.from_eigenvalues(rng.uniform(0.5, 1.0, 50))
    small = SpectralDensity.from_eigenvalues(rng.uniform(0.5, 1.0, 50) * 1e-3)
    tiny = SpectralDensity.from_eigenvalues(rng.uniform(0.5, 1.0, 50) * 1e-7)
    spectra = {"big": big, "small": small, "tiny": tiny}
    linear = js_matrix(spectra)
    log = js_matrix(spectra, axis="log", sigma=1.0)
    assert linear.loc["small", "tiny"] < 1e-3
    assert log.loc["small", "tiny"] > 0.5
    # the log map keeps sign and floors |λ| below 10^-decades of the scale at 0
    neg = SpectralDensity.from_eigenvalues([-1.0, 1e-12, 1.0])
    mapped = js_matrix({"a": neg, "b": neg}, axis="log", decades=8)
    assert mapped.loc["a", "b"] == 0
    with pytest.raises(ValueError, match="axis"):
        js_matrix(spectra, axis="sqrt")


def test_js_agrees_with_scipy_jensenshannon():
    from scipy.spatial.distance import jensenshannon

    rng = np.random.default_rng(7)
    for _ in range(5):
        p, q = rng.gamma(0.5, size=300), rng.gamma(0.5, size=300)
        p[rng.random(300) < 0.2] = 0.0  # disjoint parts of the supports too
        dx = 0.01
        # scipy normalises to probability vectors and returns the distance (natural log)
        assert js_divergence(p, q, dx) == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-12)
    spectra = {name: SpectralDensity.from_eigenvalues(rng.normal(mu, 1.0, size=40)) for name, mu in (("a", 0), ("b", 1))}
    from hesslab.js import shared_densities

    _, (da, db) = shared_densities(list(spectra.values()))
    assert js_distance(spectra["a"], spectra["b"]) == pytest.approx(jensenshannon(da, db), rel=1e-12)


def test_per_block_lambda10_divides_each_block_by_its_own_tenth_largest_eigenvalue():
    from hesslab.js import shared_densities

    rng = np.random.default_rng(3)
    eigenvalues = [rng.gamma(2.0, size=40) * s for s in (1.0, 50.0)]
    spectra = [SpectralDensity.from_eigenvalues(ev) for ev in eigenvalues]
    tenth = [np.sort(ev)[-10] for ev in eigenvalues]
    grid, dens = shared_densities(spectra, normalize="per-block-lambda10", sigma=0.05, grid_size=4000)
    dx = grid[1] - grid[0]
    for ev, t, d in zip(eigenvalues, tenth, dens):
        # the smoothed density's mean is the mean of the normalised eigenvalues
        assert (grid * d).sum() * dx == pytest.approx(np.mean(ev / t), rel=1e-6)
    # scaling a block does not change its λ₁₀-normalised spectrum: JS 0 between a block and its multiple
    same = [SpectralDensity.from_eigenvalues(eigenvalues[0]), SpectralDensity.from_eigenvalues(7.0 * eigenvalues[0])]
    assert js_matrix(dict(zip("ab", same)), normalize="per-block-lambda10").iloc[0, 1] == pytest.approx(0, abs=1e-12)


def test_grid_padding_is_absolute_in_normalised_units():
    from hesslab.js import shared_densities

    s = SpectralDensity.from_eigenvalues(np.array([0.0, 2.0]))
    grid, _ = shared_densities([s], normalize=None, sigma=0.1, pad=1.0, grid_size=11)
    assert grid[0] == pytest.approx(-1.0) and grid[-1] == pytest.approx(3.0)
    grid, _ = shared_densities([s], normalize=None, sigma=0.1, grid_size=11)
    assert grid[0] == pytest.approx(-0.5) and grid[-1] == pytest.approx(2.5), "default pad: 5 sigma"
    with pytest.raises(ValueError, match="pad"):
        shared_densities([s], normalize=None, sigma=0.1, pad=-1.0)
