"""The cost planner counts what the computations do."""

import pytest
import torch

from cases import tiny_gpt2, tiny_mlp
from hesslab import blockwise_slq, slq
from hesslab.hvp import HessianOperator
from hesslab.memory import lanczos_bytes
from hesslab.plan import calibrate, plan


def test_blockwise_plan_counts_the_products_passes_and_basis_of_the_run():
    case = tiny_mlp()
    kw = dict(num_steps=6, num_probes=3)
    predicted = plan(case.model, case.loss_fn, case.data, **kw)
    run = blockwise_slq(case.model, case.loss_fn, case.data, seed=1, progress=False, **kw)
    assert predicted.blocks == len(run)
    assert predicted.passes == next(iter(run.values())).info["data_passes"]
    assert predicted.products == sum(min(6, d.dim) * 3 for d in run.values()) + 3 * len(run)
    assert predicted.basis_bytes == sum(lanczos_bytes(d.dim, 6, 3, torch.float64) for d in run.values())
    assert predicted.batches == len(case.data) and predicted.seconds > 0
    assert predicted.peak_bytes > predicted.basis_bytes
    row = predicted.row()
    assert row["HVPs"] == predicted.products and "float64" in row["basis"]


def test_full_plan_follows_the_memory_budget_and_a_given_calibration():
    case = tiny_gpt2()
    cal = calibrate(case.model, case.loss_fn, case.data[0], examples=1)
    assert cal.examples == 1 and cal.product_s > 0 and cal.graph_bytes > 0 and cal.bandwidth > 0
    dim = sum(p.numel() for p in case.model.parameters())
    budget = lanczos_bytes(dim, 8, 2, torch.float64)
    predicted = plan(case.model, case.loss_fn, case.data, kind="slq", num_steps=8, num_probes=5,
                     memory_budget=budget, calibration=cal)
    run = slq(HessianOperator(case.model, case.loss_fn, case.data), num_steps=8, num_probes=5,
              memory_budget=budget, progress=False)
    assert run.info["probe_chunk"] == 2
    assert predicted.passes == 3 * 8 + 1 and predicted.products == 5 * 8 + 3
    assert predicted.basis_bytes == budget and predicted.calibration is cal
    assert "2 probe(s) at a time" in predicted.basis[0]


def test_plan_flags_a_basis_that_fits_nowhere_instead_of_failing():
    case = tiny_mlp()
    predicted = plan(case.model, case.loss_fn, case.data, num_steps=6, num_probes=3, memory_budget=100)
    assert any("DOES NOT FIT" in line for line in predicted.basis)
    assert predicted.seconds > 0


def test_plan_refuses_unknown_kinds_and_empty_data():
    case = tiny_mlp()
    with pytest.raises(ValueError, match="kind"):
        plan(case.model, case.loss_fn, case.data, kind="dense")
    with pytest.raises(ValueError, match="no batches"):
        plan(case.model, case.loss_fn, [])
