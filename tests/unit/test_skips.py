"""The skip list's arithmetic (reproloader._runtime.skips), against brute force."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reproloader._runtime.cursor import Pass, PassCursor
from reproloader._runtime.skips import (
    advance,
    is_skipped,
    merge,
    of_epoch,
    open_segments,
    steps_to_batches,
)
from reproloader.exceptions import StateFieldError
from reproloader.state import check_fields
from tests.unit.test_state import TOP

raw_ranges = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 30), st.integers(0, 30)), max_size=6
)


def covered(ranges: list[tuple[int, int, int]]) -> set[tuple[int, int]]:
    return {(e, k) for e, a, b in ranges for k in range(a, b)}


@given(raw_ranges)
def test_merge_covers_the_same_positions_with_sorted_disjoint_ranges(
    ranges: list[tuple[int, int, int]],
) -> None:
    merged = merge(ranges)
    assert covered(merged) == covered(ranges)
    assert merged == sorted(merged)
    for (e1, _, b1), (e2, a2, _) in itertools.pairwise(merged):
        assert e1 < e2 or b1 < a2, "disjoint and not touching"
    assert all(a < b for _, a, b in merged)


@given(raw_ranges, st.integers(0, 40), st.integers(0, 40))
def test_advance_segments_and_counts_agree_with_walking_position_by_position(
    ranges: list[tuple[int, int, int]], start: int, n: int
) -> None:
    one = of_epoch(merge(ranges), 1)
    open_positions = [p for p in range(start, 200) if not any(a <= p < b for a, b in one)]
    assert advance(start, n, one) == open_positions[n]
    assert all(is_skipped(p, one) == any(a <= p < b for a, b in one) for p in range(60))
    walked = []
    for a, b in open_segments(start, one):
        walked.extend(range(a, 200 if b is None else b))
    assert walked == open_positions


@given(st.integers(0, 50), st.integers(1, 30), st.integers(1, 7))
def test_steps_to_batches_names_each_step_once(start: int, length: int, per_epoch: int) -> None:
    ranges = steps_to_batches(start, start + length, per_epoch)
    assert covered(ranges) == {divmod(s, per_epoch) for s in range(start, start + length)}


SKIP_EXPECTED = "a list of [epoch, start, stop] with start < stop, sorted and merged"


@pytest.mark.parametrize(
    ("skip", "path", "expected", "got"),
    [
        (None, "skip", SKIP_EXPECTED, None),
        ("0-1", "skip", SKIP_EXPECTED, "0-1"),
        ([[0, 1]], "skip[0]", "[epoch, start, stop]", [0, 1]),
        ([(0, 1, 2)], "skip[0]", "[epoch, start, stop]", (0, 1, 2)),
        ([["0", 1, 2]], "skip[0][0]", "an int", "0"),
        ([[2**32, 1, 2]], "skip[0][0]", "an int in [0, 4294967296)", 2**32),
        ([[0, 2, 2]], "skip[0][2]", "an int in [3, 9223372036854775809)", 2),
        ([[0, -1, 2]], "skip[0][1]", "an int in [0, 9223372036854775808)", -1),
        ([[0, 1, True]], "skip[0][2]", "an int", True),
        ([[0, 1, 3], [0, 3, 4]], "skip", SKIP_EXPECTED, [[0, 1, 3], [0, 3, 4]]),
        ([[1, 1, 3], [0, 5, 6]], "skip", SKIP_EXPECTED, [[1, 1, 3], [0, 5, 6]]),
    ],
)
def test_a_damaged_skip_list_is_refused_by_its_path(
    skip: Any, path: str, expected: str, got: Any
) -> None:
    with pytest.raises(StateFieldError) as raised:
        check_fields({**TOP, "skip": skip}, batches=None, elastic=False)
    assert (raised.value.path, raised.value.expected, raised.value.got) == (path, expected, got)


def test_a_merged_skip_list_passes() -> None:
    check_fields({**TOP, "skip": [[0, 1, 3], [0, 4, 9], [2, 0, 1]]}, batches=None, elastic=False)
    last = [[2**32 - 1, 2**63 - 1, 2**63]]  # the last epoch and the last position
    check_fields({**TOP, "skip": last}, batches=None, elastic=False)


def test_position_of_steps_over_skipped_ranges_and_positions_handed_out_before() -> None:
    cursor = PassCursor()
    cursor.current = Pass(epoch=0, serial=0, start=2, skip=frozenset({4}), skipped=((5, 7),))
    assert [cursor.position_of(t) for t in range(4)] == [2, 3, 7, 8]
    cursor.current = Pass(epoch=0, serial=0, start=2, skipped=((0, 3), (5, 7)))
    assert [cursor.position_of(t) for t in range(4)] == [3, 4, 7, 8]
