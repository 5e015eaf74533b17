"""The library's sharding, with ranks simulated in one process (torchrun tests: test_torchrun.py)."""

from __future__ import annotations

import tracemalloc
from collections import Counter
from typing import Any

import pytest
import torch

from reproloader import ConfigError, ReproLoader, StateMismatchError
from reproloader.distributed import ShardedSampler, rank_part
from tests.datasets import AllSources, Stream

N = 37


def as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, world_size: int) -> None:
    monkeypatch.setattr("reproloader.distributed.rank_and_world_size", lambda: (rank, world_size))


def make(**kwargs: Any) -> ReproLoader[Any]:
    kwargs.setdefault("batch_size", 3)
    kwargs.setdefault("shuffle", True)
    return ReproLoader(AllSources(N), shard=True, seed=9, **kwargs)


def run_ranks(
    monkeypatch: pytest.MonkeyPatch,
    world_size: int,
    state: dict[str, Any] | None = None,
    **kwargs: Any,
) -> list[list[torch.Tensor]]:
    """Each rank's batches of one epoch (or of the rest of it, from ``state``)."""
    out = []
    for rank in range(world_size):
        as_rank(monkeypatch, rank, world_size)
        loader = make(**kwargs)
        if state is not None:
            loader.load_state_dict(state)
        out.append(list(loader))
    return out


def rows(batches: list[torch.Tensor]) -> dict[int, list[float]]:
    return {int(r[0]): r[1:].tolist() for b in batches for r in b}


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_split_every_epoch_exactly(
    monkeypatch: pytest.MonkeyPatch, world_size: int, drop_last: bool
) -> None:
    per_rank = run_ranks(monkeypatch, world_size, drop_last=drop_last)
    assert len({len(b) for b in per_rank}) == 1, "every rank runs the same number of steps"
    seen = Counter(int(r[0]) for batches in per_rank for b in batches for r in b)
    if drop_last:
        assert all(c == 1 for c in seen.values())
        assert len(seen) == N - N % (world_size * 3)
    else:
        assert seen == Counter(range(N))
    as_rank(monkeypatch, 0, world_size)
    assert len(make(drop_last=drop_last)) == len(per_rank[0])


def global_order(per_rank: list[list[torch.Tensor]]) -> list[int]:
    """The samples of every step, rank 0's part first: what the ranks took, in order."""
    steps = zip(*per_rank, strict=True)
    return [int(r[0]) for step in steps for batch in step for r in batch]


def test_every_rank_sees_the_same_global_order(monkeypatch: pytest.MonkeyPatch) -> None:
    orders = {w: global_order(run_ranks(monkeypatch, w)) for w in (1, 2, 3, 4)}
    for world_size, order in orders.items():
        assert sorted(order) == list(range(N)), f"{world_size} ranks: each sample exactly once"
    # Every world size puts its parts together into the same order: one global order
    # per (seed, epoch), of which each rank takes its contiguous part.
    assert orders[2] == orders[1]
    assert orders[3] == orders[1]
    assert orders[4] == orders[1]
    assert orders[1] != list(range(N)), "shuffled"
    monkeypatch.setattr("reproloader.distributed.rank_and_world_size", lambda: (0, 1))
    loader = ReproLoader(AllSources(N), shard=True, seed=10, batch_size=3, shuffle=True)
    assert global_order([list(loader)]) != orders[1], "another seed, another order"


@pytest.mark.parametrize(("saved_with", "resumed_with"), [(2, 1), (1, 2), (2, 3), (3, 2)])
@pytest.mark.parametrize("stop_after", [1, 4])
def test_elastic_resume_covers_the_rest_of_the_epoch_exactly_once(
    monkeypatch: pytest.MonkeyPatch, saved_with: int, resumed_with: int, stop_after: int
) -> None:
    config = {"rng_scope": "sample"}
    uninterrupted = rows(
        [b for batches in run_ranks(monkeypatch, saved_with, config=config) for b in batches]
    )
    before, states = [], []
    for rank in range(saved_with):
        as_rank(monkeypatch, rank, saved_with)
        loader = make(config=config)
        it = iter(loader)
        before += [next(it) for _ in range(stop_after)]
        states.append(loader.state_dict())
    assert len({s["offset"] for s in states}) == 1
    after = [
        b
        for batches in run_ranks(monkeypatch, resumed_with, states[0], config=config)
        for b in batches
    ]
    seen = Counter(int(r[0]) for b in before + after for r in b)
    assert seen == Counter(range(N)), "every sample exactly once"
    # sample scope: each sample gets exactly the augmentation of the uninterrupted run
    assert rows(before + after) == uninterrupted


def test_same_world_size_resume_is_bitwise(monkeypatch: pytest.MonkeyPatch) -> None:
    reference = run_ranks(monkeypatch, 2)
    for rank in range(2):
        as_rank(monkeypatch, rank, 2)
        loader = make()
        it = iter(loader)
        head = [next(it) for _ in range(3)]
        state = loader.state_dict()
        resumed = make()
        resumed.load_state_dict(state)
        assert all(
            torch.equal(a, b) for a, b in zip(reference[rank], head + list(resumed), strict=True)
        )


def test_rank_zeros_state_resumes_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    # What DCP's deduplication and Lightning's rank-0 checkpoint hand to every rank.
    as_rank(monkeypatch, 0, 2)
    loader = make()
    it = iter(loader)
    next(it)
    state_of_rank_0 = loader.state_dict()
    as_rank(monkeypatch, 1, 2)
    uninterrupted = list(make())
    resumed = make()
    resumed.load_state_dict(state_of_rank_0)
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted[1:], list(resumed), strict=True))


def test_distributed_sampler_state_refuses_another_world_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dataset = AllSources(N)
    as_rank(monkeypatch, 0, 2)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=0)
    loader = ReproLoader(dataset, sampler=sampler, batch_size=3, seed=1)
    next(iter(loader))
    state = loader.state_dict()
    as_rank(monkeypatch, 0, 3)
    other = ReproLoader(
        dataset,
        sampler=torch.utils.data.DistributedSampler(dataset, num_replicas=3, rank=0),
        batch_size=3,
        seed=1,
    )
    with pytest.raises(
        StateMismatchError,
        match=r"world_size: saved 2, this loader 3.*shard with ReproLoader\(\.\.\., shard=True\)",
    ):
        other.load_state_dict(state)


def test_worker_state_of_another_rank_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    as_rank(monkeypatch, 0, 2)
    loader = make(num_workers=1, config={"rng_scope": "worker"})
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    as_rank(monkeypatch, 1, 2)
    with pytest.raises(StateMismatchError, match=r"rank: saved 0, this loader 1.*gather_state"):
        make(num_workers=1, config={"rng_scope": "worker"}).load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": Stream(4)}, "shard=True shards map-style datasets"),
        ({"sampler": [0, 1]}, "shard=True makes its own sampler"),
        ({"batch_size": None}, "shard=True needs a batch_size"),
    ],
)
def test_bad_shard_arguments_are_explained(kwargs: dict[str, Any], message: str) -> None:
    dataset = kwargs.pop("dataset", AllSources(4))
    with pytest.raises(ConfigError, match=message):
        ReproLoader(dataset, shard=True, **kwargs)


def test_shard_attribute_and_sampler() -> None:
    loader = make()
    assert loader.shard is True
    assert isinstance(loader.sampler, ShardedSampler)
    assert len(list(loader.sampler)) == N


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [1, 2, 7, 37, 100])
def test_rank_batches_are_stretches_of_the_global_order(
    monkeypatch: pytest.MonkeyPatch, world_size: int, n: int
) -> None:
    sampler = ShardedSampler(range(n), seed=9, shuffle=True, batch_size=3, drop_last=False)
    whole = sampler.order(1).tolist()
    monkeypatch.setattr(ShardedSampler, "order", None)  # batches never build the whole order
    per_rank = [list(sampler.rank_batches(1, rank, world_size)) for rank in range(world_size)]
    steps = sampler.steps(world_size)
    assert {len(batches) for batches in per_rank} == {len(steps)}
    start = 0
    for k, size in enumerate(steps):
        step = [i for batches in per_rank for i in batches[k]]
        if size >= world_size:
            assert step == whole[start : start + size]
        start += size
    assert sorted({i for batches in per_rank for b in batches for i in b}) == list(range(n))


def test_a_step_deep_in_a_huge_sharded_epoch_needs_no_whole_order() -> None:
    n = 10**10
    sampler = ShardedSampler(range(n), seed=9, shuffle=True, batch_size=32, drop_last=False)
    offset = 9 * 10**9
    batches = [next(sampler.rank_batches(0, rank, 4, offset)) for rank in range(4)]
    assert [i for b in batches for i in b] == sampler.indices(0, offset, offset + 128).tolist()
    assert len({i for b in batches for i in b}) == 128


class Huge(torch.utils.data.Dataset[torch.Tensor]):
    """10**10 samples, each its own index: nothing stored."""

    def __len__(self) -> int:
        return 10**10

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index])


@pytest.mark.parametrize(("rank", "world_size"), [(0, 1), (2, 3)])
def test_a_huge_sharded_loader_counts_starts_and_saves_in_constant_memory(
    monkeypatch: pytest.MonkeyPatch, rank: int, world_size: int
) -> None:
    as_rank(monkeypatch, rank, world_size)
    loader = ReproLoader(Huge(), batch_size=32, shuffle=True, shard=True, seed=9)
    tracemalloc.start()
    try:
        steps = len(loader)
        first = next(iter(loader))
        state = loader.state_dict()
        samples = len(loader.sampler)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # An index per sample would be 80 GB and a step size per step 2.5 GB / world_size.
    assert peak < 16 * 2**20, (
        f"peak {peak / 2**20:.1f} MiB: something of the epoch's size was built"
    )
    full = world_size * 32
    assert steps == -(-(10**10) // full) - (0 < 10**10 % full < world_size)
    assert first.flatten().tolist() == loader.sampler.indices(0, rank * 32, rank * 32 + 32).tolist()
    assert state["offset"] == full
    last = 10**10 - (steps - 1) * full  # the last step's samples, split over the ranks
    assert samples == (steps - 1) * 32 + len(rank_part(0, last, rank, world_size))
