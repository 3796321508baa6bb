"""``hesslab diagnose``: real verdicts on tiny float64 models, the three model routes, the report, the errors.

Every run here is small (a few thousand parameters, ≤ 20 Lanczos steps) and writes its
cache, if any, under ``tmp_path`` (``HESSLAB_CACHE``), never into the repository.
"""

from __future__ import annotations

import json
import math
import runpy
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from hesslab import HessianOperator, exact_block_eigenvalues
from hesslab.experiments import diagnose as dg

ROOT = Path(__file__).resolve().parents[2]

#: a tiny float64 MLP with its data, as a user's Python file
MLP_FILE = '''
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def loss_fn(outputs, targets):
    return F.cross_entropy(outputs, targets)


g = torch.Generator().manual_seed(1)
data = [(torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g))
        for _ in range(2)]
'''

#: the same model without data
NO_DATA_FILE = MLP_FILE.split("g = torch.Generator")[0]

#: a loss that is NaN
NAN_FILE = MLP_FILE.replace("return F.cross_entropy(outputs, targets)",
                            "return F.cross_entropy(outputs * float('nan'), targets)")

#: an operation with a first derivative only (as a fused attention kernel): no double backward, no forward AD
UNSUPPORTED_FILE = '''
import torch
import torch.nn.functional as F
from torch import nn


class KernelBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, grad, x):
        return grad * (1 - x.tanh() ** 2)

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError("derivative for aten::_efficient_attention_backward is not implemented")


class FusedLike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.tanh()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return KernelBackward.apply(grad, x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(5, 4)

    def forward(self, x):
        return self.b(FusedLike.apply(self.a(x)))


torch.manual_seed(0)
model = Net().double()


def loss_fn(outputs, targets):
    return F.cross_entropy(outputs, targets)


data = [(torch.randn(8, 6, dtype=torch.float64), torch.randint(0, 3, (8,)))]
'''


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("HESSLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: these models are far too small to gain from two, and on a shared machine
    two threads per process made the ResNet run 10× slower (measured: spectra 1.8 s vs 25 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """The MLP file diagnosed once (steps ≥ every block's dimension): its file, output folder and report."""
    folder = tmp_path_factory.mktemp("mlp")
    path = _write(folder, "mlp.py", MLP_FILE)
    out = folder / "out"
    report = dg.diagnose(path, blocks=["0.weight", "2.weight", "4.weight"], out=out, steps=30, probes=3,
                         cache=False, progress=False, echo=None)
    return path, out, report


def test_python_file_route_reports_its_own_data_and_blocks(mlp_run):
    _, out, report = mlp_run
    assert report["model"]["source"] == "python-file" and report["model"]["name"] == "mlp"
    assert report["data"] == {"source": "module", "synthetic": False, "description": "`data` of mlp.py",
                              "batches": 2, "examples": 32}
    assert [b["name"] for b in report["blocks"]] == ["0.weight", "2.weight", "4.weight"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "summary.png"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "a temporary folder was left"


def test_lambda_max_is_the_exact_block_eigenvalue(mlp_run):
    """With m = 30 Lanczos steps ≥ every block's dimension (30, 20, 12) and full reorthogonalisation
    the Krylov space of each probe is the whole block, so the largest Ritz value is λ_max up to rounding
    (float64: 1e-9 of the spectral norm is a wide margin); λ_min likewise."""
    path, _, report = mlp_run
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    op = HessianOperator(namespace["model"], namespace["loss_fn"], namespace["data"])
    exact = exact_block_eigenvalues(op, ["0.weight", "2.weight", "4.weight"])
    for row in report["blocks"]:
        eig = exact[row["name"]]
        scale = np.abs(eig).max()
        assert row["dim"] == len(eig)
        assert abs(row["lambda_max"] - eig[-1]) <= 1e-9 * scale, row["name"]
        assert abs(row["lambda_min"] - eig[0]) <= 1e-9 * scale, row["name"]
        assert eig[0] - 1e-9 * scale <= row["lambda_10"] <= eig[-1] + 1e-9 * scale


def test_gradient_norms_are_the_blocks_parts_of_the_mean_gradient(mlp_run):
    path, _, report = mlp_run
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    model, loss_fn, data = namespace["model"], namespace["loss_fn"], namespace["data"]
    loss = sum(loss_fn(model(x), y) * len(y) for x, y in data) / sum(len(y) for _, y in data)
    grads = dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(loss, list(model.parameters()))))
    for row in report["blocks"]:
        assert row["gradient_norm"] == pytest.approx(float(grads[row["name"]].norm()), rel=1e-12)


def test_report_json_schema(mlp_run):
    _, out, report = mlp_run
    stored = json.loads((out / "report.json").read_text())
    assert stored["schema"] == "hesslab.diagnose/1"
    assert {"schema", "hesslab_version", "created_utc", "model", "data", "settings", "plan", "blocks", "js", "js0",
            "gradient_heterogeneity", "curvature_spread", "verdict", "timings_s", "figures", "figures_note",
            "notes"} <= set(stored)
    assert {"name", "dim", "lambda_max", "lambda_10", "lambda_min", "gradient_norm", "zero_gradient_fraction",
            "suggested_lr"} == set(stored["blocks"][0])
    assert all(b["zero_gradient_fraction"] == 0 for b in stored["blocks"])
    assert {"value", "per_probe", "probe_mean", "probe_sd"} == set(stored["js0"])
    assert len(stored["js0"]["per_probe"]) == 3
    assert stored["js0"]["probe_sd"] == pytest.approx(np.std(stored["js0"]["per_probe"], ddof=1))
    matrix = np.array(stored["js"]["matrix"])
    assert matrix.shape == (3, 3) and np.allclose(matrix, matrix.T) and np.all(np.diag(matrix) == 0)
    assert stored["js0"]["value"] == pytest.approx(matrix[np.triu_indices(3, 1)].mean())
    assert stored["verdict"]["label"] in ("heterogeneous", "homogeneous", "inconclusive")
    assert stored["verdict"]["threshold"] == dg.THRESHOLD
    assert stored["plan"]["products"] > 0 and stored["settings"]["js_variant"] == "log"
    assert stored["figures"] == ["summary.png"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and stored["verdict"]["text"][:40] in html.replace("&#x27;", "'")


@pytest.mark.parametrize("name, expected", [("resnet18", "homogeneous"), ("gpt2-nano", "heterogeneous")])
def test_tiny_cnn_is_homogeneous_and_tiny_transformer_heterogeneous(name, expected, tmp_path):
    """Smoke-size zoo models at initialisation on the book's data, float64, 10 steps, 4 probes.

    Measured before asserting (seeds 0 and 1, JS⁰ log variant): ResNet-18 0.12 and 0.09,
    VGG-16 0.06 and 0.08; GPT-2-nano 0.40 and 0.36, GPT-2 0.34, BERT 0.41 and 0.40, ViT 0.39
    and 0.29, per-probe spreads ≤ 0.01 except ViT; the threshold is 0.18.
    """
    report = dg.diagnose(name, out=tmp_path / "out", dtype="float64", steps=10, probes=4, cache=False,
                         progress=False, echo=None)
    assert report["verdict"]["label"] == expected, report["verdict"]["text"]
    assert report["data"]["source"] == "book" and not report["data"]["synthetic"]
    lrs = [b["suggested_lr"] for b in report["blocks"]]
    if expected == "heterogeneous":
        stiffest = max(report["blocks"], key=lambda b: b["lambda_max"])
        assert stiffest["suggested_lr"] == pytest.approx(1 / stiffest["lambda_max"])
        assert all(lr >= stiffest["suggested_lr"] for lr in lrs if lr is not None)
    else:
        assert lrs == [None] * len(lrs)


def test_huggingface_checkpoint_through_the_cli(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "out"
    rc = dg.main([str(tmp_path / "ckpt"), "--out", str(out), "--steps", "8", "--probes", "2", "--batches", "1",
                  "--dtype", "float64", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["source"] == "huggingface" and report["model"]["class"] == "GPT2LMHeadModel"
    assert report["data"]["synthetic"] and report["data"]["batches"] == 1
    assert "RANDOM INPUTS" in printed and "RANDOM INPUTS" in report["notes"][0]
    assert "RANDOM INPUTS" in (out / "report.html").read_text()
    assert [b["name"] for b in report["blocks"]][:2] == ["transformer.wte.weight", "transformer.h.0.attn.q"]
    assert report["settings"]["cache"] is True


def _python_m_hesslab(args, monkeypatch, cwd) -> int:
    """``python -m hesslab diagnose ARGS`` in this process (``hesslab/__main__.py``): its exit code."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["hesslab", "diagnose", *args])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("hesslab", run_name="__main__", alter_sys=True)
    return exit_.value.code


def test_dry_run_prints_the_plan_and_computes_nothing(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path, "mlp.py", MLP_FILE)
    code = _python_m_hesslab([str(path), "--dry-run", "--blocks", "0.weight", "2.weight"], monkeypatch, tmp_path)
    printed = capsys.readouterr().out
    assert code == 0
    assert "HVPs" in printed and "peak" in printed and "dry run" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.py"]  # no output folder, no cache


def _no_weights(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=16, n_head=2).save_pretrained(tmp_path / "ckpt")
    return str(tmp_path / "ckpt")


ERRORS = {  # case -> (MODEL from tmp_path, message, extra arguments)
    "unknown name": (lambda t: "no-such-model", "unknown model 'no-such-model'", []),
    "missing path": (lambda t: str(t / "missing" / "model.py"), "no such file or directory", []),
    "checkpoint without weights": (_no_weights, "checkpoint without weights", []),
    "non-finite loss": (lambda t: str(_write(t, "nan.py", NAN_FILE)), "non-finite loss", []),
    "no data": (lambda t: str(_write(t, "nodata.py", NO_DATA_FILE)), "no data for nodata", []),
    "no double backward": (lambda t: str(_write(t, "fused.py", UNSUPPORTED_FILE)), "without double backward", []),
    "preset of another model": (lambda t: str(_write(t, "mlp.py", MLP_FILE)), "--blocks: the 'gpt2-qkv'",
                                ["--blocks", "gpt2-qkv"]),
    "unknown parameter": (lambda t: str(_write(t, "mlp.py", MLP_FILE)), "parameters the model does not have: nope",
                          ["--blocks", "nope", "0.weight"]),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_errors_exit_2_with_one_line_and_leave_nothing(case, tmp_path, capsys):
    make, message, extra = ERRORS[case]
    model = make(tmp_path)
    out = tmp_path / "out"
    rc = dg.main([model, "--out", str(out), "--steps", "5", "--probes", "2", "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and err.startswith("hesslab diagnose: error: ") and "\n" not in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_python_m_hesslab_exits_2(tmp_path, monkeypatch, capsys):
    assert _python_m_hesslab(["no-such-model"], monkeypatch, tmp_path) == 2
    assert "unknown model" in capsys.readouterr().err


def test_eager_attention_refused_names_the_fix(tmp_path, monkeypatch):
    """A checkpoint whose class cannot run eager attention (transformers raises a ValueError)."""
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16)).save_pretrained(
        tmp_path / "ckpt")

    def refuse(*args, **kwargs):
        raise ValueError("GPT2LMHeadModel does not support an attention implementation through "
                         "attn_implementation='eager'")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    with pytest.raises(dg.DiagnoseError, match="cannot run with attn_implementation='eager'.*double backward"):
        dg.load_target(str(tmp_path / "ckpt"))


def test_a_failure_while_writing_leaves_the_previous_output_and_no_temporary(mlp_run, tmp_path, monkeypatch):
    path, _, _ = mlp_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(dg, "_html", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        dg.diagnose(path, blocks=["0.weight", "2.weight"], out=out, steps=5, probes=2, cache=False, progress=False,
                    echo=None)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_data_file_and_batches(tmp_path):
    path = _write(tmp_path, "nodata.py", NO_DATA_FILE)
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(4, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g))
               for _ in range(3)]
    torch.save(batches, tmp_path / "data.pt")
    report = dg.diagnose(path, data=tmp_path / "data.pt", batches=2, blocks=["all"], out=tmp_path / "out", steps=5,
                         probes=2, cache=False, progress=False, echo=None)
    assert report["data"]["source"] == "file" and report["data"]["batches"] == 2 and report["data"]["examples"] == 8
    assert len(report["blocks"]) == 6  # one per tensor, biases included


def test_verdict_margin_rule():
    t = dg.THRESHOLD
    assert dg.verdict(t + 0.05, 0.01) == "heterogeneous"
    assert dg.verdict(t - 0.05, 0.01) == "homogeneous"
    assert dg.verdict(t + 0.01, 0.02) == "inconclusive" == dg.verdict(t - 0.01, 0.02)
    lo_cnn, hi_cnn = dg.CALIBRATION["cnn"]
    lo_tf, _ = dg.CALIBRATION["transformer"]
    assert hi_cnn < t < lo_tf and dg.CALIBRATION["mixer"][0] > t
    assert t == pytest.approx(math.sqrt(hi_cnn * lo_tf), abs=0.01)


def test_suggested_learning_rates_scale_with_inverse_curvature():
    lrs, base, stiffest = dg.suggested_learning_rates({"a": 4.0, "b": 0.5, "c": -1.0}, base_lr=0.1)
    assert stiffest == "a" and base == 0.1
    assert lrs == {"a": 0.1, "b": pytest.approx(0.8), "c": pytest.approx(0.1 * dg.FLAT_RATIO)}, "capped, as the book's rule"
    assert dg.suggested_learning_rates({"a": 4.0, "b": 2.0})[0] == {"a": 0.25, "b": 0.5}
    assert dg.suggested_learning_rates({"a": 4.0, "b": 1e-9})[0]["b"] == pytest.approx(0.25 * dg.FLAT_RATIO)
    assert dg.suggested_learning_rates({"a": -1.0, "b": float("nan")})[0] == {"a": None, "b": None}


def test_second_run_comes_from_the_cache(mlp_run, tmp_path):
    path, _, _ = mlp_run
    kwargs = dict(blocks=["0.weight", "2.weight"], steps=12, probes=2, cache=tmp_path / "store", progress=False,
                  echo=None)
    first = dg.diagnose(path, out=tmp_path / "a", **kwargs)
    assert (tmp_path / "store" / "blockwise_slq").is_dir()
    second = dg.diagnose(path, out=tmp_path / "b", **kwargs)
    assert second["blocks"] == first["blocks"] and second["js0"] == first["js0"]
    assert second["timings_s"]["spectra"] < first["timings_s"]["spectra"]


def test_without_matplotlib_the_json_is_written_and_figures_are_named_missing(mlp_run, tmp_path, monkeypatch):
    path, _, _ = mlp_run
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    report = dg.diagnose(path, blocks=["0.weight", "2.weight"], out=tmp_path / "out", steps=5, probes=2,
                         cache=False, progress=False, echo=None)
    assert report["figures"] == [] and "hesslab[book]" in report["figures_note"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.json"]
    assert "hesslab[book]" in (tmp_path / "out" / "report.html").read_text()
