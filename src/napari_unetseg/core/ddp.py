"""Data-parallel training across processes (``torchrun``): the process group and its helpers.

``torchrun --nproc_per_node=N unetseg train ...`` starts N copies of the command and sets
``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (and the rendezvous address) in their
environments. :func:`session` joins them into one process group -- NCCL for CUDA tensors
and gloo for CPU tensors when the machine has a GPU, gloo alone otherwise -- and the
:class:`~.training.Trainer` then trains through
:class:`torch.nn.parallel.DistributedDataParallel`:

* every rank draws its own patches (its sampler is seeded with :func:`rank_seed`), ``batch
  size // N`` of the patches of one step (:func:`local_batch`), and the gradients are
  averaged across the ranks, so a step sees ``batch_size`` patches in all;
* the ranks start from the same weights (DDP copies rank 0's), take the same steps and
  so end with the same weights;
* rank 0 alone validates, reports progress and saves the model; the others are quiet.

Outside torchrun (no ``WORLD_SIZE`` above 1) every function here is a no-op that answers
for a single process, so the same code trains in one process.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.distributed as dist

#: How long a collective waits for the other ranks before it fails (seconds).
TIMEOUT_S = 1800


def launched() -> bool:
    """True when this process was started by torchrun (or alike) with more than one rank."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def active() -> bool:
    """True when a process group of more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the rank that validates, reports and saves (and in one process)."""
    return rank() == 0


def local_rank() -> int:
    """The rank within this machine (``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Ranks on this machine (``LOCAL_WORLD_SIZE``; 1 without torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if active() else 1


def backend() -> str:
    """The backend :func:`init` uses: NCCL for CUDA tensors with gloo for CPU tensors when
    a GPU is there, gloo alone otherwise."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init() -> bool:
    """Join the process group torchrun describes in the environment; returns whether this
    process is one of several ranks. Does nothing outside torchrun or when a group exists.

    Raises:
        ValueError: the environment names a world but torch.distributed is missing.
    """
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return active()
    if not dist.is_available():
        raise ValueError("WORLD_SIZE is set but this PyTorch has no torch.distributed")
    dist.init_process_group(backend=backend(), timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return active()


def cleanup() -> None:
    """Leave the process group (if this module's :func:`init` or the caller made one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session() -> Iterator[bool]:
    """``with session() as distributed:`` -- :func:`init` on entry, :func:`cleanup` on
    exit (only when it initialised the group itself)."""
    own = launched() and not (dist.is_available() and dist.is_initialized())
    try:
        yield init()
    finally:
        if own:
            cleanup()


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if active():
        dist.barrier()


def rank_seed(seed: int) -> int:
    """A seed of its own per rank for sampling patches: ``seed`` itself on rank 0 (so one
    process samples as before), a seed derived from (seed, rank) on the others."""
    r = rank()
    if r == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), r]).generate_state(1)[0])


def local_batch(batch_size: int) -> int:
    """Patches this rank draws per step: the ``batch_size`` patches of one step shared
    out over the ranks (the first ``batch_size % N`` ranks draw one more)."""
    n, r = world_size(), rank()
    return batch_size // n + (1 if r < batch_size % n else 0)


def check_batch(batch_size: int) -> None:
    """Refuse a world larger than the patches per step (some rank would have none); every
    rank raises the same error, without a collective, so none waits for the others.

    Raises:
        ValueError: ``world_size() > batch_size``.
    """
    n = world_size()
    if n > int(batch_size):
        raise ValueError(
            f"{n} training processes but train.batch_size is {batch_size} patches per step: "
            f"set --batch-size to at least {n} or start at most {batch_size} processes"
        )


def check_same(values: Sequence[int], what: str) -> None:
    """Refuse integers that differ between ranks (e.g. a plan made from each GPU's free
    memory); every rank raises the same error.

    Raises:
        ValueError: some rank has other ``values``; ``what`` names them for the message.
    """
    if not active():
        return
    t = torch.tensor([int(v) for v in values], dtype=torch.int64)
    low, high = t.clone(), t.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise ValueError(
            f"the training processes planned different {what} "
            f"({low.tolist()} to {high.tolist()}): set them in the settings"
        )


def sum_stats(values: Sequence[float]) -> list[float]:
    """``values`` summed over the ranks (float64, on the CPU); the values themselves in
    one process."""
    if not active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def device_for_rank(device: torch.device) -> torch.device:
    """The CUDA device of this rank (``cuda:LOCAL_RANK``, made current) when training on
    CUDA in a process group; ``device`` otherwise."""
    if not active() or device.type != "cuda":
        return device
    count = torch.cuda.device_count()
    if local_rank() >= count:
        raise ValueError(
            f"local rank {local_rank()} has no GPU of its own ({count} on this machine): "
            f"start at most {count} processes per node (--nproc_per_node)"
        )
    device = torch.device("cuda", local_rank())
    torch.cuda.set_device(device)
    return device


def threads_for_rank(threads: int | None) -> int | None:
    """CPU threads per rank: ``threads`` when set; otherwise, in a process group, the
    physical cores shared out over the ranks of this machine (at least 1)."""
    if threads is not None or not active():
        return threads
    from .device import physical_cores

    return max(1, physical_cores() // max(1, local_world_size()))


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when in a process group (rank 0's weights are
    copied to every rank); ``model`` itself otherwise. The module to save stays
    ``model`` (``wrapped.module``)."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def describe() -> str:
    """One line for the user: ranks and backend, or '' in one process."""
    if not active():
        return ""
    return f"data-parallel training on {world_size()} processes ({dist.get_backend()})"
