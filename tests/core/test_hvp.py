"""HessianOperator against the exact dense Hessian on tiny float64 models."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cases import Problem, exact_hessian, tiny_cnn, tiny_gpt2, tiny_mlp
from hesslab import HessianOperator

METHODS = ["reverse", "forward", "auto"]


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("method", METHODS)
def test_hvp_equals_dense_hessian_times_vector(case, method):
    H = exact_hessian(case)
    op = HessianOperator(case.model, case.loss_fn, case.data, method=method)
    assert op.dim == H.shape[0]
    g = torch.Generator().manual_seed(1)
    V = torch.randn(3, op.dim, generator=g, dtype=torch.float64)
    err_single = rel_err(op.matvec(V[0]), H @ V[0])
    err_batched = rel_err(op @ V, V @ H)
    assert err_single < 1e-10, f"{case.name}/{method}: single HVP rel. error {err_single:.2e}"
    assert err_batched < 1e-10, f"{case.name}/{method}: batched HVP rel. error {err_batched:.2e}"


def test_batched_matvec_equals_loop_of_single_ones(case):
    op = HessianOperator(case.model, case.loss_fn, case.data)
    V = torch.randn(4, op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    loop = torch.stack([op.matvec(v) for v in V])
    assert rel_err(op.matvec(V), loop) < 1e-12


def test_multibatch_accumulation_equals_one_big_batch():
    case = tiny_mlp()
    # unequal batch sizes: the mean must weight each batch by its size
    x = torch.cat([b[0] for b in case.data])
    y = torch.cat([b[1] for b in case.data])
    uneven = [(x[:2], y[:2]), (x[2:11], y[2:11]), (x[11:], y[11:])]
    big = HessianOperator(case.model, case.loss_fn, [(x, y)])
    split = HessianOperator(case.model, case.loss_fn, uneven)
    v = torch.randn(big.dim, dtype=torch.float64)
    assert rel_err(split @ v, big @ v) < 1e-12


def test_graph_reused_then_invalidated_when_parameters_change():
    case = tiny_mlp()
    op = HessianOperator(case.model, case.loss_fn, case.data, method="reverse")
    v = torch.randn(op.dim, dtype=torch.float64)
    op @ v
    assert len(op.graphs) == len(case.data), "graphs should be retained within the budget"
    with torch.no_grad():  # an optimiser step changes the parameters in place
        for p in case.model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    H_new = exact_hessian(case)
    assert rel_err(op @ v, H_new @ v) < 1e-10, "stale graph used after a parameter update"


def test_zero_graph_budget_recomputes_with_same_result():
    case = tiny_gpt2()
    v = torch.randn(sum(p.numel() for p in case.model.parameters()), dtype=torch.float64)
    kept = HessianOperator(case.model, case.loss_fn, case.data, method="reverse")
    fresh = HessianOperator(case.model, case.loss_fn, case.data, method="reverse", graph_memory_budget=0)
    assert rel_err(fresh @ v, kept @ v) < 1e-12
    assert len(fresh.graphs) == 0 and len(kept.graphs) == len(case.data)


def test_batchnorm_train_mode_uses_batch_statistics_without_touching_buffers():
    case = tiny_cnn()
    case.batchnorm = "train"
    buffers = {k: b.clone() for k, b in case.model.named_buffers()}
    H = exact_hessian(case)
    op = HessianOperator(case.model, case.loss_fn, case.data, batchnorm="train")
    v = torch.randn(op.dim, dtype=torch.float64)
    assert rel_err(op @ v, H @ v) < 1e-10
    H_eval = exact_hessian(Problem("cnn", case.model, case.loss_fn, case.data, "eval"))
    assert rel_err(H_eval @ v, H @ v) > 1e-3, "batch-norm mode should change the Hessian"
    for k, b in case.model.named_buffers():
        assert torch.equal(b, buffers[k]), f"buffer {k} was modified"


def test_train_eval_state_is_restored():
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    model.train()
    data = [(torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,)))]
    op = HessianOperator(model, F.cross_entropy, data, batchnorm="train")
    v = torch.randn(op.dim, dtype=torch.float64)
    hv1, hv2 = op @ v, op @ v
    assert torch.equal(hv1, hv2), "dropout must be off while measuring"
    assert all(m.training for m in model.modules())
    assert model[2].track_running_stats


def test_forward_mode_is_exact_on_layernorm_weights():
    """Regression: jvp-of-jacrev through F.layer_norm gave wrong LayerNorm-weight
    entries on current torch; jvp of grad (what we use) must stay exact."""
    case = tiny_gpt2(n_layer=2)
    names = [n for n, _ in case.model.named_parameters() if ".ln_" in n or "ln_f" in n]
    H = exact_hessian(case, names)
    op = HessianOperator(case.model, case.loss_fn, case.data, params=names, method="forward")
    V = torch.randn(3, op.dim, dtype=torch.float64)
    err = rel_err(op @ V, V @ H)
    assert err < 1e-10, f"forward-over-reverse on LayerNorm weights: rel. error {err:.2e}"


def test_float32_model_matches_float64_reference():
    case = tiny_mlp()
    H = exact_hessian(case)
    model32 = copy.deepcopy(case.model).float()
    data32 = [(x.float(), y) for x, y in case.data]
    op = HessianOperator(model32, case.loss_fn, data32)
    v = torch.randn(op.dim, dtype=torch.float64)
    assert rel_err((op @ v.float()).double(), H @ v) < 1e-5


def test_params_subset_gives_principal_submatrix():
    case = tiny_mlp()
    H = exact_hessian(case)
    op = HessianOperator(case.model, case.loss_fn, case.data, params=["2.weight", "0.bias"])
    # model order, not the order given: 0.bias (6 entries) comes before 2.weight (18)
    idx = torch.cat([torch.arange(30, 36), torch.arange(36, 54)])
    v = torch.randn(op.dim, dtype=torch.float64)
    assert rel_err(op @ v, H[idx][:, idx] @ v) < 1e-10


def test_dense_is_symmetric_and_equals_reference():
    case = tiny_cnn()
    H = exact_hessian(case)
    D = HessianOperator(case.model, case.loss_fn, case.data).dense()
    assert rel_err(D, H) < 1e-10
    assert rel_err(D, D.T) < 1e-12
