"""Multi-process training on PyTorch's own engine: ``torch.distributed`` + DDP.

Launch with ``torchrun`` (the ``Learner`` and ``onecycle fit`` need no change)::

    torchrun --standalone --nproc_per_node=2 -m onecycle fit --dataset mnist1d --epochs 10

or from Python with ``spawn(fn, nprocs)``. What the Learner does when a process group of
more than one process is up (see ``docs/distributed.md``):

- wraps the model in ``DistributedDataParallel`` (gradients averaged across ranks);
- shards an ``onecycle.data.Loader`` per rank (``perm[rank::world_size]`` of the epoch's
  permutation, a new one each epoch; a ``DataLoader`` needs a ``DistributedSampler``);
- counts the schedule's steps from the sharded loader, so every rank runs the same
  number of optimizer steps with the same hyper-parameters;
- averages each batch's loss across ranks (one scalar all-reduce): the recorded loss and
  the non-finite check are the same on every rank, so a NaN on one rank stops all;
- reduces validation sums across ranks;
- lets only rank 0 print, write metrics, plots and checkpoints.

``check_device`` (is this device name usable here?) and ``model_device`` live here too:
where this process computes.

``batch_size`` is per process: the effective batch is ``bs x world_size x accumulate``
(``onecycle fit`` without ``--bs`` splits its recipe's batch across the processes instead,
so the same command trains the same way under torchrun).
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
import socket
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.distributed as dist

from onecycle.errors import ConfigError

__all__ = [
    "Replicas",
    "all_reduce_sum",
    "barrier",
    "broadcast_object",
    "check_device",
    "init",
    "is_distributed",
    "is_main",
    "rank",
    "shutdown",
    "spawn",
    "world_size",
]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0  # seconds; ONECYCLE_DIST_TIMEOUT overrides


def is_distributed() -> bool:
    """True when a process group of more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0, or no process group: the process that prints and writes files."""
    return rank() == 0


def _timeout(seconds: float | None) -> datetime.timedelta:
    if seconds is None:
        raw = os.environ.get("ONECYCLE_DIST_TIMEOUT", str(DEFAULT_TIMEOUT))
        try:
            seconds = float(raw)
        except ValueError:
            raise ConfigError("ONECYCLE_DIST_TIMEOUT", raw, "a number of seconds") from None
    if not seconds > 0:
        raise ConfigError("timeout", seconds, "a number of seconds > 0")
    return datetime.timedelta(seconds=seconds)


def check_device(name: str, value: torch.device | str) -> torch.device:
    """``value`` as a ``torch.device`` this process can use, else ConfigError: an unknown
    name (``"banana"``) or an accelerator this torch build or machine does not have.

    >>> check_device("device", "cpu")
    device(type='cpu')
    """
    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(name, value, "a torch device: 'cpu', 'cuda', 'cuda:1', 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(name, value, "'cpu': this torch build or machine has no CUDA GPU")
        # torch keeps the index in 8 bits: "cuda:257" becomes cuda:1, "cuda:999" cuda:-25
        asked = value.partition(":")[2] if isinstance(value, str) else None
        wrapped = asked is not None and asked.strip().isdigit() and int(asked) != dev.index
        if wrapped or (dev.index is not None and not 0 <= dev.index < torch.cuda.device_count()):
            raise ConfigError(name, value, f"a CUDA index < {torch.cuda.device_count()}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(name, value, "'cpu': MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps", "meta"):
        mod = getattr(torch, dev.type, None)  # xpu, ...: ask the backend
        if mod is None or not getattr(mod, "is_available", lambda: False)():
            raise ConfigError(name, value, f"'cpu': {dev.type} is not available here")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the first parameter (the CPU for a model without any)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def init(
    backend: str | None = None,
    timeout: float | None = None,
    device: torch.device | str | None = None,
) -> bool:
    """Join the process group ``torchrun`` (or ``spawn``) described in the environment
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). Returns True when this
    process is now part of a group of more than one; False when the environment names
    none (a plain single-process run) or a group is already up.

    ``device``: where this run trains. CUDA: NCCL, and this process's GPU is set to
    ``LOCAL_RANK`` (refused when this machine has fewer GPUs than processes); any other
    device: gloo. None: CUDA when this machine has one. ``backend`` overrides the choice.
    ``timeout`` (seconds; default ``ONECYCLE_DIST_TIMEOUT`` or 600) bounds the rendezvous
    and every collective, so a dead peer fails the run instead of hanging it.
    """
    if dist.is_initialized():
        return False
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws <= 1 or "RANK" not in os.environ:
        return False
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE", ws, "1: this torch build has no torch.distributed")
    on_cuda = (
        torch.cuda.is_available()
        if device is None
        else check_device("device", device).type == "cuda"
    )
    use_cuda = on_cuda and backend != "gloo"
    backend = backend or ("nccl" if use_cuda else "gloo")
    if use_cuda:
        local, n_gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local >= n_gpus:  # set_device would fail with "invalid device ordinal"
            raise ConfigError(
                "LOCAL_RANK", local,
                f"< {n_gpus}, the GPUs here: one process per GPU, or train on the CPU (gloo)",
            )  # fmt: skip
        torch.cuda.set_device(local)
    dist.init_process_group(backend=backend, timeout=_timeout(timeout))
    log.info("process group up: rank %d of %d (%s)", dist.get_rank(), ws, backend)
    return True


def shutdown(*holders: Any) -> None:
    """Leave the process group cleanly: drop the DDP wrappers held by ``holders`` (e.g.
    the Learner, or its ``Replicas``) first, collect them, then ``destroy_process_group``.
    Destroying the group while a DDP model is alive crashes some torch versions at exit."""
    for h in holders:
        replicas = h if isinstance(h, Replicas) else getattr(h, "replicas", None)
        if isinstance(replicas, Replicas):
            replicas.wrapper = None
    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over ranks (in place; ``t`` itself without a process group)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself without a process group)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def free_port() -> int:
    """A TCP port free on this host now (for ``MASTER_PORT``; no fixed ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned(local_rank: int, fn: Callable[..., Any], nprocs: int, port: int, args: tuple,
             timeout: float | None, device: torch.device | str | None) -> None:  # fmt: skip
    os.environ.update({
        "RANK": str(local_rank), "LOCAL_RANK": str(local_rank), "WORLD_SIZE": str(nprocs),
        "LOCAL_WORLD_SIZE": str(nprocs), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    })  # fmt: skip
    init(timeout=timeout, device=device)
    try:
        fn(*args)
    finally:
        shutdown()


def spawn(
    fn: Callable[..., Any],
    nprocs: int = 2,
    args: tuple = (),
    timeout: float | None = None,
    device: torch.device | str | None = None,
) -> None:
    """Run ``fn(*args)`` in ``nprocs`` processes on this host, each in the process group
    (``init``: gloo for ``device="cpu"``, NCCL and one GPU per process for CUDA; None:
    CUDA when there is one), the group torn down cleanly afterwards. ``fn`` must be
    importable (defined at a module's top level). An exception in any process is raised
    here. Example (``work`` in an importable module)::

        def work(out):
            learn = make_learner()         # data in a Loader: sharded per rank
            learn.fit_one_cycle(5, 0.1)    # DDP, reduced losses, the same schedule on each rank

        spawn(work, nprocs=2, args=("runs/x",), device="cpu")
    """
    import torch.multiprocessing as mp

    if not isinstance(nprocs, int) or nprocs < 1:
        raise ConfigError("nprocs", nprocs, "an integer >= 1")
    mp.spawn(_spawned, args=(fn, nprocs, free_port(), args, timeout, device), nprocs=nprocs,
             join=True)  # fmt: skip


class Replicas:
    """What the Learner's loop asks of the process group; without one (a single process)
    every method is a no-op that hands back what it was given.

    - ``prepare(model, train_data, valid_data)`` before a fit: shards the data per rank,
      wraps the model in DDP (again when its trainable parameters changed, e.g. after
      ``unfreeze``) and checks that every rank runs the same number of batches;
    - ``forward_model(model)``: the module to call in training (the DDP wrapper, or
      ``model``); ``sync(will_step)``: DDP's ``no_sync`` on micro-batches that do not step;
    - ``reduce_loss(loss)``: the batch loss averaged over ranks; ``reduce_sums(t)``: a
      tensor of sums added up over ranks (validation); ``agree(x)``: one float, the same
      on every rank (the mean of theirs: a time budget's elapsed time);
    - ``release()`` after a fit: drop the wrapper (see ``shutdown``).

    >>> import torch
    >>> r = Replicas(torch.device("cpu"))
    >>> m = torch.nn.Linear(2, 2)
    >>> r.prepare(m, [1, 2], None) == ([1, 2], None) and r.forward_model(m) is m
    True
    >>> r.reduce_loss(torch.tensor(2.0)).item()
    2.0
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.wrapper: torch.nn.Module | None = None  # the DDP model, during a fit
        self._trainable: tuple[bool, ...] = ()

    def prepare(self, model: torch.nn.Module, train_data: Any, valid_data: Any) -> tuple[Any, Any]:
        if not is_distributed():
            return train_data, valid_data
        r, world = rank(), world_size()
        train_data = shard(train_data, r, world, True, "train_data")
        if valid_data is not None:
            valid_data = shard(valid_data, r, world, False, "valid_data")
        trainable = tuple(p.requires_grad for p in model.parameters())
        if self.wrapper is None or trainable != self._trainable:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapper = DDP(model, device_ids=ids)  # rank 0's weights everywhere
            self._trainable = trainable
        counts = all_gather_object(len(train_data))
        if len(set(counts)) > 1:
            raise ConfigError("train_data", f"batches per rank {counts}",
                              "the same number of batches on every rank")  # fmt: skip
        return train_data, valid_data

    def forward_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.wrapper or model

    def sync(self, will_step: bool) -> AbstractContextManager[Any]:
        """DDP averages gradients on the micro-batch that steps, not on every one."""
        if self.wrapper is None or will_step:
            return nullcontext()
        return self.wrapper.no_sync()  # type: ignore[operator]

    def reduce_loss(self, loss: torch.Tensor) -> torch.Tensor:
        if self.wrapper is None or not is_distributed():
            return loss
        red = loss.detach().float().reshape(1).clone()
        all_reduce_sum(red)
        return red[0] / world_size()

    def reduce_sums(self, sums: Iterable[torch.Tensor]) -> list[torch.Tensor]:
        out = list(sums)
        if is_distributed():  # each rank saw its shard: add them up
            packed = all_reduce_sum(torch.stack(out))
            out = list(packed)
        return out

    def agree(self, value: float) -> float:
        """``value`` averaged over ranks, bit-identical on every rank (``value`` itself in
        one process): decisions taken from it (a time budget's last step) agree."""
        if not is_distributed():
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.device)
        return float(all_reduce_sum(t)[0]) / world_size()

    def release(self) -> None:
        """Drop the DDP wrapper (the next ``prepare`` wraps again): a script may then call
        ``dist.destroy_process_group()`` while the Learner lives; a DDP model alive past its
        group aborts some torch versions at exit."""
        if self.wrapper is not None:
            self.wrapper = None
            gc.collect()


def shard(data: Any, rank: int, world: int, even: bool, name: str) -> Any:
    """``data`` for this rank: an ``onecycle.data.Loader`` is sharded (once). Training
    data of another kind must bring its own ``DistributedSampler``; validation data of
    another kind is evaluated whole on every rank (the reduced result is the same)."""
    from torch.utils.data.distributed import DistributedSampler

    from onecycle.data.loader import Loader

    if isinstance(data, Loader):
        if data.world_size == world:
            return data  # sharded already (by the user, or by an earlier fit)
        if data.world_size != 1:
            raise ConfigError(name, f"a Loader sharded for {data.world_size} processes",
                              f"an unsharded Loader, or one sharded for {world}")  # fmt: skip
        return data.shard(rank, world, even=even)
    if not even or isinstance(getattr(data, "sampler", None), DistributedSampler):
        return data
    raise ConfigError(
        name, type(data).__name__,
        f"under torch.distributed ({world} processes): an onecycle.data.Loader (sharded "
        "automatically) or a DataLoader with a DistributedSampler",
    )  # fmt: skip
