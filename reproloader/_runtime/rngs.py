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

Cost is what decides the shape of this module (measured on the CI machine, one
call each): ``random.getstate`` 9.5 us, ``random.seed`` 4 us, ``torch``
``get_state``/``manual_seed`` 1 us, but numpy's ``get_state``/``set_state`` 40 us
each, about a third of a 32-sample batch of tiny samples. So numpy's MT19937 state
is read and written as raw memory through ``BitGenerator.ctypes.state_address``
(the interface numba uses), after a self-check against ``bit_generator.state``;
where that check fails the slow public calls are used, with identical results.
"""

from __future__ import annotations

import _random
import ctypes
import random
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["GLOBAL_RNG_NAMES", "AttributeRngs", "GlobalRngs", "LegacyState"]

GLOBAL_RNG_NAMES: Final = ("numpy", "random", "torch")

_MT_WORDS: Final = 624  # uint32 words of MT19937 state
_MT_SEED_WORDS: Final = _MT_WORDS // 2  # uint64 words that fill them
_MT_MSB: Final = 0x80000000  # key[0] = MSB only, as numpy's own seeding does: never all zero
_RNG_TYPES: Final = (np.random.Generator, np.random.RandomState, random.Random, torch.Generator)
_RANDOM: Final[random.Random] = random._inst  # the instance behind random.random() etc.
_seed_random: Final = _random.Random.seed
_TORCH: Final = torch.default_generator


def _u128(words: npt.NDArray[np.uint64], at: int) -> int:
    return (int(words[at]) << 64) | int(words[at + 1])


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
    training loop that does not use numpy's global RNG, no probe runs at all.
    """

    __slots__ = ("_address", "_live", "_mark", "_raw", "fast", "rs")

    def __init__(self, rs: np.random.RandomState) -> None:
        self.rs = rs
        self._live: npt.NDArray[np.uint32] | None = None
        self._raw: Any = None
        self._address = 0
        self._mark: tuple[int, int, int] | None = None
        bit_generator = rs._bit_generator  # the only handle numpy gives
        if isinstance(bit_generator, np.random.MT19937):
            address = bit_generator.ctypes.state_address
            raw = (ctypes.c_uint32 * (_MT_WORDS + 1)).from_address(address)
            live: npt.NDArray[np.uint32] = np.ctypeslib.as_array(raw)
            public = bit_generator.state["state"]
            if np.array_equal(live[:_MT_WORDS], public["key"]) and int(live[-1]) == public["pos"]:
                self._live, self._raw, self._address = live, raw, address
        self.fast: Final = self._live is not None

    def _where(self) -> tuple[int, int, int]:
        # Position and two key words: any draw changes the position, or, after a
        # multiple of 624 draws, the regenerated key. (ctypes reads give plain ints.)
        raw = self._raw
        return raw[_MT_WORDS], raw[0], raw[1]

    def _take_gauss(self) -> float | None:
        # Empties the cached deviate; returns it if there was one.
        where = self._where()
        if where == self._mark:
            return None
        value = float(self.rs.standard_normal())
        if self._where() == where:
            return value  # served from the cache without touching MT19937
        self.rs.standard_normal()  # that call drew a pair and cached one: consume it
        return None

    def save(self) -> Any:
        """An opaque snapshot for :meth:`restore`. Leaves the RandomState scrambled."""
        live = self._live
        if live is None:
            return self.rs.get_state()
        mt = live.copy()
        gauss = self._take_gauss()
        self._mark = self._where()
        return mt, gauss

    def restore(self, snapshot: Any) -> None:
        """Put back exactly the state :meth:`save` saw."""
        live = self._live
        if live is None:
            self.rs.set_state(snapshot)
            return
        mt, gauss = snapshot
        if gauss is None:
            self._take_gauss()
            live[:] = mt
            self._mark = self._where()
        else:  # rare: the caller left a cached deviate, which only set_state can put back
            self.rs.set_state(("MT19937", mt[:_MT_WORDS], int(mt[-1]), 1, gauss))
            self._mark = None

    def to_plain(self, snapshot: Any) -> dict[str, Any]:
        """A :meth:`save` snapshot as plain data: key, position, cached deviate."""
        if self._live is None:
            _, key, pos, has_gauss, gauss = snapshot
            return {"key": key.tolist(), "pos": int(pos), "gauss": gauss if has_gauss else None}
        mt, gauss = snapshot
        return {"key": mt[:_MT_WORDS].tolist(), "pos": int(mt[-1]), "gauss": gauss}

    def from_plain(self, plain: dict[str, Any]) -> Any:
        """The :meth:`save` snapshot that :meth:`to_plain` made ``plain`` from."""
        key = np.asarray(plain["key"], dtype=np.uint32)
        gauss = plain["gauss"]
        if self._live is None:
            return ("MT19937", key, plain["pos"], int(gauss is not None), gauss or 0.0)
        return np.append(key, np.uint32(plain["pos"])), gauss

    def reseed(self, words: npt.NDArray[np.uint64]) -> None:
        """Fill the whole MT19937 state from 312 contiguous words; clear the cached deviate."""
        raw = self._raw
        if raw is None:
            key = words[:_MT_SEED_WORDS].view(np.uint32).copy()
            key[0] = _MT_MSB
            self.rs.set_state(("MT19937", key, _MT_WORDS, 0, 0.0))
            return
        self._take_gauss()
        ctypes.memmove(self._address, words.ctypes.data, _MT_WORDS * 4)
        raw[0] = _MT_MSB
        raw[_MT_WORDS] = _MT_WORDS
        self._mark = (_MT_WORDS, _MT_MSB, raw[1])


class GlobalRngs:
    """The process-wide RNGs named in ``which``: reseed from words, save and restore.

    Word layout of a unit's ``Lane.GLOBALS`` stream (fixed, whatever ``which`` holds,
    so enabling one RNG never changes another's values): ``[0:2]`` python random
    (128 bits), ``[2]`` torch, ``[3:315]`` numpy's whole MT19937 state.
    """

    __slots__ = ("_numpy", "_random", "_torch", "n_words")
    n_words: int

    def __init__(self, which: frozenset[str]) -> None:
        unknown = which - set(GLOBAL_RNG_NAMES)
        if unknown:
            raise ValueError(f"unknown global RNG names {sorted(unknown)}; use {GLOBAL_RNG_NAMES}")
        self._random = "random" in which
        self._torch = "torch" in which
        self._numpy = LegacyState(np.random.mtrand._rand) if "numpy" in which else None
        if self._numpy is not None:
            self.n_words = 3 + _MT_SEED_WORDS
        else:
            self.n_words = 3 if self._random or self._torch else 0

    def reseed(self, words: npt.NDArray[np.uint64]) -> None:
        """Reseed from the first :attr:`n_words` words of a ``Lane.GLOBALS`` stream."""
        if self._random or self._torch:
            w0, w1, w2 = words[:3].tolist()
            if self._random:
                # Random.seed without its Python wrapper (0.5 us of a 4 us call); the
                # wrapper's only other effect is clearing the gauss cache, done here.
                _seed_random(_RANDOM, (w0 << 64) | w1)
                _RANDOM.gauss_next = None  # type: ignore[attr-defined]  # missing from typeshed
            if self._torch:
                _TORCH.manual_seed(w2)
        if self._numpy is not None:
            self._numpy.reseed(words[3:])

    def save(self) -> tuple[Any, Any, Any]:
        """Snapshot of the enabled RNGs, for :meth:`restore`."""
        return (
            random.getstate() if self._random else None,
            torch.default_generator.get_state() if self._torch else None,
            self._numpy.save() if self._numpy is not None else None,
        )

    def restore(self, snapshot: tuple[Any, Any, Any]) -> None:
        """Put back a :meth:`save` snapshot."""
        py, pt, np_ = snapshot
        if self._random:
            random.setstate(py)
        if self._torch:
            torch.default_generator.set_state(pt)
        if self._numpy is not None:
            self._numpy.restore(np_)

    def peek(self) -> tuple[Any, Any, Any]:
        """A snapshot that leaves the RNGs exactly as they were."""
        snapshot = self.save()
        self.restore(snapshot)
        return snapshot

    def to_plain(self, snapshot: tuple[Any, Any, Any]) -> dict[str, Any]:
        """A snapshot as plain data (lists, ints, a tensor), for resume states."""
        py, pt, np_ = snapshot
        return {
            "random": [py[0], list(py[1]), py[2]] if self._random else None,
            "torch": pt if self._torch else None,
            "numpy": self._numpy.to_plain(np_) if self._numpy is not None else None,
        }

    def from_plain(self, plain: dict[str, Any]) -> tuple[Any, Any, Any]:
        """The snapshot that :meth:`to_plain` made ``plain`` from."""
        py = plain["random"]
        return (
            (py[0], tuple(py[1]), py[2]) if py is not None else None,
            plain["torch"],
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
                rng.manual_seed(int(chunk[0]))
