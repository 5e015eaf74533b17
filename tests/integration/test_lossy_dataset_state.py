"""An iterable dataset whose own state loses its position is told while the run goes.

The audit finds such states; these tests pin that a run which never runs it is warned
too: once, naming the dataset's type and ``iterable_resume="replay"``, and that the
check changes nothing in the run. (The Hugging Face case itself is in
``tests/frameworks/test_hf_datasets.py``.)
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import IterableDataset, get_worker_info

from reproloader import ReproConfig, ReproLoader

WARNING = r"iterable dataset {kind} through its own state_dict\(\), which does not hold its whole position: {why}.*iterable_resume='replay'"


class BufferShuffled(IterableDataset[int]):
    """Shuffles ``range(n)`` through a 4-sample buffer; its state holds how many samples
    it read, not the buffer (the loss Hugging Face documents for its own)."""

    def __init__(self, n: int = 24) -> None:
        self.n = n
        self.read = 0
        self._start = 0

    def state_dict(self) -> dict[str, int]:
        return {"read": self.read}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._start = self.read = state["read"]

    def __iter__(self) -> Iterator[int]:
        info = get_worker_info()
        first, step = (info.id, info.num_workers) if info is not None else (0, 1)
        start, self._start = self._start, 0
        buffer: list[int] = []
        for i in range(max(start, first), self.n, step):
            self.read = i + step
            buffer.append(i)
            if len(buffer) == 4:
                yield buffer.pop(random.randrange(4))
        while buffer:
            yield buffer.pop(random.randrange(len(buffer)))


class Counted(IterableDataset[torch.Tensor]):
    """Items ``[i, draws from every global RNG]``; its state holds the position exactly."""

    def __init__(self, n: int = 24) -> None:
        self.n = n
        self.next = 0

    def state_dict(self) -> dict[str, int]:
        return {"next": self.next}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.next = state["next"]

    def __iter__(self) -> Iterator[torch.Tensor]:
        start, self.next = self.next, 0
        for i in range(start, self.n):
            self.next = i + 1
            draws = [random.random(), float(np.random.random()), float(torch.rand(()))]
            yield torch.tensor([float(i), *draws], dtype=torch.float64)


class BufferShuffledExamplesIterable:
    """What Hugging Face's ``.shuffle(buffer_size=...)`` puts in an IterableDataset's pipeline."""


class MappedExamplesIterable:
    def __init__(self) -> None:
        self.ex_iterable = BufferShuffledExamplesIterable()


class HubLike(BufferShuffled):
    """Stands in for a Hugging Face IterableDataset after ``.shuffle(...)`` and ``.map(...)``."""

    def __init__(self) -> None:
        super().__init__()
        self._ex_iterable = MappedExamplesIterable()


HubLike.__module__ = "datasets.iterable_dataset"


def batches(loader: ReproLoader[Any]) -> list[list[float]]:
    return [b.tolist() for b in loader]


def stop_and_resume(make: Any, after: int = 3) -> tuple[list[Any], list[Any], list[Any]]:
    """(the straight run, the run that took a state after ``after`` batches, the resumed rest)."""
    straight = batches(make())
    source = make()
    it = iter(source)
    head = [next(it).tolist() for _ in range(after)]
    state = source.state_dict()
    taken = head + [b.tolist() for b in it]
    resumed = make()
    resumed.load_state_dict(state)
    return straight, taken, batches(resumed)


def test_a_lossy_state_is_warned_once_at_the_next_batch_naming_the_type_and_replay() -> None:
    def make() -> ReproLoader[Any]:
        return ReproLoader(BufferShuffled(), batch_size=2, seed=0)

    message = WARNING.format(kind="BufferShuffled", why="a copy of the dataset restored")
    with pytest.warns(UserWarning, match=message) as caught:
        straight, taken, rest = stop_and_resume(make)
    assert len(caught) == 1
    assert taken == straight  # the check changed nothing in the run
    assert rest != straight[3:]  # and the warning was right: the resume differs
    source = make()
    it = iter(source)
    next(it)
    source.state_dict()
    with pytest.warns(UserWarning, match=message):
        next(it)  # the next batch is compared with a restored copy's
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per loader
        source.state_dict()
        next(it)


def test_replay_resumes_the_lossy_dataset_exactly_without_a_warning() -> None:
    config = ReproConfig(iterable_resume="replay")
    for workers in (0, 2):
        straight, taken, rest = stop_and_resume(
            lambda w=workers: ReproLoader(
                BufferShuffled(), batch_size=2, seed=0, num_workers=w, config=config
            )
        )
        assert taken == straight
        assert rest == straight[3:]


@pytest.mark.parametrize("scope", ["batch", "worker"])
def test_an_exact_state_gives_no_warning_and_the_check_changes_no_draw(scope: str) -> None:
    def make() -> ReproLoader[Any]:
        return ReproLoader(Counted(), batch_size=2, seed=0, config={"rng_scope": scope})

    state_before = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state())
    straight, taken, rest = stop_and_resume(make)  # filterwarnings=error: no warning
    assert taken == straight
    assert rest == straight[3:]
    after = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state())
    assert after[:2] == state_before[:2]
    assert torch.equal(after[2], state_before[2])


def test_a_state_known_to_be_lossy_is_warned_as_it_is_taken_with_workers() -> None:
    why = re.escape("it shuffles with a buffer (.shuffle(buffer_size=...))")
    source = ReproLoader(HubLike(), batch_size=2, seed=0, num_workers=2)
    it = iter(source)
    next(it)
    next(it)
    with pytest.warns(UserWarning, match=WARNING.format(kind="HubLike", why=why)):
        source.state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        source.state_dict()
    del it
    replaying = ReproLoader(
        HubLike(), batch_size=2, seed=0, num_workers=2, config={"iterable_resume": "replay"}
    )
    it = iter(replaying)
    next(it)
    replaying.state_dict()  # replay: nothing to warn about
