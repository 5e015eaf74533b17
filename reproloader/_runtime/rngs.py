"""The RNGs code uses without being handed one, and how reproloader reseeds them.

Two kinds:

* the process-wide ones: python ``random``, numpy's legacy global ``RandomState``
  (``np.random.rand`` and friends) and torch's CPU generator;
* RNG objects stored on a dataset or sampler (``self.rng = np.random.default_rng(0)``
  in ``__init__``), which every worker would otherwise copy and replay.

Each unit reseeds them from words of its ``Lane.GLOBALS`` / ``Lane.ATTRIBUTES``
streams, so what they produce is a function of the unit alone. In the main process
the caller's states are saved before and restored after, so the training loop's own
randomness never depends on data loading.

Cost is what decides the shape of this module: with ``num_workers=0`` every batch
saves, reseeds and restores all three global RNGs, and a batch of 32 tiny samples
takes DataLoader about 90 us. Through their public calls python's ``getstate`` takes
9.5 us and ``setstate`` 3 us, numpy's ``get_state``/``set_state`` 40 us each. So the
two Mersenne Twister states (python's and numpy's, each 624 words and a position)
are copied as raw memory, through a ``memoryview`` of the C struct that holds them:
0.1 us a copy. Where the struct is is checked once, against the public ``getstate``,
and where that check fails (another Python, another numpy) the public calls are
used, with identical results. Reseeding fills both Mersenne Twisters from a unit's
words as numpy seeds its own from a SeedSequence (624 words, the first one's top bit
set, position at the end): a memory copy, where python's ``random.seed(int)``
(``init_by_array``) took 4 us (state format version 3 made that change; see
:meth:`PythonRandomState.reseed`). torch keeps its public ``manual_seed`` (1 us).
"""

from __future__ import annotations

import _random
import ctypes
import functools
import random
import sys
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

from reproloader._runtime.rngstate import python_from_plain, python_to_plain

__all__ = ["GLOBAL_RNG_NAMES", "AttributeRngs", "GlobalRngs", "LegacyState", "PythonRandomState"]

GLOBAL_RNG_NAMES: Final = ("numpy", "random", "torch")

_MT_WORDS: Final = 624  # uint32 words of MT19937 state
_MT_BYTES: Final = _MT_WORDS * 4
_MT_SEED_WORDS: Final = _MT_WORDS // 2  # uint64 words that fill them
_MT_MSB: Final = 0x80000000  # key[0] = MSB only, as numpy's own seeding does: never all zero
_PY_AT: Final = 3 + _MT_SEED_WORDS  # where python random's words start in a GLOBALS stream
_RNG_TYPES: Final = (np.random.Generator, np.random.RandomState, random.Random, torch.Generator)
_RANDOM: Final[random.Random] = random._inst  # the instance behind random.random() etc.
_TORCH: Final = torch.default_generator


def _u128(words: npt.NDArray[np.uint64], at: int) -> int:
    return (int(words[at]) << 64) | int(words[at + 1])


def _bytes_view(address: int, size: int) -> memoryview:
    # A writable byte view of C memory; slicing and assigning it is a bare memcpy.
    return memoryview((ctypes.c_char * size).from_address(address)).cast("B")


def _words_view(view: memoryview) -> memoryview:
    # The same memory as native uint32 words, for reading single words cheaply.
    return view.cast("I")


class _Mark:
    # Where a RandomState's MT19937 state stood when its cached deviate was last
    # known to be empty: (position, key[0], key[1]), or None.
    __slots__ = ("mark",)

    def __init__(self) -> None:
        self.mark: tuple[int, int, int] | None = None


_GLOBAL_MARK: Final = _Mark()


class LegacyState:
    """Save, restore and reseed one ``np.random.RandomState``, cheaply where possible.

    A RandomState's randomness is its MT19937 state (624 words and a position) plus a
    cached second normal deviate (``has_gauss``/``gauss``) that legacy ``normal``
    draws keep. The fast path copies the 2,500-byte MT19937 state struct directly and
    learns about the cached deviate by drawing one normal: if the MT19937 state did
    not move, the draw came from the cache.

    That probe is skipped when the state has not moved since this object last left
    the cache empty (the *mark*): a normal draw with an empty cache always moves
    the state, so an unmoved state still has an empty cache (short of someone
    calling ``set_state`` with exactly the marked key and a cached deviate). In a
    training loop that does not use numpy's global RNG, no probe runs at all. Every
    LegacyState of numpy's global RandomState shares one mark (the loader's window,
    the producer and a sampler's window each hold one): with a mark each, every
    batch would probe twice, and one object's put-back cached deviate would hide
    from another's mark.

    Args:
        rs: the RandomState.
        raw: use raw memory where the self-check passes; False forces the public
            ``get_state``/``set_state`` (for tests).
    """

    __slots__ = ("_bytes", "_cell", "_words", "fast", "rs")

    def __init__(self, rs: np.random.RandomState, *, raw: bool = True) -> None:
        self.rs = rs
        self._bytes: memoryview | None = None
        self._words: memoryview | None = None
        self._cell = _GLOBAL_MARK if rs is np.random.mtrand._rand else _Mark()
        bit_generator = rs._bit_generator  # the only handle numpy gives
        if raw and isinstance(bit_generator, np.random.MT19937):
            # numpy's mt19937_state: uint32_t key[624]; int pos.
            view = _bytes_view(bit_generator.ctypes.state_address, _MT_BYTES + 4)
            words = _words_view(view)
            public = bit_generator.state["state"]
            if words.tolist() == [*public["key"].tolist(), public["pos"]]:
                self._bytes, self._words = view, words
        self.fast: Final = self._bytes is not None

    def _where(self) -> tuple[int, int, int]:
        # Position and two key words: any draw changes the position, or, after a
        # multiple of 624 draws, the regenerated key.
        words = self._words
        assert words is not None
        return words[_MT_WORDS], words[0], words[1]

    def _take_gauss(self) -> float | None:
        # Empties the cached deviate; returns it if there was one. The mark is then
        # where the state stands.
        where = self._where()
        cell = self._cell
        if where == cell.mark:
            return None
        value = float(self.rs.standard_normal())
        moved = self._where()
        if moved == where:
            cell.mark = where
            return value  # served from the cache without touching MT19937
        self.rs.standard_normal()  # that call drew a pair and cached one: consume it
        cell.mark = self._where()
        return None

    def save(self) -> Any:
        """An opaque snapshot for :meth:`restore`. Leaves the RandomState scrambled."""
        view = self._bytes
        if view is None:
            return self.rs.get_state()
        mt = bytes(view)  # before the probe, which may move the state
        return mt, self._take_gauss()

    def restore(self, snapshot: Any) -> None:
        """Put back exactly the state :meth:`save` saw."""
        view = self._bytes
        if view is None:
            self.rs.set_state(snapshot)
            return
        mt, gauss = snapshot
        if gauss is None:
            self._take_gauss()
            view[:] = mt
            self._cell.mark = self._where()
        else:  # rare: the caller left a cached deviate, which only set_state can put back
            key, pos = _split_mt(mt)
            self.rs.set_state(("MT19937", key, pos, 1, gauss))
            self._cell.mark = None

    def to_plain(self, snapshot: Any) -> dict[str, Any]:
        """A :meth:`save` snapshot as plain data: key, position, cached deviate."""
        if self._bytes is None:
            _, key, pos, has_gauss, gauss = snapshot
            return {"key": key.tolist(), "pos": int(pos), "gauss": gauss if has_gauss else None}
        mt, gauss = snapshot
        key, pos = _split_mt(mt)
        return {"key": key.tolist(), "pos": pos, "gauss": gauss}

    def from_plain(self, plain: dict[str, Any]) -> Any:
        """The :meth:`save` snapshot that :meth:`to_plain` made ``plain`` from."""
        key = np.asarray(plain["key"], dtype=np.uint32)
        gauss = plain["gauss"]
        if self._bytes is None:
            return ("MT19937", key, plain["pos"], int(gauss is not None), gauss or 0.0)
        return key.tobytes() + np.int32(plain["pos"]).tobytes(), gauss

    def reseed(self, words: npt.NDArray[np.uint64]) -> None:
        """Fill the whole MT19937 state from 312 contiguous words; clear the cached deviate."""
        view, mt = self._bytes, self._words
        if view is None or mt is None:
            self.rs.set_state(("MT19937", _mt_key(words), _MT_WORDS, 0, 0.0))
            return
        self._take_gauss()
        view[:_MT_BYTES] = memoryview(words.data).cast("B")[:_MT_BYTES]
        mt[0] = _MT_MSB
        mt[_MT_WORDS] = _MT_WORDS
        self._cell.mark = (_MT_WORDS, _MT_MSB, mt[1])


def _mt_key(words: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint32]:
    # A Mersenne Twister's 624 state words from 312 seed words, the first with only
    # its top bit set (never an all-zero state), as numpy's seeding leaves them.
    key: npt.NDArray[np.uint32] = words[:_MT_SEED_WORDS].view(np.uint32).copy()
    key[0] = _MT_MSB
    return key


def _split_mt(mt: bytes) -> tuple[npt.NDArray[np.uint32], int]:
    # A raw MT19937 struct (624 key words, then the position) as (key, position).
    return np.frombuffer(mt, np.uint32, _MT_WORDS).copy(), int(
        np.frombuffer(mt, np.int32, 1, _MT_BYTES)[0]
    )


def _locate_random_struct(rng: random.Random) -> memoryview | None:
    """The bytes of ``rng``'s ``index`` and ``state[624]``, if they can be found and written.

    CPython's ``_random.Random`` object is ``PyObject_HEAD; int index; uint32_t
    state[624]`` (3.8 to 3.13). The offset is not assumed: see :func:`_random_offset`.
    ``rng`` itself must then read as its ``getstate()``. None where any step fails.
    """
    offset = _random_offset() if isinstance(rng, _random.Random) else None
    if offset is None:
        return None
    view = _bytes_view(id(rng) + offset, _MT_BYTES + 4)
    return view if _state_bytes(rng) == bytes(view) else None


@functools.cache
def _random_offset() -> int | None:
    """Where ``index`` lies in a ``_random.Random`` object, checked once per process.

    Searched inside a scratch instance for the bytes ``getstate()`` describes; then a
    write through a view at that offset must read back through ``getstate()``.
    """
    usable = (
        sys.implementation.name == "cpython"
        # free-threaded builds guard the struct with the object's own lock
        and getattr(sys, "_is_gil_enabled", lambda: True)()
    )
    try:
        offset = _find_offset(random.Random(20260101)) if usable else None
        if offset is None:
            return None
        size = _MT_BYTES + 4
        scratch, target = random.Random(1), random.Random(2)
        _bytes_view(id(scratch) + offset, size)[:] = _bytes_view(id(target) + offset, size)
    except Exception:  # noqa: BLE001 - any surprise means: use the public calls
        return None
    return offset if scratch.getstate() == target.getstate() else None


def _state_bytes(rng: random.Random) -> bytes:
    return _struct_bytes(rng.getstate()[1])


def _struct_bytes(internal: Sequence[int]) -> bytes:
    # ``getstate()``'s (state..., index) in the struct's order: index, then state.
    return np.array([internal[-1], *internal[:-1]], dtype=np.uint32).tobytes()


def _find_offset(rng: random.Random) -> int | None:
    expected = _state_bytes(rng)
    limit = _random.Random.__basicsize__ - len(expected)
    for offset in range(0, limit + 1, 4):
        if bytes(_bytes_view(id(rng) + offset, len(expected))) == expected:
            return offset
    return None


class PythonRandomState:
    """Save, restore and reseed one ``random.Random``, through raw memory where possible.

    A ``random.Random``'s randomness is its Mersenne Twister (624 words and an index,
    in the C object) plus ``gauss_next``, the second deviate ``random.gauss`` caches,
    a Python attribute. The fast path copies the 2,500 C bytes and that attribute;
    without it (see :func:`_locate_random_struct`) ``getstate``/``setstate`` do the
    same, 50 times slower.

    Args:
        rng: the instance.
        raw: use raw memory where the self-check passes; False forces the public
            calls (for tests).
    """

    __slots__ = ("_bytes", "_words", "fast", "rng")

    def __init__(self, rng: random.Random, *, raw: bool = True) -> None:
        self.rng = rng
        self._bytes = _locate_random_struct(rng) if raw else None
        self._words = None if self._bytes is None else _words_view(self._bytes)
        self.fast: Final = self._bytes is not None

    def save(self) -> Any:
        """An opaque snapshot for :meth:`restore`."""
        view = self._bytes
        if view is None:
            return self.rng.getstate()
        return bytes(view), self.rng.gauss_next  # type: ignore[attr-defined]  # not in typeshed

    def restore(self, snapshot: Any) -> None:
        """Put back exactly the state :meth:`save` saw."""
        view = self._bytes
        if view is None:
            self.rng.setstate(snapshot)
            return
        view[:] = snapshot[0]
        self.rng.gauss_next = snapshot[1]  # type: ignore[attr-defined]

    def reseed(self, words: npt.NDArray[np.uint64]) -> None:
        """Fill the whole Mersenne Twister from 312 contiguous words; clear ``gauss_next``.

        The 624 32-bit halves become the state, the first with only its top bit set
        (as ``random.seed`` and numpy's seeding leave it: never an all-zero state),
        and the position is at the end, so the next draw twists them first. That is
        what ``setstate`` with those words gives, through memory: 0.2 us, where
        ``random.seed(int)`` ran ``init_by_array`` in 4 us (before state format
        version 3, the unit's words were such an int).
        """
        view, mt = self._bytes, self._words
        if view is None or mt is None:
            self.rng.setstate((3, (*_mt_key(words).tolist(), _MT_WORDS), None))
            return
        view[4:] = memoryview(words.data).cast("B")[:_MT_BYTES]
        mt[0] = _MT_WORDS  # the position (``int index``), then the state
        mt[1] = _MT_MSB
        self.rng.gauss_next = None  # type: ignore[attr-defined]

    def to_plain(self, snapshot: Any) -> list[Any]:
        """A :meth:`save` snapshot as ``getstate()`` gives it, in lists."""
        if self._bytes is None:
            return python_to_plain(snapshot)
        raw, gauss = snapshot
        words = np.frombuffer(raw, np.uint32).tolist()
        return [3, words[1:] + words[:1], gauss]  # getstate()'s version 3

    def from_plain(self, plain: list[Any]) -> Any:
        """The :meth:`save` snapshot that :meth:`to_plain` made ``plain`` from."""
        if self._bytes is None:
            return python_from_plain(plain)
        _, internal, gauss = plain
        return _struct_bytes(internal), gauss


class GlobalRngs:
    """The process-wide RNGs named in ``which``: reseed from words, save and restore.

    Word layout of a unit's ``Lane.GLOBALS`` stream (fixed, whatever ``which`` holds,
    so enabling one RNG never changes another's values): ``[2]`` torch, ``[3:315]``
    numpy's whole MT19937 state, ``[315:627]`` python random's. (``[0:2]`` seeded
    python random through ``random.seed`` before state format version 3; unused.)
    """

    __slots__ = ("_numpy", "_random", "_torch", "n_words")
    n_words: int

    def __init__(self, which: frozenset[str]) -> None:
        unknown = which - set(GLOBAL_RNG_NAMES)
        if unknown:
            raise ValueError(f"unknown global RNG names {sorted(unknown)}; use {GLOBAL_RNG_NAMES}")
        self._random = PythonRandomState(_RANDOM) if "random" in which else None
        self._torch = "torch" in which
        self._numpy = LegacyState(np.random.mtrand._rand) if "numpy" in which else None
        if self._random is not None:
            self.n_words = _PY_AT + _MT_SEED_WORDS
        elif self._numpy is not None:
            self.n_words = _PY_AT
        else:
            self.n_words = 3 if self._torch else 0

    def reseed(self, words: npt.NDArray[np.uint64]) -> None:
        """Reseed from the first :attr:`n_words` words of a ``Lane.GLOBALS`` stream."""
        if self._torch:
            # The top 63 bits: torch keeps seeds as int64 in places (a dataset that
            # returns torch.initial_seed() must collate), as DataLoader's do.
            _TORCH.manual_seed(int(words[2]) >> 1)
        if self._numpy is not None:
            self._numpy.reseed(words[3:_PY_AT])
        if self._random is not None:
            self._random.reseed(words[_PY_AT:])

    def save(self) -> tuple[Any, Any, Any]:
        """Snapshot of the enabled RNGs, for :meth:`restore`."""
        py, np_ = self._random, self._numpy
        return (
            py.save() if py is not None else None,
            _TORCH.get_state() if self._torch else None,
            np_.save() if np_ is not None else None,
        )

    def restore(self, snapshot: tuple[Any, Any, Any]) -> None:
        """Put back a :meth:`save` snapshot."""
        py, pt, np_ = snapshot
        if py is not None:
            self._random.restore(py)  # type: ignore[union-attr]
        if pt is not None:
            _TORCH.set_state(pt)
        if np_ is not None:
            self._numpy.restore(np_)  # type: ignore[union-attr]

    def peek(self) -> tuple[Any, Any, Any]:
        """A snapshot that leaves the RNGs exactly as they were."""
        snapshot = self.save()
        self.restore(snapshot)
        return snapshot

    def to_plain(self, snapshot: tuple[Any, Any, Any]) -> dict[str, Any]:
        """A snapshot as plain data (lists, ints, a tensor), for resume states."""
        py, pt, np_ = snapshot
        return {
            "random": self._random.to_plain(py) if self._random is not None else None,
            "torch": pt if self._torch else None,
            "numpy": self._numpy.to_plain(np_) if self._numpy is not None else None,
        }

    def from_plain(self, plain: dict[str, Any]) -> tuple[Any, Any, Any]:
        """The snapshot that :meth:`to_plain` made ``plain`` from."""
        py = plain["random"]
        return (
            self._random.from_plain(py) if self._random is not None and py is not None else None,
            plain["torch"] if self._torch else None,
            self._numpy.from_plain(plain["numpy"]) if self._numpy is not None else None,
        )


def _generator_state(bit_generator: np.random.BitGenerator, words: npt.NDArray[np.uint64]) -> Any:
    # A fresh state for a Generator's bit generator, of the same type, from 4 words.
    kind = type(bit_generator).__name__
    if kind in ("PCG64", "PCG64DXSM"):
        return {
            "bit_generator": kind,
            "state": {"state": _u128(words, 0), "inc": _u128(words, 2) | 1},
            "has_uint32": 0,
            "uinteger": 0,
        }
    if kind == "Philox":
        return {
            "bit_generator": kind,
            "state": {"counter": np.zeros(4, np.uint64), "key": words[:2].copy()},
            "buffer": np.zeros(4, np.uint64),
            "buffer_pos": 4,
            "has_uint32": 0,
            "uinteger": 0,
        }
    # Other bit generators (MT19937, SFC64, third-party) seed through their own
    # constructor; slower, and rare on datasets.
    seed_sequence = np.random.SeedSequence(words[:4].view(np.uint32))
    return type(bit_generator)(seed_sequence).state


def _words_for(rng: object) -> int:
    return _MT_SEED_WORDS if isinstance(rng, np.random.RandomState) else 4


class AttributeRngs:
    """RNG objects found on a dataset or sampler, reseeded in place per unit.

    In place means the same object gets a new state, so code that cached a
    reference (``self.rng``, a transform holding it) sees the reseeded stream.
    Words come sequentially from a unit's ``Lane.ATTRIBUTES`` stream in path order:
    4 per object, 312 per RandomState.
    """

    __slots__ = ("_legacy", "n_words", "rngs")

    def __init__(self, rngs: list[tuple[str, Any]]) -> None:
        self.rngs: Final = rngs
        self._legacy = {
            id(rng): LegacyState(rng) for _, rng in rngs if isinstance(rng, np.random.RandomState)
        }
        self.n_words: Final = sum(_words_for(rng) for _, rng in rngs)

    def __bool__(self) -> bool:
        return bool(self.rngs)

    @property
    def paths(self) -> list[str]:
        """Where each RNG was found, e.g. ``dataset.rng``."""
        return [path for path, _ in self.rngs]

    def reseed(self, words: npt.NDArray[np.uint64]) -> None:
        """Reseed every object from the first :attr:`n_words` words of its stream."""
        at = 0
        for _, rng in self.rngs:
            n = _words_for(rng)
            chunk = words[at : at + n]
            at += n
            if isinstance(rng, np.random.Generator):
                rng.bit_generator.state = _generator_state(rng.bit_generator, chunk)
            elif isinstance(rng, np.random.RandomState):
                self._legacy[id(rng)].reseed(chunk)
            elif isinstance(rng, random.Random):
                rng.seed(_u128(chunk, 0))
            else:
                rng.manual_seed(int(chunk[0]) >> 1)  # below 2**63, as for torch's global
