"""Moving a numpy Philox to a counter through its own memory: the per-unit hot path.

Every unit moves a Philox twice (the seed words' and, once a dataset asked for it, the
context Generator's). numpy's ``bit_generator.state = {...}`` setter validates and
copies a nested dict: about 1.1 us. The counter, the key and the buffer bookkeeping are
a few machine words, written here through memoryviews of them in 0.2 us.

Where they are is read from ``BitGenerator.ctypes.state_address`` (numpy's public
handle on the C state: ``philox_state`` holds pointers to the counter and the key, then
``int buffer_pos``, ``uint64_t buffer[4]``, ``int has_uint32``, ``uint32_t uinteger``)
and checked once against the public ``state`` of scratch generators: the layout is
read, a write is compared with the setter's result, draws included. Where any of it
differs (another numpy), :func:`philox_mover` returns None and the setter is used,
with identical results.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from typing import Any, Final, Literal

import numpy as np

__all__ = ["key_words", "philox_mover"]

_BUFFER_POS: Final = 16  # byte offsets in philox_state (x86-64 / aarch64 LP64)
_HAS_UINT32: Final = 56
_SIZE: Final = 64


def _words(address: int, count: int, fmt: Literal["Q", "i"], size: int) -> memoryview:
    return memoryview((ctypes.c_char * (count * size)).from_address(address)).cast("B").cast(fmt)


def _views(bit_generator: np.random.Philox) -> tuple[memoryview, memoryview, memoryview]:
    base = bit_generator.ctypes.state_address
    pointers = _words(base, 2, "Q", 8)
    counter = _words(pointers[0], 4, "Q", 8)
    key = _words(pointers[1], 2, "Q", 8)
    head = _words(base, _SIZE // 4, "i", 4)
    return counter, key, head


def _raw_mover(bit_generator: np.random.Philox) -> Callable[[memoryview, int, int], None]:
    counter, key, head = _views(bit_generator)
    pos, has32, uint = _BUFFER_POS // 4, _HAS_UINT32 // 4, _HAS_UINT32 // 4 + 1

    def move(key_words: memoryview, unit: int, lane: int) -> None:
        key[0:2] = key_words
        counter[0] = 0
        counter[1] = 0
        counter[2] = unit
        counter[3] = lane
        head[pos] = 4  # an empty buffer: the next draw computes a fresh block
        head[has32] = 0
        head[uint] = 0

    # Keep the generator alive as long as the views into it.
    move.bit_generator = bit_generator  # type: ignore[attr-defined]
    return move


def _setter_state(counter: Any, key: Any) -> Any:
    # What the public setter is given: at a counter, under a key, with an empty buffer.
    return {
        "bit_generator": "Philox",
        "state": {"counter": counter, "key": key},
        "buffer": np.zeros(4, dtype=np.uint64),
        "buffer_pos": 4,
        "has_uint32": 0,
        "uinteger": 0,
    }


@functools.cache
def _layout_checked() -> bool:
    try:
        return _check()
    except Exception:  # noqa: BLE001 - any surprise means: use the public setter
        return False


def _check() -> bool:
    if ctypes.sizeof(ctypes.c_void_p) != 8 or ctypes.sizeof(ctypes.c_int) != 4:
        return False  # another layout than the one read below: never dereference it
    rng = np.random.default_rng(20261128)
    a, b = np.random.Philox(key=1), np.random.Philox(key=2)
    generator_b = np.random.Generator(b)
    # Read: the counter and key the views show are the public state's.
    a.state = _setter_state(
        rng.integers(0, 2**63, 4, dtype=np.uint64), rng.integers(0, 2**63, 2, dtype=np.uint64)
    )
    a.random_raw(1)
    np.random.Generator(a).integers(0, 2**32, dtype=np.uint32)
    counter, key, head = _views(a)
    public = a.state
    if list(counter) != [int(x) for x in public["state"]["counter"]]:
        return False
    if list(key) != [int(x) for x in public["state"]["key"]]:
        return False
    if (
        head[_BUFFER_POS // 4] != public["buffer_pos"]
        or head[_HAS_UINT32 // 4] != public["has_uint32"]
    ):
        return False
    # Write: a move through memory gives the setter's state and the same draws, from
    # a generator left mid-buffer with a cached 32-bit half.
    b.random_raw(3)
    generator_b.integers(0, 2**32, dtype=np.uint32)
    new_key = rng.integers(0, 2**63, 2, dtype=np.uint64)
    _raw_mover(b)(key_words(new_key), 12345, 7)
    reference = np.random.Philox(key=0)
    reference.state = _setter_state(np.array([0, 0, 12345, 7], dtype=np.uint64), new_key)
    got, want = b.state, reference.state
    same_state = (
        list(got["state"]["counter"]) == list(want["state"]["counter"])
        and list(got["state"]["key"]) == list(want["state"]["key"])
        and got["buffer_pos"] == want["buffer_pos"]
        and got["has_uint32"] == want["has_uint32"]
    )
    draws_b = [generator_b.integers(0, 2**32, dtype=np.uint32) for _ in range(3)]
    generator_ref = np.random.Generator(reference)
    draws_ref = [generator_ref.integers(0, 2**32, dtype=np.uint32) for _ in range(3)]
    return (
        same_state and draws_b == draws_ref and (b.random_raw(9) == reference.random_raw(9)).all()
    )


def key_words(key: np.ndarray[Any, Any]) -> memoryview:
    """A Philox key (2 uint64) as the view a mover copies from."""
    return memoryview(np.ascontiguousarray(key, dtype=np.uint64).data).cast("B").cast("Q")


def philox_mover(bit_generator: np.random.Philox) -> Callable[[memoryview, int, int], None] | None:
    """``move(key_words(key), counter2, counter3)`` for ``bit_generator``, in place.

    None where the layout check failed.
    """
    if not _layout_checked():
        return None
    return _raw_mover(bit_generator)
