"""``torchrun --nproc_per_node 2 -m hesslab diagnose`` reproduces the single-process diagnosis.

The README's scale-out command, run as documented on two CPU processes (gloo) on a zoo
model in float64, against :func:`hesslab.experiments.diagnose.diagnose` in this process.
Asserted: JS⁰, its per-probe values and every block's λ_max agree to 1e-10; the report
records two ranks; one rank wrote the outputs (one folder, no temporary folders left). The
run is limited in time and killed after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hesslab.experiments import diagnose as dg

TORCHRUN = Path(sys.executable).with_name("torchrun")
ARGS = ["resnet18", "--dtype", "float64", "--no-cache", "--quiet"]
#: seconds the two-process run may take (about 15 s on 2 idle cores)
LIMIT = 300


@pytest.mark.timeout(LIMIT + 60)
def test_torchrun_on_two_processes_reproduces_the_single_process_diagnosis(tmp_path):
    single = dg.diagnose(ARGS[0], dtype="float64", cache=False, out=tmp_path / "single", progress=False, echo=None)
    out = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "hesslab", "diagnose",
                          *ARGS, "--out", str(out), "--collective-timeout", "120"],
                         capture_output=True, text=True, timeout=LIMIT, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.count("wrote ") == 1, "only rank 0 prints and writes"
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["world_size"] == 2 and single["settings"]["world_size"] == 1
    np.testing.assert_allclose(report["js0"]["value"], single["js0"]["value"], rtol=1e-10)
    np.testing.assert_allclose(report["js0"]["per_probe"], single["js0"]["per_probe"], rtol=1e-10)
    np.testing.assert_allclose([b["lambda_max"] for b in report["blocks"]],
                               [b["lambda_max"] for b in single["blocks"]], rtol=1e-10)
    assert report["verdict"]["label"] == single["verdict"]["label"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["single", "two"], "a temporary folder was left behind"


def test_collective_timeout_must_be_positive(capsys):
    assert dg.main(["resnet18", "--collective-timeout", "0"]) == 2
    assert "--collective-timeout" in capsys.readouterr().err
