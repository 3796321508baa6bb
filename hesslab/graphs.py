"""Retained first-order graphs: built once per batch, kept while they fit a memory budget.

Reverse-mode Hessian-vector products differentiate a batch's gradient ``g = dL_b/dw``
once more. Building ``g`` with ``create_graph=True`` costs a forward and a backward;
:class:`RetainedGraphs` keeps those graphs between products while everything they hold
alive fits ``budget`` bytes, and remembers a copy of the weights they were built from,
so that a product after any change of the weights rebuilds them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Graph:
    """A batch's first-order graph: ``grads[i] = dL_batch/dparam_i`` (None where unused).

    Attributes:
        weight: the batch's weight (its number of examples).
        grads: gradients with ``create_graph=True``, one per selected parameter.
        nbytes: bytes the graph keeps alive (saved tensors other than the parameters,
            and the gradients themselves).
    """

    weight: float
    grads: tuple[Tensor | None, ...]
    nbytes: int


def default_graph_budget(device: torch.device) -> int:
    """Bytes of retained graphs allowed: half the free GPU memory, or 1/4 of RAM (≤ 8 GiB)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free // 2
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return min(ram // 4, 8 << 30)


def build_graph(loss: Callable[[], Tensor], params: Sequence[Tensor], weight: float) -> Graph:
    """Run ``loss()`` and its first-order backward with ``create_graph=True``, counting what the graph keeps.

    Args:
        loss: computes the batch's scalar loss (forward pass).
        params: the tensors to differentiate.
        weight: the batch's weight.
    """
    storages: dict[int, int] = {}  # storage address -> bytes, of everything the graph keeps alive
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in param_ptrs:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
        grads = torch.autograd.grad(loss(), params, create_graph=True, allow_unused=True)
    kept = tuple(g if g is not None and g.requires_grad else None for g in grads)
    for g in kept:  # the retained gradients themselves
        if g is not None:
            storages[g.untyped_storage().data_ptr()] = g.untyped_storage().nbytes()
    return Graph(weight, kept, sum(storages.values()))


def _once_differentiable_code():
    from torch.autograd.function import once_differentiable

    return once_differentiable(lambda ctx, *grads: None).__code__


#: the code of torch's ``@once_differentiable`` wrapper, the same object for every function it wraps
_ONCE_DIFFERENTIABLE = _once_differentiable_code()


def first_order_only(loss: Tensor) -> list[str]:
    """Names of the custom autograd Functions in ``loss``'s graph whose backward is ``@once_differentiable``.

    Such a backward runs without recording a graph, so differentiating the gradient again
    treats its output as a constant: torch raises nothing and the Hessian terms through the
    function are silently missing.
    """
    found, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        forward_cls = getattr(node, "_forward_cls", None)
        if forward_cls is not None and getattr(forward_cls.backward, "__code__", None) is _ONCE_DIFFERENTIABLE:
            found.append(forward_cls.__qualname__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sorted(set(found))


class RetainedGraphs:
    """Graphs kept between products, within a budget, valid for one set of weights.

    Args:
        budget: bytes the kept graphs (and one copy of the watched weights) may use;
            None for :func:`default_graph_budget`; 0 keeps nothing.
        device: where the graphs live (sets the default budget).
    """

    def __init__(self, budget: int | None, device: torch.device):
        self.budget = budget
        self.device = device
        self._graphs: dict[int, Graph] = {}
        self._bytes = 0
        self._weights: list[Tensor] | None = None  # copy of the weights the kept graphs were built from

    def __len__(self) -> int:
        """Number of kept graphs."""
        return len(self._graphs)

    def __contains__(self, index: int) -> bool:
        """Whether batch ``index``'s graph is kept."""
        return index in self._graphs

    def get(self, index: int) -> Graph | None:
        """The kept graph of batch ``index``, or None."""
        return self._graphs.get(index)

    def values(self):
        """The kept graphs."""
        return self._graphs.values()

    @property
    def nbytes(self) -> int:
        """Bytes kept alive, as counted against the budget (graphs and the weight copy)."""
        return self._bytes

    def offer(self, index: int, graph: Graph, watched: Sequence[Tensor]) -> bool:
        """Keep ``graph`` if it fits the budget; the first kept graph also copies ``watched``.

        Returns:
            Whether the graph was kept.
        """
        budget = self.budget if self.budget is not None else default_graph_budget(self.device)
        need = graph.nbytes
        if self._weights is None:
            need += sum(t.numel() * t.element_size() for t in watched)
        if self._bytes + need > budget:
            return False
        if self._weights is None:
            self._weights = [t.clone() for t in watched]
        self._graphs[index] = graph
        self._bytes += need
        return True

    def drop_if_stale(self, watched: Sequence[Tensor]) -> None:
        """Drop every graph when ``watched`` differs from the weights they were built from.

        Values are compared, not version counters: ``p.data.add_()`` changes a parameter
        without bumping its ``_version``.
        """
        if not self._graphs:
            return
        same = len(watched) == len(self._weights) and all(
            a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(self._weights, watched))
        if not same:
            self.clear()

    def clear(self) -> None:
        """Drop every graph and the weight copy."""
        self._graphs.clear()
        self._bytes = 0
        self._weights = None


__all__ = ["Graph", "RetainedGraphs", "build_graph", "default_graph_budget"]
