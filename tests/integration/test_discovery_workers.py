"""RNG objects deep in a pipeline or in its collate_fn are reseeded in every process."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from reproloader import ReproLoader
from reproloader._runtime import discovery
from reproloader._runtime.discovery import RngWarning
from tests.datasets import collect, same


class Draw:
    """A transform with its own Generator, like every albumentations transform."""

    def __init__(self, seed: int) -> None:
        self.random_generator = np.random.default_rng(seed)

    def __call__(self, x: float) -> float:
        return x + float(self.random_generator.random())


class Group:
    """A transform of transforms, like albumentations' Compose, OneOf and SomeOf."""

    def __init__(self, transforms: list[Any]) -> None:
        self.transforms = transforms

    def __call__(self, x: float) -> float:
        for t in self.transforms:
            x = t(x)
        return x


class Deep(Dataset[torch.Tensor]):
    """Its Generators sit at ``dataset.transform.transforms[1].transforms[0].random_generator``."""

    def __init__(self, n: int = 16) -> None:
        self.n = n
        self.transform = Group([Draw(1), Group([Draw(2), Group([Draw(3)])])])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([float(index), self.transform(0.0)], dtype=torch.float64)


class MixCollate:
    """A collate_fn object with its own Generator, like a mixup that owns its RNG."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def __call__(self, batch: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(batch)
        return torch.cat([stacked, torch.full((len(batch), 1), self.rng.random())], dim=1)


def scale_collate(batch: list[torch.Tensor], rng: np.random.Generator) -> torch.Tensor:
    return torch.stack(batch) * rng.random()


class Step:
    """A transform without randomness, that still has to be looked into."""

    def __init__(self) -> None:
        self.fn = abs

    def __call__(self, x: float) -> float:
        return float(self.fn(x))


class Chain(Deep):
    """A pipeline so long that the default search budget does not reach its end."""

    def __init__(self, n: int = 8, length: int = 6000) -> None:
        super().__init__(n)
        self.transform = Group([*(Step() for _ in range(length)), Draw(0)])


def make(dataset: Any, **kwargs: Any) -> ReproLoader[Any]:
    kwargs.setdefault("batch_size", 4)
    return ReproLoader(dataset, seed=137, **kwargs)


@pytest.fixture(autouse=True)
def _fresh_warning_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(discovery, "_WARNED", set())


def test_generators_six_attributes_deep_are_reseeded_in_workers() -> None:
    reference = collect(make(Deep()), epochs=2)
    workers = collect(make(Deep(), num_workers=2), epochs=2)
    assert same(reference, workers)
    assert not torch.equal(torch.cat(reference[0]), torch.cat(reference[1]))


@pytest.mark.slow
def test_spawned_workers_reseed_the_same_objects() -> None:
    def run(**kwargs: Any) -> list[list[Any]]:
        return collect(make(Deep(), collate_fn=MixCollate(), **kwargs), epochs=2)

    spawned = run(num_workers=2, multiprocessing_context="spawn", persistent_workers=True)
    assert same(run(), spawned)


def test_resume_reseeds_deep_generators() -> None:
    reference = collect(make(Deep()))[0]
    first = make(Deep())
    it = iter(first)
    head = [next(it), next(it)]
    state = first.state_dict()
    resumed = make(Deep())
    resumed.load_state_dict(state)
    assert same([reference], [head + list(resumed)])


@pytest.mark.parametrize(
    "collate",
    [MixCollate(), functools.partial(scale_collate, rng=np.random.default_rng(0))],
    ids=["object", "partial"],
)
def test_rngs_in_the_collate_fn_are_reseeded_in_workers(collate: Any) -> None:
    reference = collect(make(Deep(), collate_fn=collate), epochs=2)
    workers = collect(make(Deep(), collate_fn=collate, num_workers=2), epochs=2)
    assert same(reference, workers)
    assert not torch.equal(torch.cat(reference[0]), torch.cat(reference[1]))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_pipeline_beyond_the_budget_warns_once_naming_where(num_workers: int) -> None:
    loader = make(Chain(), num_workers=num_workers)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        collect(loader, epochs=2)
    messages = [str(w.message) for w in record if w.category is RngWarning]
    assert len(messages) == 1
    assert messages[0].startswith("dataset.transform.transforms[49")
    assert "the RNG search read 5000 objects and stopped here" in messages[0]
    assert messages[0].endswith("or raise ReproConfig(rng_search_budget=...)")


def test_raising_the_budget_reaches_the_end_quietly() -> None:
    config = {"rng_search_budget": 20_000}
    reference = collect(make(Chain(), config=config))
    assert same(reference, collect(make(Chain(), config=config, num_workers=2)))
