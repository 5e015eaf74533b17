from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reproloader.distributed import (
    ShardedSampler,
    ShardSteps,
    gather_state,
    rank_and_world_size,
    rank_part,
    shard_steps,
)


def listed_steps(remaining: int, world_size: int, batch_size: int, drop_last: bool) -> list[int]:
    """The reference: every step listed, as shard_steps cut them before the arithmetic."""
    full = world_size * batch_size
    steps = [full] * (remaining // full)
    tail = remaining - len(steps) * full
    if tail and not drop_last:
        if tail < world_size and steps:
            steps[-1] += tail
        else:
            steps.append(tail)
    return steps


def listed_rank_samples(steps: list[int], rank: int, world_size: int) -> int:
    """The reference: a rank's samples summed step by step (an empty part is padded)."""
    return sum(max(len(rank_part(0, size, rank, world_size)), 1) for size in steps)


shapes = st.tuples(
    st.integers(0, 3000),  # n
    st.integers(1, 9),  # world size
    st.integers(1, 17),  # batch size
    st.booleans(),  # drop_last
).flatmap(lambda t: st.tuples(*map(st.just, t), st.integers(0, t[0])))  # offset <= n


@given(shape=shapes)
def test_step_arithmetic_matches_the_listed_steps(shape: tuple[int, int, int, bool, int]) -> None:
    n, world_size, batch_size, drop_last, offset = shape
    reference = listed_steps(n - offset, world_size, batch_size, drop_last)
    steps = ShardSteps(n - offset, world_size, batch_size, drop_last)
    assert len(steps) == len(reference)
    assert list(steps) == reference
    assert [steps[k] for k in range(-len(reference), len(reference))] == reference * 2
    assert steps[1:-1] == reference[1:-1]
    assert shard_steps(n - offset, world_size, batch_size, drop_last) == reference
    assert steps.total == sum(reference)
    for k in {0, 1, len(reference) - 1, len(reference), len(reference) + 3} - {-1}:
        assert steps.consumed(k) == sum(reference[:k]), k
    for rank in range(world_size):
        assert steps.rank_samples(rank) == listed_rank_samples(reference, rank, world_size)


@given(shape=shapes)
def test_the_sampler_counts_steps_offsets_and_samples_by_arithmetic(
    shape: tuple[int, int, int, bool, int], monkeypatch_rank: pytest.MonkeyPatch
) -> None:
    n, world_size, batch_size, drop_last, offset = shape
    sampler = ShardedSampler(
        range(n), seed=1, shuffle=False, batch_size=batch_size, drop_last=drop_last
    )
    reference = listed_steps(n - offset, world_size, batch_size, drop_last)
    assert len(sampler.steps(world_size, offset)) == len(reference)
    for k in range(len(reference) + 2):
        assert sampler.offset_after(world_size, offset, k) == offset + sum(reference[:k])
    whole = listed_steps(n, world_size, batch_size, drop_last)
    for rank in range(world_size):
        monkeypatch_rank.setattr(
            "reproloader.distributed.rank_and_world_size", lambda r=rank: (r, world_size)
        )
        assert len(sampler) == listed_rank_samples(whole, rank, world_size)
        if n <= 300:  # and the batches the sampler yields agree with its length
            assert len(sampler) == sum(map(len, sampler.rank_batches(0, rank, world_size)))


@pytest.fixture(scope="module")
def monkeypatch_rank() -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch that hypothesis may reuse across examples (undone after the module)."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize(
    ("field", "args"),
    [
        ("remaining", (-1, 2, 3, False)),
        ("world_size", (5, 0, 3, False)),
        ("batch_size", (5, 2, 0, True)),
    ],
)
def test_impossible_step_plans_are_refused(field: str, args: tuple[int, int, int, bool]) -> None:
    with pytest.raises(ValueError, match=f"{field} must be at least"):
        ShardSteps(*args)


@pytest.mark.parametrize(("tail", "count", "last"), [(5, 10**8 + 1, 5), (2, 10**8, 96 + 2)])
def test_step_arithmetic_at_internet_scale(tail: int, count: int, last: int) -> None:
    # 3 ranks x 32: a tail of 5 is a step of its own, a tail of 2 joins the last full step.
    steps = ShardSteps(96 * 10**8 + tail, 3, 32, drop_last=False)
    assert (len(steps), steps[-1], steps[0]) == (count, last, 96)
    assert steps.consumed(count - 1) == (count - 1) * 96
    assert steps.consumed(count) == 96 * 10**8 + tail
    assert steps.rank_samples(0) == (count - 1) * 32 + len(rank_part(0, last, 0, 3))


@given(remaining=st.integers(0, 500), world_size=st.integers(1, 8), batch_size=st.integers(1, 16))
def test_steps_cover_the_remainder_without_empty_ranks(
    remaining: int, world_size: int, batch_size: int
) -> None:
    steps = shard_steps(remaining, world_size, batch_size, drop_last=False)
    assert sum(steps) == remaining
    full = world_size * batch_size
    assert all(size == full for size in steps[:-1])
    if remaining >= world_size:
        assert all(size >= world_size for size in steps)  # every rank gets a sample


@given(remaining=st.integers(0, 500), world_size=st.integers(1, 8), batch_size=st.integers(1, 16))
def test_drop_last_keeps_only_full_steps(remaining: int, world_size: int, batch_size: int) -> None:
    steps = shard_steps(remaining, world_size, batch_size, drop_last=True)
    assert steps == [world_size * batch_size] * (remaining // (world_size * batch_size))


@given(size=st.integers(1, 200), world_size=st.integers(1, 8), start=st.integers(0, 1000))
def test_rank_parts_tile_a_step_evenly(size: int, world_size: int, start: int) -> None:
    parts = [rank_part(start, size, r, world_size) for r in range(world_size)]
    assert [i for part in parts for i in part] == list(range(start, start + size))
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1


def test_without_a_process_group_rank_0_of_1() -> None:
    assert rank_and_world_size() == (0, 1)


def test_gather_state_without_a_process_group_holds_one_rank() -> None:
    class Stub:
        def state_dict(self) -> dict[str, int]:
            return {"position": 3}

    gathered = gather_state(Stub())
    assert gathered["ranks"] == [{"position": 3}]
    assert gathered["world_size"] == 1
