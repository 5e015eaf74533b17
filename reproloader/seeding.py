"""The seed tree: every random stream in reproloader is a pure function of its position.

Rules for this module, and for any code that asks it for randomness:

1. **No global RNG is read to make a key.** The only inputs are the root seed and
   small integers naming a position: purpose, epoch, rank, worker, unit.
2. **Keys are derived, never added.** ``seed + epoch`` collides (seed 1 at epoch 1
   is seed 2 at epoch 0). A node is ``SeedSequence(seed, spawn_key=(purpose, *path))``,
   which hashes its inputs. ``spawn_key`` gives the stream that calling ``spawn()``
   down the tree would give, but it is a pure function, so there is no spawn counter
   to checkpoint and resuming is bookkeeping, not an RNG snapshot.
3. **Units are counters, not new SeedSequences.** Inside one node, each unit (a batch,
   a sample, a worker) gets its streams from Philox4x64 keyed by the node, with the
   unit index and a lane in the 256-bit counter: stream ``(unit, lane)`` starts at
   counter ``[0, 0, unit, lane]``. Under one key distinct counters never produce the
   same block, so no two units share a stream. Moving a Philox generator to a unit
   costs about 1 us, against 10-16 us for a new SeedSequence; that matters in
   sample scope, where a tiny sample costs DataLoader about 3 us.
4. **Every path element is below 2**32, and each purpose has a fixed path length.**
   SeedSequence turns each integer into 32-bit words and joins them, so a larger
   element could spell out a longer path. The root seed is below 2**128, the size
   SeedSequence pads its entropy to before appending the spawn key, so a seed
   cannot spell a path either.

Changing any number this module produces changes the data users get: the golden
tests in ``tests/golden`` pin them, and such a change needs a ``stream`` changelog
entry.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from reproloader._runtime.philox import key_words, philox_mover
from reproloader._runtime.shuffle import epoch_order

__all__ = [
    "MAX_PATH_ELEMENT",
    "MAX_SEED",
    "Lane",
    "Node",
    "Purpose",
    "SeedTree",
    "UnitStreams",
    "check_int",
    "sampler_stream",
    "unit_stream",
    "worker_init_stream",
]

MAX_SEED: Final = 2**128
"""Seeds are integers in ``[0, MAX_SEED)``."""

MAX_PATH_ELEMENT: Final = 2**32
"""Epochs, ranks and worker ids are integers in ``[0, MAX_PATH_ELEMENT)``."""


class Purpose(enum.IntEnum):
    """First element of every spawn key: what the node's randomness is for.

    The comment after each member gives its path after the purpose, and what its
    unit index counts.
    """

    BATCH = 1  # (epoch, rank); unit: batch index in the epoch
    SAMPLE = 2  # (epoch,); unit: dataset index, so no rank or batch size enters
    WORKER = 3  # (epoch, rank); unit: worker id, one continuous stream per worker
    SHUFFLE = 4  # (epoch,); keys of the epoch's shuffle bijection (reproloader._runtime.shuffle)
    SAMPLER = 5  # (epoch, rank); unit 0: RNGs of samplers the user passed in
    WORKER_INIT = 6  # (epoch, rank); unit: worker id, seeds a worker before worker_init_fn
    ITER_BATCH = 7  # (epoch, rank, worker); unit: batch index in that worker's stream
    ITER_SAMPLE = 8  # (epoch, rank, worker); unit: sample index in that worker's stream
    MAIN = 9  # (); unit 0: the training process itself, for seed_everything
    PIPELINE = 10  # (epoch,); the seed of a pass's random DataPipes, on every rank and worker


class Lane(enum.IntEnum):
    """Last counter word: which of a unit's independent streams."""

    RNG = 0  # the numpy Generator handed to datasets
    GLOBALS = 1  # words that reseed python random, torch and numpy's global RNG
    ATTRIBUTES = 2  # words that reseed RNG objects found on the dataset or sampler


def check_int(name: str, value: object, upper: int, *, shown: str | None = None) -> int:
    """``value`` as an int in ``[0, upper)``; else a TypeError or ValueError naming ``name``.

    ``shown`` spells ``upper`` in the message (``"2**128"``), if not as a number.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if not 0 <= value < upper:
        raise ValueError(f"{name} must be in [0, {shown or upper}), got {value}")
    return value


Node = tuple[int, ...]
"""A node of the tree: ``(purpose, *path)``."""


def unit_stream(
    scope: str,
    *,
    iterable: bool,
    epoch: int,
    rank: int,
    worker: int,
    batch: int,
    sample: int | None,
) -> tuple[Node, int]:
    """Which stream a unit gets: ``(node, unit index)``. The one place a scope is read.

    Args:
        scope: the loader's ``rng_scope``.
        iterable: whether the dataset is an IterableDataset (its units are counted in
            each worker's own stream, so the worker enters the path).
        epoch: the pass's epoch.
        rank: the rank producing the unit.
        worker: the worker producing it (0 in the main process).
        batch: the batch's index (in the epoch, or in the worker's stream).
        sample: the sample's dataset index (or its position in the worker's stream);
            needed in sample scope only.
    """
    if scope == "worker":  # one stream per worker and pass, continued from unit to unit
        return (Purpose.WORKER, epoch, rank), worker
    if scope == "batch":
        if iterable:
            return (Purpose.ITER_BATCH, epoch, rank, worker), batch
        return (Purpose.BATCH, epoch, rank), batch
    if sample is None:
        raise ValueError(f"rng_scope={scope!r} needs a sample index")
    if iterable:
        return (Purpose.ITER_SAMPLE, epoch, rank, worker), sample
    return (Purpose.SAMPLE, epoch), sample  # no rank, batch size or worker: per sample


def worker_init_stream(epoch: int, rank: int, worker: int) -> tuple[Node, int]:
    """The stream a worker is seeded from before the user's ``worker_init_fn`` runs."""
    return (Purpose.WORKER_INIT, epoch, rank), worker


def sampler_stream(epoch: int, rank: int) -> tuple[Node, int]:
    """The stream that seeds a user sampler's RNGs for a pass."""
    return (Purpose.SAMPLER, epoch, rank), 0


class SeedTree:
    """The root of a loader's randomness: derives keys from ``(purpose, *path)``.

    Args:
        seed: the root entropy, an int in ``[0, 2**128)``. Log it (it appears in the
            repr) to be able to recreate every stream of a run.

    Example:
        >>> tree = SeedTree(42)
        >>> tree.key(Purpose.BATCH, 0, 0).shape
        (2,)
    """

    __slots__ = ("_keys", "seed")

    def __init__(self, seed: int) -> None:
        self.seed: Final = check_int("seed", seed, MAX_SEED)
        self._keys: dict[tuple[int, ...], npt.NDArray[np.uint64]] = {}

    def __repr__(self) -> str:
        return f"SeedTree(seed={self.seed})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeedTree) and other.seed == self.seed

    def __hash__(self) -> int:
        return hash((SeedTree, self.seed))

    def __reduce__(self) -> tuple[Any, ...]:
        # The key cache is per process; workers rebuild what they use.
        return (SeedTree, (self.seed,))

    def node(self, purpose: int, *path: int) -> np.random.SeedSequence:
        """The SeedSequence at ``(purpose, *path)``."""
        spawn_key = (int(purpose), *(check_int("path element", p, MAX_PATH_ELEMENT) for p in path))
        return np.random.SeedSequence(self.seed, spawn_key=spawn_key)

    def key(self, purpose: int, *path: int) -> npt.NDArray[np.uint64]:
        """The 128-bit Philox key of node ``(purpose, *path)``, cached per process."""
        cache_key = (int(purpose), *path)
        cached = self._keys.get(cache_key)
        if cached is not None:
            return cached
        key: npt.NDArray[np.uint64] = self.node(purpose, *path).generate_state(2, np.uint64)  # type: ignore[assignment]
        key.flags.writeable = False
        self._keys[cache_key] = key
        return key

    def permutation(self, epoch: int, n: int) -> npt.NDArray[np.int64]:
        """The epoch's whole shuffle order of ``range(n)``: the same on every rank and worker.

        A convenience that builds all ``n`` indices (O(n) time and memory). The
        loader never calls it: it computes the indices of each batch alone, from the
        same order (:mod:`reproloader._runtime.shuffle`).

        .. versionchanged:: 0.1
           A keyed Feistel bijection replaces ``Generator(PCG64(node)).permutation(n)``:
           orders differ from earlier releases (state format version 2).

        .. versionchanged:: 0.1
           Orders of ``n <= 8192`` are exact uniform permutations, no longer the
           Feistel's (state format version 4).
        """
        order: npt.NDArray[np.int64] = (
            epoch_order(self.node(Purpose.SHUFFLE, epoch), n).indices(0, n).copy()
        )
        return order


class UnitStreams:
    """Moves Philox generators to the start of a unit's stream: the per-unit hot path.

    One instance lives in each process that produces data. It owns a scratch Philox
    generator for seed words and reuses one state dict, so moving costs one numpy
    state assignment and no allocation.
    """

    __slots__ = ("_counter", "_key", "_key_words", "_last_key", "_movers", "_scratch", "_state")

    def __init__(self) -> None:
        self._counter = np.zeros(4, dtype=np.uint64)
        self._key = np.zeros(2, dtype=np.uint64)
        self._state: Any = {
            "bit_generator": "Philox",
            "state": {"counter": self._counter, "key": self._key},
            "buffer": np.zeros(4, dtype=np.uint64),
            "buffer_pos": 4,  # empty buffer: the next draw computes a fresh block
            "has_uint32": 0,
            "uinteger": 0,
        }
        self._scratch = np.random.Philox(key=0)
        self._last_key: npt.NDArray[np.uint64] | None = None
        # Per generator: its mover through raw memory, or None (the setter is used).
        self._movers: dict[int, Callable[[memoryview, int, int], None] | None] = {}
        self._key_words = key_words(self._key)

    def position(
        self, bit_generator: np.random.Philox, key: npt.NDArray[np.uint64], unit: int, lane: Lane
    ) -> None:
        """Set ``bit_generator`` (in place) to the start of stream ``(unit, lane)`` under ``key``."""
        if key is not self._last_key:  # keys are cached read-only arrays: identity is equality
            self._key[:] = key
            self._last_key = key
        movers = self._movers
        ident = id(bit_generator)
        if ident in movers:
            move = movers[ident]
        else:
            if len(movers) > 8:  # generators handed out and dropped: forget them
                movers.clear()
            # (A mover keeps its generator alive, so the id stays its own.)
            move = movers[ident] = philox_mover(bit_generator)
        if move is not None:
            move(self._key_words, unit, lane)
            return
        self._counter[2] = unit
        self._counter[3] = lane
        bit_generator.state = self._state

    def words(
        self, key: npt.NDArray[np.uint64], unit: int, lane: Lane, n: int
    ) -> npt.NDArray[np.uint64]:
        """The first ``n`` 64-bit words of stream ``(unit, lane)`` under ``key``."""
        self.position(self._scratch, key, unit, lane)
        return self._scratch.random_raw(n)

    @staticmethod
    def new_generator() -> np.random.Generator:
        """A Generator whose Philox state ``position`` can move; its start state is unused."""
        return np.random.Generator(np.random.Philox(key=0))
