"""The book's cost planner: workloads per chapter, pricing, and the runner's --dry-run."""

import numpy as np

from hesslab.book.runner import chapter_parameters, main
from hesslab.experiments.gap import STAGES
from hesslab.experiments.planning import chapter_summary, chapter_workloads, plan_book, totals


def test_workloads_follow_the_chapters_parameters():
    full = chapter_workloads("full_spectra", {"models": ["resnet18", "bert"]})
    assert [(w.model, w.kind) for w in full] == [("resnet18", "train"), ("bert", "train"), ("resnet18", "slq"),
                                                ("bert", "slq"), ("bert", "blockwise_slq")]
    assert dict(full[3].options) == {"stages": len(STAGES), "seed": 0}
    conv = chapter_workloads("convergence", {"models": ["vgg16"], "batches": [1, 2], "steps": [5], "probes": [1, 4],
                                             "seed": 3})
    assert [w.options for w in conv] == [(("num_batches", 1), ("seed", 3)), (("num_batches", 2), ("seed", 3)),
                                        (("num_steps", 5), ("seed", 3)), (("num_probes", 4), ("seed", 3))]
    # every computation once per seed
    gap = chapter_workloads("gap", {"models": ["vgg16", "bert"], "seeds": [0, 1, 2]})
    assert sorted((w.model, dict(w.options)["seed"]) for w in gap) == [(m, s) for m in ("bert", "vgg16") for s in range(3)]
    assert chapter_workloads("quadratic", {"models": []}) == []


def test_plan_book_prices_each_computation_once():
    chapters = {"heterogeneity": {"models": ["hetero-mlp"]}, "js0_gap": {"models": ["hetero-mlp"]},
                "quadratic": {}}
    table = plan_book(chapters, "smoke", device="cpu", progress=False)
    het = table[table.chapter == "heterogeneity"].iloc[0]
    assert het.kind == "blockwise_slq" and het.HVPs > 0 and het.hours > 0 and het["basis GiB"] > 0
    later = table[(table.chapter == "js0_gap") & (table.kind == "blockwise_slq")].iloc[0]
    assert later.HVPs == 0 and later.hours == 0 and "cached" in later.note
    train = table[(table.chapter == "js0_gap") & (table.kind == "train")].iloc[0]
    assert train.hours > 0 and "runs" in train.note
    assert np.isnan(table[table.chapter == "quadratic"].hours.iloc[0])
    assert totals(table)["total"] == table.hours.sum()
    summary = chapter_summary(table).set_index("chapter")
    assert summary.loc["total", "HVPs"] == table.HVPs.sum() and summary.loc["heterogeneity", "hours"] == het.hours
    reduced = plan_book(chapters, "smoke", device="cpu", progress=False, lanczos=(3, 1))
    assert reduced.HVPs.iloc[0] < het.HVPs


def test_dry_run_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    params = chapter_parameters("blockwise", "smoke")
    assert params["profile"] == "smoke" and params["models"]
    csv = tmp_path / "plan.csv"
    assert main(["run", "--profile", "smoke", "--dry-run", "--only", "blockwise", "--plan-csv", str(csv),
                 "--lanczos", "3", "1"]) == 0
    out = capsys.readouterr().out
    assert "predicted cost at profile 'smoke'" in out and "hours per chapter" in out and "m = 3, n_v = 1" in out
    assert (tmp_path / "plan-m3-n1-chapters.csv").exists()
    assert csv.read_text().startswith("chapter,model,kind")
    summary = (tmp_path / "plan-chapters.csv").read_text().splitlines()
    assert summary[0] == "chapter,HVPs,max basis GiB,max peak GiB,hours" and summary[-1].startswith("total,")
    assert not (tmp_path / "executed").exists()
