"""Data-parallel Hessian-vector products over ``torch.distributed``.

Each rank holds the whole model and a shard of the Hessian batches. A product is the
batch-size-weighted mean over *all* ranks' batches: every rank sums ``n_b H_b v`` and
``n_b`` over its own batches, and one ``all_reduce`` (sum) of ``[Σ n_b H_b v, Σ n_b]``
gives every rank the same numerator and denominator, so the mean is exact for uneven
shards (a rank with no batch contributes zeros). Before it, an all-reduce (maximum) of three
integers checks that every rank asks for a product of the same size and that none failed.

The eigensolvers run redundantly on every rank: the reduced product is the same on every
rank (an all-reduce leaves one result everywhere) and the probes come from seeds, so
Lanczos, SLQ and the top eigenvalues take the same steps everywhere and every rank returns
the result, with no broadcast. (The ranks' own round-off in the Lanczos recurrences may
differ in the last bits, since BLAS orders sums by memory alignment; should it ever change
a breakdown decision, the size check above stops every rank with an error instead of
summing mismatched products.) The alternative, Lanczos on rank 0 with each vector
broadcast and the products reduced to it, moves the same ``k × n`` numbers per step plus
the broadcast and leaves the other ranks idle during reorthogonalisation.

Communication per product: ``k × n + 1`` numbers in the operator's dtype (``k`` vectors of
its ``n`` entries) and three integers; a ring all-reduce sends and receives about
``2 (P − 1) / P`` times that per rank. An all-blocks Lanczos step of
:func:`hesslab.blockwise_slq` is one product over all blocks at once: ``n`` is the model's
parameter count and ``k`` the probes run together.

Faults. An exception while a rank computes its part (a non-finite loss, a model without
double backward, bad data) does not leave the others waiting: the header tells every rank,
an object all-gather collects the failing ranks' errors, the failing rank raises its own
exception and every other rank raises :class:`DistributedError` naming the failing ranks
and their errors. A rank that dies or hangs makes the others' collective fail when the
backend notices (a closed connection at once; a hang at the process group's ``timeout``,
``torch.distributed.init_process_group(timeout=...)``), and they raise
:class:`DistributedError` saying which product stalled; ``torchrun`` then stops every
rank and names the one that failed first.
"""

from __future__ import annotations

import torch
from torch import Tensor

AUTO = "auto"
#: seconds :func:`run_on_ranks` waits, past the collective timeout, for the other ranks to end
#: after one failed, before it kills them as hung
GRACE = 10.0


class DistributedError(RuntimeError):
    """Another rank failed, died or hung while the ranks computed a product together."""


def resolve_group(process_group=AUTO):
    """The process group to reduce over, or ``None`` for a single process.

    Args:
        process_group: ``"auto"`` (the default group when ``torch.distributed`` is
            initialised with more than one rank, else none), ``None`` (no communication:
            this process's data only), or a process group.
    """
    if process_group is None:
        return None
    if isinstance(process_group, str):
        if process_group != AUTO:
            raise ValueError(f"process_group must be 'auto', None or a process group, got {process_group!r}")
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return dist.group.WORLD
        return None
    return process_group


def group_of(op):
    """The process group behind an operator (or a block of one), ``None`` when it is single-process."""
    op = getattr(op, "parent", op)
    reducer = getattr(op, "reducer", None)
    return None if reducer is None else reducer.group


def agreed_budget(op, memory_budget: int | None, default, device=None) -> int:
    """``memory_budget``, or ``default(device)`` agreed as the smallest over the operator's ranks.

    Every rank must plan the same probe chunks and block groups (they decide how many
    products the ranks compute together), so a budget measured from each rank's free memory
    is replaced by the minimum over the ranks. ``device`` defaults to the operator's.
    """
    if memory_budget is not None:
        return int(memory_budget)
    budget = int(default(op.device if device is None else device))
    group = group_of(op)
    if group is None:
        return budget
    import torch.distributed as dist

    value = torch.tensor([budget], dtype=torch.int64, device=_collective_device(group, op.device))
    _collective(lambda: dist.all_reduce(value, op=dist.ReduceOp.MIN, group=group), group,
                "the memory budget of a Lanczos run could not be agreed over the ranks")
    return int(value.item())


def _collective(call, group, what: str) -> None:
    """Run the collective ``call``; a failure (a rank died or hung) becomes a :class:`DistributedError`."""
    import torch.distributed as dist

    try:
        call()
    except Exception as err:  # backend errors differ: gloo RuntimeError, DistBackendError, ...
        rank, world = dist.get_rank(group), dist.get_world_size(group)
        first = str(err).splitlines()[0] if str(err) else ""
        raise DistributedError(f"rank {rank} of {world}: {what} ({type(err).__name__}: {first}); another rank "
                               "died or hung (its log, or torchrun's summary, names it)") from err


def agreed_host_budget(op, default) -> int | None:
    """For a distributed operator on a GPU, the host budget for offloaded bases agreed over ranks; else ``None``."""
    if group_of(op) is None or torch.device(op.device).type != "cuda":
        return None
    return agreed_budget(op, None, default, device="cpu")


def _collective_device(group, device) -> torch.device:
    import torch.distributed as dist

    return torch.device(device) if dist.get_backend(group) == "nccl" else torch.device("cpu")


class ShardReducer:
    """Sums the ranks' weighted partial products of one :class:`~hesslab.HessianOperator`.

    Args:
        group: the process group (see :func:`resolve_group`).
    """

    def __init__(self, group):
        import torch.distributed as dist

        self.group = group
        self.rank, self.world_size = dist.get_rank(group), dist.get_world_size(group)
        self.products = 0  # reductions so far, named in errors

    def reduce(self, outs: list[Tensor], total: float, error: BaseException | None) -> float:
        """Replace ``outs`` (this rank's ``Σ n_b H_b v``) by the sum over ranks; the summed weight ``Σ n_b``.

        Raises:
            BaseException: ``error`` itself, on the rank where it happened, once every rank knows.
            DistributedError: another rank failed (named, with its error), or the reduction
                did not complete (a rank died or hung).
        """
        import torch.distributed as dist

        self.products += 1
        dtype = outs[0].dtype if outs else torch.float64
        device = _collective_device(self.group, outs[0].device if outs else "cpu")
        size = sum(o.numel() for o in outs)
        # header, reduced by maximum: [largest size, -smallest size, whether any rank failed]
        header = torch.tensor([size, -size, int(error is not None)], dtype=torch.int64, device=device)
        _collective(lambda: dist.all_reduce(header, op=dist.ReduceOp.MAX, group=self.group), self.group,
                    f"Hessian-vector product {self.products} could not be started on every rank")
        largest, smallest, any_failed = header[0].item(), -header[1].item(), header[2].item()
        if any_failed:
            messages: list = [None] * self.world_size
            mine = None if error is None else f"{type(error).__name__}: {error}"
            _collective(lambda: dist.all_gather_object(messages, mine, group=self.group), self.group,
                        "the ranks' errors could not be collected")
            if error is not None:
                raise error
            failed = "; ".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m)
            raise DistributedError(f"rank {self.rank} of {self.world_size} stops: Hessian-vector product "
                                   f"{self.products} failed on another rank ({failed})")
        if largest != smallest:
            raise DistributedError(
                f"rank {self.rank} of {self.world_size}: the ranks asked for Hessian-vector products of different "
                f"sizes (this rank {size} numbers; from {smallest} to {largest} over the ranks) at product "
                f"{self.products}: they ran different computations. Every rank must make the same calls with the "
                "same arguments")
        flat = torch.cat([o.reshape(-1).to(device) for o in outs]
                         + [torch.tensor([float(total)], dtype=dtype, device=device)])
        _collective(lambda: dist.all_reduce(flat, group=self.group), self.group,
                    f"Hessian-vector product {self.products} could not be summed over the ranks")
        offset = 0
        for out in outs:
            out.copy_(flat[offset:offset + out.numel()].view_as(out))
            offset += out.numel()
        return float(flat[-1].item())


class DistributedCheckpoint:
    """A :class:`~hesslab.checkpoint.Checkpoint` that rank 0 alone reads and writes, shared with every rank.

    ``load`` reads rank 0's checkpoint and broadcasts it, so every rank resumes from the
    same progress (or none); ``save`` writes on rank 0 only (the other ranks hold the same
    result), so one process writes each record.

    Args:
        checkpoint: rank 0's checkpoint (ignored on the other ranks; ``None`` there).
        group: the process group.
    """

    def __init__(self, checkpoint, group):
        import torch.distributed as dist

        self.group, self.rank = group, dist.get_rank(group)
        self.checkpoint = checkpoint if self.rank == 0 else None

    def load(self):
        """Rank 0's saved progress (or ``None``), on every rank."""
        import torch.distributed as dist

        box = [self.checkpoint.load() if self.checkpoint is not None else None]
        src = dist.get_global_rank(self.group, 0) if self.group is not dist.group.WORLD else 0
        _collective(lambda: dist.broadcast_object_list(box, src=src, group=self.group), self.group,
                    "rank 0's checkpoint could not be shared")
        return box[0]

    def save(self, arrays, meta: dict, *, finished: bool) -> None:
        """Save on rank 0; nothing elsewhere."""
        if self.checkpoint is not None:
            self.checkpoint.save(arrays, meta, finished=finished)


def gather_objects(value, group) -> list:
    """Every rank's ``value``, in rank order, on every rank."""
    import torch.distributed as dist

    values: list = [None] * dist.get_world_size(group)
    _collective(lambda: dist.all_gather_object(values, value, group=group), group, "values could not be gathered")
    return values


def shard(batches: list, rank: int | None = None, world_size: int | None = None) -> list:
    """This rank's share of ``batches``: every ``world_size``-th batch from ``rank`` (round robin).

    Defaults to the default process group's rank and size (the whole list without one).
    """
    if rank is None or world_size is None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            rank, world_size = dist.get_rank(), dist.get_world_size()
        else:
            rank, world_size = 0, 1
    return list(batches)[rank::world_size]


def run_on_ranks(target: str, kwargs: dict, processes: int, *, backend: str | None = None,
                 timeout: float = 600.0, limit: float | None = None, cuda: bool = False):
    """Run ``module:function(**kwargs)`` on ``processes`` processes joined in one process group; rank 0's result.

    The processes are started as ``torchrun`` starts them (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` on this host), each joins the group
    (``backend``: NCCL with ``cuda``, each rank on ``cuda:LOCAL_RANK``, else gloo; collectives
    time out after ``timeout`` seconds), calls the function, and rank 0 hands back its return
    value (through ``torch.save`` in a temporary folder). The function sees an initialised
    group, so every :class:`~hesslab.HessianOperator` it builds reduces over the ranks; it
    should give each rank its :func:`shard` of the data.

    Args:
        target: ``"package.module:function"``.
        kwargs: its keyword arguments (anything ``torch.save`` can store).
        processes: how many ranks (one per GPU with ``cuda``).
        backend: the process group's backend (default as above).
        timeout: seconds a collective may wait for a rank; :data:`GRACE` seconds after that,
            ranks still running after another failed are killed as hung.
        limit: seconds the whole run may take (default: none); then every rank is killed.
        cuda: one GPU per rank.

    Raises:
        DistributedError: a rank failed, naming the first to fail and its error; every rank
            is stopped (those still waiting in a collective are killed).
    """
    import os
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    with tempfile.TemporaryDirectory(prefix="hesslab-ranks-") as folder:
        job = Path(folder)
        torch.save({"target": target, "kwargs": kwargs, "backend": backend or ("nccl" if cuda else "gloo"),
                    "timeout": timeout, "cuda": cuda}, job / "job.pt")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ranks = []
        for rank in range(processes):
            env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(processes), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE=str(processes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            ranks.append(subprocess.Popen([sys.executable, "-c", _RANK_COMMAND, str(job)], env=env))
        deadline = None if limit is None else time.monotonic() + limit
        first, first_at, stuck = None, None, []
        try:
            while any(p.poll() is None for p in ranks):
                if first is None:
                    first = next((r for r, p in enumerate(ranks) if p.poll() not in (None, 0)), None)
                    first_at = time.monotonic() if first is not None else None
                overdue = deadline is not None and time.monotonic() > deadline
                if overdue or (first is not None and time.monotonic() > first_at + timeout + GRACE):
                    # the others had a collective timeout's time to notice the failure: these hang
                    stuck = [r for r, p in enumerate(ranks) if p.poll() is None]
                    break
                time.sleep(0.05)
        finally:
            for p in ranks:
                if p.poll() is None:
                    p.kill()
                p.wait()
        codes = [p.returncode for p in ranks]
        if any(codes) and first is None and not stuck:
            # every rank had ended before a poll saw one fail: a rank that died without a Python
            # error (killed, os._exit) failed first, since the others fail because of it; else
            # the first error written
            failed = [r for r, c in enumerate(codes) if c]
            silent = [r for r in failed if not (job / f"error-{r}.txt").exists()]
            first = silent[0] if silent else min(failed, key=lambda r: (job / f"error-{r}.txt").stat().st_mtime_ns)
        if any(codes):
            raise DistributedError(_failure_report(target, job, codes, first, stuck, limit))
        return torch.load(job / "result.pt", weights_only=False)


def _failure_report(target: str, job, codes: list[int], first: int | None, stuck: list[int],
                    limit: float | None) -> str:
    """Which rank failed first and why, and which ranks hung, from the ranks' exit codes and error files."""
    lines = [f"{target} on {len(codes)} ranks ended with exit codes {codes}"]
    if first is not None:
        error = job / f"error-{first}.txt"
        lines.append(f"rank {first} failed first (exit code {codes[first]}): "
                     + (error.read_text() if error.exists() else
                        "it left no Python error (killed, out of memory, a crash in native code or os._exit)"))
    if stuck:
        lines.append(f"rank(s) {stuck} were still running "
                     + (f"past the limit of {limit} s" if first is None else "long after that failure")
                     + ": hung, and killed")
    return "; ".join(lines)


#: what each rank of :func:`run_on_ranks` runs (``python -c``), with the job folder as its argument
_RANK_COMMAND = "import sys; from hesslab.distributed import _rank_main; sys.exit(_rank_main(sys.argv[1]))"


def _rank_main(job_dir: str) -> int:
    """One rank of :func:`run_on_ranks`: join the group, call the target, rank 0 saves its result."""
    import importlib
    import os
    import traceback
    from datetime import timedelta
    from pathlib import Path

    import torch.distributed as dist

    job = Path(job_dir)
    spec = torch.load(job / "job.pt", weights_only=False)
    rank = int(os.environ["RANK"])
    try:
        if spec["cuda"]:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(spec["backend"], timeout=timedelta(seconds=spec["timeout"]))
        module, function = spec["target"].split(":")
        result = getattr(importlib.import_module(module), function)(**spec["kwargs"])
        if rank == 0:
            torch.save(result, job / "result.tmp")
            os.replace(job / "result.tmp", job / "result.pt")
    except BaseException:
        (job / f"error-{rank}.txt").write_text(traceback.format_exc()[-4000:])
        os._exit(1)  # at once: an orderly shutdown could wait for a rank that died or hangs
    dist.destroy_process_group()
    return 0


__all__ = ["AUTO", "DistributedCheckpoint", "DistributedError", "ShardReducer", "gather_objects", "agreed_budget", "agreed_host_budget", "group_of", "resolve_group", "run_on_ranks", "shard"]

