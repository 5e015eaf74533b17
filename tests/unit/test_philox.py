"""Moving a Philox through its own memory gives exactly what numpy's state setter gives."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reproloader import seeding
from reproloader._runtime import philox
from reproloader.seeding import Lane, UnitStreams

U64 = st.integers(0, 2**64 - 1)


def _by_setter(key: np.ndarray, unit: int, lane: int) -> np.random.Philox:
    bit_generator = np.random.Philox(key=0)
    bit_generator.state = {
        "bit_generator": "Philox",
        "state": {"counter": np.array([0, 0, unit, lane], dtype=np.uint64), "key": key},
        "buffer": np.zeros(4, dtype=np.uint64),
        "buffer_pos": 4,
        "has_uint32": 0,
        "uinteger": 0,
    }
    return bit_generator


def test_the_layout_is_found_on_this_numpy() -> None:
    # Where it is not, the setter is used (below): correct, only slower.
    assert philox.philox_mover(np.random.Philox(key=0)) is not None


@settings(max_examples=60, deadline=None)
@given(key=st.tuples(U64, U64), unit=U64, lane=st.integers(0, 2**16), drawn=st.integers(0, 9))
def test_a_move_through_memory_is_the_setters(
    key: tuple[int, int], unit: int, lane: int, drawn: int
) -> None:
    array = np.array(key, dtype=np.uint64)
    moved = np.random.Philox(key=5)
    generator = np.random.Generator(moved)
    moved.random_raw(drawn)  # left mid-buffer, with a cached 32-bit half
    generator.integers(0, 2**32, dtype=np.uint32)
    move = philox.philox_mover(moved)
    assert move is not None
    move(philox.key_words(array), unit, lane)
    reference = _by_setter(array, unit, lane)
    assert [int(x) for x in moved.state["state"]["counter"]] == [0, 0, unit, lane]
    assert [int(x) for x in moved.state["state"]["key"]] == list(key)
    assert moved.state["buffer_pos"] == 4
    assert moved.state["has_uint32"] == 0
    assert (moved.random_raw(6) == reference.random_raw(6)).all()
    assert generator.integers(0, 2**32, dtype=np.uint32) == np.random.Generator(reference).integers(
        0, 2**32, dtype=np.uint32
    )


@pytest.mark.parametrize("raw", [True, False])
def test_unit_streams_give_the_same_words_and_generators_either_way(
    raw: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not raw:
        # (seeding holds its own reference to the function)
        monkeypatch.setattr(seeding, "philox_mover", lambda bit_generator: None)
    streams = UnitStreams()
    keys = [np.array([1, 2], dtype=np.uint64), np.array([2**64 - 1, 7], dtype=np.uint64)]
    generator = UnitStreams.new_generator()
    out = []
    for unit in (0, 3, 2**40):
        for key in keys:
            out.append(streams.words(key, unit, Lane.GLOBALS, 5).tolist())
            streams.position(generator.bit_generator, key, unit, Lane.RNG)  # type: ignore[arg-type]
            out.append(generator.random(3).tolist())
    expected = []
    for unit in (0, 3, 2**40):
        for key in keys:
            expected.append(_by_setter(key, unit, int(Lane.GLOBALS)).random_raw(5).tolist())
            expected.append(
                np.random.Generator(_by_setter(key, unit, int(Lane.RNG))).random(3).tolist()
            )
    assert out == expected
