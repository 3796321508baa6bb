"""Linear operators the spectral methods run on, and their round-off.

Every method of :mod:`hesslab.slq`, :mod:`hesslab.topk` and :mod:`hesslab.trace` takes an
*operator*: an object with ``dim``, ``dtype``, ``device`` and a batched ``matvec``
(``[n]`` or ``[k, n]`` in, the same shape out), such as a
:class:`~hesslab.hvp.HessianOperator`, a block of one, or a :class:`MatrixOperator`.
:func:`operator_noise` measures an operator's round-off, which sets the ``β`` below which
Lanczos counts an invariant subspace as found.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


class MatrixOperator:
    """A dense symmetric matrix ``[n, n]`` as an operator (for tests and quadratic models)."""

    def __init__(self, matrix: Tensor):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.dim = matrix.shape[0]
        self.dtype, self.device = matrix.dtype, matrix.device

    def matvec(self, v: Tensor) -> Tensor:
        """``A v`` for ``[n]`` or ``[k, n]``."""
        return v @ self.matrix.T

    __matmul__ = matvec


def as_operator(op):
    """``op`` itself, or a :class:`MatrixOperator` when it is a dense matrix ``[n, n]``."""
    return MatrixOperator(op) if isinstance(op, Tensor) else op


def probe_seed(seed: int, index: int) -> int:
    """The seed of probe ``index`` drawn from ``seed`` (independent streams, one per probe)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def probe_vectors(dim: int, num: int, seed: int, dtype=torch.float64, device="cpu", start: int = 0) -> Tensor:
    """Gaussian probe vectors ``[num, dim]``: probes ``start … start + num − 1`` of ``seed``.

    Each probe has its own generator (:func:`probe_seed`), so probe ``i`` is the same
    vector whichever chunk it is drawn in, on every device.
    """
    rows = torch.empty(num, dim, dtype=dtype, device=device)
    for i in range(num):
        g = torch.Generator().manual_seed(probe_seed(seed, start + i))
        rows[i] = torch.randn(dim, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    return rows


def matvec_in(op, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """Apply ``op`` in its own dtype and device to vectors kept in ``dtype`` wherever they are.

    E.g. float64 Lanczos on a float32 model, or a basis offloaded to host memory.
    """
    return lambda q: op.matvec(q.to(op.device, op.dtype)).to(q.device, dtype)


#: safety factor between an operator's measured round-off and the ``β`` that counts as breakdown
NOISE_FACTOR = 10.0


def _noise_seed(seed: int) -> int:
    """A seed for the round-off probes, independent of every probe and block seed."""
    return int(np.random.SeedSequence([int(seed), 0x6E6F6973]).generate_state(1)[0])


def _noise_vectors(dim: int, seed: int, dtype, device) -> Tensor:
    """``[3, dim]`` rows ``a, b, a + b`` with ``a``, ``b`` unit Gaussian directions."""
    ab = probe_vectors(dim, 2, _noise_seed(seed), dtype, device)
    ab = ab / ab.norm(dim=1, keepdim=True)
    return torch.cat([ab, ab.sum(0, keepdim=True)])


def _noise_from_products(rows: Tensor, products: Tensor) -> float:
    """Round-off per unit vector from the linearity defect ``A(a+b) − Aa − Ab`` (errors add in quadrature)."""
    defect = (products[2] - products[0] - products[1]).norm()
    return float(defect / rows.norm(dim=1).square().sum().sqrt())


def operator_noise(op, seed: int = 0, basis_dtype: torch.dtype = torch.float64) -> float:
    """The operator's round-off on a unit vector, measured from its defect of linearity.

    A float32 Hessian-vector product is not exact: its error can be orders of magnitude
    above float32's epsilon times ``‖H‖`` (cancellation in the double backward). The
    exact product is linear, so ``‖H(a+b) − Ha − Hb‖`` is pure round-off; divided by
    the three vectors' norms in quadrature it estimates the error of one product with a
    unit vector. Three products (one batched call).

    Returns:
        The absolute error estimate (0 for an operator exact to the last bit).
    """
    op = as_operator(op)
    rows = _noise_vectors(op.dim, seed, basis_dtype, op.device)
    return _noise_from_products(rows, matvec_in(op, basis_dtype)(rows))


def dense_matrix(op, max_dim: int = 20_000, chunk: int = 256) -> Tensor:
    """Materialise a symmetric operator column by column (``op.matvec`` on identity rows).

    Args:
        op: anything with ``dim``, ``dtype``, ``device`` and batched ``matvec``.
        max_dim: refuse larger operators (memory is ``dim²`` numbers).
        chunk: identity rows per batched product.

    Returns:
        ``[dim, dim]`` tensor.
    """
    if op.dim > max_dim:
        raise ValueError(f"dim={op.dim} > max_dim={max_dim}: too large to densify")
    columns = []
    for i in range(0, op.dim, chunk):
        rows = min(chunk, op.dim - i)
        eye = torch.zeros(rows, op.dim, dtype=op.dtype, device=op.device)
        eye[torch.arange(rows), torch.arange(i, i + rows)] = 1
        columns.append(op.matvec(eye))
    return torch.cat(columns).T.contiguous()


__all__ = ["dense_matrix", "MatrixOperator", "as_operator", "probe_vectors", "probe_seed", "matvec_in", "operator_noise", "NOISE_FACTOR"]
