"""The explicit Hessian of a tiny MLP over training (Figure 2).

A 64 → 8 → 10 MLP (tanh; 610 parameters; the paper's data, depth and activation are
unverified) on scikit-learn's digits, trained full-batch with Adam. At chosen fractions of
training the whole Hessian is written down in float64 with
``torch.autograd.functional.hessian`` (:func:`hesslab.experiments.tiny_problems.exact_hessian`), checked
for finiteness and symmetry, and its near-block-diagonality measured with
:func:`block_mass`.

The book's reproduction notes (``book/reproduction.md``) state, per figure, what the paper
specifies, what is unverified and which choice the book makes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from hesslab.experiments.data import digits
from hesslab.experiments.models import classification_loss
from hesslab.experiments.training import TrainConfig, train
from hesslab.experiments.tiny_problems import Problem, exact_hessian

#: Fractions of training at which the Hessian is written down (the paper: 1 %, 50 %, 100 %).
FIGURE2_STAGES = (0.01, 0.5, 1.0)


def digits_mlp(hidden: int = 8) -> nn.Sequential:
    """The 64 → ``hidden`` → 10 tanh MLP (float64)."""
    return nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10)).double()


#: the partitions :func:`layer_partition` knows
PARTITIONS = ("layer", "tensor", "neuron")


def layer_partition(model: nn.Module, by: str = "layer") -> list[tuple[str, int, int]]:
    """Index ranges of the blocks in the flat parameter vector (``named_parameters`` order).

    Args:
        model: the network.
        by: ``"layer"`` (weight and bias of a layer together), ``"tensor"`` (one block
            each) or ``"neuron"`` (each row of a weight matrix, i.e. the incoming weights of
            one neuron, is a block; each bias vector one block).

    Returns:
        ``[(name, start, stop)]``.
    """
    if by not in PARTITIONS:
        raise ValueError(f"by must be one of {PARTITIONS}, got {by!r}")
    out: list[tuple[str, int, int]] = []
    start = 0
    for name, p in model.named_parameters():
        if by == "neuron" and p.ndim >= 2:
            row = p[0].numel()
            out.extend((f"{name}[{i}]", start + i * row, start + (i + 1) * row) for i in range(p.shape[0]))
            start += p.numel()
            continue
        key = name.rsplit(".", 1)[0] if by == "layer" else name
        if out and out[-1][0] == key:
            out[-1] = (key, out[-1][1], start + p.numel())
        else:
            out.append((key, start, start + p.numel()))
        start += p.numel()
    return out


def block_mass(hessian: np.ndarray, partition: list[tuple[str, int, int]]) -> dict[str, float]:
    """How block-diagonal a matrix is.

    Args:
        hessian: ``[n, n]`` matrix.
        partition: ``[(name, start, stop)]`` covering ``0..n`` (see :func:`layer_partition`).

    Returns:
        ``diagonal_share``: share of the squared Frobenius norm in the diagonal blocks;
        ``per_entry_ratio``: mean squared entry inside the diagonal blocks over that outside
        (``inf`` when the outside is exactly zero).
    """
    h2 = np.asarray(hessian, dtype=np.float64) ** 2
    n = h2.shape[0]
    if h2.shape != (n, n):
        raise ValueError(f"expected a square matrix, got shape {h2.shape}")
    if partition[0][1] != 0 or partition[-1][2] != n:
        raise ValueError(f"the partition covers {partition[0][1]}..{partition[-1][2]}, the matrix has {n} rows")
    mask = np.zeros((n, n), dtype=bool)
    for _, a, b in partition:
        mask[a:b, a:b] = True
    inside, outside = h2[mask].sum(), h2[~mask].sum()
    share = inside / (inside + outside) if inside + outside > 0 else 1.0
    ratio = (inside / mask.sum()) / (outside / (~mask).sum()) if outside > 0 else np.inf
    return {"diagonal_share": float(share), "per_entry_ratio": float(ratio)}


@dataclass
class ExplicitHessians:
    """Hessians of the digits MLP at fractions of training.

    Attributes:
        hessians: stage -> ``[n, n]`` float64 array.
        losses: training loss per step.
        partition: per-layer index ranges.
        asymmetry: stage -> ``max |H - Hᵀ| / max |H|`` (reported, not hidden).
        hidden: hidden width of the MLP.
    """

    hessians: dict
    losses: np.ndarray
    partition: list
    asymmetry: dict
    hidden: int = 8

    def summary(self, by: str = "layer") -> dict[float, dict[str, float]]:
        """:func:`block_mass` per stage, for a partition of :data:`PARTITIONS` (default per layer)."""
        partition = self.partition if by == "layer" else layer_partition(digits_mlp(self.hidden), by)
        return {stage: block_mass(h, partition) for stage, h in self.hessians.items()}


def explicit_hessians(steps: int = 1000, lr: float = 1e-2, hidden: int = 8, seed: int = 0,
                      stages=FIGURE2_STAGES, cache=None, progress: bool = True) -> ExplicitHessians:
    """Train the digits MLP with Adam (full batch) and write its Hessian down at ``stages``.

    Args:
        steps: Adam steps.
        lr: Adam learning rate.
        hidden: hidden width (8 in the paper).
        seed: initialisation seed.
        stages: fractions of training (0 = initialisation).
        cache: cache for the training run (see :func:`hesslab.experiments.training.train`).
        progress: progress bar.

    Returns:
        The :class:`ExplicitHessians`.

    Raises:
        FloatingPointError: if a Hessian has a non-finite entry.
    """
    images, labels = digits()
    batch = (images.flatten(1).double(), labels)
    config = TrainConfig("adamw", lr, steps, checkpoints=tuple(stages), seed=seed)
    run = train(lambda: digits_mlp(hidden), classification_loss, [batch], config, cache=cache,
                cache_key={"model": f"digits-mlp-{hidden}", "data": "digits/full-batch"}, progress=progress)
    model = digits_mlp(hidden)
    hessians, asymmetry = {}, {}
    for stage in stages:
        model.load_state_dict(run.states[stage])
        h = exact_hessian(Problem("digits-mlp", model, classification_loss, [batch])).numpy()
        if not np.isfinite(h).all():
            raise FloatingPointError(f"the Hessian at {stage:.0%} of training has non-finite entries")
        asymmetry[stage] = float(np.abs(h - h.T).max() / max(np.abs(h).max(), 1e-300))
        hessians[stage] = h
    return ExplicitHessians(hessians, run.losses, layer_partition(model, "layer"), asymmetry, hidden)


__all__ = ["FIGURE2_STAGES", "PARTITIONS", "digits_mlp", "layer_partition", "block_mass", "ExplicitHessians", "explicit_hessians"]
