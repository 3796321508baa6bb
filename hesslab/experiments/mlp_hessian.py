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


#: Figure 2's test: the mean squared entry inside the diagonal blocks exceeds that outside by this factor
BLOCK_DIAGONAL_FACTOR = 3.0


def figure2_sentences(summaries: dict[str, dict[float, dict[str, float]]],
                      factor: float = BLOCK_DIAGONAL_FACTOR) -> dict[str, str]:
    """The Figure 2 chapter's judgements, each following the numbers.

    Args:
        summaries: partition (``"layer"``, ``"tensor"``, ``"neuron"``) -> stage ->
            :func:`block_mass` of that stage (``ExplicitHessians.summary``).
        factor: the per-entry ratio that counts as near block-diagonal.

    Returns:
        ``{"layer": ..., "neuron": ..., "tensor": ...}`` sentences: whether the layer blocks are
        near block-diagonal at every stage, at the end only, or never; whether the neuron
        blocks pass; whether splitting a layer into weight and bias lowers the ratio.
    """
    ratios = {name: [v["per_entry_ratio"] for v in by_stage.values()] for name, by_stage in summaries.items()}
    layer = ratios["layer"]
    if min(layer) > factor:
        layer_sentence = "By layer, the Hessian is near block-diagonal at every stage shown."
    elif layer[-1] > factor:
        layer_sentence = (f"By layer, the Hessian is near block-diagonal by the end ({layer[-1]:.1f}×) but not at "
                          f"every stage (smallest {min(layer):.1f}×, below {factor:g}×).")
    else:
        layer_sentence = (f"By layer, the Hessian is **not** near block-diagonal by this test at the end of training "
                          f"({layer[-1]:.1f}×, below {factor:g}×).")
    neuron = ratios["neuron"]
    neuron_sentence = (f"Taking each hidden neuron's incoming weights as a block, the per-entry ratio exceeds "
                       f"{factor:g}× at every stage (smallest {min(neuron):.0f}×): the structure sits inside the layers."
                       if min(neuron) > factor else
                       f"Neuron blocks do not pass the test at every stage either (smallest {min(neuron):.1f}×).")
    tensor = ratios["tensor"]
    tensor_sentence = (f"Splitting a layer into its weight and bias tensors gives *lower* per-entry ratios (at most "
                       f"{max(tensor):.1f}× against at least {min(layer):.1f}× by layer): a layer's weights and bias "
                       "are strongly coupled." if max(tensor) < min(layer) else
                       f"Splitting a layer into its weight and bias tensors gives per-entry ratios of "
                       f"{min(tensor):.1f}× to {max(tensor):.1f}×, against {min(layer):.1f}× to {max(layer):.1f}× by layer.")
    return {"layer": layer_sentence, "neuron": neuron_sentence, "tensor": tensor_sentence}
