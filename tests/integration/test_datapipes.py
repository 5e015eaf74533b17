"""DataPipes: sharded and shuffled as DataLoader does, seeded from (seed, epoch)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data.datapipes.iter import IterableWrapper
from torch.utils.data.datapipes.map import SequenceWrapper

from reproloader import ReproLoader
from reproloader._runtime.datapipes import pipeline_seed
from reproloader._runtime.discovery import find_rngs
from reproloader.seeding import SeedTree

N = 40


def noisy(x: int) -> float:
    """A map function drawing from torch's global RNG (module level: spawn pickles it)."""
    return x + 0.4 * torch.rand(()).item()


def four_long(row: list[int]) -> bool:
    return len(row) == 4


class Jitter:
    """A map function holding an RNG of its own: reseeded per unit, like any dataset's."""

    def __init__(self) -> None:
        self.rng = random.Random(0)

    def __call__(self, x: int) -> float:
        return x + 0.4 * self.rng.random()


def shuffled(n: int = N, buffer_size: int = 8) -> Any:
    return IterableWrapper(list(range(n))).shuffle(buffer_size=buffer_size).sharding_filter()


def samples(loader: Any) -> list[Any]:
    return [x for batch in loader for x in batch.tolist()]


def as_rank(monkeypatch: pytest.MonkeyPatch, rank: int, world_size: int) -> None:
    monkeypatch.setattr("reproloader.distributed.rank_and_world_size", lambda: (rank, world_size))


@pytest.mark.parametrize("num_workers", [0, 1, 3])
def test_a_sharded_shuffled_pipe_gives_every_sample_once_per_epoch(num_workers: int) -> None:
    loader = ReproLoader(shuffled(), batch_size=4, num_workers=num_workers, seed=3)
    first, second = samples(loader), samples(loader)
    assert sorted(first) == sorted(second) == list(range(N))
    assert first != second, "each epoch shuffles anew"
    assert first != list(range(N))


@pytest.mark.slow
def test_spawned_workers_shard_and_shuffle_as_forked_ones() -> None:
    def run(method: str) -> list[Any]:
        loader = ReproLoader(
            shuffled(), batch_size=4, num_workers=2, seed=3, multiprocessing_context=method
        )
        return samples(loader)

    assert run("spawn") == run("fork")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_and_workers_split_the_pipe_between_them(
    monkeypatch: pytest.MonkeyPatch, num_workers: int
) -> None:
    seen: Counter[int] = Counter()
    for rank in range(3):
        as_rank(monkeypatch, rank, 3)
        seen.update(samples(ReproLoader(shuffled(), batch_size=2, num_workers=num_workers, seed=5)))
    assert seen == Counter(range(N))


def test_the_shuffle_is_a_function_of_seed_and_epoch_alone() -> None:
    def epochs(seed: int) -> list[list[Any]]:
        loader = ReproLoader(shuffled(), batch_size=4, num_workers=2, seed=seed)
        return [samples(loader) for _ in range(2)]

    torch.manual_seed(0)
    random.seed(0)
    a = epochs(3)
    torch.manual_seed(1)  # DataLoader would draw the pipe's seed from here at each pass
    random.seed(1)
    assert epochs(3) == a
    assert epochs(4) != a


def test_shuffle_false_turns_the_pipes_shuffle_off_as_in_dataloader() -> None:
    loader = ReproLoader(shuffled(), batch_size=4, shuffle=False, seed=3)
    assert samples(loader) == list(range(N))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_pipe_without_randomness_gives_dataloaders_batches(num_workers: int) -> None:
    # No sharding_filter: as with DataLoader, each worker yields the whole pipe.
    pipe = IterableWrapper([[1, 2, 3, 4], [1, 2, 3, 4, 5, 6]]).filter(four_long)

    def rows(loader: Any) -> list[list[list[int]]]:
        return [[column.tolist() for column in batch] for batch in loader]

    ours = rows(ReproLoader(pipe, batch_size=2, num_workers=num_workers, seed=0))
    assert ours == rows(DataLoader(pipe, batch_size=2, num_workers=num_workers))
    assert len(ours) == max(num_workers, 1)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_map_functions_randomness_is_reproducible(num_workers: int) -> None:
    def run() -> list[Any]:
        pipe = shuffled().map(noisy).map(Jitter())
        return samples(ReproLoader(pipe, batch_size=4, num_workers=num_workers, seed=1))

    torch.manual_seed(0)
    a = run()
    torch.manual_seed(1)
    assert run() == a
    assert sorted(int(x) for x in a) == list(range(N))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("taken", [1, 3, 6])
def test_a_pipe_resumes_mid_epoch_exactly(num_workers: int, taken: int) -> None:
    def make() -> ReproLoader[Any]:
        return ReproLoader(shuffled().map(noisy), batch_size=3, num_workers=num_workers, seed=2)

    loader = make()
    straight = [b.tolist() for b in loader] + [b.tolist() for b in loader]
    loader = make()
    it = iter(loader)
    head = [next(it).tolist() for _ in range(taken)]
    state = loader.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    tail = [b.tolist() for b in resumed] + [b.tolist() for b in resumed]
    assert head + tail == straight


def test_iterating_a_pipe_leaves_the_callers_rngs_alone() -> None:
    torch.manual_seed(7)
    random.seed(7)
    before = torch.get_rng_state(), random.getstate()
    samples(ReproLoader(shuffled().map(noisy), batch_size=4, seed=0))
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]


def test_a_map_style_pipe_is_a_map_style_dataset() -> None:
    pipe = SequenceWrapper(list(range(N))).map(noisy)
    a = samples(ReproLoader(pipe, batch_size=4, shuffle=True, num_workers=2, seed=8))
    b = samples(ReproLoader(pipe, batch_size=4, shuffle=True, num_workers=0, seed=8))
    assert a == b
    assert sorted(int(x) for x in a) == list(range(N))


def test_the_shufflers_own_rng_is_left_to_the_pipes_seeding() -> None:
    # Reseeded per unit, the shufflers of two workers would draw apart, and their
    # shards would no longer split the epoch.
    pipe = shuffled().map(Jitter())
    paths = [path for path, _ in find_rngs(pipe, "dataset")]
    assert paths == ["dataset.fn.rng"]


def test_the_pipes_seed_is_a_torch_seed_that_changes_with_the_epoch() -> None:
    tree = SeedTree(2**127 + 5)
    seeds = {pipeline_seed(tree, epoch) for epoch in range(50)}
    assert len(seeds) == 50
    assert all(0 <= s < 2**63 for s in seeds)
