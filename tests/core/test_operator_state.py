"""No silently stale or random operator: weight changes, changing data, the graph budget, TF32, attention kernels."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cases import Problem, exact_hessian, tiny_cnn, tiny_mlp
from hesslab import HessianOperator
from hesslab.hvp import DataChangedError, ModelChangedError


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def _retained_operator(case):
    op = HessianOperator(case.model, case.loss_fn, case.data, method="reverse")
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    op @ v
    assert len(op.graphs) == len(case.data), "the test needs retained graphs"
    return op, v


def _shift_data_attribute(model):
    for p in model.parameters():
        p.data.add_(0.3)  # does not bump p._version


def _load_state_dict(model):
    model.load_state_dict({k: v + 0.3 for k, v in model.state_dict().items()})


def _optimizer_step(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()


def _no_grad_copy(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p * 1.3)


def _running_stats(model):
    with torch.no_grad():
        model[1].running_var.data.mul_(2.0)


@pytest.mark.parametrize("change", [_shift_data_attribute, _load_state_dict, _optimizer_step, _no_grad_copy])
def test_product_after_any_weight_change_equals_the_new_exact_hessian(change):
    case = tiny_mlp()
    op, v = _retained_operator(case)
    change(case.model)
    H_new = exact_hessian(case)
    assert rel_err(op @ v, H_new @ v) < 1e-10


def test_changed_batchnorm_buffers_rebuild_the_graphs():
    case = tiny_cnn()
    op, v = _retained_operator(case)
    _running_stats(case.model)
    assert rel_err(op @ v, exact_hessian(case) @ v) < 1e-10


def test_replaced_or_converted_parameters_are_refused():
    case = tiny_mlp()
    op, v = _retained_operator(case)
    case.model[0].weight = nn.Parameter(case.model[0].weight.detach().clone())
    with pytest.raises(ModelChangedError, match="replaced"):
        op @ v
    case = tiny_mlp()
    op, v = _retained_operator(case)
    case.model.float()
    with pytest.raises(ModelChangedError, match="float32"):
        op @ v


def _loader_problem(**loader_kwargs):
    case = tiny_mlp()
    x = torch.cat([b[0] for b in case.data])
    y = torch.cat([b[1] for b in case.data])
    return case, DataLoader(TensorDataset(x, y), batch_size=5, **loader_kwargs)


def test_shuffling_dataloader_is_refused_and_sequential_one_is_exact():
    case, loader = _loader_problem(shuffle=True)
    with pytest.raises(TypeError, match="shuffle=False"):
        HessianOperator(case.model, case.loss_fn, loader)
    case, loader = _loader_problem(shuffle=False)
    op = HessianOperator(case.model, case.loss_fn, loader, method="reverse")
    v = torch.randn(op.dim, dtype=torch.float64)
    H = exact_hessian(Problem("mlp", case.model, case.loss_fn, list(loader)))
    for _ in range(3):
        assert rel_err(op @ v, H @ v) < 1e-10


class _Reshuffled:
    """A re-iterable that yields its batches in a new random order on every pass (a sampler in disguise)."""

    def __init__(self, batches):
        self.batches, self.g = batches, torch.Generator().manual_seed(0)

    def __iter__(self):
        return iter([self.batches[i] for i in torch.randperm(len(self.batches), generator=self.g)])


class _Augmented:
    """A re-iterable that adds fresh noise to the inputs on every pass (random augmentation)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter([(x + 0.1 * torch.randn_like(x), y) for x, y in self.batches])


class _Growing:
    """A re-iterable whose number of batches changes between passes."""

    def __init__(self, batches):
        self.batches, self.calls = batches, 0

    def __iter__(self):
        self.calls += 1
        return iter(self.batches[: len(self.batches) - (self.calls > 1)])


@pytest.mark.parametrize("wrapper", [_Reshuffled, _Augmented, _Growing])
@pytest.mark.parametrize("budget", [None, 0])
def test_data_that_changes_between_passes_is_refused(wrapper, budget):
    case = tiny_mlp()
    op = HessianOperator(case.model, case.loss_fn, wrapper(case.data), method="reverse",
                         graph_memory_budget=budget)
    v = torch.randn(op.dim, dtype=torch.float64)
    op @ v
    with pytest.raises(DataChangedError, match="list"):
        for _ in range(5):  # a reshuffle may repeat the first order once by chance
            op @ v


def test_graph_budget_counts_retained_gradients_and_the_weight_copy():
    case = tiny_mlp()
    param_bytes = sum(p.numel() * p.element_size() for p in case.model.parameters())
    op, _ = _retained_operator(case)
    # per batch one parameter-sized set of gradients, plus one copy of the weights
    assert op.retained_bytes >= (len(case.data) + 1) * param_bytes
    per_graph = [g.nbytes for g in op.graphs.values()]
    assert all(b >= param_bytes for b in per_graph)
    # a budget that fits only the saved activations retains nothing
    activations = max(per_graph) - param_bytes
    tight = HessianOperator(case.model, case.loss_fn, case.data, method="reverse", graph_memory_budget=activations)
    v = torch.randn(tight.dim, dtype=torch.float64)
    assert rel_err(tight @ v, op @ v) < 1e-12
    assert not len(tight.graphs) and tight.retained_bytes == 0


_TF32_SCRIPT = textwrap.dedent("""
    import torch, torch.nn.functional as F
    from torch import nn
    from hesslab import HessianOperator

    B = torch.backends
    NEW = [B, B.cuda.matmul, B.cudnn, B.cudnn.conv, B.cudnn.rnn, B.mkldnn, B.mkldnn.matmul, B.mkldnn.conv,
           B.mkldnn.rnn]

    def state():  # read only the API this torch has (reading the legacy flags may raise on torch >= 2.9)
        if hasattr(B.cuda.matmul, "fp32_precision"):
            return [o.fp32_precision for o in NEW]
        return [B.cuda.matmul.allow_tf32, B.cudnn.allow_tf32, torch.get_float32_matmul_precision()]

    {setup}
    before = state()
    seen = []
    def loss(out, y):
        seen.append(state())
        return F.cross_entropy(out, y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    data = [(torch.randn(6, 4), torch.randint(0, 3, (6,)))]
    for method in ("reverse", "forward"):
        op = HessianOperator(model, loss, data, method=method)
        hv = op @ torch.ones(op.dim)
        assert torch.isfinite(hv).all()
    assert state() == before, (state(), before)
    assert seen and all(set(s) <= {{"ieee", False, "highest"}} for s in seen), seen
    {check}
    print("OK")
""")


@pytest.mark.parametrize("setup, check", [
    # the legacy API, as older code and many scripts use it
    ("torch.backends.cuda.matmul.allow_tf32 = True\ntorch.backends.cudnn.allow_tf32 = True",
     "assert torch.backends.cuda.matmul.allow_tf32 is True"),
    ("torch.set_float32_matmul_precision('medium')", "assert torch.get_float32_matmul_precision() == 'medium'"),
    # the new API of torch >= 2.9 (a user turning TF32 off; transformers' TrainingArguments(tf32=...))
    ("torch.backends.fp32_precision = 'ieee'", "assert torch.backends.fp32_precision == 'ieee'"),
    ("torch.backends.cuda.matmul.fp32_precision = 'tf32'\ntorch.backends.mkldnn.matmul.fp32_precision = 'bf16'",
     "assert torch.backends.mkldnn.matmul.fp32_precision == 'bf16'"),
], ids=["legacy-allow_tf32", "legacy-matmul-precision", "new-ieee", "new-tf32-bf16"])
def test_hvp_works_under_either_tf32_api_measures_in_ieee_and_restores_exactly(setup, check):
    if not hasattr(torch.backends.cuda.matmul, "fp32_precision") and "fp32_precision" in setup:
        pytest.skip(f"torch {torch.__version__} has no fp32_precision API")
    script = _TF32_SCRIPT.format(setup=setup, check=check)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


def _attention_problem(module, make_inputs, loss):
    torch.manual_seed(0)
    model = module.double()
    g = torch.Generator().manual_seed(1)
    data = [make_inputs(g) for _ in range(2)]
    return Problem(type(module).__name__, model, loss, data)


class _MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def _pooled_encoder(norm_first):
    return nn.Sequential(nn.TransformerEncoderLayer(8, 2, 12, dropout=0.0, batch_first=True, norm_first=norm_first),
                         nn.Flatten(), nn.Linear(8 * 4, 3))


def _vectors(g):
    return torch.randn(3, 4, 8, generator=g, dtype=torch.float64), torch.randint(0, 3, (3,), generator=g)


@pytest.mark.parametrize("build", [lambda: _pooled_encoder(False), lambda: _pooled_encoder(True), _MHA],
                         ids=["post-ln-encoder", "pre-ln-encoder", "multihead-attention"])
@pytest.mark.parametrize("method", ["reverse", "forward", "auto"])
def test_pytorch_attention_modules_with_default_kernels_are_exact(build, method):
    problem = _attention_problem(build(), _vectors, F.cross_entropy)
    H = exact_hessian(problem)
    op = HessianOperator(problem.model, problem.loss_fn, problem.data, method=method)
    V = torch.randn(2, op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert rel_err(op @ V, V @ H) < 1e-10
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()  # user's choice back


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_hugging_face_models_with_sdpa_attention_are_exact(family):
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    from hesslab.experiments.models import lm_loss, mlm_loss

    torch.manual_seed(0)
    if family == "gpt2":
        config = GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0)
        model, loss = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa"), lm_loss
    else:
        config = BertConfig(vocab_size=11, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=12, max_position_embeddings=8, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
        model, loss = BertForMaskedLM._from_config(config, attn_implementation="sdpa"), mlm_loss
    assert model.config._attn_implementation == "sdpa"

    def batch(g):
        tokens = torch.randint(0, 11, (2, 6), generator=g)
        return tokens[:, :-1], tokens[:, 1:]

    problem = _attention_problem(model, batch, loss)
    H = exact_hessian(problem)
    op = HessianOperator(problem.model, problem.loss_fn, problem.data)
    v = torch.randn(op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert rel_err(op @ v, H @ v) < 1e-10
