"""The index sampler a ReproLoader's iterators draw from: one *unit* per batch.

For the samplers ReproLoader makes itself (sequential, or :class:`SeededRandomSampler`
for ``shuffle=True``) batch ``k`` is computed directly, a slice of a range or
positions ``k * bs ..`` of the epoch's shuffle order (computed for those positions
only), so starting a pass at batch ``k`` costs nothing extra. A
sampler or batch sampler the user passed in is iterated as it is, skipping the
batches before ``k`` without loading them; it runs with its own seeded global RNG
states (see :class:`SamplerRngs`), so samplers that draw from torch's global RNG,
like ``WeightedRandomSampler``, are repeatable per epoch and leave the caller's RNG
alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sized
from typing import Any, Literal

from torch.utils.data import SequentialSampler

from reproloader._runtime.cursor import Pass, PassCursor
from reproloader._runtime.discovery import find_rngs
from reproloader._runtime.isolation import Isolation
from reproloader._runtime.rngs import AttributeRngs, GlobalRngs
from reproloader._runtime.shuffle import BLOCK
from reproloader._runtime.skips import is_skipped, open_segments
from reproloader._runtime.wrappers import Unit
from reproloader.distributed import ShardedSampler
from reproloader.sampler import SeededRandomSampler
from reproloader.seeding import Lane, SeedTree, UnitStreams, sampler_stream

__all__ = [
    "SamplerRngs",
    "UnitSampler",
    "describe_sampler",
    "fast_mode",
    "set_epoch_everywhere",
]

FastMode = Literal["sequential", "permutation", "sharded"]


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


def describe_sampler(
    fast: FastMode | None, sampler: Any, batch_sampler: Any, *, batch_size: int | None, seed: int
) -> str:
    """What orders the data, as a state records it (``"shuffle"``, ``"sampler:<class>"``...)."""
    if fast == "sequential":
        return "sequential"
    if fast == "sharded":
        return "sharded, shuffle" if sampler.shuffle else "sharded"
    if fast == "permutation":
        return "shuffle" if sampler.seed == seed else f"shuffle(seed={sampler.seed})"
    if fast is None and batch_sampler is not None and batch_size is None:
        return f"batch_sampler:{type(batch_sampler).__qualname__}"
    return f"sampler:{type(sampler).__qualname__}"


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
        self._on_rank = rank
        self._rngs = GlobalRngs(reseed_globals)
        self.isolation = Isolation(self._rngs, swap=True, clears_context=False)
        found = []
        if reseed_attributes:
            for name, owner in owners.items():
                found.extend(find_rngs(owner, name))
        self._attributes = AttributeRngs(found)
        self._streams = UnitStreams()

    @property
    def attribute_rngs(self) -> list[tuple[str, Any]]:
        """The RNG objects found on the samplers, reseeded in place at each pass."""
        return list(self._attributes.rngs)

    def start(self, epoch: int) -> None:
        """Seed the sampler states for a new pass over ``epoch``."""
        node, unit = sampler_stream(epoch, self._on_rank)
        key = self._tree.key(*node)
        with self.isolation:
            n = self._rngs.n_words
            if n:
                self._rngs.reseed(self._streams.words(key, unit, Lane.GLOBALS, n))
        attributes = self._attributes
        if attributes:
            attributes.reseed(self._streams.words(key, unit, Lane.ATTRIBUTES, attributes.n_words))


class UnitSampler(Iterable[Unit]):
    """Yields ``(epoch, serial, position, payload)`` for each unit of the current pass."""

    def __init__(
        self,
        cursor: PassCursor,
        batches: Any,
        sampler: Sized,
        *,
        batch_size: int | None,
        drop_last: bool,
        fast: FastMode | None,
        sampler_rngs: SamplerRngs | None,
        batch_sampler_given: bool = False,
    ) -> None:
        # The cursor's current pass is read at each pass: with persistent workers
        # torch keeps this object from one pass to the next.
        self._cursor = cursor
        self._batches = batches  # what DataLoader would iterate: its batch sampler
        self._sampler = sampler
        self._batch_size = batch_size
        self._drop_short = drop_last
        self._fast = fast
        self._sampler_rngs = sampler_rngs
        # When the loader made the batch sampler itself, batches are cut from the
        # sampler with islice: the same batches as BatchSampler, but skipping to a
        # resume position runs at C speed instead of one Python step per index.
        self._cut_batches = batch_size is not None and not batch_sampler_given

    def __len__(self) -> int:
        if self._fast == "sharded":
            assert isinstance(self._sampler, ShardedSampler)
            return len(self._sampler.steps(self._cursor.current.world_size))
        return len(self._batches)

    def __iter__(self) -> Iterator[Unit]:
        current = self._cursor.current
        ranges = current.skipped  # left out by the user: their positions are not reused
        if self._fast is None:
            units = self._iterate(current)
            if ranges:  # a user's sampler is drawn through them, nothing loaded
                units = (unit for unit in units if not is_skipped(unit[2], ranges))
        elif ranges:  # computed around them: O(1) per range
            units = itertools.chain.from_iterable(
                self._compute(current, a, b) for a, b in open_segments(current.start, ranges)
            )
        else:
            units = self._compute(current, current.start, current.stop)
        if current.skip:  # handed out before a restore (in_order=False): not again
            skip = current.skip
            return (unit for unit in units if unit[2] not in skip)
        return units

    def _compute(self, current: Pass, start: int, stop: int | None) -> Iterator[Unit]:
        # Units start..stop-1 of the pass (to its end where stop is None), as a
        # generator of the right kind (no extra layer per unit).
        epoch, serial = current.epoch, current.serial
        if self._fast == "sharded":
            assert isinstance(self._sampler, ShardedSampler)
            world_size = current.world_size
            offset = current.offset
            if start != current.start:  # where position ``start`` is in the global order
                offset += self._sampler.steps(world_size, offset).consumed(start - current.start)
            batches: Iterator[list[int]] = self._sampler.rank_batches(
                epoch, current.rank, world_size, offset
            )
            if stop is not None:
                batches = itertools.islice(batches, max(stop - start, 0))
            return ((epoch, serial, k, batch) for k, batch in enumerate(batches, start=start))
        n = len(self._sampler)
        bs = self._batch_size
        shuffled = self._fast == "permutation"
        if bs is None:
            end = n if stop is None else min(stop, n)
            if shuffled:
                return self._shuffled_samples(epoch, serial, start, end)
            return ((epoch, serial, k, k) for k in range(start, end))
        count = n // bs if self._drop_short else -(-n // bs)
        if stop is not None:
            count = min(count, stop)
        if shuffled:
            return self._shuffled_batches(epoch, serial, start, count, bs, n)
        return (
            (epoch, serial, k, list(range(k * bs, min((k + 1) * bs, n))))
            for k in range(start, count)
        )

    def _shuffled_samples(self, epoch: int, serial: int, start: int, n: int) -> Iterator[Unit]:
        # Without automatic batching: one unit per position, converted a block at a time.
        assert isinstance(self._sampler, SeededRandomSampler)
        order = self._sampler.order(epoch)
        for block in range(start, n, BLOCK):
            chunk = order.indices(block, min(block + BLOCK, n)).tolist()
            for k, index in enumerate(chunk, start=block):
                yield epoch, serial, k, index

    def _shuffled_batches(
        self, epoch: int, serial: int, start: int, count: int, bs: int, n: int
    ) -> Iterator[Unit]:
        # Batches start..count-1 of the epoch's order, cut from Python lists of whole
        # blocks of it: one conversion per block, a list slice per batch.
        assert isinstance(self._sampler, SeededRandomSampler)
        order = self._sampler.order(epoch)
        low = high = start * bs  # ``held`` has the indices at positions low..high-1
        held: list[int] = []
        for k in range(start, count):
            begin, end = k * bs, min((k + 1) * bs, n)
            if end > high:
                # To the block's end, not past the last batch asked for (a stretch
                # between skipped ranges, or one batch on demand).
                block_end = min(n, ((end - 1) // BLOCK + 1) * BLOCK, count * bs)
                held = held[begin - low :] + order.indices(high, block_end).tolist()
                low, high = begin, block_end
            yield epoch, serial, k, held[begin - low : end - low]

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
                it = iter(self._batches)
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
            if len(batch) < bs and self._drop_short:
                return
            yield batch


_END: Any = object()


def set_epoch_everywhere(owners: Iterable[object], epoch: int) -> None:
    """Call ``set_epoch(epoch)`` once on each distinct owner that has one."""
    seen: set[int] = set()
    for owner in owners:
        set_epoch = getattr(owner, "set_epoch", None)
        if id(owner) not in seen and callable(set_epoch):
            seen.add(id(owner))
            set_epoch(epoch)
