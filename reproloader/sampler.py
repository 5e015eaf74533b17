"""Samplers whose order is a pure function of (seed, epoch)."""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
import numpy.typing as npt
from torch.utils.data import RandomSampler

from reproloader.seeding import MAX_PATH_ELEMENT, SeedTree, check_int

__all__ = ["SeededRandomSampler"]


class SeededRandomSampler(RandomSampler):
    """Shuffles without replacement, with one permutation per (seed, epoch).

    This is what ``ReproLoader(..., shuffle=True)`` uses. Unlike torch's
    ``RandomSampler`` it reads no global RNG and keeps no generator state: the order
    of epoch ``e`` is the same whenever and wherever it is computed, which is what
    lets a resumed loader start at any batch without replaying the ones before.
    It subclasses ``RandomSampler`` so that code asking "does this loader shuffle?"
    (Lightning, accelerate) gets the right answer.

    Args:
        data_source: the dataset (only its length is used).
        seed: root seed of the permutation, an int in ``[0, 2**128)``.
        epoch: the epoch to start at; the loader moves it with :meth:`set_epoch`.

    Example:
        >>> s = SeededRandomSampler(range(5), seed=3)
        >>> list(s) == list(s)
        True
    """

    def __init__(self, data_source: Sized, *, seed: int, epoch: int = 0) -> None:
        super().__init__(data_source)
        self.seed = seed
        self._tree = SeedTree(seed)
        self.epoch = 0
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation ``__iter__`` yields."""
        self.epoch = check_int("epoch", epoch, MAX_PATH_ELEMENT)

    def permutation(self, epoch: int | None = None) -> npt.NDArray[np.int64]:
        """The permutation of ``range(len(data_source))`` for ``epoch`` (default: current)."""
        return self._tree.permutation(self.epoch if epoch is None else epoch, len(self.data_source))

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation().tolist())

    def __repr__(self) -> str:
        return (
            f"SeededRandomSampler(n={len(self.data_source)}, seed={self.seed}, epoch={self.epoch})"
        )
