"""The prepared GPU check runs end to end at tiny size on the CPU, so it cannot rot."""

import json
import subprocess
import sys

import numpy as np

from hesslab.experiments.gpucheck import SIZES


def test_gpu_check_at_smoke_size(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hesslab.experiments.gpucheck", "--size", "smoke", "--out",
                           str(tmp_path), "--device", "cpu"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "gpucheck.json").read_text())
    assert record["environment"]["torch"] and record["size"] == "smoke"
    parts = record["parts"]
    assert all(p["ok"] for p in parts.values()), {k: p["error"] for k, p in parts.items()}
    exact = parts["exactness"]["result"]
    for case in ("tiny_mlp", "tiny_cnn", "tiny_gpt2"):  # float64 products and Ritz values: round-off only
        assert exact[case]["hvp_rel_error"] < 1e-12 and exact[case]["block_ritz_rel_error"] < 1e-9
    assert exact["slq chunked"]["probe_chunk"] == 1 and exact["slq chunked"]["max_node_difference"] < 1e-12
    # a float32 basis: 40 steps of float32 round-off on a spectrum of width 4
    assert exact["slq float32 basis"]["max_node_difference"] < 40 * np.finfo(np.float32).eps * 3 * 10
    costs = parts["hvp_costs"]["result"]
    assert costs["paper_over_ours"] > 0 and costs["gradient_ms"] > 0
    for name in ("gpt2", "vgg16"):
        s = parts["spectra"]["result"][name]
        assert s["blocks"] > 1 and np.isfinite(s["js0"]) and s["measured_s"] > 0 and s["predicted_s"] > 0
        assert s["num_steps"] == SIZES["smoke"]["steps"]
    assert list((tmp_path / "cache").rglob("*.npz"))
