"""Multi-process data loading: ranks, the library's sharding, and gathered states.

``torch.distributed`` is imported lazily: a single-process user never pays for it.

**Sharding** (``ReproLoader(..., shard=True)``): each epoch has one global order, a
shuffle keyed by (seed, epoch) or ``range(n)``, the same on every rank and computed a
batch at a time (nothing of the dataset's size is built). A
*global step* takes the next ``world_size * batch_size`` samples of it and rank ``r``
takes its contiguous part. The loader's position is then a global one, the number of
samples of the epoch already handed out across all ranks, so a checkpoint taken with
``W`` ranks resumes with ``W'``: the rest of the epoch covers every remaining sample
exactly once, split over the new ranks.

At the end of an epoch (``drop_last=False``) the last global step may be short. Its
samples are split as evenly as possible (ranks differ by at most one sample); if fewer
remain than there are ranks, they join the previous step instead, so that no rank gets
an empty batch. Only when the whole remainder is smaller than the number of ranks do
some ranks repeat samples from the start of the epoch's order, as DistributedSampler
always pads.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Iterator, Sequence, Sized
from typing import Any, overload

import numpy as np
import numpy.typing as npt
from torch.utils.data import DistributedSampler

from reproloader._runtime.shuffle import EpochOrders
from reproloader.seeding import Purpose, SeedTree
from reproloader.state import RANKS_FORMAT

__all__ = ["ShardSteps", "ShardedSampler", "gather_state", "rank_and_world_size", "shard_steps"]


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, or ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_steps(remaining: int, world_size: int, batch_size: int, drop_last: bool) -> list[int]:
    """The sizes of the global steps that hand out ``remaining`` samples.

    Every step but the last takes ``world_size * batch_size``. With ``drop_last`` a
    short last step is dropped; otherwise it is kept, merged into the step before when
    it has fewer samples than ranks.

    A list of every step (O(steps) memory); :class:`ShardSteps` gives the same
    sizes by arithmetic.
    """
    return list(ShardSteps(remaining, world_size, batch_size, drop_last))


@dataclasses.dataclass(frozen=True)
class ShardSteps(Sequence[int]):
    """The global steps that hand out ``remaining`` samples, as :func:`shard_steps` cuts them.

    A read-only sequence of step sizes computed by arithmetic: its length, any step,
    the samples in the first ``k`` steps and one rank's sample count each take O(1),
    whatever the size of the epoch.
    """

    remaining: int
    world_size: int
    batch_size: int
    drop_last: bool

    def __post_init__(self) -> None:
        for name, least in (("remaining", 0), ("world_size", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if value < least:
                raise ValueError(f"ShardSteps: {name} must be at least {least}, got {value}")

    @property
    def full(self) -> int:
        """The size of a full global step: ``world_size * batch_size``."""
        return self.world_size * self.batch_size

    def __len__(self) -> int:
        whole, tail = divmod(self.remaining, self.full)
        # A short tail is a step of its own unless dropped, or merged into the step before.
        own_step = tail and not self.drop_last and not (tail < self.world_size and whole)
        return whole + bool(own_step)

    @property
    def total(self) -> int:
        """The samples all steps hand out: ``remaining``, less a dropped short tail."""
        remaining = self.remaining
        return remaining - remaining % self.full if self.drop_last else remaining

    def consumed(self, steps: int) -> int:
        """The samples handed out by the first ``steps`` steps."""
        if steps >= len(self):
            return self.total
        return max(steps, 0) * self.full  # every step before the last is full

    @property
    def last(self) -> int:
        """The size of the last step (0 when there is none)."""
        count = len(self)
        return self.total - (count - 1) * self.full if count else 0

    def rank_samples(self, rank: int) -> int:
        """The samples rank ``rank`` gets over all steps (a padded sample counts)."""
        count = len(self)
        if not count:
            return 0
        return (count - 1) * self.batch_size + max(
            len(rank_part(0, self.last, rank, self.world_size)), 1
        )

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        count = len(self)
        if isinstance(index, slice):
            return [self[k] for k in range(count)[index]]
        k = range(count)[index]  # IndexError, negative indices as a list has them
        return self.last if k == count - 1 else self.full

    def __iter__(self) -> Iterator[int]:
        count = len(self)
        if count:
            yield from itertools.repeat(self.full, count - 1)
            yield self.last


def rank_part(start: int, size: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous part of a step of ``size`` samples starting at ``start``."""
    base, extra = divmod(size, world_size)
    first = start + rank * base + min(rank, extra)
    return range(first, first + base + (rank < extra))


class ShardedSampler(DistributedSampler):  # type: ignore[type-arg]
    """This rank's samples of each epoch under the library's sharding.

    ``ReproLoader(..., shard=True)`` makes one; the loader cuts batches itself (and
    resumes at a global offset), so the sampler is what frameworks and users see when
    they look at ``loader.sampler``: iterating it yields this rank's indices of the
    current epoch, in order.

    It is a ``DistributedSampler`` so that frameworks that insert one into
    non-distributed loaders (Lightning, Fabric) see this loader is sharded already.
    Rank and world size are read from ``torch.distributed`` when it is used, not
    fixed at construction as DistributedSampler's own are.

    Args:
        data_source: the dataset (only its length is used).
        seed: root seed of the epoch's global permutation.
        shuffle: permute each epoch (else the order is ``range(n)``).
        batch_size: samples per rank per step.
        drop_last: drop a short last global step.
    """

    def __init__(  # DistributedSampler.__init__ would need a process group now
        self, data_source: Sized, *, seed: int, shuffle: bool, batch_size: int, drop_last: bool
    ) -> None:
        self.data_source = data_source
        self.dataset = data_source  # type: ignore[assignment]  # DistributedSampler's name
        self.shuffle = shuffle
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = 0
        self.reseed(seed)

    @property
    def num_replicas(self) -> int:  # type: ignore[override]
        """The world size, as torch.distributed reports it now."""
        return rank_and_world_size()[1]

    @property
    def rank(self) -> int:  # type: ignore[override]
        """This process's rank, as torch.distributed reports it now."""
        return rank_and_world_size()[0]

    def reseed(self, seed: int) -> None:
        """Take another root seed for the orders (a loader adopting a loaded state's)."""
        self.seed = seed
        self._tree = SeedTree(seed)
        self._orders = EpochOrders(functools.partial(self._tree.node, Purpose.SHUFFLE))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields."""
        self.epoch = epoch

    def order(self, epoch: int) -> npt.NDArray[np.int64]:
        """The epoch's whole global order, the same on every rank.

        A convenience that builds all ``n`` indices (O(n) memory); batches come from
        :meth:`indices`, which computes only the positions asked for.
        """
        whole: npt.NDArray[np.int64] = self.indices(epoch, 0, len(self.data_source)).copy()
        return whole

    def indices(self, epoch: int, start: int, stop: int) -> npt.NDArray[np.int64]:
        """Positions ``start .. stop - 1`` of the epoch's global order (possibly read-only)."""
        if self.shuffle:
            return self._orders.get(epoch, len(self.data_source)).indices(start, stop)
        return np.arange(start, stop, dtype=np.int64)

    def steps(self, world_size: int, offset: int = 0) -> ShardSteps:
        """Global step sizes of the rest of the epoch from ``offset`` (computed, not listed)."""
        remaining = len(self.data_source) - offset
        return ShardSteps(remaining, world_size, self.batch_size, self.drop_last)

    def offset_after(self, world_size: int, offset: int, steps: int) -> int:
        """The global offset after ``steps`` more global steps from ``offset``."""
        return offset + self.steps(world_size, offset).consumed(steps)

    def rank_batches(
        self, epoch: int, rank: int, world_size: int, offset: int = 0
    ) -> Iterator[list[int]]:
        """This rank's batches of the rest of ``epoch`` from global ``offset``."""
        n = len(self.data_source)
        start = offset
        for size in self.steps(world_size, offset):
            part = rank_part(start, size, rank, world_size)
            if len(part):
                yield self.indices(epoch, part.start, part.stop).tolist()
            else:  # fewer samples left than ranks: pad from the start, as DistributedSampler does
                pad = (rank - size) % n
                yield self.indices(epoch, pad, pad + 1).tolist()
            start += size

    def __iter__(self) -> Iterator[int]:
        rank, world_size = rank_and_world_size()
        for batch in self.rank_batches(self.epoch, rank, world_size):
            yield from batch

    def __len__(self) -> int:
        """This rank's samples in an epoch, padding included (O(1))."""
        rank, world_size = rank_and_world_size()
        return self.steps(world_size).rank_samples(rank)

    def __repr__(self) -> str:
        return (
            f"ShardedSampler(n={len(self.data_source)}, seed={self.seed}, shuffle={self.shuffle}, "
            f"batch_size={self.batch_size}, drop_last={self.drop_last}, epoch={self.epoch})"
        )


def gather_state(loader: Any) -> dict[str, Any]:
    """Every rank's ``loader.state_dict()`` in one dict. A collective: call it on every rank.

    Needed only where workers hold per-rank state (worker scope, iterable datasets,
    datasets with their own ``state_dict``): then rank 0 can save one checkpoint (as
    Lightning does) from which every rank's ``loader.load_state_dict`` takes its own
    part. Elsewhere every rank's state is the same position and any one of them will do.
    """
    import torch.distributed as dist

    state = loader.state_dict()
    if not (dist.is_available() and dist.is_initialized()):
        return {"format": RANKS_FORMAT, "version": 1, "world_size": 1, "ranks": [state]}
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return {"format": RANKS_FORMAT, "version": 1, "world_size": len(states), "ranks": states}
