"""Any batch on demand: ``batch_at``/``indices_at`` give what iteration gives, or refuse by name."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, RandomSampler, WeightedRandomSampler

from reproloader import BatchUnavailableError, ReproLoader
from tests.datasets import AllSources, EpochAware, Stream, noisy_collate

N = 22
BS = 4  # 6 batches, the last one short
COMBOS = [
    (scope, workers, shuffle)
    for scope in ("batch", "sample")
    for workers in (0, 2)
    for shuffle in (False, True)
]


def make(scope: str = "batch", workers: int = 0, shuffle: bool = True, **kwargs: Any) -> Any:
    kwargs.setdefault("batch_size", BS)
    kwargs.setdefault("collate_fn", noisy_collate if kwargs["batch_size"] else None)
    return ReproLoader(
        kwargs.pop("dataset", AllSources(N)),
        shuffle=shuffle,
        num_workers=workers,
        seed=5,
        rng_scope=scope,  # type: ignore[arg-type]
        **kwargs,
    )


def global_states() -> tuple[Any, ...]:
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state()


def same_globals(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    return a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


@pytest.fixture(scope="module")
def iterated() -> dict[tuple[str, int, bool], list[torch.Tensor]]:
    """Epoch 1's batches of each combination, as iteration gives them (one pass each)."""
    out = {}
    for scope, workers, shuffle in COMBOS:
        loader = make(scope, workers, shuffle)
        loader.set_epoch(1)
        out[scope, workers, shuffle] = list(loader)
    return out


@pytest.mark.parametrize(("scope", "workers", "shuffle"), COMBOS)
def test_batch_at_is_bitwise_the_batch_iteration_yields(
    iterated: dict[tuple[str, int, bool], list[torch.Tensor]],
    scope: str,
    workers: int,
    shuffle: bool,
) -> None:
    expected = iterated[scope, workers, shuffle]
    # Asked of a fresh loader with num_workers=0: the run's num_workers does not matter.
    loader = make(scope, 0, shuffle)
    before = global_states()
    for k in reversed(range(len(expected))):
        batch = loader.batch_at(1, k)
        assert batch.dtype == expected[k].dtype
        assert torch.equal(batch, expected[k]), f"batch {k}"
        assert loader.indices_at(1, k) == expected[k][:, 0].long().tolist()
    assert same_globals(before, global_states()), "the caller's RNG states changed"
    assert not torch.equal(expected[0], make(scope, 0, shuffle).batch_at(0, 0)), "epochs differ"


def test_batch_at_without_automatic_batching_is_the_sample_iteration_yields() -> None:
    loader = make("sample", shuffle=True, batch_size=None)
    expected = list(loader)
    assert all(torch.equal(loader.batch_at(0, k), expected[k]) for k in (0, 7, N - 1))
    assert loader.indices_at(0, 7) == int(expected[7][0])


def test_batch_at_mid_pass_leaves_the_pass_its_position_and_the_callers_rngs_alone() -> None:
    uninterrupted = list(make())
    loader = make()
    it = iter(loader)
    got = [next(it), next(it)]
    state, epoch, before = loader.state_dict(), loader.epoch, global_states()
    own = loader.dataset.rng.bit_generator.state  # an RNG object on the dataset
    assert torch.equal(loader.batch_at(0, 4), uninterrupted[4])
    assert torch.equal(loader.batch_at(3, 1), make().batch_at(3, 1))
    assert same_globals(before, global_states())
    assert loader.dataset.rng.bit_generator.state == own
    assert loader.epoch == epoch
    assert loader.state_dict() == state
    got += list(it)
    assert all(torch.equal(a, b) for a, b in zip(got, uninterrupted, strict=True))


def test_batch_at_gives_the_dataset_the_batchs_epoch_and_then_the_loaders_back() -> None:
    dataset = EpochAware(8)
    loader = ReproLoader(dataset, batch_size=2, seed=0)
    loader.set_epoch(2)
    assert loader.batch_at(5, 1).tolist() == [[2, 5], [3, 5]]
    assert dataset.epoch == 2  # the loader's epoch again
    assert list(loader)[1].tolist() == [[2, 2], [3, 2]]


@pytest.mark.parametrize("sampler_kind", ["weighted", "generator"])
def test_batch_at_replays_a_users_sampler_when_asked(sampler_kind: str) -> None:
    def build() -> Any:
        if sampler_kind == "weighted":  # draws from torch's global RNG
            sampler: Any = WeightedRandomSampler([1.0] * N, N)
        else:  # draws from its own generator, which the loader reseeds per epoch
            sampler = RandomSampler(range(N), generator=torch.Generator().manual_seed(3))
        return ReproLoader(AllSources(N), batch_size=BS, sampler=sampler, seed=5)

    loader = build()
    loader.set_epoch(1)
    expected = list(loader)
    fresh = build()
    generator = getattr(fresh.sampler, "generator", None)
    saved = None if generator is None else generator.get_state()
    with pytest.raises(BatchUnavailableError, match=r"^cannot give a batch on demand in O\(1\)"):
        fresh.batch_at(1, 3)
    for k in (3, 0, 5):
        assert torch.equal(fresh.batch_at(1, k, replay=True), expected[k]), f"batch {k}"
    if saved is not None:
        assert torch.equal(generator.get_state(), saved), "the sampler's generator moved"
    with pytest.raises(IndexError, match="fewer than 7 batches"):
        fresh.indices_at(1, 6, replay=True)


def test_asking_past_the_end_of_an_epoch_raises_index_error() -> None:
    with pytest.raises(
        IndexError, match=r"^epoch 0 has 6 batches here \(indices 0 to 5\), got index 6$"
    ):
        make().batch_at(0, 6)


class Stateful(AllSources):
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"dataset": Stream(20), "shuffle": None},
            (
                "cannot give a batch on demand: the dataset is an IterableDataset, whose batches "
                "are cut from each worker's stream as it runs, so batch k is known only by running "
                "the streams to it. Iterate a loader built the same way to that batch (the cost of "
                "every batch before it), or use a map-style dataset"
            ),
        ),
        (
            {"scope": "worker"},
            (
                "cannot give a batch on demand: rng_scope='worker' continues one stream per worker "
                "from batch to batch, so a batch's random values depend on every batch its worker "
                "made before it in the pass. Use rng_scope='batch' or 'sample' (a stream per batch "
                "or sample), or iterate a loader built the same way to that batch"
            ),
        ),
        (
            {"dataset": Stateful(N)},
            (
                "cannot give a batch on demand: the dataset Stateful has its own state_dict, so its "
                "batches may depend on that state, which a position does not determine. Iterate a "
                "loader built the same way to that batch"
            ),
        ),
    ],
    ids=["iterable", "worker-scope", "stateful"],
)
def test_batch_at_refuses_what_it_cannot_give_exactly(kwargs: dict[str, Any], message: str) -> None:
    loader = make(**kwargs)
    with pytest.raises(BatchUnavailableError) as raised:
        loader.batch_at(0, 1)
    assert str(raised.value) == message


def test_indices_at_works_where_only_the_randomness_is_out_of_reach() -> None:
    expected = [b[:, 0].long().tolist() for b in make(scope="worker", workers=2)]
    loader = make(scope="worker")
    assert [loader.indices_at(0, k) for k in range(len(expected))] == expected
    with pytest.raises(BatchUnavailableError, match="IterableDataset"):
        make(dataset=Stream(20), shuffle=None).indices_at(0, 0)


class Unsized(Dataset[int]):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> int:
        return i


@pytest.mark.parametrize("rank", [-1, 2])
def test_a_rank_outside_the_world_is_refused(rank: int) -> None:
    with pytest.raises(ValueError, match=rf"^rank must be in \[0, world_size=2\), got {rank};"):
        make().indices_at(0, 0, rank=rank, world_size=2)


@pytest.mark.parametrize(("world_size", "scope"), [(2, "batch"), (3, "sample")])
def test_batch_at_gives_each_ranks_part_of_a_sharded_step(
    monkeypatch: pytest.MonkeyPatch, world_size: int, scope: str
) -> None:
    # 37 samples: the last step is short, and with 3 ranks one rank is padded.
    def build() -> Any:
        return make(scope, dataset=AllSources(37), shard=True, batch_size=3)

    iterated = []
    for rank in range(world_size):
        monkeypatch.setattr(
            "reproloader.distributed.rank_and_world_size", lambda r=rank: (r, world_size)
        )
        iterated.append(list(build()))
    monkeypatch.undo()  # no process group here: ask for a run on world_size ranks
    loader = build()
    for rank, batches in enumerate(iterated):
        for k, expected in enumerate(batches):
            got = loader.batch_at(0, k, rank=rank, world_size=world_size)
            assert torch.equal(got, expected), f"rank {rank}, step {k}"
        with pytest.raises(IndexError):
            loader.indices_at(0, len(batches), rank=rank, world_size=world_size)


def test_a_users_sampler_is_replayed_only_for_this_processs_rank(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("reproloader.distributed.rank_and_world_size", lambda: (1, 2))
    loader = make(sampler=RandomSampler(range(N)), shuffle=None)
    with pytest.raises(BatchUnavailableError) as raised:
        loader.batch_at(0, 0, rank=0, replay=True)
    assert str(raised.value) == (
        "cannot give a batch on demand for rank 0 on rank 1: your RandomSampler gives this "
        "process's rank its indices. Ask on that rank, or use shard=True"
    )
