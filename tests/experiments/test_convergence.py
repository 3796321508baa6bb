"""The convergence verdict on hand-made convergence-study tables."""

import numpy as np
import pandas as pd
import pytest

from hesslab.experiments.convergence import convergence_verdict, setting_spread
from hesslab.experiments.profiles import HessianSettings

SETTINGS = HessianSettings(batches={"text": (2, 4), "vision": (2, 32)}, num_steps=20, num_probes=4)


def study(batches, steps, probes, scale_spread=(1.0, 1.1)):
    """A convergence-study table: JS⁰ per batch count (1, 2, 4), Lanczos steps (10, 20, 40), probes (1, 2, 4)."""
    rows = [{"setting": setting, "value": value, "js0": js0}
            for setting, values, js in [("batches", (1, 2, 4), batches), ("steps", (10, 20, 40), steps),
                                        ("probes", (1, 2, 4), probes)]
            for value, js0 in zip(values, js)]
    table = pd.DataFrame(rows)
    table["tokens"] = 100 * table.value
    table["js0_linear"] = table.js0 / 2
    table["probe_mean"], table["probe_sd"] = table.js0, 0.01
    table["scale_spread"] = np.linspace(*scale_spread, len(table))
    return table


FAMILIES = {"cnn": "cnn", "transformer": "transformer"}


def test_small_variation_against_a_wide_separation_is_converged():
    studies = {"cnn": study([0.050, 0.052, 0.051], [0.049, 0.050, 0.053], [0.070, 0.060, 0.050]),
               "transformer": study([0.300, 0.305, 0.302], [0.290, 0.300, 0.310], [0.350, 0.330, 0.300])}
    verdict = convergence_verdict(studies, SETTINGS, FAMILIES)
    assert verdict.at_profile == {"cnn": 0.050, "transformer": 0.300}
    assert verdict.separation == pytest.approx(0.25)
    assert verdict.spreads["transformer"]["steps"] == pytest.approx(0.02)
    assert verdict.spreads["cnn"]["batches"] == pytest.approx(0.002)
    assert verdict.converged == {"cnn": True, "transformer": True} and verdict.unconverged == []
    # smallest Transformer value anywhere (0.290) minus largest CNN value anywhere (0.070)
    assert verdict.ordering_margin == pytest.approx(0.22)
    assert verdict.data_within_quadrature
    assert verdict.probes["transformer"] == (1, 4, 0.35, 0.30)
    assert verdict.scale_variation["cnn"] == pytest.approx(0.1)
    assert len(verdict.lines) == 2 and "Converged for the CNN–Transformer comparison" in verdict.lines[1]
    assert "holds: the smallest Transformer value exceeds the largest CNN value by 0.220" in verdict.conclusion
    assert "converged for the comparison the book makes" in verdict.conclusion


def test_variation_of_half_the_separation_or_more_is_not_converged():
    # separation 0.15 - 0.10 = 0.05; the Transformer moves by 0.06 over the batches, the CNN by 0.02 over the steps
    studies = {"cnn": study([0.10, 0.10, 0.10], [0.09, 0.10, 0.11], [0.12, 0.11, 0.10]),
               "transformer": study([0.12, 0.16, 0.18], [0.15, 0.15, 0.15], [0.20, 0.18, 0.15])}
    verdict = convergence_verdict(studies, SETTINGS, FAMILIES)
    assert verdict.separation == pytest.approx(0.05)
    assert verdict.spreads["transformer"]["batches"] == pytest.approx(0.06)
    assert verdict.converged == {"cnn": True, "transformer": False}
    assert verdict.unconverged == ["transformer"]
    assert verdict.ordering_margin == pytest.approx(0.12 - 0.12) and verdict.ordering_margin <= 0
    assert not verdict.data_within_quadrature  # 0.06 over the batches > 0 over the steps + 0.01
    assert "**Not converged**" in verdict.lines[1] and "**Not converged**" not in verdict.lines[0]
    assert "does **not** always hold" in verdict.conclusion
    assert "JS⁰ values of transformer carry an uncertainty" in verdict.conclusion
    assert "more data is needed" in verdict.conclusion
    # the reviewer's contradiction: "does not always hold. So ... the ordering is supported"
    assert "neither the ordering nor its size is settled" in verdict.conclusion
    assert "supported" not in verdict.conclusion
    assert "does **not** separate the families" in verdict.conclusion  # both tables have the same scale spread


def test_sentences_follow_the_numbers_when_the_ordering_holds_but_its_size_does_not():
    # separation 0.30 - 0.10 = 0.2; the Transformer moves by 0.12 over the steps (>= half); pooling raises the CNN
    studies = {"cnn": study([0.10, 0.10, 0.10], [0.10, 0.10, 0.10], [0.08, 0.09, 0.10], scale_spread=(0.5, 0.6)),
               "transformer": study([0.30, 0.30, 0.30], [0.25, 0.30, 0.37], [0.40, 0.35, 0.30], scale_spread=(3, 4))}
    verdict = convergence_verdict(studies, SETTINGS, FAMILIES)
    assert verdict.unconverged == ["transformer"] and verdict.ordering_margin > 0
    assert "the ordering holds in every run, but its size is not settled" in verdict.conclusion
    assert "separates the families in every run, by at least 2.40 decades" in verdict.conclusion
    assert "lowers JS⁰ for transformer and not for the others" in verdict.conclusion


def test_without_both_families_nothing_is_converged():
    studies = {"transformer": study([0.3, 0.3, 0.3], [0.3, 0.3, 0.3], [0.3, 0.3, 0.3])}
    verdict = convergence_verdict(studies, SETTINGS, FAMILIES)
    assert np.isnan(verdict.separation) and np.isnan(verdict.ordering_margin)
    assert verdict.unconverged == ["transformer"]


def test_families_default_to_the_model_registry_and_profile_steps_must_be_measured():
    studies = {"resnet18": study([0.05] * 3, [0.05] * 3, [0.05] * 3), "gpt2-nano": study([0.3] * 3, [0.3] * 3, [0.3] * 3)}
    assert convergence_verdict(studies, SETTINGS).separation == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no run at the profile's 30 Lanczos steps"):
        convergence_verdict(studies, HessianSettings(SETTINGS.batches, num_steps=30, num_probes=4))
    assert setting_spread(studies["resnet18"], "steps") == 0.0
