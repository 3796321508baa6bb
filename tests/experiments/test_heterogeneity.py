"""hesslab.experiments.heterogeneity: blockwise spectra at init, JS⁰ variants, exact checks, convergence."""

import numpy as np
import pytest

from hesslab.experiments import heterogeneity as het


def test_small_cnn_is_more_homogeneous_than_small_transformer(tmp_path):
    """The paper's ordering at the book's JS⁰ (log axis), over 3 initialisation seeds."""
    values = {name: [het.js0_variants(het.blockwise_at_init(name, "smoke", seed=s, cache=tmp_path, progress=False))["log"]
                     for s in range(3)] for name in ("vgg16", "gpt2-nano")}
    cnn, transformer = np.array(values["vgg16"]), np.array(values["gpt2-nano"])
    assert cnn.max() < transformer.min(), f"JS⁰ (log axis) VGG {cnn.round(3)} vs GPT-2-nano {transformer.round(3)}"


def test_transformer_query_key_blocks_are_orders_of_magnitude_flatter(tmp_path):
    spectra = het.blockwise_at_init("gpt2-nano", "smoke", cache=tmp_path, progress=False)
    qk = max(s.lambda_max for b, s in spectra.items() if b.endswith((".q", ".k")))
    rest = min(s.lambda_max for b, s in spectra.items() if b.endswith(("c_fc.weight", "mlp.c_proj.weight")))
    assert rest / qk > 100, f"MLP λ_max {rest:.2e} vs Q/K {qk:.2e}"
    assert het.scale_spread(spectra) > 2


def test_slq_block_spectra_match_exact_eigenvalues(tmp_path):
    check = het.check_against_exact("vgg16", "smoke", max_dim=300, cache=tmp_path)
    assert len(check) >= 1
    assert check.rel_error.max() < 1e-4, check


def test_sampled_blocks_follow_the_paper_presets():
    from hesslab.experiments.models import build

    assert het.sampled_blocks("gpt2", build("gpt2", "smoke")) == "gpt2-paper"
    assert het.sampled_blocks("vit-base", build("vit-base", "smoke")) == "vit-paper"
    blocks = het.sampled_blocks("vgg16", build("vgg16", "smoke"))
    assert blocks and all(not b.endswith("bias") for b in blocks)


def test_representative_bert_blocks_are_first_layer_qkv_and_mlp(tmp_path):
    spectra = het.blockwise_at_init("bert", "smoke", cache=tmp_path, progress=False)
    picked = het.representative_blocks("bert", spectra)
    assert [p.split(".")[-2] for p in picked] == ["query", "key", "value", "dense"]


def test_convergence_study_and_probe_spread(tmp_path):
    study = het.convergence_study("gpt2-nano", "smoke", batches=(1, 2), steps=(5, 10), probes=(1, 2, 4),
                                  cache=tmp_path, progress=False)
    assert list(study.setting) == ["batches", "batches", "steps", "steps", "probes", "probes", "probes"]
    assert list(study.tokens[:2]) == [4 * 16, 2 * 4 * 16]
    # the (2 batches, 10 steps) run is the profile's own setting: the same number twice
    assert study.js0[1] == study.js0[3]
    assert (study.probe_sd >= 0).all() and np.isfinite(study.js0).all()
    # all 4 probes in one group: no spread, and the value is the all-probe JS⁰ of that run
    spectra = het.blockwise_at_init("gpt2-nano", "smoke", num_probes=4, cache=tmp_path, progress=False)
    assert study.probe_sd.iloc[-1] == 0 and study.js0.iloc[-1] == pytest.approx(het.js0_variants(spectra)["log"])
    with pytest.raises(ValueError, match="group"):
        het.probe_spread(spectra, 5)


def test_table_and_errors(tmp_path):
    long = het.js0_over_seeds(["vgg16", "gpt2-nano"], "smoke", seeds=(0,), cache=tmp_path, progress=False)
    table = het.seed_summary(long)
    assert list(table.family) == ["cnn", "transformer"] and list(long.seed) == [0, 0]
    bounded = [f"js0_{v}_mean" for v in ("log", "linear", "lambda10")]
    assert (table[bounded] <= np.log(2)).all().all() and (table[bounded] >= 0).all().all()
    assert table.loc["vgg16", "paper"] == 0.09
    with pytest.raises(ValueError, match="unknown profile"):
        het.blockwise_at_init("vgg16", "laptop")


def _long_table(cnn, transformer, noise=0.01, seeds=3):
    """A constructed JS⁰-over-seeds table: CNN and Transformer JS⁰ levels with seed noise."""
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    for (model, family, level) in [("resnet18", "cnn", cnn), ("vgg16", "cnn", cnn),
                                   ("bert", "transformer", transformer), ("gpt2", "transformer", transformer)]:
        for seed in range(seeds):
            values = {f"js0_{variant}": level * (1 + noise * rng.standard_normal()) for variant in het.JS_VARIANTS}
            rows.append({"model": model, "seed": seed, "family": family, "blocks": 4, **values, "scale_spread": 1.0})
    return pd.DataFrame(rows)


def test_table1_report_says_does_not_reproduce_when_cnns_are_not_below_transformers():
    report = het.table1_report(_long_table(cnn=0.3, transformer=0.2), "constructed")
    assert "does **not** reproduce beyond the seed spread" in report.splitlines()[-1]
    assert "**reproduces**" not in report


def test_table1_report_within_the_seed_spread_is_not_a_reproduction():
    report = het.table1_report(_long_table(cnn=0.30, transformer=0.31, noise=0.2), "constructed")
    assert "does **not** reproduce" in report.splitlines()[-1]


def test_table1_report_reproduces_a_clear_separation_and_judges_its_magnitude():
    report = het.table1_report(_long_table(cnn=0.1, transformer=30.0), "constructed")
    assert report.splitlines()[-1].endswith("**reproduces**.")
    assert "reaches the paper's order of magnitude" in report
    small = het.table1_report(_long_table(cnn=0.1, transformer=0.3), "constructed")
    assert small.splitlines()[-1].endswith("**reproduces**.") and "falls far short" in small


def test_headline_variant_is_the_most_reproducible_over_seeds():
    long = _long_table(cnn=0.1, transformer=0.3, noise=0.2)
    long["js0_lambda10"] = np.where(long.family == "cnn", 0.1, 0.3)  # no seed spread at all
    assert het.headline_variant(long) == "lambda10"
    with pytest.raises(ValueError, match="2 seeds"):
        het.headline_variant(_long_table(0.1, 0.3, seeds=1))


def test_seed_summary_and_separation():
    long = _long_table(cnn=0.1, transformer=0.3, noise=0.0)
    summary = het.seed_summary(long)
    assert list(summary.index) == ["resnet18", "vgg16", "bert", "gpt2"]
    assert summary.loc["bert", "js0_log_mean"] == pytest.approx(0.3) and summary.loc["bert", "js0_log_sd"] == 0
    assert summary.loc["vgg16", "paper"] == 0.09 and np.isnan(summary.loc["gpt2", "paper"])
    assert het.separation(long, "log").ratio.tolist() == pytest.approx([3.0] * 3)
    assert het.paper_separation() == pytest.approx(18.84 / 0.10)
