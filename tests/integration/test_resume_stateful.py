"""Resume cost and datasets that bring their own state."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reproloader import ReproLoader, StateMismatchError
from reproloader.testing import assert_resume_matches
from tests.datasets import (
    AllSources,
    CountingMap,
    Curriculum,
    StateAfterIter,
    StatefulStream,
    _StreamIterator,
)


def test_resuming_a_map_style_loader_loads_no_skipped_sample() -> None:
    source = ReproLoader(CountingMap(1000), batch_size=10, shuffle=True, seed=0)
    it = iter(source)
    for _ in range(60):
        next(it)
    state = source.state_dict()
    CountingMap.calls = 0
    resumed = ReproLoader(CountingMap(1000), batch_size=10, shuffle=True, seed=0)
    resumed.load_state_dict(state)
    next(iter(resumed))
    assert CountingMap.calls == 10


@pytest.mark.parametrize("scope", ["batch", "sample", "worker"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_stateful_iterable_dataset_resumes_through_its_state(scope: str, num_workers: int) -> None:
    def make() -> Any:
        return ReproLoader(
            StatefulStream(22),
            batch_size=3,
            num_workers=num_workers,
            seed=4,
            config={"rng_scope": scope},
        )

    assert_resume_matches(make, stop_at=[0, 1, 3, 5, 8])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_iterable_datasets_state_dict_is_asked_for_only_after_its_iter(
    num_workers: int,
) -> None:
    # Its state_dict raises AttributeError before __iter__ ran, as torchdata's tests have it.
    def make() -> Any:
        return ReproLoader(StateAfterIter(14), batch_size=3, num_workers=num_workers, seed=2)

    assert_resume_matches(make, stop_at=[0, 1, 2, 4])
    loader = make()
    iter(loader)  # an iterator, no batch yet: __iter__ made a generator whose body has not run
    assert loader.state_dict()["position"] == 0


def test_stateful_iterable_dataset_is_not_replayed() -> None:
    source = ReproLoader(StatefulStream(40), batch_size=4, seed=0)
    it = iter(source)
    for _ in range(8):
        next(it)
    state = source.state_dict()
    _StreamIterator.produced = 0
    resumed = ReproLoader(StatefulStream(40), batch_size=4, seed=0)
    resumed.load_state_dict(state)
    next(iter(resumed))
    assert _StreamIterator.produced == 4


@pytest.mark.parametrize("num_workers", [0, 2])
def test_map_dataset_with_its_own_state_resumes_it(num_workers: int) -> None:
    def make() -> Any:
        return ReproLoader(
            Curriculum(20), batch_size=3, shuffle=True, num_workers=num_workers, seed=2
        )

    assert_resume_matches(make, stop_at=[2, 5, 9])


class _CountsItsPasses(torch.utils.data.IterableDataset[Any]):
    """Samples (i, passes so far): an iterable dataset whose own state outlives a pass."""

    def __init__(self) -> None:
        self.passes = 0

    def __iter__(self) -> Iterator[Any]:
        yield from ((i, self.passes) for i in range(5))
        self.passes += 1

    def state_dict(self) -> dict[str, int]:
        return {"passes": self.passes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.passes = state["passes"]


def test_an_iterable_datasets_own_state_at_an_epoch_end_is_resumed() -> None:
    # With num_workers=0 the main process's dataset is the one that ran: what it
    # keeps from pass to pass is in an end-of-epoch state, as for a map-style one.
    def make() -> ReproLoader[Any]:
        return ReproLoader(_CountsItsPasses(), batch_size=2, seed=3)

    def epoch(loader: ReproLoader[Any]) -> list[Any]:
        return [[t.tolist() for t in batch] for batch in loader]

    loader = make()
    first = epoch(loader)
    state = loader.state_dict()
    assert state["dataset"] == {"passes": 1}
    rest = [epoch(loader) for _ in range(2)]
    resumed = make()
    resumed.load_state_dict(state)
    assert [epoch(resumed) for _ in range(2)] == rest
    assert resumed.state_dict()["dataset"] == {"passes": 3}
    # Before any pass ran, its state_dict is not asked for (it may need __iter__ first).
    assert make().state_dict()["dataset"] is None
    assert first != rest[0]


@pytest.mark.parametrize("loaded", [False, True], ids=["ran", "loaded"])
def test_an_iterable_datasets_own_state_is_kept_in_a_state_taken_before_a_pass_first_batch(
    loaded: bool,
) -> None:
    # Its __iter__ runs at a pass's first batch: right after iter(loader) it still
    # holds what the previous pass (or a loaded state) left, and a state says so.
    def make() -> ReproLoader[Any]:
        return ReproLoader(_CountsItsPasses(), batch_size=2, seed=3)

    def epoch(loader: ReproLoader[Any], it: Any = None) -> list[Any]:
        return [[t.tolist() for t in batch] for batch in (it if it is not None else loader)]

    loader = make()
    epoch(loader)
    if loaded:
        loader, state = make(), loader.state_dict()
        loader.load_state_dict(state)
    it = iter(loader)  # epoch 1 begins; no batch yet
    state = loader.state_dict()
    assert (state["epoch"], state["position"], state["dataset"]) == (1, 0, {"passes": 1})
    straight = epoch(loader, it)
    resumed = make()
    resumed.load_state_dict(state)
    assert epoch(resumed) == straight
    assert straight[0][1] == [1, 1]  # the pass count the dataset kept


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 25),
    batch_size=st.integers(1, 6),
    drop_last=st.booleans(),
    shuffle=st.booleans(),
    scope=st.sampled_from(["batch", "sample", "worker"]),
    num_workers=st.sampled_from([0, 2]),
    data=st.data(),
)
def test_stopping_anywhere_and_resuming_gives_the_same_stream(
    n: int,
    batch_size: int,
    drop_last: bool,
    shuffle: bool,
    scope: str,
    num_workers: int,
    data: st.DataObject,
) -> None:
    def make() -> Any:
        return ReproLoader(
            AllSources(n),
            batch_size=batch_size,
            drop_last=drop_last,
            shuffle=shuffle,
            num_workers=num_workers,
            seed=n,
            config={"rng_scope": scope},
        )

    per_epoch = n // batch_size if drop_last else -(-n // batch_size)
    stop = data.draw(st.integers(0, 2 * per_epoch), label="stop after batch")
    assert_resume_matches(make, stop_at=stop)


class _SteadyState(Curriculum):
    """Has a state_dict, but one that serving items does not change."""

    def state_dict(self) -> dict[str, int]:
        return {"level": 0}


class _UnevenPasses(torch.utils.data.IterableDataset[Any]):
    """torchdata's test_pw dataset, in short: workers of uneven lengths, each copy
    counting its own passes at the end of ``__iter__``, and resuming mid-pass."""

    sizes = (3, 6, 4)

    def __init__(self) -> None:
        self.passes = 0
        self.resume: int | None = None

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        start = sum(self.sizes[:worker])
        self.i, self.resume = self.resume or 0, None
        while self.i < self.sizes[worker]:
            self.i += 1
            yield start + self.i - 1, self.passes
        self.i = 0
        self.passes += 1

    def state_dict(self) -> dict[str, int]:
        return {"i": self.i if hasattr(self, "i") else 0, "passes": self.passes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume, self.passes = state["i"], state["passes"]


def _uneven(**kwargs: Any) -> ReproLoader[Any]:
    return ReproLoader(
        _UnevenPasses(), batch_size=None, num_workers=3, persistent_workers=True, seed=4, **kwargs
    )


def _curriculum(**kwargs: Any) -> ReproLoader[Any]:
    return ReproLoader(
        Curriculum(9), batch_size=2, num_workers=2, persistent_workers=True, seed=4, **kwargs
    )


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _epoch(loader: ReproLoader[Any]) -> list[Any]:
    return [_plain(batch) for batch in loader]


@pytest.mark.parametrize("make", [_uneven, _curriculum], ids=["iterable", "map"])
def test_persistent_workers_copies_of_the_dataset_are_carried_across_an_epoch_end(
    make: Any,
) -> None:
    # Each worker keeps its own copy of the dataset from pass to pass; the copies'
    # own state at an epoch's end is in the state, and the resumed run's new workers
    # start the next epoch from it (torchdata's TestMultiEpochState::test_pw).
    loader = make()
    _epoch(loader)
    state = loader.state_dict()  # under filterwarnings=error: nothing to warn about
    assert state["workers"] is not None
    assert state["workers"]["ended"]
    straight = [_epoch(loader), _epoch(loader)]
    resumed = make()
    it = iter(resumed)
    next(it)  # a pass under way when the state is loaded
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state  # taken again before a batch: the same state
    assert [_epoch(resumed), _epoch(resumed)] == straight
    assert straight[0] != straight[1]


@pytest.mark.parametrize("make", [_uneven, _curriculum], ids=["iterable", "map"])
def test_persistent_workers_copies_are_carried_in_a_state_taken_before_a_pass_first_batch(
    make: Any,
) -> None:
    # Right after iter(loader) the copies hold what the previous pass left: a state
    # taken there carries them, as one taken at the previous pass's end does.
    loader = make()
    _epoch(loader)
    it = iter(loader)
    state = loader.state_dict()
    assert (state["epoch"], state["position"]) == (1, 0)
    assert state["workers"] is not None
    straight = [_plain(b) for b in it]
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert _epoch(resumed) == straight
    # The first pass's copies are fresh ones: nothing to carry.
    first = make()
    it = iter(first)
    assert first.state_dict()["workers"] is None
    del it


def test_a_state_carrying_the_workers_copies_is_refused_without_persistent_workers() -> None:
    loader = _uneven()
    _epoch(loader)
    state = loader.state_dict()
    resumed = ReproLoader(_UnevenPasses(), batch_size=None, num_workers=3, seed=4)
    with pytest.raises(StateMismatchError, match="persistent_workers=True"):
        resumed.load_state_dict(state)


def test_persistent_workers_whose_copies_cannot_be_carried_warn_once_at_an_epoch_end() -> None:
    # Map-style workers report their copy only every snapshot_every_n_steps batches:
    # at an epoch's end the last report may predate the last batches, so the state
    # carries no copies, and where they moved on the loader says so.
    loader = _curriculum(snapshot_every_n_steps=3)
    _epoch(loader)
    with pytest.warns(UserWarning, match="persistent_workers=True: each worker keeps"):
        state = loader.state_dict()
    assert state["workers"] is None
    loader.state_dict()  # once per loader (the suite turns warnings into errors)
    # And where it is loaded: its copies are not in it.
    with pytest.warns(UserWarning, match="carries no copies of the dataset"):
        _curriculum(snapshot_every_n_steps=3).load_state_dict(state)


def test_a_pass_ends_state_stripped_of_its_copies_warns_at_load() -> None:
    # A state edited (or saved by an older release) without the copies resumes from
    # fresh ones: the next epoch differs, and loading it says so.
    loader = _curriculum()
    _epoch(loader)
    state = loader.state_dict()
    straight = _epoch(loader)
    stripped = {**state, "workers": None}
    resumed = _curriculum()
    with pytest.warns(UserWarning, match="carries no copies of the dataset"):
        resumed.load_state_dict(stripped)
    assert _epoch(resumed) != straight
    # Not where the saving run had no workers: its dataset's own state is in the state.
    source = ReproLoader(Curriculum(9), batch_size=2, seed=4)
    _epoch(source)
    _curriculum().load_state_dict(source.state_dict())  # no warning (errors here)


@pytest.mark.parametrize(
    ("data", "persistent"),
    [(_SteadyState(8), True), (Curriculum(8), False)],
    ids=["copies-unchanged", "not-persistent"],
)
def test_no_warning_where_the_workers_copies_did_not_move_on(data: Any, persistent: bool) -> None:
    loader = ReproLoader(data, batch_size=2, num_workers=2, persistent_workers=persistent, seed=1)
    list(loader)
    loader.state_dict()  # under filterwarnings=error: no warning


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("stop", [0, 1, 3], ids=["epoch-end", "after-1", "after-3"])
def test_replay_starts_from_the_datasets_own_state_as_the_pass_began(
    num_workers: int, stop: int
) -> None:
    # iterable_resume="replay" replays a pass from its start: from the dataset's own
    # state as that pass began (a count of passes, kept by the main process's dataset
    # or by each persistent worker's copy), not from a fresh dataset.
    def make() -> ReproLoader[Any]:
        return ReproLoader(
            _CountsItsPasses(),
            batch_size=2,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            seed=3,
            config={"iterable_resume": "replay"},
        )

    loader = make()
    _epoch(loader)
    it = iter(loader)  # epoch 1, in which the dataset has counted one pass
    head = [_plain(next(it)) for _ in range(stop)]
    state = loader.state_dict()
    straight = head + [_plain(b) for b in it] + _epoch(loader)
    resumed = make()
    resumed.load_state_dict(state)
    assert _epoch(resumed) + _epoch(resumed) == straight[stop:]
    assert straight[0][1] == [1, 1]
