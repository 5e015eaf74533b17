"""Randomness drawn when iteration starts, and RNGs shared by two loaders (issue 14, 3 and 4)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from reproloader import ReproLoader, audit
from tests.datasets import same


class StartShuffled(IterableDataset[torch.Tensor]):
    """Draws its order when iteration starts, as a Hugging Face shuffle does, from
    ``self.rng`` or (``source="torch"``) from torch's global RNG.

    Its state_dict is complete apart from that draw: how many items it has yielded.
    Nothing else is random, so a resume is exact exactly when the draw at iteration
    start gives the same order as in the uninterrupted pass.
    """

    def __init__(self, source: str, n: int = 32) -> None:
        self.source = source
        self.n = n
        self.rng = np.random.default_rng(0)
        self._skip = 0
        self._yielded = 0

    def __iter__(self) -> Any:
        if self.source == "torch":
            order = torch.randperm(self.n).tolist()
        else:
            order = self.rng.permutation(self.n).tolist()
        info = get_worker_info()
        if info is not None:
            order = order[info.id :: info.num_workers]
        skip, self._skip = self._skip, 0
        self._yielded = skip
        for x in order[skip:]:
            self._yielded += 1
            yield torch.tensor(float(x), dtype=torch.float64)

    def state_dict(self) -> dict[str, int]:
        return {"yielded": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = state["yielded"]


def make(dataset: Any, **kwargs: Any) -> ReproLoader[Any]:
    return ReproLoader(dataset, batch_size=4, seed=3, **kwargs)


def _resumed_after_two(source: str, num_workers: int, config: dict[str, Any]) -> tuple[Any, Any]:
    reference = list(make(StartShuffled(source), num_workers=num_workers, config=config))
    first = make(StartShuffled(source), num_workers=num_workers, config=config)
    it = iter(first)
    head = [next(it), next(it)]
    state = first.state_dict()
    del it
    resumed = make(StartShuffled(source), num_workers=num_workers, config=config)
    resumed.load_state_dict(state)
    return reference, head + list(resumed)


@pytest.mark.parametrize("source", ["attribute", "torch"])
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("scope", ["batch", "worker"])
def test_randomness_drawn_at_iteration_start_is_the_same_after_a_replayed_resume(
    source: str, num_workers: int, scope: str
) -> None:
    config = {"rng_scope": scope, "iterable_resume": "replay"}
    reference, resumed = _resumed_after_two(source, num_workers, config)
    assert same([reference], [resumed])


def test_a_dataset_state_that_misses_the_start_draw_is_inexact_and_the_audit_says_so() -> None:
    # Through the dataset's own state (the default), the order drawn as its generator
    # starts is not in that state: the resume differs, and the audit reports it.
    reference, resumed = _resumed_after_two("attribute", 0, {"rng_scope": "batch"})
    assert not same([reference], [resumed])
    report = audit(lambda: make(StartShuffled("attribute")), fresh_processes=False)
    failing = [f for f in report.findings if not f.passed]
    assert any("resume" in f.check.lower() for f in failing), report


class Noisy(Dataset[torch.Tensor]):
    """Draws from a Generator it holds; one object is shared by two loaders below."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), self.rng.random()], dtype=torch.float64)


class NoisyStream(IterableDataset[torch.Tensor]):
    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def __iter__(self) -> Any:
        return (torch.tensor([float(i), self.rng.random()], dtype=torch.float64) for i in range(16))


@pytest.mark.parametrize("kind", [Noisy, NoisyStream], ids=["map", "iterable"])
def test_worker_scope_with_a_dataset_shared_by_two_zipped_loaders_is_exact(
    kind: type,
) -> None:
    def pair(dataset: Any) -> tuple[ReproLoader[Any], ReproLoader[Any]]:
        return tuple(  # type: ignore[return-value]
            ReproLoader(dataset, batch_size=4, seed=seed, config={"rng_scope": "worker"})
            for seed in (0, 1)
        )

    alone = [list(loader) for loader in pair(kind())]
    zipped = list(zip(*pair(kind()), strict=True))
    assert same([alone[0], alone[1]], [[a for a, _ in zipped], [b for _, b in zipped]]), (
        "zipped loaders over one dataset differ from each alone"
    )


class EagerStart(IterableDataset[torch.Tensor]):
    """Draws its order in ``__iter__`` itself (not a generator), from every source at once.

    Counts its ``__iter__`` calls; with ``workers`` the order is split between them.
    """

    def __init__(self, n: int = 24, *, context: bool = True) -> None:
        self.n = n
        self.context = context
        self.iter_calls = 0

    def __iter__(self) -> Any:
        import random

        from reproloader import get_context

        self.iter_calls += 1
        order = torch.randperm(self.n).tolist()
        shift = random.random() + np.random.random()
        if self.context:
            shift += get_context().rng.random()
        info = get_worker_info()
        if info is not None:
            order = order[info.id :: info.num_workers]
        # Each sample draws again, so the first unit's RNGs must go on from where
        # __iter__ left them.
        return (
            torch.tensor([float(x), shift, torch.rand(()).item()], dtype=torch.float64)
            for x in order
        )


def test_iter_of_an_iterable_dataset_runs_when_the_iterator_is_made_as_in_dataloader() -> None:
    # DataLoader (and StatefulDataLoader) call iter(dataset) when their iterator is
    # made; so does ReproLoader in the main process.
    for loader_class in (torch.utils.data.DataLoader, ReproLoader):
        dataset = EagerStart(context=False)
        loader = loader_class(dataset, batch_size=4)
        it = iter(loader)
        assert dataset.iter_calls == 1, loader_class
        list(it)
        assert dataset.iter_calls == 1, loader_class


@pytest.mark.parametrize("scope", ["batch", "sample", "worker"])
def test_randomness_drawn_in_iter_belongs_to_the_first_unit_with_or_without_workers(
    scope: str,
) -> None:
    # With num_workers=0 iter(dataset) runs when the iterator is made, in a window of
    # its own: the first unit goes on at the first batch from where __iter__ left its
    # RNGs, as in a worker where both happen at the first batch. The caller's draws in
    # between neither see the loader's states nor change them.
    config = {"rng_scope": scope}
    in_worker = list(make(EagerStart(), num_workers=1, config=config))
    torch.manual_seed(5)
    expected_caller = torch.rand(3)
    loader = make(EagerStart(), num_workers=0, config=config)
    torch.manual_seed(5)
    it = iter(loader)
    caller = torch.rand(3)
    in_main = list(it)
    assert torch.equal(caller, expected_caller)
    assert same([in_worker], [in_main])


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("interrupt", [0, 1, 5])
def test_a_state_of_a_dataset_that_is_its_own_iterator_resumes_even_right_after_iter(
    shuffle: bool, interrupt: int
) -> None:
    # torchdata's TestStatefulDataLoaderIterable2: the dataset is its own iterator and
    # does not rewind; the state is taken after `interrupt` batches (0: right after
    # iter(loader)), the pass exhausts the object, and a second loader over the same
    # object resumes from the state.
    from collections.abc import Iterator

    class OwnIterator(IterableDataset[int], Iterator[int]):
        def __init__(self) -> None:
            self.i = 0
            self.iter_calls = 0

        def __iter__(self) -> OwnIterator:
            self.iter_calls += 1
            return self

        def __next__(self) -> int:
            if self.i >= 20:
                raise StopIteration
            self.i += 1
            return int(torch.randint(100, ()).item()) if shuffle else self.i - 1

        def state_dict(self) -> dict[str, int]:
            return {"i": self.i}

        def load_state_dict(self, state: dict[str, int]) -> None:
            self.i = state["i"]

    dataset = OwnIterator()
    loader = ReproLoader(dataset, batch_size=None, seed=3)
    it = iter(loader)
    for _ in range(interrupt):
        next(it)
    state = loader.state_dict()
    expected = list(it)
    assert len(expected) == 20 - interrupt
    resumed = ReproLoader(dataset, batch_size=None, seed=3)
    resumed.load_state_dict(state)
    calls = dataset.iter_calls
    assert list(resumed) == expected
    assert dataset.iter_calls == calls + 1  # once per pass, resumed or not
