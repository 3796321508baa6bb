"""Benchmark: hesslab against its peers, hessian-eigenthings 1.0.0a5 and PyHessian 0.1, side by side.

Run: ``python benchmarks/peers.py [--quick] [--repeats 3] [--threads 1] [--only slq,top,blocks]``
(``make bench`` installs both peers with ``--no-deps`` and runs this after ``benchmarks/hvp.py``).

One float32 GPT-2 (``transformers``' ``GPT2LMHeadModel``, 4 layers x 128 wide, 4 heads, eager
attention, dropout 0, vocabulary 96; :func:`hesslab.experiments.hvp_costs.benchmark_problems`),
8 sequences x 64 random tokens made here, next-token cross-entropy. Every method sees the same
model, the same batch and the same loss, and builds its own operator inside the timed call.
Three tasks:

* full-Hessian SLQ, 30 Lanczos steps x 4 probes: wall time; agreement: the largest Ritz value
  (against the reference λ_max) and the density's first two moments (``Σ τθ``, ``Σ τθ²``
  averaged over probes, i.e. ``tr H / n`` and ``tr H² / n``; stochastic, the probes differ);
* the largest eigenvalue λ_max: time and value, against a reference (hesslab's
  ``top_eigenvalues`` at ``tol=1e-8``, limited by the operator's own round-off);
* the spectra of all per-tensor blocks ``H_bb`` (one block per parameter tensor), 10 steps x
  2 probes each: hesslab's ``blockwise_slq`` against each peer running one operator per block;
  agreement: per-block largest Ritz value, median and worst relative difference to hesslab's.

Repeats are interleaved (A, B, C, A, B, C, ...) and the table shows medians; "speed-up" is
peer time / hesslab time for the same task. A peer that fails is shown with its error text
(PyHessian 0.1 calls ``torch.eig``, removed from PyTorch); the rows marked "torch.eig shim"
run PyHessian's own code with ``torch.eig`` replaced by ``torch.linalg.eigh`` (what it
computed on the symmetric tridiagonal), so its cost and answers can still be compared.

Threads: 1 by default. On a shared CPU (other jobs running) two OpenMP threads made one
gradient of this model 4 to 50 times slower and 10 times more variable than one thread; pass
``--threads 0`` for PyTorch's default on an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import platform
import statistics
import time
import traceback

import numpy as np
import pandas as pd
import torch

import hesslab
from hesslab import HessianOperator, blockwise_slq, slq, top_eigenvalues
from hesslab.experiments.hvp_costs import benchmark_problems
from hesslab.experiments.models import lm_loss

SLQ_STEPS, SLQ_PROBES = 30, 4
BLOCK_STEPS, BLOCK_PROBES = 10, 2


# ----------------------------------------------------------------------------- peers' set-up
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _he_loss(model, batch):
    """hessian-eigenthings' ``loss_fn(model, batch)`` for our ``(tokens, targets)`` batch."""
    x, y = batch
    return lm_loss(model(x), y)


def _he_operator(model, data, names=None):
    import hessian_eigenthings as he

    return he.HessianOperator(model, data, _he_loss,
                              param_filter=None if names is None else he.match_names(*names))


@contextlib.contextmanager
def _torch_eig_shim():
    """``torch.eig(A, eigenvectors=True)`` (removed in PyTorch 2) for the symmetric ``T`` PyHessian builds."""
    had = hasattr(torch, "eig")
    saved = getattr(torch, "eig", None)

    def eig(a, eigenvectors=False):
        w, v = torch.linalg.eigh(a)
        return torch.stack([w, torch.zeros_like(w)], 1), v

    torch.eig = eig
    try:
        yield
    finally:
        if had:
            torch.eig = saved
        else:
            del torch.eig


@contextlib.contextmanager
def _only_requires_grad(model, names):
    """PyHessian differentiates every parameter that requires grad: switch the others off for a block."""
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        yield
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])


def _pyhessian(model, data):
    from pyhessian import hessian

    model.zero_grad(set_to_none=True)  # its __init__ accumulates into .grad; start from none
    (x, y), = data
    return hessian(model, lm_loss, data=(x, y), cuda=False)


# ----------------------------------------------------------------------------- summaries
def _moments(nodes, weights) -> tuple[float, float]:
    nodes, weights = np.asarray(nodes, float), np.asarray(weights, float)
    mask = weights > 0
    k = nodes.shape[0]
    return (float(np.sum(weights[mask] * nodes[mask]) / k), float(np.sum(weights[mask] * nodes[mask] ** 2) / k))


def _density_summary(nodes, weights) -> dict:
    m1, m2 = _moments(nodes, weights)
    return {"lambda_max": float(np.nanmax(np.asarray(nodes, float))), "mean": m1, "m2": m2}


# ----------------------------------------------------------------------------- the methods
def slq_methods(model, data, steps, probes) -> dict:
    def ours(basis_dtype=None):
        def run():
            d = slq(HessianOperator(model, lm_loss, data), num_steps=steps, num_probes=probes, seed=0,
                    basis_dtype=basis_dtype, progress=False)
            return {**_density_summary(d.nodes, d.weights), "basis": d.info.get("basis_dtype", "float64")}
        return run

    def eigenthings():
        import hessian_eigenthings as he

        r = he.spectral_density(_he_operator(model, data), num_runs=probes, lanczos_steps=steps, seed=0)
        return _density_summary(r.raw_eigenvalues.double().numpy(), r.raw_weights.double().numpy())

    def pyhessian(shim):
        def run():
            torch.manual_seed(0)
            with _torch_eig_shim() if shim else contextlib.nullcontext():
                nodes, weights = _pyhessian(model, data).density(iter=steps, n_v=probes)
            model.zero_grad(set_to_none=True)
            return _density_summary(nodes, weights)
        return run

    return {
        "hesslab": (ours(), "slq (defaults): Gaussian probes, float64 basis (where it fits the memory budget), "
                            "full reorth. (2 Gram-Schmidt passes), retained graph, 4 probes per product call, "
                            "+3 products for the noise floor"),
        "hesslab, float32 basis": (ours(torch.float32), "slq(basis_dtype=float32): as above with the peers' basis "
                                                        "precision (still 2 passes)"),
        "hessian-eigenthings": (eigenthings, "spectral_density: Rademacher probes, float32 basis, full reorth. "
                                             "(1 pass), forward+backward+double backward per product"),
        "PyHessian": (pyhessian(False), "hessian.density (as shipped)"),
        "PyHessian, torch.eig shim": (pyhessian(True), "hessian.density: Rademacher, float32, full reorth. (1 pass), "
                                                      "retained graph (single batch)"),
    }


def top_methods(model, data, he_steps) -> dict:
    def ours():
        r = top_eigenvalues(HessianOperator(model, lm_loss, data), k=1, seed=0)
        return {"lambda_max": float(r.values[0]), "products": r.matvecs + 3, "converged": r.converged}

    def eigenthings_lanczos():
        import hessian_eigenthings as he

        r = he.lanczos(_he_operator(model, data), k=1, max_iter=he_steps, which="LA", seed=0)
        return {"lambda_max": float(r.eigenvalues[0]), "products": r.iterations, "converged": bool(r.converged[0])}

    def eigenthings_power():
        import hessian_eigenthings as he

        lam, _, _, iters, conv = he.power_iteration_one(_he_operator(model, data), seed=0)
        return {"lambda_max": float(lam), "products": iters, "converged": conv}

    def pyhessian():
        ph = importlib.import_module("pyhessian.hessian")  # the module (the attribute is its class)
        torch.manual_seed(0)
        count, product = [0], ph.hessian_vector_product

        def counted(*args, **kwargs):
            count[0] += 1
            return product(*args, **kwargs)

        ph.hessian_vector_product = counted
        try:
            values, _ = _pyhessian(model, data).eigenvalues(top_n=1)
        finally:
            ph.hessian_vector_product = product
        model.zero_grad(set_to_none=True)
        return {"lambda_max": float(values[0]), "products": count[0], "converged": None}

    return {
        "hesslab": (ours, "top_eigenvalues(k=1): block Krylov, thick restart, float64 basis, default tol 1e-5 "
                          "(relative residual); products include the 3 of the noise floor"),
        "hessian-eigenthings": (eigenthings_lanczos, f"lanczos(k=1, which='LA', max_iter={he_steps} = hesslab's "
                                                     "products), float32, full reorth."),
        "hessian-eigenthings, power": (eigenthings_power, "power_iteration_one (defaults: tol 1e-4, 100 iterations): "
                                                          "largest |eigenvalue|"),
        "PyHessian": (pyhessian, "hessian.eigenvalues (defaults: power iteration, tol 1e-3, 100 iterations): "
                                 "largest |eigenvalue|"),
    }


def block_methods(model, data, steps, probes) -> dict:
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def ours():
        spectra = blockwise_slq(model, lm_loss, data, None, num_steps=steps, num_probes=probes, seed=0,
                                progress=False)
        return {"per_block": {n: float(np.nanmax(d.nodes)) for n, d in spectra.items()}}

    def eigenthings():
        import hessian_eigenthings as he

        out = {}
        for n in names:
            op = _he_operator(model, data, [n])
            r = he.spectral_density(op, num_runs=probes, lanczos_steps=min(steps, op.size), seed=0)
            out[n] = float(np.nanmax(r.raw_eigenvalues.double().numpy()))
        return {"per_block": out}

    def pyhessian(shim):
        def run():
            out = {}
            with _torch_eig_shim() if shim else contextlib.nullcontext():
                for n in names:
                    torch.manual_seed(0)
                    with _only_requires_grad(model, {n}):
                        nodes, _ = _pyhessian(model, data).density(iter=steps, n_v=probes)
                    model.zero_grad(set_to_none=True)
                    out[n] = float(np.nanmax(np.asarray(nodes, float)))
            return {"per_block": out}
        return run

    return {
        "hesslab": (ours, "blockwise_slq: all blocks per data pass, one retained graph, float64 basis, "
                          "full reorth. (2 passes), +1 pass for the noise floors"),
        "hessian-eigenthings": (eigenthings, "spectral_density per block (param_filter=match_names(name)): "
                                             "forward+backward+double backward per product"),
        "PyHessian": (pyhessian(False), "hessian.density per block (requires_grad on the block only; as shipped)"),
        "PyHessian, torch.eig shim": (pyhessian(True), "hessian.density per block (requires_grad on the block only): "
                                                      "graph built once per block"),
    }


# ----------------------------------------------------------------------------- running
def _error_text(err: BaseException) -> str:
    last = traceback.extract_tb(err.__traceback__)[-1]
    first = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {first} ({last.name}, {last.filename.split('/')[-1]}:{last.lineno})"


def run_interleaved(methods: dict, repeats: int) -> dict:
    """Each method ``repeats`` times, interleaved; a failing method is run once and reported."""
    out = {name: {"times": [], "result": None, "error": None} for name in methods}
    for _ in range(repeats):
        for name, (fn, _) in methods.items():
            rec = out[name]
            if rec["error"] is not None:
                continue
            start = time.perf_counter()
            try:
                rec["result"] = fn()
            except Exception as err:  # a peer's failure is a result: reported, not hidden
                rec["error"] = _error_text(err)
            rec["times"].append(time.perf_counter() - start)
    return out


def _rel(a, b) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def table(task: str, methods: dict, runs: dict, reference: float | None) -> pd.DataFrame:
    ours = statistics.median(runs["hesslab"]["times"]) if not runs["hesslab"]["error"] else float("nan")
    rows = []
    for name, (_, what) in methods.items():
        rec = runs[name]
        t = statistics.median(rec["times"]) if rec["times"] else float("nan")
        row = {"task": task, "method": name, "time s": t,
               "hesslab speed-up": (t / ours) if not name.startswith("hesslab") and not rec["error"] else float("nan"),
               "runs": len(rec["times"])}
        res = rec["result"] or {}
        if rec["error"]:
            row["agreement"] = f"FAILED after {t:.1f} s: {rec['error']}"
        elif task.startswith("SLQ"):
            ref = runs["hesslab"]["result"]
            rms = np.sqrt(ref["m2"])
            basis = f"; {res['basis']} basis" if "basis" in res else ""
            err = _rel(res["lambda_max"], reference)
            d1, d2 = abs(res["mean"] - ref["mean"]) / rms, _rel(res["m2"], ref["m2"])
            row["agreement"] = (f"top Ritz {res['lambda_max']:.5g} (rel. error {err:.0e}); Στθ {res['mean']:+.2e}, "
                                f"Στθ² {res['m2']:.4e} (differ from hesslab's by {d1:.0e} rms, {d2:.1%}){basis}")
        elif task.startswith("λ_max"):
            conv = "" if res["converged"] is None else (", converged" if res["converged"] else ", NOT converged")
            prods = "" if res["products"] != res["products"] else f", {res['products']} products"
            row["λ error"] = _rel(res["lambda_max"], reference)
            row["agreement"] = f"λ {res['lambda_max']:.6g} (rel. error {row['λ error']:.1e}{prods}{conv})"
        else:
            mine, theirs = runs["hesslab"]["result"]["per_block"], res["per_block"]
            diffs = [_rel(theirs[n], mine[n]) for n in mine]
            row["agreement"] = (f"{len(theirs)} blocks; per-block top Ritz vs hesslab: median {np.median(diffs):.1e}, "
                                f"worst {max(diffs):.1e}")
        row["what it does"] = what
        rows.append(row)
    return pd.DataFrame(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: PyTorch's default)")
    parser.add_argument("--quick", action="store_true", help="a 2-layer, 64-wide GPT-2 (for a fast look)")
    parser.add_argument("--only", default="slq,top,blocks", help="comma-separated subset of slq,top,blocks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tasks = set(args.only.split(","))
    layers, width = (2, 64) if args.quick else (4, 128)
    problem = benchmark_problems(layers, width)[-1]
    model, data = problem.model, problem.data
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    blocks = sum(1 for p in model.parameters() if p.requires_grad)
    versions = {d: _version(d) for d in ("hessian-eigenthings", "pyhessian")}
    print(f"# hesslab {hesslab.__version__} vs its peers\nmachine: {platform.machine()} {platform.processor() or ''}, "
          f"{platform.system()}; torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU, float32 model; "
          f"peers: hessian-eigenthings {versions['hessian-eigenthings']}, PyHessian {versions['pyhessian']}\n"
          f"model: {problem.name} causal LM ({n:,} parameters, {blocks} tensors), 8 x 64 tokens, next-token "
          f"cross-entropy; median of {args.repeats} interleaved runs")

    t0 = time.perf_counter()
    ref = top_eigenvalues(HessianOperator(model, lm_loss, data), k=1, tol=1e-8, seed=1, max_matvecs=2000)
    reference = float(ref.values[0])
    print(f"reference λ_max = {reference:.7g} (hesslab top_eigenvalues, tol 1e-8, residual {ref.residuals[0]:.1e}, "
          f"{ref.matvecs} products, {time.perf_counter() - t0:.1f} s)")

    tables = []
    pd.set_option("display.width", 250, "display.max_colwidth", 200, "display.max_columns", 20)
    if "slq" in tasks:
        methods = slq_methods(model, data, SLQ_STEPS, SLQ_PROBES)
        tables.append(table(f"SLQ {SLQ_STEPS}x{SLQ_PROBES}", methods, run_interleaved(methods, args.repeats),
                            reference))
        print(tables[-1].drop(columns=["what it does", "λ error"], errors="ignore").to_string(index=False), flush=True)
    if "top" in tasks:
        products = top_eigenvalues(HessianOperator(model, lm_loss, data), k=1, seed=0).matvecs + 3
        methods = top_methods(model, data, products)
        tables.append(table("λ_max", methods, run_interleaved(methods, args.repeats), reference))
        print(tables[-1].drop(columns=["what it does", "λ error"], errors="ignore").to_string(index=False), flush=True)
    if "blocks" in tasks:
        methods = block_methods(model, data, BLOCK_STEPS, BLOCK_PROBES)
        tables.append(table(f"{blocks} blocks {BLOCK_STEPS}x{BLOCK_PROBES}", methods,
                            run_interleaved(methods, args.repeats), reference))
        print(tables[-1].drop(columns=["what it does", "λ error"], errors="ignore").to_string(index=False), flush=True)

    full = pd.concat(tables, ignore_index=True)
    print("\n## All tasks (time: median seconds; hesslab speed-up: peer time / hesslab time)")
    print(full[["task", "method", "time s", "hesslab speed-up", "runs", "agreement"]]
          .to_string(index=False, float_format=lambda x: f"{x:.2f}"))
    print("\n## What each method does")
    for (task, method), what in full.set_index(["task", "method"])["what it does"].items():
        print(f"- {task} / {method}: {what}")
    print("\nhesslab speed-up over the fastest peer that ran and found the answer (λ_max within 1e-4; power "
          "iterations that stop at tol 1e-3 or find the largest |λ| do not count):")
    for task, group in full.groupby("task", sort=False):
        ok = group["method"].str.startswith(("hessian-eigenthings", "PyHessian")) & group["hesslab speed-up"].notna()
        if task.startswith("λ_max"):
            ok &= group["λ error"] <= 1e-4
        for label, rows in (("as shipped", group[ok & ~group["method"].str.contains("shim")]),
                            ("with PyHessian's torch.eig shimmed", group[ok])):
            if len(rows):
                row = rows.loc[rows["time s"].idxmin()]
                print(f"- {task}, peers {label}: {row['hesslab speed-up']:.2f}x vs {row['method']} "
                      f"({row['time s']:.1f} s vs {row['time s'] / row['hesslab speed-up']:.1f} s)")


if __name__ == "__main__":
    main()
