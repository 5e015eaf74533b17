"""Mid-epoch resume: one harness, every component, several stop points."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import pytest
import torch
from torch.utils.data import (
    BatchSampler,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    WeightedRandomSampler,
)

from reproloader import ReproLoader, StateError
from reproloader.testing import assert_resume_matches
from tests.datasets import AllSources, RngArgument, Stream
from tests.helpers import same_state

N = 23  # an odd length: the last batch is short
STOPS = [0, 1, 3, 5, 6, 9]  # with batch 4: before the first, mid-epoch, end of epoch 0, epoch 1


def loader_factory(dataset: Any = None, **kwargs: Any) -> Any:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("seed", 3)
    return lambda: ReproLoader(AllSources(N) if dataset is None else dataset, **kwargs)


@pytest.mark.parametrize("scope", ["batch", "sample", "worker"])
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_map_style(scope: str, num_workers: int, shuffle: bool) -> None:
    make = loader_factory(shuffle=shuffle, num_workers=num_workers, config={"rng_scope": scope})
    assert_resume_matches(make, stop_at=STOPS)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("num_workers", [1, 4])
def test_resume_drop_last_and_worker_counts(drop_last: bool, num_workers: int) -> None:
    make = loader_factory(shuffle=True, drop_last=drop_last, num_workers=num_workers)
    assert_resume_matches(make, stop_at=[2, 5, 8])


@pytest.mark.parametrize("scope", ["batch", "sample", "worker"])
def test_resume_at_epoch_boundary_after_stop_iteration(scope: str) -> None:
    make = loader_factory(shuffle=True, num_workers=2, config={"rng_scope": scope})
    assert_resume_matches(make, stop_at=[6, 12], epochs=3, between_epochs=True)


@pytest.mark.parametrize("scope", ["batch", "sample"])
@pytest.mark.parametrize(("saved_with", "resumed_with"), [(0, 2), (2, 0), (1, 4)])
def test_resume_into_another_num_workers(scope: str, saved_with: int, resumed_with: int) -> None:
    config = {"rng_scope": scope}
    assert_resume_matches(
        loader_factory(shuffle=True, num_workers=saved_with, config=config),
        make_resumed=loader_factory(shuffle=True, num_workers=resumed_with, config=config),
        stop_at=[3, 8],
    )


@pytest.mark.parametrize("scope", ["batch", "worker"])
def test_resume_with_persistent_workers_and_prefetch(scope: str) -> None:
    make = loader_factory(
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
        prefetch_factor=4,
        config={"rng_scope": scope},
    )
    assert_resume_matches(make, stop_at=[1, 7, 11], epochs=3)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["batch", "worker"])
def test_resume_with_spawn(scope: str) -> None:
    make = loader_factory(
        shuffle=True, num_workers=2, config={"rng_scope": scope, "start_method": "spawn"}
    )
    assert_resume_matches(make, stop_at=[5])


def _sampler_loaders() -> dict[str, Any]:
    dataset = AllSources(N)
    return {
        "custom sampler": lambda: ReproLoader(
            dataset, sampler=WeightedRandomSampler(torch.ones(N), N), batch_size=4, seed=1
        ),
        "random sampler with generator": lambda: ReproLoader(
            dataset,
            sampler=RandomSampler(dataset, generator=torch.Generator().manual_seed(0)),
            batch_size=4,
            seed=1,
        ),
        "batch sampler": lambda: ReproLoader(
            dataset,
            batch_sampler=BatchSampler(SequentialSampler(dataset), 5, drop_last=False),
            seed=1,
            num_workers=2,
        ),
        "distributed sampler": lambda: ReproLoader(
            dataset,
            sampler=DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=0),
            batch_size=3,
            seed=1,
        ),
        "no automatic batching": lambda: ReproLoader(
            dataset, batch_size=None, shuffle=True, seed=1, num_workers=2
        ),
        "rng argument": lambda: ReproLoader(
            RngArgument(N), batch_size=4, shuffle=True, seed=1, num_workers=2
        ),
    }


@pytest.mark.parametrize("name", sorted(_sampler_loaders()))
def test_resume_samplers_and_datasets(name: str) -> None:
    assert_resume_matches(_sampler_loaders()[name], stop_at=[0, 2, 4, 7])


@pytest.mark.parametrize("scope", ["batch", "sample", "worker"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_iterable_dataset_by_fast_forward(scope: str, num_workers: int) -> None:
    make = loader_factory(Stream(21), num_workers=num_workers, config={"rng_scope": scope})
    assert_resume_matches(make, stop_at=[0, 2, 4, 6, 7])


class _FailsAt(torch.utils.data.Dataset[Any]):
    """Raises for index 9; every other sample draws from the global RNGs."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> Any:
        if i == 9:
            raise ValueError("sample 9 is broken")
        return torch.tensor([float(i), float(torch.rand(()))])


def _loop_catching(loader: Any, stop: int | None = None) -> tuple[list[Any], Any]:
    # A training loop that skips a batch whose fetch raised; the state after `stop` steps.
    batches: list[Any] = []
    it = iter(loader)
    steps = 0
    while stop is None or steps < stop:
        steps += 1
        try:
            batches.append(next(it))
        except ValueError:
            continue
        except StopIteration:
            break
    return batches, loader.state_dict()


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("scope", ["batch", "worker"])
def test_a_batch_whose_fetch_raised_counts_as_consumed(num_workers: int, scope: str) -> None:
    def make() -> Any:
        return ReproLoader(
            _FailsAt(),
            batch_size=4,
            num_workers=num_workers,
            seed=1,
            config={"rng_scope": scope},
            multiprocessing_context="fork" if num_workers else None,
        )

    everything, _ = _loop_catching(make())
    assert len(everything) == 5  # batch 2 (samples 8-11) raised and was skipped
    if scope == "worker" and num_workers:
        # The failed batch's draws are in no worker snapshot: refused, not guessed.
        with pytest.raises(StateError, match=r"1 batch\(es\) of this pass raised in a worker"):
            _loop_catching(make(), stop=4)
        return
    head, state = _loop_catching(make(), stop=4)  # steps 1-2, the failure, step 4
    assert state["position"] == 4
    resumed = make()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert [b.tolist() for b in head + rest] == [b.tolist() for b in everything]


class _BreaksAtSix(torch.utils.data.IterableDataset[Any]):
    """Samples 0-13, each with a torch draw; pulling sample 6 raises, the stream goes on.

    With ``own_state``, its iterator has ``state_dict``/``load_state_dict``.
    """

    def __init__(self, own_state: bool = False) -> None:
        self.own_state = own_state

    def __iter__(self) -> Any:
        return _BreaksAtSixIter() if self.own_state else _BreaksAtSixIter().plain()


class _BreaksAtSixIter:
    def __init__(self) -> None:
        self.i = 0

    def plain(self) -> Any:
        return iter(self.__next__, None)  # no state_dict: resumed by replay

    def __iter__(self) -> _BreaksAtSixIter:
        return self

    def __next__(self) -> Any:
        i = self.i
        if i >= 14:
            raise StopIteration
        self.i += 1
        if i == 6:
            raise ValueError("sample 6 is broken")
        return torch.tensor([float(i), float(torch.rand(()))])

    def state_dict(self) -> dict[str, int]:
        return {"i": self.i}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.i = state["i"]


def _iterable_breaking(
    num_workers: int = 0, scope: str = "batch", own_state: bool = False, resume: str = "state"
) -> ReproLoader[Any]:
    return ReproLoader(
        _BreaksAtSix(own_state),
        batch_size=4,
        num_workers=num_workers,
        seed=1,
        config={"rng_scope": scope, "iterable_resume": resume},
    )


@pytest.mark.parametrize("num_workers", [0, 1])
@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_an_iterable_batch_that_raised_loses_no_sample(num_workers: int, scope: str) -> None:
    batches, _ = _loop_catching(_iterable_breaking(num_workers, scope))
    # Samples 4 and 5 were pulled into the batch that raised at 6: they start the next
    # one (torch's fetcher drops them); only the broken sample is missing.
    assert [b[:, 0].int().tolist() for b in batches] == [
        [0, 1, 2, 3],
        [4, 5, 7, 8],
        [9, 10, 11, 12],
        [13],
    ]


class _GeneratorBreaksAtSix(torch.utils.data.IterableDataset[int]):
    """A generator over this worker's share of range(12) that raises at 6, and so ends."""

    def __iter__(self) -> Any:
        info = torch.utils.data.get_worker_info()
        first, step = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in range(first, 12, step):
            if i == 6:
                raise ValueError("sample 6 is broken")
            yield i


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_generator_that_raised_mid_batch_hands_out_what_it_had_pulled(num_workers: int) -> None:
    # torch's fetcher drops the samples pulled before the raise, and the generator
    # has ended: they come out as one last, short batch of that worker's.
    loader = ReproLoader(_GeneratorBreaksAtSix(), batch_size=4, seed=1, num_workers=num_workers)
    batches, _ = _loop_catching(loader)
    samples = sorted(i for b in batches for i in b.tolist())
    assert samples == [0, 1, 2, 3, 4, 5] if num_workers == 0 else [0, 1, 2, 3, 4, 5, 7, 9, 11]


@pytest.mark.parametrize(
    ("own_state", "resume"), [(False, "state"), (True, "replay")], ids=["no-state", "replay"]
)
@pytest.mark.parametrize("scope", ["batch", "sample"])
@pytest.mark.parametrize("stop", [1, 2, 3, 4])
def test_an_iterable_batch_that_raised_resumes_by_replay(
    own_state: bool, resume: str, scope: str, stop: int
) -> None:
    # stop=2: right after the failure, samples 4 and 5 still waiting for the next batch.
    def make() -> ReproLoader[Any]:
        return _iterable_breaking(0, scope, own_state, resume)

    everything, _ = _loop_catching(make())
    head, state = _loop_catching(make(), stop=stop)
    resumed = make()
    resumed.load_state_dict(state)
    rest, _ = _loop_catching(resumed)
    assert [b.tolist() for b in head + rest] == [b.tolist() for b in everything]


def test_an_iterable_with_its_own_state_refuses_a_state_while_samples_wait() -> None:
    # Its own state_dict has moved past samples 4 and 5, which the next batch hands out.
    make = partial(_iterable_breaking, own_state=True)
    with pytest.raises(StateError, match=r"after 2 sample\(s\) were pulled.*after the next batch"):
        _loop_catching(make(), stop=2)
    everything, _ = _loop_catching(make())
    head, state = _loop_catching(make(), stop=3)  # after the next batch: exact
    resumed = make()
    resumed.load_state_dict(state)
    rest, _ = _loop_catching(resumed)
    assert [b.tolist() for b in head + rest] == [b.tolist() for b in everything]


@pytest.mark.parametrize(
    ("dataset", "kwargs"),
    [
        ("map", {"num_workers": 0}),
        ("map", {"num_workers": 2, "config": {"rng_scope": "worker"}}),
        ("map", {"num_workers": 2, "shard": True, "shuffle": True}),
        ("iterable", {"num_workers": 0}),
        ("iterable", {"num_workers": 2}),
    ],
)
@pytest.mark.parametrize("stop", [0, 3])
def test_a_state_taken_right_after_loading_one_is_the_same_state(
    dataset: str, kwargs: dict[str, Any], stop: int
) -> None:
    # A job that checkpoints again before its first batch after a resume (or fails
    # then) must not rewind: its new state is the one it loaded.
    def make() -> ReproLoader[Any]:
        data = AllSources(20) if dataset == "map" else Stream(20)
        return ReproLoader(data, batch_size=2, seed=4, **kwargs)

    loader = make()
    iterator = iter(loader)
    for _ in range(stop):
        next(iterator)
    state = loader.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    assert same_state(resumed.state_dict(), state)


class _FirstSampleSlow(Stream):
    """Stream, but worker 0's first sample takes 0.5 s: worker 1's batches come first."""

    def __iter__(self) -> Any:
        for item in super().__iter__():
            if int(item[0]) == 0:
                time.sleep(0.5)
            yield item


def test_an_iterable_state_with_in_order_false_resumes_every_sample_once() -> None:
    # Each worker hands out its own stream in order, whatever the interleaving: the
    # workers' part says where each one is. (DataLoader's order is then timing's.)
    def make() -> ReproLoader[Any]:
        return ReproLoader(
            _FirstSampleSlow(20), batch_size=2, num_workers=2, seed=5, in_order=False
        )

    def rows(batches: list[Any]) -> list[list[float]]:
        return sorted(row.tolist() for batch in batches for row in batch)

    everything = list(make())
    loader = make()
    iterator = iter(loader)
    head = [next(iterator) for _ in range(3)]
    assert head[0][0, 0] != 0  # out of order: worker 1's batch came first
    state = loader.state_dict()
    resumed = make()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert rows(head + rest) == rows(everything)
    assert len(head + rest) == len(everything)
