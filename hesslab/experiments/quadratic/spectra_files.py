"""Block spectra for Cases 1 and 2: measured on the book's GPT-2 and ResNet-18, saved and loaded.

The paper builds Cases 1 and 2 from the eigenvalues of four blocks of GPT-2 and of
ResNet18. :func:`measure_block_spectra` measures four blocks of each model of the book's
zoo (:func:`hesslab.experiments.models.build`) at initialisation: the exact eigenvalues
(``eigvalsh`` of the explicit block Hessian ``H_bb``, in float64) on the Hessian batches
of a profile. :func:`write_measured_spectra` writes them, with their provenance, to
``data/quadratic_block_spectra.json``; one command regenerates the file:

    python -m hesslab.experiments.quadratic            # smoke sizes, seed 0
    python -m hesslab.experiments.quadratic --help     # profile, seed, output, block size cap

The eigenvalues are stored as measured (an initial Hessian is indefinite: negative and
zero eigenvalues included); :func:`hesslab.experiments.quadratic.problems.model_block_spectra`
maps them onto ``[1, κ]``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[3]

#: The shipped block spectra (written by :func:`write_measured_spectra`).
SPECTRA_FILE = _ROOT / "data" / "quadratic_block_spectra.json"

#: Spectra family (key in the file) of each model case: Case 1 reads ``"gpt2"``, Case 2 ``"resnet18"``.
MODEL_FAMILIES = ("gpt2", "resnet18")

#: The GPT-2 blocks measured: the first layer's query, key, value and MLP-input matrices
#: (the kinds of the paper's GPT-2 blocks; the rule the blockwise chapter uses for BERT).
GPT2_BLOCK_KINDS = ("attn.q", "attn.k", "attn.v", "mlp.c_fc.weight")

#: Blocks per model (the paper: 4).
NUM_BLOCKS = 4

#: Largest block measured (entries): the explicit block Hessian costs ``dim`` Hessian-vector
#: products and ``dim²`` float64 numbers.
MAX_BLOCK_DIM = 2500

#: What :func:`measure_block_spectra` measures by default (the shipped file).
DEFAULT_PROFILE = "smoke"
DEFAULT_SEED = 0

GENERATOR_COMMAND = "python -m hesslab.experiments.quadratic"


def model_blocks(name: str, model, *, count: int = NUM_BLOCKS, max_dim: int = MAX_BLOCK_DIM) -> list:
    """The ``count`` blocks of ``model`` whose spectra Cases 1–2 use.

    GPT-2 family: the lowest layer's Q, K, V (split from the fused ``c_attn``) and
    ``mlp.c_fc`` (:data:`GPT2_BLOCK_KINDS`). Other models: ``count`` weight tensors
    (2 or more dimensions) of at most ``max_dim`` entries, evenly spaced in depth
    (first and last included; for a CNN the first convolution and the classifier).

    Args:
        name: the zoo name (``"gpt2"``, ``"gpt2-nano"``, ``"resnet18"``, ...).
        model: the built network.
        count: number of blocks.
        max_dim: largest block allowed.

    Returns:
        A list of :class:`hesslab.Block`.

    Raises:
        ValueError: fewer than ``count`` blocks fit under ``max_dim``.
    """
    from hesslab.blocks import resolve_blocks

    shapes = {n: p.shape for n, p in model.named_parameters()}
    if name.startswith("gpt2"):
        if count != len(GPT2_BLOCK_KINDS):
            raise ValueError(f"the GPT-2 rule picks {len(GPT2_BLOCK_KINDS)} blocks, got count={count}")
        paper = resolve_blocks(model, "gpt2-paper")
        layers = sorted({int(m.group(1)) for b in paper if (m := re.search(r"\.h\.(\d+)\.", b.name))})
        if not layers:
            raise ValueError(f"{name}: no transformer layer found among {[b.name for b in paper]}")
        by_name = {b.name: b for b in paper}
        prefix = next(b.name.split(".attn.")[0] for b in paper if f".h.{layers[0]}.attn." in b.name)
        blocks = [by_name[f"{prefix}.{kind}"] for kind in GPT2_BLOCK_KINDS]
    else:
        weights = [n for n, s in shapes.items() if len(s) >= 2 and 16 <= int(np.prod(s)) <= max_dim]
        if len(weights) < count:
            raise ValueError(f"{name}: only {len(weights)} weight tensors of 16 to {max_dim} entries, "
                             f"need {count}; raise max_dim or use a smaller profile")
        picks = sorted(set(np.round(np.linspace(0, len(weights) - 1, count)).astype(int).tolist()))
        blocks = resolve_blocks(model, [weights[i] for i in picks])
    too_big = {b.name: b.dim(shapes) for b in blocks if b.dim(shapes) > max_dim}
    if too_big:
        raise ValueError(f"{name}: blocks larger than max_dim={max_dim}: {too_big}; use a smaller profile")
    return blocks


def _git_revision() -> tuple[str | None, list[str]]:
    """``HEAD`` of the checkout this module lives in (``+dirty`` if ``hesslab/`` has uncommitted changes) and those files."""
    try:
        run = functools.partial(subprocess.run, cwd=_ROOT, capture_output=True, text=True, timeout=30, check=True)
        head = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = [line[3:] for line in run(["git", "status", "--porcelain", "--", "hesslab"]).stdout.splitlines()]
    except (OSError, subprocess.SubprocessError):
        return None, []
    return (head + ("+dirty" if dirty else "") if head else None), dirty


def measure_block_spectra(profile: str = DEFAULT_PROFILE, seed: int = DEFAULT_SEED, *,
                          max_dim: int = MAX_BLOCK_DIM) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Exact eigenvalues of four blocks of GPT-2 and of ResNet-18 at initialisation.

    Each model of :data:`MODEL_FAMILIES` is built by the zoo at the profile's size with
    ``seed`` (float64 parameters: the float32 initialisation, cast), its Hessian batches
    are the profile's blockwise ones (``split="hessian"``, the same ``seed``), and each
    block of :func:`model_blocks` is densified column by column (``dim`` Hessian-vector
    products, batch-norm as in the book's blockwise measurements at initialisation,
    :data:`hesslab.experiments.heterogeneity.BATCHNORM`)
    and diagonalised with ``eigvalsh``.

    Args:
        profile: the models' size and the Hessian data (``"smoke"`` or ``"cpu"``).
        seed: initialisation and data seed.
        max_dim: largest block measured.

    Returns:
        ``(provenance, {family: {block name: ascending eigenvalues}})``.
    """
    import torch

    from hesslab.experiments.batches import hessian_batches, modality
    from hesslab.experiments.heterogeneity import BATCHNORM
    from hesslab.experiments.models import build
    from hesslab.experiments.profiles import profile as get_profile
    from hesslab.hvp import HessianOperator
    from hesslab.slq import exact_block_eigenvalues

    settings = get_profile(profile)
    families, described = {}, {}
    start = time.perf_counter()
    for name in MODEL_FAMILIES:
        built = build(name, settings.model_size, seed=seed, dtype=torch.float64)
        data = hessian_batches(built, settings.blockwise, seed=seed)
        blocks = model_blocks(name, built.model, max_dim=max_dim)
        operator = HessianOperator(built.model, built.loss_fn, data, batchnorm=BATCHNORM)
        eigenvalues = exact_block_eigenvalues(operator, blocks, max_dim=max_dim)
        families[name] = {b.name: eigenvalues[b.name] for b in blocks}
        count, batch_size = settings.blockwise.batches[modality(built)]
        described[name] = {
            "model": name, "size": settings.model_size, "config": dict(settings.models[name]),
            "parameters": built.num_parameters, "batchnorm": BATCHNORM,
            "blocks": {b.name: int(eigenvalues[b.name].size) for b in blocks},
            "data": {"split": "hessian", "batches": count, "batch_size": batch_size, "seed": seed,
                     "inputs": dict(built.inputs),
                     "source": ("character-level text of CPython's documentation" if modality(built) == "text"
                                else "scikit-learn's 8×8 digits, resized to the model's image size")},
        }
    revision, uncommitted = _git_revision()
    provenance = {
        "kind": "measured",
        "description": (
            f"Exact eigenvalues (float64 eigvalsh of the explicit block Hessian) of {NUM_BLOCKS} blocks of "
            f"the book's {' and '.join(MODEL_FAMILIES)} at initialisation, {profile} profile (model size and "
            "Hessian batches), batch-norm in train mode; stored as measured (negative and zero eigenvalues "
            "included)."),
        "generator": f"{GENERATOR_COMMAND} --profile {profile} --seed {seed} --max-dim {max_dim}",
        "profile": profile,
        "seed": seed,
        "stage": "initialisation",
        "dtype": "float64",
        "block_rule": {"gpt2": "the first layer's " + ", ".join(GPT2_BLOCK_KINDS),
                       "resnet18": f"{NUM_BLOCKS} weight tensors (>= 2 dims, <= {max_dim} entries) evenly spaced "
                                   "in depth"},
        "families": described,
        "hesslab_revision": revision,
        "hesslab_uncommitted": uncommitted,
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    provenance["seconds"] = round(time.perf_counter() - start, 1)
    return provenance, families


def save_block_spectra(families, provenance: dict, path=SPECTRA_FILE) -> Path:
    """Write block spectra in the format :func:`load_block_spectra` reads, atomically.

    Case 1 reads family ``"gpt2"``, Case 2 family ``"resnet18"``; both need the same
    number of blocks (the paper uses 4).

    Args:
        families: ``{family: {block name: eigenvalues [m]}}``.
        provenance: how they were made (model, data, stage, code revision, ...).
        path: destination JSON file.

    Returns:
        The path written (a temporary file in the same folder, then renamed over it).
    """
    path = Path(path)
    payload = {
        "provenance": dict(provenance),
        "families": {fam: {name: sorted(float(x) for x in np.asarray(ev).ravel()) for name, ev in blocks.items()}
                     for fam, blocks in families.items()},
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(payload, indent=1) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_measured_spectra(path=SPECTRA_FILE, profile: str = DEFAULT_PROFILE, seed: int = DEFAULT_SEED, *,
                           max_dim: int = MAX_BLOCK_DIM) -> Path:
    """Measure the block spectra (:func:`measure_block_spectra`) and write them to ``path``.

    Args:
        path: destination JSON file (default the shipped one).
        profile: see :func:`measure_block_spectra`.
        seed: see :func:`measure_block_spectra`.
        max_dim: see :func:`measure_block_spectra`.

    Returns:
        The path written.
    """
    provenance, families = measure_block_spectra(profile, seed, max_dim=max_dim)
    # the time varies from run to run; the file should change only when the spectra do
    provenance.pop("seconds", None)
    return save_block_spectra(families, provenance, path)


@functools.lru_cache(maxsize=1)
def _measured_in_memory() -> tuple[dict, dict]:
    provenance, families = measure_block_spectra()
    provenance["description"] += " Measured in memory: data/quadratic_block_spectra.json was not found."
    return provenance, families


def load_block_spectra(path=None) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Read a block-spectra file.

    Args:
        path: JSON file with ``provenance`` and ``families`` (family → block → eigenvalues);
            default the shipped :data:`SPECTRA_FILE` (measured in memory with the default
            settings, about 15 s, when an installed copy has no ``data/`` folder).

    Returns:
        ``(provenance, families)`` with float64 eigenvalue arrays.
    """
    if path is None and not SPECTRA_FILE.exists():
        provenance, families = _measured_in_memory()
        return dict(provenance), {fam: {n: np.array(ev) for n, ev in blocks.items()} for fam, blocks in families.items()}
    data = json.loads(Path(path or SPECTRA_FILE).read_text())
    families = {
        fam: {name: np.asarray(ev, dtype=np.float64) for name, ev in blocks.items()}
        for fam, blocks in data["families"].items()
    }
    return data.get("provenance", {}), families


def main(argv=None) -> Path:
    """Command line: measure the block spectra and write the file (see the module docstring).

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The path written.
    """
    parser = argparse.ArgumentParser(prog=GENERATOR_COMMAND, description=(
        "Measure the exact eigenvalues of four blocks of the book's GPT-2 and ResNet-18 at initialisation "
        "and write the block spectra of the quadratic chapter's Cases 1-2."))
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="model sizes and Hessian batches (default smoke)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="initialisation and data seed (default 0)")
    parser.add_argument("--max-dim", type=int, default=MAX_BLOCK_DIM, help="largest block, in entries")
    parser.add_argument("--out", type=Path, default=SPECTRA_FILE, help=f"output file (default {SPECTRA_FILE})")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    path = write_measured_spectra(args.out, args.profile, args.seed, max_dim=args.max_dim)
    provenance, families = load_block_spectra(path)
    for fam, blocks in families.items():
        for name, ev in blocks.items():
            print(f"{fam:9s} {name:60s} dim {ev.size:5d}  eigenvalues {ev[0]: .3e} … {ev[-1]: .3e}")
    print(f"wrote {path} in {time.perf_counter() - start:.1f} s (revision {provenance['hesslab_revision']})")
    return path
