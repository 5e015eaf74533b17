from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reproloader.distributed import (
    gather_state,
    rank_and_world_size,
    rank_part,
    shard_steps,
)


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
