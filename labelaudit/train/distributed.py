"""Data-parallel scans under ``torchrun``: process-group set-up and the few collectives training needs.

``torchrun --nproc-per-node N -m labelaudit scan ...`` starts N copies of the command with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in their environment (and, across machines, its own
rendezvous). :func:`setup` joins them into one process group: NCCL when the run trains on CUDA
GPUs, gloo on CPUs. Without ``torchrun`` (or with one process) every function here is a no-op
and a scan is the ordinary single-process one.

How a data-parallel scan divides the work (see :class:`labelaudit.train.trainer.Trainer`):

- every rank reads the sample table; rank 0 decodes the image cache (and computes embeddings)
  first, the others then read the same cache (:func:`primary_first`);
- each epoch every rank draws the same shuffled order, and each global batch of ``batch_size``
  is split between the ranks; DistributedDataParallel averages the gradients, so all ranks hold
  the same weights;
- per-sample state (the softmax history, PMNAR's clean predictions) is written by the rank that
  trained the sample and summed across ranks at the end of the epoch, so every rank selects
  samples from the same complete history;
- rank 0 alone writes the run directory.
"""

from __future__ import annotations

import datetime
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from ..errors import ConfigError

#: How long a rank waits for the others (e.g. while rank 0 decodes a large image cache).
TIMEOUT = datetime.timedelta(hours=2)


def launched() -> bool:
    """True when this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise ConfigError(
            f"WORLD_SIZE must be an integer (torchrun sets it); got {os.environ['WORLD_SIZE']!r}"
        ) from None


def setup(device: str = "auto") -> None:
    """Join the process group ``torchrun`` prepared; nothing without ``torchrun`` or when joined already.

    ``device`` is the scan's ``--device``: NCCL when it trains on CUDA, gloo otherwise.
    """
    if not launched() or dist.is_initialized():
        return
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run the scan without torchrun")
    if device.startswith("cuda:"):
        raise ConfigError(
            f"--device {device} would put every torchrun process on one GPU; pass --device cuda "
            "(each process uses GPU LOCAL_RANK) or auto"
        )
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if local_rank() >= torch.cuda.device_count():
            raise ConfigError(
                f"torchrun started process {local_rank()} on a machine with {torch.cuda.device_count()} "
                "GPUs; start at most one process per GPU (--nproc-per-node) or pass --device cpu"
            )
        torch.cuda.set_device(local_rank())
    try:
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    except (RuntimeError, ValueError) as exc:  # rendezvous or backend failures
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"the torchrun processes could not join one process group ({first_line}); check "
            "torchrun's --rdzv-endpoint / --master-addr and that every process can reach it"
        ) from None


def shutdown() -> None:
    """Leave the process group (at the end of a command); nothing when not joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; picks its GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_primary() -> bool:
    """True for rank 0, the one process that prints and writes the run directory."""
    return rank() == 0


def backend() -> str | None:
    """``"gloo"`` or ``"nccl"`` inside a process group, else None."""
    return dist.get_backend() if dist.is_initialized() else None


def barrier() -> None:
    if active():
        dist.barrier()


@contextmanager
def primary_first():
    """The first process of each machine (``LOCAL_RANK`` 0) runs the block first (e.g. filling
    the image cache), the machine's other processes after every first process is done.

    Each machine fills its own cache; on a shared cache directory the first processes of
    several machines may decode the same entry at once, which is safe (every cache file is
    written under a private temporary name and renamed into place) but wasted work.
    """
    if not active():
        yield
        return
    if local_rank() != 0:
        dist.barrier()
    yield
    if local_rank() == 0:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks in place (nothing in a single process); returns it."""
    return _collective(tensor, lambda t: dist.all_reduce(t, op=dist.ReduceOp.SUM))


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Largest value over all ranks, in place (nothing in a single process); returns it."""
    return _collective(tensor, lambda t: dist.all_reduce(t, op=dist.ReduceOp.MAX))


def broadcast(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``tensor`` on every rank, in place (nothing in a single process); returns it."""
    return _collective(tensor, lambda t: dist.broadcast(t, src=0))


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (``flag`` itself in a single process)."""
    return bool(all_reduce_max(torch.tensor([float(flag)])).item())


def sum_epoch_shares(totals: list[torch.Tensor], tracked: list[tuple[torch.Tensor, int]], rows) -> None:
    """Complete an epoch's per-sample results on every rank, in place.

    Each rank trained the samples ``rows`` (``(N,)`` bool) and wrote only theirs: each tensor of
    ``totals`` (zero elsewhere, e.g. the epoch's softmax, or sums such as the loss) is summed over
    the ranks; each ``(state, dim)`` of ``tracked`` (samples along ``dim``, holding every rank's
    older values elsewhere) keeps this rank's ``rows`` only, then is summed.
    """
    for tensor in totals:
        all_reduce_sum(tensor)
    for state, dim in tracked:
        shape = [1] * state.dim()
        shape[dim] = len(rows)
        state.mul_(rows.view(shape).to(state.device, state.dtype))
        all_reduce_sum(state)


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers of ``model`` (e.g. batch-norm running statistics, which
    DistributedDataParallel broadcasts before each forward, so after the last step they differ
    per rank)."""
    for buffer in model.buffers():
        broadcast(buffer)


def _collective(tensor: torch.Tensor, operation) -> torch.Tensor:
    """Run the in-place ``operation`` on ``tensor`` across the ranks; NCCL works on GPU tensors
    only, so a host tensor goes through this process's GPU there."""
    if not active():
        return tensor
    if backend() == "nccl" and tensor.device.type != "cuda":
        on_gpu = tensor.to(torch.device("cuda", local_rank()))
        operation(on_gpu)
        tensor.copy_(on_gpu)
    else:
        operation(tensor)
    return tensor


def description() -> dict:
    """``{"world_size": N, "distributed_backend": "gloo" | "nccl" | None}`` for summary.json."""
    return {"world_size": world_size(), "distributed_backend": backend()}
