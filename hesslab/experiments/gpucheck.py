"""One command that checks hesslab on a device and stores paper-size results with provenance.

    python -m hesslab.experiments.gpucheck [--size paper|smoke] [--out DIR] [--device cuda]

Needs hesslab's core dependencies and ``transformers`` only (no book toolchain), so that it
runs on a bare GPU machine with ``PYTHONPATH=.``. Four parts, each timed and written as it
finishes (a part that fails is recorded with its error and the others still run):

1. ``exactness``: on the device, Hessian-vector products, blockwise SLQ and the
   memory-bounded SLQ paths (probe chunks, float32 basis, pinned-host offload on a GPU)
   against dense float64 Hessians of the tiny test models;
2. ``hvp_costs``: one HVP per method and one all-blocks Lanczos step in hesslab's and the
   paper's loop order, in gradients of the same model (GPT-2 124M at ``paper`` size);
3. ``spectra``: blockwise spectra and JS⁰ of GPT-2 (124M, the paper's blocks) and VGG-16
   (138M) at reduced Lanczos settings, with the cost planner's prediction beside the
   measured time;
4. everything in ``DIR/gpucheck.json`` (with :func:`hesslab.storage.cache.provenance`),
   and the spectra as cache records in ``DIR/cache`` (the format
   :mod:`hesslab.storage.cached` serves them from).

``--size smoke`` runs the same parts at tiny sizes (CPU, CI). The paper size is planned to
fit about 8 minutes on one H200.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

#: per size: the GPT-2 of the HVP benchmark (layers, width, sequence, batch) and the reduced
#: Lanczos settings of the paper-size spectra (steps, probes, Hessian batches, batch size per modality)
SIZES = {
    "smoke": {"bench": (2, 64, 32, 4), "repeats": 1, "steps": 6, "probes": 2, "batches": 1,
              "batch": {"text": 2, "vision": 8}, "models": "smoke"},
    "paper": {"bench": (12, 768, 1024, 8), "repeats": 3, "steps": 20, "probes": 2, "batches": 1,
              "batch": {"text": 8, "vision": 32}, "models": "paper"},
}
#: blocks up to this size are checked exactly (Lanczos run to their full dimension)
EXACT_BLOCK_DIM = 128
#: where ``make gpu-check`` stores its results
DEFAULT_OUT = Path("data/results/paper/gpucheck")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_exactness(device: torch.device) -> dict:
    """Largest relative errors against dense float64 Hessians on ``device`` (should be ~1e-12)."""
    from hesslab import HessianOperator, MatrixOperator, blockwise_slq, slq
    from hesslab.experiments.tiny_problems import exact_hessian, tiny_cnn, tiny_gpt2, tiny_mlp
    from hesslab.memory import lanczos_bytes

    out = {}
    for make in (tiny_mlp, tiny_cnn, tiny_gpt2):
        case = make()
        H = exact_hessian(case)
        case.model.to(device)
        data = [tuple(t.to(device) for t in batch) for batch in case.data]
        op = HessianOperator(case.model, case.loss_fn, data, batchnorm=case.batchnorm)
        V = torch.randn(3, op.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        hv = (op @ V.to(device)).cpu()
        exact = V @ H.T
        offsets, offset = {}, 0
        for name, p in case.model.named_parameters():
            offsets[name], offset = (offset, offset + p.numel()), offset + p.numel()
        small = [name for name, (a, b) in offsets.items() if b - a <= EXACT_BLOCK_DIM]
        spectra = blockwise_slq(case.model, case.loss_fn, data, small, num_steps=EXACT_BLOCK_DIM, num_probes=1,
                                progress=False, batchnorm=case.batchnorm)
        worst = 0.0
        for name in small:
            a, b = offsets[name]
            ev = torch.linalg.eigvalsh(H[a:b, a:b]).numpy()
            ritz = spectra[name].nodes[0]
            ritz = ritz[~np.isnan(ritz)]
            scale = max(np.abs(ev).max(), 1e-300)
            worst = max(worst, float(np.abs(ritz[:, None] - ev[None]).min(axis=1).max() / scale))
        out[make.__name__] = {"hvp_rel_error": float((hv - exact).norm() / exact.norm()),
                              "block_ritz_rel_error": worst, "dim": op.dim}
    # memory-bounded paths on a dense operator on the device: chunks, float32 basis, offload
    A = torch.linalg.qr(torch.randn(300, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    A = (A @ torch.diag(torch.linspace(-1, 3, 300, dtype=torch.float64)) @ A.T).to(device)
    op = MatrixOperator(A)
    ref = slq(op, num_steps=40, num_probes=4, progress=False)
    variants = {"chunked": dict(memory_budget=lanczos_bytes(300, 40, 1, torch.float64)),
                "float32 basis": dict(basis_dtype=torch.float32)}
    if device.type == "cuda":
        variants["offloaded"] = dict(memory_budget=lanczos_bytes(300, 40, 1, torch.float32) - 1)
    for label, kw in variants.items():
        d = slq(op, num_steps=40, num_probes=4, progress=False, **kw)
        out[f"slq {label}"] = {"max_node_difference": float(np.nanmax(np.abs(d.nodes - ref.nodes))),
                               **{k: d.info[k] for k in ("basis_dtype", "probe_chunk", "offloaded")}}
    return out


def hvp_benchmark(device: torch.device, bench: tuple, repeats: int = 3) -> dict:
    """HVP per method and one all-blocks Lanczos step (ours vs the paper's order), in gradients."""
    from hesslab.experiments.hvp_costs import benchmark_problems, blockwise_step_costs, hvp_costs

    layers, width, seq, batch = bench
    gpt = benchmark_problems(layers, width, seq=seq, batch=batch, device=device)[-1]
    costs = hvp_costs(gpt.model, gpt.loss_fn, gpt.data, repeats=repeats)
    steps = blockwise_step_costs(gpt.model, gpt.loss_fn, gpt.data, repeats=1)
    return {"model": gpt.name, "parameters": sum(p.numel() for p in gpt.model.parameters()),
            "hvp_in_gradients": costs.drop(columns="gradient ms").to_dict(),
            "gradient_ms": float(costs["gradient ms"].iloc[0]),
            "step_in_gradients": {k: float(v) for k, v in steps.items()},
            "paper_over_ours": float(steps["paper"] / steps["retained graph"])}


def paper_size_spectra(device: torch.device, size: dict, cache_dir: Path) -> dict:
    """Blockwise spectra and JS⁰ of GPT-2 and VGG-16, with the planner's prediction beside the measured time."""
    from hesslab.experiments.batches import model_batches, modality
    from hesslab.experiments.heterogeneity import JS_VARIANTS, sampled_blocks
    from hesslab.experiments.models import build
    from hesslab.js import js0
    from hesslab.plan import plan
    from hesslab.storage.cache import ResultCache
    from hesslab.storage.cached import blockwise_slq

    out = {}
    for name in ("gpt2", "vgg16"):
        built = build(name, size["models"], seed=0, device=device)
        kind = modality(built)
        data = [tuple(t.to(device) for t in b)
                for b in model_batches(built, size["batches"], size["batch"][kind], seed=0, split="hessian")]
        blocks = sampled_blocks(name, built)
        settings = dict(num_steps=size["steps"], num_probes=size["probes"])
        predicted = plan(built.model, built.loss_fn, data, blocks, batchnorm="train", **settings)
        _sync(device)
        start = time.perf_counter()
        spectra = blockwise_slq(built.model, built.loss_fn, data, blocks, seed=0, batchnorm="train",
                                cache=ResultCache(cache_dir), cache_key={"gpucheck": name}, progress=False,
                                **settings)
        _sync(device)
        measured = time.perf_counter() - start
        out[name] = {"parameters": sum(p.numel() for p in built.model.parameters()), "blocks": len(spectra),
                     "js0": js0(spectra, **JS_VARIANTS["log"]), "measured_s": measured,
                     "predicted_s": predicted.seconds, "predicted": predicted.as_dict(),
                     "lambda_max": {k: s.lambda_max for k, s in spectra.items()}, **settings,
                     "batches": size["batches"], "batch_size": size["batch"][kind]}
        del built, data, spectra
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _write(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)


def run(size: str = "paper", out: Path = DEFAULT_OUT, device: str | None = None) -> dict:
    """Run the check at ``size``; write and return ``out/gpucheck.json``'s record."""
    from hesslab.storage.cache import provenance

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    settings = SIZES[size]
    out.mkdir(parents=True, exist_ok=True)
    record = {"size": size, "device": str(dev), "environment": provenance(), "parts": {}}
    parts = {"exactness": lambda: check_exactness(dev),
             "hvp_costs": lambda: hvp_benchmark(dev, settings["bench"], settings["repeats"]),
             "spectra": lambda: paper_size_spectra(dev, settings, out / "cache")}
    for part, fn in parts.items():
        start = time.perf_counter()
        try:
            result, error = fn(), None
        except Exception as err:  # recorded, and the other parts still run
            result, error = None, "".join(traceback.format_exception_only(type(err), err)).strip()
            traceback.print_exc()
        record["parts"][part] = {"seconds": time.perf_counter() - start, "ok": error is None, "result": result,
                                 "error": error}
        print(f"{part}: {'ok' if error is None else 'FAILED: ' + error} ({record['parts'][part]['seconds']:.1f} s)",
              flush=True)
        _write(out / "gpucheck.json", record)
    return record


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; exit status 1 when a part failed."""
    parser = argparse.ArgumentParser(prog="python -m hesslab.experiments.gpucheck", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="paper")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    args = parser.parse_args(argv)
    record = run(args.size, args.out, args.device)
    return 0 if all(p["ok"] for p in record["parts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
