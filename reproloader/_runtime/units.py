"""The index sampler a ReproLoader's iterators draw from: one *unit* per batch.

For the samplers ReproLoader makes itself (sequential, or :class:`SeededRandomSampler`
for ``shuffle=True``) batch ``k`` is computed directly, a slice of a range or of
the epoch's permutation, so starting a pass at batch ``k`` costs nothing extra. A
sampler or batch sampler the user passed in is iterated as it is, skipping the
batches before ``k`` without loading them; it runs with its own seeded global RNG
states (see :class:`SamplerRngs`), so samplers that draw from torch's global RNG,
like ``WeightedRandomSampler``, are repeatable per epoch and leave the caller's RNG
alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import Any, Literal

from torch.utils.data import SequentialSampler

from reproloader._runtime.discovery import find_rngs
from reproloader._runtime.isolation import Isolation
from reproloader._runtime.rngs import AttributeRngs, GlobalRngs
from reproloader._runtime.wrappers import Unit
from reproloader.distributed import ShardedSampler
from reproloader.sampler import SeededRandomSampler
from reproloader.seeding import Lane, Purpose, SeedTree, UnitStreams

__all__ = ["Pass", "SamplerRngs", "UnitSampler", "fast_mode"]

FastMode = Literal["sequential", "permutation", "sharded"]


@dataclass
class Pass:
    """One iteration over the loader.

    Attributes:
        epoch: the epoch it runs.
        serial: its number among the loader's passes.
        start: the position (batch index in the epoch) of its first unit.
        offset: with sharding, the global sample offset where it starts.
        rank: the rank it runs on.
        world_size: the number of ranks.
    """

    epoch: int
    serial: int
    start: int = 0
    offset: int = 0
    rank: int = 0
    world_size: int = 1


def fast_mode(sampler: object, batch_sampler_given: bool) -> FastMode | None:
    """Which batches can be computed directly rather than iterated."""
    if batch_sampler_given:
        return None
    if type(sampler) is ShardedSampler:
        return "sharded"
    if type(sampler) is SequentialSampler:
        return "sequential"
    if type(sampler) is SeededRandomSampler:
        return "permutation"
    return None


class SamplerRngs:
    """Seeded global RNG states for user samplers, swapped in around each draw.

    At the start of each pass the states are seeded from node
    ``(SAMPLER, epoch, rank)``, and RNG objects found on the samplers (a
    ``RandomSampler``'s ``generator``) are reseeded in place from the same node.
    """

    def __init__(
        self,
        tree: SeedTree,
        rank: int,
        reseed_globals: frozenset[str],
        owners: dict[str, object],
        reseed_attributes: bool,
    ) -> None:
        self._tree = tree
        self._rank = rank
        self._rngs = GlobalRngs(reseed_globals)
        self.isolation = Isolation(self._rngs, swap=True, clears_context=False)
        found = []
        if reseed_attributes:
            for name, owner in owners.items():
                found.extend(find_rngs(owner, name))
        self._attributes = AttributeRngs(found)
        self._streams = UnitStreams()

    def start(self, epoch: int) -> None:
        """Seed the sampler states for a new pass over ``epoch``."""
        key = self._tree.key(Purpose.SAMPLER, epoch, self._rank)
        with self.isolation:
            n = self._rngs.n_words
            if n:
                self._rngs.reseed(self._streams.words(key, 0, Lane.GLOBALS, n))
        attributes = self._attributes
        if attributes:
            attributes.reseed(self._streams.words(key, 0, Lane.ATTRIBUTES, attributes.n_words))


class UnitSampler(Iterable[Unit]):
    """Yields ``(epoch, serial, position, payload)`` for each unit of the current pass."""

    def __init__(
        self,
        current: list[Pass],
        index_sampler: Any,
        sampler: Sized,
        *,
        batch_size: int | None,
        drop_last: bool,
        fast: FastMode | None,
        sampler_rngs: SamplerRngs | None,
        batch_sampler_given: bool = False,
    ) -> None:
        # ``current`` is a one-element list the loader updates at each pass.
        self._current = current
        self._index_sampler = index_sampler
        self._sampler = sampler
        self._batch_size = batch_size
        self._drop_last = drop_last
        self._fast = fast
        self._sampler_rngs = sampler_rngs
        # When the loader made the batch sampler itself, batches are cut from the
        # sampler with islice: the same batches as BatchSampler, but skipping to a
        # resume position runs at C speed instead of one Python step per index.
        self._cut_batches = batch_size is not None and not batch_sampler_given

    def __len__(self) -> int:
        if self._fast == "sharded":
            assert isinstance(self._sampler, ShardedSampler)
            return len(self._sampler.steps(self._current[0].world_size))
        return len(self._index_sampler)

    def __iter__(self) -> Iterator[Unit]:
        current = self._current[0]
        if self._fast is None:
            return self._iterate(current)
        return self._compute(current)

    def _compute(self, current: Pass) -> Iterator[Unit]:
        epoch, serial = current.epoch, current.serial
        if self._fast == "sharded":
            assert isinstance(self._sampler, ShardedSampler)
            batches = self._sampler.rank_batches(
                epoch, current.rank, current.world_size, current.offset
            )
            for k, batch in enumerate(batches, start=current.start):
                yield epoch, serial, k, batch
            return
        n = len(self._sampler)
        if self._fast == "permutation":
            assert isinstance(self._sampler, SeededRandomSampler)
            order: Any = self._sampler.permutation(epoch)
        else:
            order = range(n)
        bs = self._batch_size
        if bs is None:
            if self._fast == "permutation":
                for k in range(current.start, n):
                    yield epoch, serial, k, order.item(k)
            else:
                for k in range(current.start, n):
                    yield epoch, serial, k, k
            return
        count = n // bs if self._drop_last else -(-n // bs)
        for k in range(current.start, count):
            chunk = order[k * bs : (k + 1) * bs]
            yield epoch, serial, k, chunk.tolist() if self._fast == "permutation" else list(chunk)

    def _iterate(self, current: Pass) -> Iterator[Unit]:
        epoch, serial = current.epoch, current.serial
        rngs = self._sampler_rngs
        assert rngs is not None
        rngs.start(epoch)
        isolation = rngs.isolation
        bs = self._batch_size
        if self._cut_batches:
            assert bs is not None
            with isolation:
                indices = iter(self._sampler)  # type: ignore[call-overload]
                next(itertools.islice(indices, current.start * bs, current.start * bs), None)
            it: Iterator[Any] = self._cut(indices, bs)
        else:
            with isolation:
                it = iter(self._index_sampler)
                for _ in range(current.start):
                    if next(it, _END) is _END:
                        return
        position = current.start
        while True:
            with isolation:
                payload = next(it, _END)
            if payload is _END:
                return
            yield epoch, serial, position, payload
            position += 1

    def _cut(self, indices: Iterator[Any], bs: int) -> Iterator[list[Any]]:
        # BatchSampler's batches: bs indices each, a short last one unless drop_last.
        while batch := list(itertools.islice(indices, bs)):
            if len(batch) < bs and self._drop_last:
                return
            yield batch


_END: Any = object()
