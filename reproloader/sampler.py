"""Samplers whose order is a pure function of (seed, epoch)."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sized

import numpy as np
import numpy.typing as npt
from torch.utils.data import RandomSampler

from reproloader._runtime.shuffle import BLOCK, EpochOrders, Shuffle
from reproloader.seeding import MAX_PATH_ELEMENT, Purpose, SeedTree, check_int

__all__ = ["SeededRandomSampler"]


class SeededRandomSampler(RandomSampler):
    """Shuffles without replacement, with one order per (seed, epoch).

    This is what ``ReproLoader(..., shuffle=True)`` uses. Unlike torch's
    ``RandomSampler`` it reads no global RNG and keeps no generator state: the order
    of epoch ``e`` is the same whenever and wherever it is computed, which is what
    lets a resumed loader start at any batch without replaying the ones before.
    It subclasses ``RandomSampler`` so that code asking "does this loader shuffle?"
    (Lightning, accelerate) gets the right answer.

    The order is a keyed bijection on ``range(n)`` (see
    :mod:`reproloader._runtime.shuffle`): :meth:`indices` computes any stretch of it
    in time and memory proportional to its length, so an epoch of ``10**10`` samples
    starts, or resumes at any position, as fast as one of a thousand. Up to 8192
    samples it is an exact uniform permutation, built once per epoch.

    Args:
        data_source: the dataset (only its length is used).
        seed: root seed of the order, an int in ``[0, 2**128)``.
        epoch: the epoch to start at; the loader moves it with :meth:`set_epoch`.

    Example:
        >>> s = SeededRandomSampler(range(5), seed=3)
        >>> list(s) == list(s)
        True
        >>> s.indices(0, 1, 3).tolist() == list(s)[1:3]
        True

    .. versionchanged:: 0.1
       The order comes from a keyed Feistel bijection, not a materialized
       permutation: orders differ from earlier releases.

    .. versionchanged:: 0.1
       Orders of at most 8192 samples are exact uniform permutations (state format
       version 4): they differ from version 3's.
    """

    def __init__(self, data_source: Sized, *, seed: int, epoch: int = 0) -> None:
        super().__init__(data_source)
        self.reseed(seed)
        self.epoch = 0
        self.set_epoch(epoch)

    def reseed(self, seed: int) -> None:
        """Take another root seed for the orders (a loader adopting a loaded state's)."""
        self.seed = seed
        self._tree = SeedTree(seed)
        self._orders = EpochOrders(functools.partial(self._tree.node, Purpose.SHUFFLE))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields."""
        self.epoch = check_int("epoch", epoch, MAX_PATH_ELEMENT)

    def order(self, epoch: int) -> Shuffle:
        """The order of ``epoch``, computed on demand (the last epoch's is cached)."""
        return self._orders.get(check_int("epoch", epoch, MAX_PATH_ELEMENT), len(self.data_source))

    def indices(self, epoch: int, start: int, stop: int) -> npt.NDArray[np.int64]:
        """The indices at positions ``start .. stop - 1`` of ``epoch``'s order.

        O(stop - start) time and memory, whatever the dataset's length. The array may
        be a read-only view of a cached block: copy it to modify it.
        """
        # The hot path of shuffled loading: the epoch is checked where its keys are
        # made (SeedTree.node), on the first call for it.
        return self._orders.get(epoch, len(self.data_source)).indices(start, stop)

    def permutation(self, epoch: int | None = None) -> npt.NDArray[np.int64]:
        """The whole order of ``epoch`` (default: current) as one array.

        A convenience for inspection: it builds all ``n`` indices (O(n) memory). The
        loader never calls it; use :meth:`indices` for a stretch of the order.
        """
        shuffle = self.order(self.epoch if epoch is None else epoch)
        whole: npt.NDArray[np.int64] = shuffle.indices(0, len(shuffle)).copy()
        return whole

    def __iter__(self) -> Iterator[int]:
        shuffle = self.order(self.epoch)
        n = len(shuffle)
        for start in range(0, n, BLOCK):  # in blocks: never n Python ints at once
            yield from shuffle.indices(start, min(start + BLOCK, n)).tolist()

    def __repr__(self) -> str:
        return (
            f"SeededRandomSampler(n={len(self.data_source)}, seed={self.seed}, epoch={self.epoch})"
        )
