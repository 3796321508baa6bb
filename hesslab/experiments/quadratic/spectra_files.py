"""Block spectra files for Cases 1 and 2: the shipped stand-ins, saving and loading."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

#: Shipped block spectra (stand-ins until measured spectra replace them).
SPECTRA_FILE = Path(__file__).resolve().parents[3] / "data" / "quadratic_block_spectra.json"

# Stand-in block spectra for Cases 1 and 2: a bulk (log-normal quantiles) plus a few
# outliers, on a raw eigenvalue scale. Parameters: (log10 median of the bulk, log10
# spread of the bulk, number of outliers, log10 of the largest outlier). GPT-2-like
# blocks differ by orders of magnitude in scale and in shape (embedding: tiny bulk with
# a few large outliers; Q/K: narrow and small; V/MLP: wider and larger), as in the
# paper's Figures 3 and 9; CNN-like blocks share one wide shape, as for ResNet18.
_STANDIN_SHAPES = {
    "gpt2-like": {
        "wte": (-3.0, 0.25, 6, -2.0),
        "h.0.attn.wq": (-1.8, 0.15, 3, -1.3),
        "h.0.attn.wv": (-0.9, 0.2, 4, -0.3),
        "h.0.mlp.c_fc": (0.3, 0.12, 2, 0.7),
    },
    "cnn-like": {
        "conv1.weight": (-1.2, 0.9, 5, 0.7),
        "layer1.0.conv1.weight": (-1.25, 0.85, 5, 0.65),
        "layer2.0.conv1.weight": (-1.15, 0.9, 4, 0.7),
        "fc.weight": (-1.2, 0.95, 5, 0.6),
    },
}


def standin_block_spectra(size: int = 500, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """The stand-in block spectra shipped in ``data/quadratic_block_spectra.json``.

    Each block: ``size − k`` log-normal bulk eigenvalues (random draws) and ``k``
    outliers log-evenly spaced from the bulk's top to the block's largest outlier
    (:data:`_STANDIN_SHAPES`). These are made up to look like the paper's block spectra,
    not measured; the chapter says so.

    Args:
        size: eigenvalues per block.
        seed: seed of the bulk draws.

    Returns:
        ``{"gpt2-like": {block: eigenvalues}, "cnn-like": {...}}``, eigenvalues sorted.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {}
    for family, blocks in _STANDIN_SHAPES.items():
        out[family] = {}
        for name, (mid, spread, k, top) in blocks.items():
            bulk = 10.0 ** (mid + spread * rng.standard_normal(size - k))
            outliers = np.logspace(math.log10(bulk.max()), top, k + 1)[1:]
            out[family][name] = sorted(float(x) for x in np.concatenate([bulk, outliers]))
    return out



def save_block_spectra(families, provenance: dict, path=SPECTRA_FILE) -> Path:
    """Write block spectra in the format :func:`load_block_spectra` reads.

    Use it to replace the stand-ins with measured spectra, e.g. the exact block
    eigenvalues of a small GPT-2 and a small CNN (``hesslab.exact_block_eigenvalues``):
    Case 1 reads family ``"gpt2-like"``, Case 2 family ``"cnn-like"``; both need the same
    number of blocks (the paper uses 4).

    Args:
        families: ``{family: {block name: eigenvalues [m]}}``.
        provenance: how they were made (model, data, stage, code revision, ...).
        path: destination JSON file.

    Returns:
        The path written (atomically: temporary file, then rename).
    """
    path = Path(path)
    payload = {
        "provenance": dict(provenance),
        "families": {fam: {name: sorted(float(x) for x in np.asarray(ev).ravel()) for name, ev in blocks.items()}
                     for fam, blocks in families.items()},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)
    return path


def write_spectra_file(path=SPECTRA_FILE, size: int = 500, seed: int = 0) -> Path:
    """Write the stand-in spectra with their provenance (how to regenerate them).

    Args:
        path: destination JSON file.
        size: eigenvalues per block.
        seed: seed of :func:`standin_block_spectra`.

    Returns:
        The path written.
    """
    provenance = {
        "kind": "stand-in",
        "description": (
            "Made-up block spectra shaped like the paper's GPT-2 blocks (heterogeneous "
            "scales and shapes) and ResNet18 blocks (one shared wide shape); NOT measured "
            "on any model. Replace with measured block spectra in the same format."
        ),
        "generator": f"hesslab.experiments.quadratic.write_spectra_file(size={size}, seed={seed})",
        "numpy": np.__version__,
    }
    return save_block_spectra(standin_block_spectra(size=size, seed=seed), provenance, path)


def load_block_spectra(path=None) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Read a block-spectra file.

    Args:
        path: JSON file with ``provenance`` and ``families`` (family → block → eigenvalues);
            default the shipped :data:`SPECTRA_FILE` (regenerated in memory by
            :func:`standin_block_spectra` when an installed copy has no ``data/``).

    Returns:
        ``(provenance, families)`` with eigenvalue arrays.
    """
    if path is None and not SPECTRA_FILE.exists():
        # a non-editable install has no data/ folder: the shipped file is the generator's output
        return ({"kind": "stand-in", "generator": "hesslab.experiments.quadratic.standin_block_spectra(size=500, seed=0)",
                 "description": "regenerated in memory (data/quadratic_block_spectra.json not found)"},
                {fam: {n: np.asarray(ev) for n, ev in blocks.items()}
                 for fam, blocks in standin_block_spectra(size=500, seed=0).items()})
    data = json.loads(Path(path or SPECTRA_FILE).read_text())
    families = {
        fam: {name: np.asarray(ev, dtype=np.float64) for name, ev in blocks.items()}
        for fam, blocks in data["families"].items()
    }
    return data.get("provenance", {}), families
