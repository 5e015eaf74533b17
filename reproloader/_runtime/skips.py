"""Batches left out of a run: ranges of positions, and the arithmetic on them.

A skip list is a sorted list of disjoint, non-adjacent ``(epoch, start, stop)``: the
batches at positions ``start .. stop - 1`` of ``epoch`` are not produced. Positions
keep their meaning: a unit's randomness is keyed by its position, so leaving one
out shifts nothing else. Every function here is O(number of ranges), never
O(positions skipped): a range of a million batches costs what a range of one does.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence

__all__ = [
    "Ranges",
    "SkipList",
    "advance",
    "is_skipped",
    "merge",
    "of_epoch",
    "open_segments",
    "steps_to_batches",
]

SkipList = list[tuple[int, int, int]]
"""``[(epoch, start, stop), ...]``, sorted, disjoint and non-adjacent within an epoch."""

Ranges = tuple[tuple[int, int], ...]
"""One epoch's skipped ``(start, stop)`` ranges, sorted and disjoint."""


def merge(ranges: Iterable[tuple[int, int, int]]) -> SkipList:
    """Sort ``(epoch, start, stop)`` ranges and merge those that overlap or touch."""
    merged: SkipList = []
    for epoch, start, stop in sorted(ranges):
        if start >= stop:
            continue
        if merged and merged[-1][0] == epoch and start <= merged[-1][2]:
            last = merged[-1]
            merged[-1] = (epoch, last[1], max(last[2], stop))
        else:
            merged.append((epoch, start, stop))
    return merged


def of_epoch(skips: Sequence[tuple[int, int, int]], epoch: int) -> Ranges:
    """The ranges of one epoch, as ``(start, stop)`` pairs."""
    return tuple((start, stop) for e, start, stop in skips if e == epoch)


def advance(position: int, n: int, ranges: Ranges) -> int:
    """The position ``n`` unskipped positions after ``position``, itself not skipped.

    ``advance(p, 0, ranges)`` is ``p``, or the end of the range that holds it.
    """
    for start, stop in ranges:
        if stop <= position:
            continue
        if start <= position:  # inside this range: to its end
            position = stop
            continue
        if position + n < start:
            return position + n
        n -= start - position
        position = stop
    return position + n


def is_skipped(position: int, ranges: Ranges) -> bool:
    """Whether ``position`` is in one of ``ranges``."""
    i = bisect.bisect_left(ranges, (position + 1, -1)) - 1  # the last range starting <= position
    return i >= 0 and ranges[i][0] <= position < ranges[i][1]


def open_segments(start: int, ranges: Ranges) -> Iterator[tuple[int, int | None]]:
    """The ``[a, b)`` stretches from ``start`` on that no range covers (``b`` None: no end)."""
    position = start
    for begin, stop in ranges:
        if stop <= position:
            continue
        if begin > position:
            yield position, begin
        position = max(position, stop)
    yield position, None


def steps_to_batches(start: int, stop: int, per_epoch: int) -> SkipList:
    """Global steps ``start .. stop - 1`` as ``(epoch, start, stop)`` ranges of batches.

    Step ``s`` is batch ``s % per_epoch`` of epoch ``s // per_epoch``. O(epochs spanned).
    """
    if per_epoch < 1:
        raise ValueError(f"global steps need epochs of at least one batch, got {per_epoch}")
    if not 0 <= start < stop:
        raise ValueError(f"steps must satisfy 0 <= start < stop, got start={start}, stop={stop}")
    ranges: SkipList = []
    step = start
    while step < stop:
        epoch, first = divmod(step, per_epoch)
        end = min(per_epoch, first + stop - step)
        ranges.append((epoch, first, end))
        step += end - first
    return ranges
