"""The failures that make plain DataLoader irreproducible, each a test.

Every test runs with torch's DataLoader, where it is expected to fail (a strict
xfail: if DataLoader ever stops showing the bug, the test says so), and with
ReproLoader, where it must pass.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from reproloader import ReproLoader
from tests.datasets import (
    GlobalDraws,
    InitGenerator,
    NumpyGlobal,
    collect,
    flat,
    record_worker_init,
    same,
)

LOADERS = [
    # raises=AssertionError: only the test's assertion counts as DataLoader's bug; any
    # other exception (a crash in the test or the dataset) fails the test.
    pytest.param(
        DataLoader,
        marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason="DataLoader's bug"),
    ),
    ReproLoader,
]


@pytest.mark.parametrize("loader_cls", LOADERS)
def test_generator_made_in_init_gives_distinct_values_across_workers(loader_cls: type) -> None:
    loader = loader_cls(InitGenerator(64), batch_size=8, num_workers=2)
    values = flat(next(iter(collect(loader))))
    # DataLoader: both workers copy the same Generator, so 32 distinct values of 64.
    assert len(set(values.tolist())) == 64


@pytest.mark.parametrize("loader_cls", LOADERS)
def test_generator_made_in_init_differs_between_epochs(loader_cls: type) -> None:
    loader = loader_cls(InitGenerator(16), batch_size=8, num_workers=2)
    first, second = collect(loader, epochs=2)
    assert not torch.equal(flat(first), flat(second))


@pytest.mark.parametrize("loader_cls", LOADERS)
def test_popular_worker_init_fn_does_not_repeat_numpy_every_epoch(loader_cls: type) -> None:
    loader = loader_cls(
        NumpyGlobal(16), batch_size=4, num_workers=2, worker_init_fn=record_worker_init
    )
    first, second = collect(loader, epochs=2)
    assert not torch.equal(flat(first), flat(second))


@pytest.mark.parametrize("loader_cls", LOADERS)
def test_values_do_not_depend_on_num_workers(loader_cls: type) -> None:
    results = []
    for num_workers in (0, 1, 2, 3):
        torch.manual_seed(0)  # the usual recipe for a repeatable DataLoader
        results.append(collect(loader_cls(GlobalDraws(24), batch_size=4, num_workers=num_workers)))
    assert all(same(results[0], r) for r in results[1:])


@pytest.mark.parametrize("loader_cls", LOADERS)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterating_leaves_the_callers_torch_rng_alone(loader_cls: type, num_workers: int) -> None:
    loader = loader_cls(GlobalDraws(8), batch_size=4, shuffle=True, num_workers=num_workers)
    before = torch.get_rng_state()
    collect(loader, epochs=2)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("scope", ["batch", "sample", "worker"])
def test_iterating_leaves_every_caller_rng_byte_for_byte(num_workers: int, scope: str) -> None:
    loader = ReproLoader(
        GlobalDraws(10),
        batch_size=4,
        shuffle=True,
        num_workers=num_workers,
        config={"rng_scope": scope},
    )
    np.random.standard_normal()  # leave a cached legacy gauss deviate to preserve too
    before = (random.getstate(), torch.get_rng_state(), np.random.get_state())
    for batch in loader:
        assert batch.shape[0] > 0
        after = (random.getstate(), torch.get_rng_state(), np.random.get_state())
        assert after[0] == before[0]
        assert torch.equal(after[1], before[1])
        assert str(after[2]) == str(before[2])  # arrays and the gauss cache
