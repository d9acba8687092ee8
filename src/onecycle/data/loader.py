"""A fast in-memory batch loader: tensors held once, shuffled by index.

No per-sample Python on the hot path: each batch is one ``index_select``, and
augmentation (random crop with padding, horizontal flip) runs on the whole batch
as tensor ops. The order of epoch ``e`` depends only on ``(seed, e)``, so a run
can be resumed mid-epoch and sharded across processes without storing a
generator: ``set_epoch(e)`` says which epoch comes next (``DistributedSampler``
semantics); without it, each full pass over the loader moves on to the next epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from onecycle.errors import ConfigError, check_int

__all__ = ["Loader", "flip", "random_crop", "to_device"]

Batch = tuple[torch.Tensor, torch.Tensor]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (a tensor, or tuples/lists/dicts of them) to ``device``; tensors already
    there are returned as they are."""
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, Mapping):  # dicts, and HF's BatchEncoding (a UserDict)
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Random crops of a batch ``(N, C, H, W)`` after zero-padding by ``pad`` pixels.

    One gather per distinct shift, at most ``(2 pad + 1) ** 2`` of them per batch.
    """
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    shifts = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen, device=gen.device)
    out = torch.empty_like(x)
    keys = shifts[:, 0] * (2 * pad + 1) + shifts[:, 1]
    for key in torch.unique(keys).tolist():
        idx = (keys == key).nonzero(as_tuple=True)[0]
        dy, dx = divmod(key, 2 * pad + 1)
        out[idx] = padded[idx, :, dy : dy + h, dx : dx + w]
    return out


def flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image of a batch left-right with probability ``p``."""
    mask = torch.rand(x.shape[0], generator=gen, device=gen.device) < p
    return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


class Loader:
    """Iterate over ``(x[idx], y[idx])`` batches of in-memory tensors.

    Args:
        x, y: inputs and targets, first dimension = samples. Moved to ``device`` once.
        batch_size: samples per batch (per process when sharded).
        shuffle: a new permutation each epoch, drawn from ``seed`` and the epoch number.
        drop_last: drop the last, smaller batch.
        seed: the data order's seed.
        crop_pad: random crop after padding by this many pixels (images only), 0 = off.
        hflip: random horizontal flips (images only).
        rank, world_size: this process's shard: epoch permutation ``perm[rank::world_size]``.
        even: every rank gets the same number of samples (the permutation's tail of at
            most ``world_size - 1`` samples is dropped; what training needs). ``False``
            keeps every sample, so shards may differ by one (what evaluation needs).
        device: where batches live (default: where ``x`` is).

    ``state_dict()`` is ``{"epoch": e, "batches_done": k}``: with the same data and
    seed, the rest of epoch ``e`` is reproduced exactly after ``load_state_dict``.

    >>> import torch
    >>> dl = Loader(torch.arange(10.0), torch.arange(10), batch_size=4, seed=0)
    >>> len(dl), [len(xb) for xb, yb in dl]
    (3, [4, 4, 2])
    >>> sorted(torch.cat([yb for _, yb in dl]).tolist()) == list(range(10))
    True
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        crop_pad: int = 0,
        hflip: bool = False,
        rank: int = 0,
        world_size: int = 1,
        even: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ConfigError("x, y", (type(x).__name__, type(y).__name__), "two torch.Tensors")
        if len(x) != len(y):
            raise ConfigError("y", f"{len(y)} samples", f"as many samples as x ({len(x)})")
        if len(x) == 0:
            raise ConfigError("x", "0 samples", "a non-empty data set")
        self.world_size = check_int("world_size", world_size)
        self.rank = check_int("rank", rank, minimum=0)
        if self.rank >= self.world_size:
            raise ConfigError("rank", rank, f"an integer in [0, world_size={world_size})")
        self.batch_size = check_int("batch_size", batch_size)
        self.even = bool(even)
        n_local = len(x) // self.world_size
        if self.batch_size > n_local:
            raise ConfigError(
                "batch_size", batch_size, f"at most the samples per process ({n_local})"
            )
        self.crop_pad = check_int("crop_pad", crop_pad, minimum=0)
        if (self.crop_pad or hflip) and x.dim() != 4:
            raise ConfigError("crop_pad/hflip", (crop_pad, hflip), "image batches (N, C, H, W)")
        dev = torch.device(device) if device is not None else x.device
        self.x, self.y = x.to(dev), y.to(dev)
        self.device = dev
        self.shuffle, self.drop_last, self.hflip = bool(shuffle), bool(drop_last), bool(hflip)
        self.seed = int(seed)
        self.epoch = 0
        self.batches_done = 0  # within self.epoch, for resume
        self.indices: torch.Tensor | None = None  # the samples it draws from (None: all)

    @property
    def n_samples(self) -> int:
        """Samples this process sees per epoch (equal across ranks unless ``even=False``)."""
        n = len(self.x) if self.indices is None else len(self.indices)
        if self.even:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def held_out(self, n_batches: int) -> tuple[Loader, list[Batch]]:
        """Set aside the samples of the current epoch's first ``n_batches`` batches (of
        every process: the same samples on every rank): a loader over the other samples
        (same options, seed and shard, from its first batch) and this process's share of
        the set-aside ones as plain batches (no augmentation). Probes train on the first
        and score on the second, which no epoch of theirs ever draws.

        >>> dl = Loader(torch.arange(10.0), torch.arange(10), batch_size=2, seed=0)
        >>> rest, held = dl.held_out(1)
        >>> seen = {int(v) for _ in range(3) for _, yb in rest for v in yb}
        >>> len(held), len(seen), seen.isdisjoint(int(v) for v in held[0][1])
        (1, 8, True)
        """
        n_batches = check_int("n_batches", n_batches)
        every = self.batch_size * self.world_size
        if (n_batches + 1) * every > (len(self.x) if self.indices is None else len(self.indices)):
            raise ConfigError("n_batches", n_batches, "fewer batches than the loader has")
        perm = self._permutation(self.epoch)
        held, keep = perm[: n_batches * every], perm[n_batches * every :]
        rest = self.shard(self.rank, self.world_size, even=self.even)
        rest.indices, rest.epoch, rest.batches_done = keep.sort().values, self.epoch, 0
        mine = held[self.rank :: self.world_size].to(self.device)
        batches = [
            (self.x.index_select(0, i), self.y.index_select(0, i))
            for i in mine.split(self.batch_size)
        ]
        return rest, batches

    def shard(self, rank: int, world_size: int, *, even: bool = True) -> Loader:
        """This loader's shard for process ``rank`` of ``world_size``: same tensors (not
        copied), seed and options; the batch size is kept (capped at the shard's size).

        >>> dl = Loader(torch.arange(10.0), torch.arange(10), batch_size=2, shuffle=False)
        >>> [yb.tolist() for _, yb in dl.shard(1, 2)]
        [[1, 3], [5, 7], [9]]
        """
        out = Loader.__new__(Loader)
        out.__dict__.update(self.__dict__)
        out.world_size = check_int("world_size", world_size)
        out.rank = check_int("rank", rank, minimum=0)
        if out.rank >= out.world_size:
            raise ConfigError("rank", rank, f"an integer in [0, world_size={world_size})")
        out.even = bool(even)
        if out.n_samples == 0:
            raise ConfigError("world_size", world_size, f"at most {len(self.x)} (the samples)")
        out.batch_size = min(self.batch_size, out.n_samples)
        return out

    def __len__(self) -> int:
        n = self.n_samples
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (its own permutation and augmentation)."""
        self.epoch = check_int("epoch", epoch, minimum=0)
        self.batches_done = 0

    def state_dict(self) -> dict[str, int]:
        """Where the data order stands: the epoch and the batches already yielded in it."""
        return {"epoch": self.epoch, "batches_done": self.batches_done, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue epoch ``state["epoch"]`` after its first ``state["batches_done"]`` batches."""
        if int(state.get("seed", self.seed)) != self.seed:
            raise ConfigError("seed", self.seed, f"the checkpoint's data seed {state['seed']}")
        self.epoch = check_int("epoch", state["epoch"], minimum=0)
        self.batches_done = check_int("batches_done", state["batches_done"], minimum=0)

    def _generator(
        self, epoch: int, stream: int, device: str | torch.device = "cpu"
    ) -> torch.Generator:
        # the order is drawn on the CPU (the same on every device); augmentation where the
        # batch is (a CUDA generator for a CUDA batch; MPS has none: the CPU's)
        g = torch.Generator(device=device if torch.device(device).type != "mps" else "cpu")
        # distinct, reproducible streams per (seed, epoch, purpose)
        g.manual_seed((self.seed * 1_000_003 + epoch * 7919 + stream) % (2**63 - 1))
        return g

    def _permutation(self, epoch: int) -> torch.Tensor:
        """Epoch ``epoch``'s order of the samples, before sharding (on the CPU)."""
        n = len(self.x) if self.indices is None else len(self.indices)
        if self.shuffle:
            perm = torch.randperm(n, generator=self._generator(epoch, 0), device="cpu")
        else:
            perm = torch.arange(n)
        return perm if self.indices is None else self.indices.cpu()[perm]

    def _order(self, epoch: int) -> torch.Tensor:
        perm = self._permutation(epoch)
        n_total = len(perm) // self.world_size * self.world_size if self.even else len(perm)
        return perm[:n_total][self.rank :: self.world_size].to(self.device)

    def __iter__(self) -> Iterator[Batch]:
        epoch, start = self.epoch, self.batches_done
        order = self._order(epoch)
        augment = bool(self.crop_pad or self.hflip)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            xb = self.x.index_select(0, idx)
            if augment:
                # one generator per batch: a resumed epoch draws exactly what it would have
                gen = self._generator(epoch, 1 + b * self.world_size + self.rank, self.device)
                xb = self._augment(xb, gen, idx, epoch)
            self.batches_done = b + 1
            yield xb, self.y.index_select(0, idx)
        self.epoch, self.batches_done = epoch + 1, 0

    def _augment(
        self, xb: torch.Tensor, gen: torch.Generator, idx: torch.Tensor, epoch: int
    ) -> torch.Tensor:
        # idx (the batch's samples) and epoch: for augmentations that depend on them
        # (benchmarks/short_budget.py's alternating flips)
        if self.crop_pad:
            xb = random_crop(xb, self.crop_pad, gen)
        if self.hflip:
            xb = flip(xb, gen)
        return xb
