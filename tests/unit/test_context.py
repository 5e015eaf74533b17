from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from reproloader import ContextError, ReproLoader, WorkerContext, get_context


def test_get_context_outside_a_loader_raises_context_error() -> None:
    with pytest.raises(ContextError, match=r"get_context\(\) was called outside a ReproLoader"):
        get_context()


def test_context_error_is_a_runtime_error() -> None:
    assert issubclass(ContextError, RuntimeError)


class Recorder(Dataset[int]):
    def __init__(self) -> None:
        self.seen: list[WorkerContext] = []

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> int:
        self.seen.append(get_context())
        return i


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_context_describes_the_unit(scope: str) -> None:
    dataset = Recorder()
    loader = ReproLoader(dataset, batch_size=4, seed=11, config={"rng_scope": scope})
    loader.set_epoch(3)
    list(loader)
    first, last = dataset.seen[0], dataset.seen[-1]
    assert (first.seed, first.epoch, first.rank, first.world_size) == (11, 3, 0, 1)
    assert (first.worker_id, first.num_workers, first.scope) == (0, 0, scope)
    assert (first.batch_index, last.batch_index) == (0, 1)
    if scope == "sample":
        assert [c.sample_index for c in dataset.seen] == [0, 1, 2, 3, 4, 5]
    else:
        assert first.sample_index is None
    assert isinstance(first.rng, np.random.Generator)


def test_context_is_frozen() -> None:
    dataset = Recorder()
    list(ReproLoader(dataset, batch_size=2, seed=0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        dataset.seen[0].epoch = 5  # type: ignore[misc]


def test_context_generator_is_one_object_reseeded_in_place() -> None:
    class Draws(Dataset[float]):
        def __init__(self, cache: bool) -> None:
            self.cache = cache
            self.rngs: list[np.random.Generator] = []

        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> float:
            self.rngs.append(get_context().rng)
            rng = self.rngs[0] if self.cache else self.rngs[-1]  # cached once, as user code does
            return float(rng.random())

    def values(cache: bool) -> tuple[list[float], list[np.random.Generator]]:
        dataset = Draws(cache)
        out = torch.cat(list(ReproLoader(dataset, batch_size=2, seed=0))).tolist()
        return out, dataset.rngs

    fresh, rngs = values(cache=False)
    assert all(rng is rngs[0] for rng in rngs), "one Generator object for every unit"
    cached, _ = values(cache=True)
    assert cached == fresh, "a reference kept from batch 0 gives batch 1's stream in batch 1"
    assert fresh[0] != fresh[2]  # batch 1 did not continue batch 0's stream


def test_get_context_raises_again_after_a_batch_in_the_main_process() -> None:
    loader = ReproLoader(Recorder(), batch_size=2, seed=0)
    for _ in loader:
        with pytest.raises(ContextError):
            get_context()


def test_context_in_worker_init_fn() -> None:
    loader = ReproLoader(
        Recorder(), batch_size=2, seed=0, num_workers=2, worker_init_fn=_check_init
    )
    assert len(list(loader)) == 3


def _check_init(worker_id: int) -> None:
    ctx = get_context()
    assert (ctx.worker_id, ctx.num_workers, ctx.batch_index) == (worker_id, 2, None)
    assert torch.utils.data.get_worker_info().dataset.__class__ is Recorder  # type: ignore[union-attr]


class Nested(Dataset[float]):
    """Each item iterates another loader, then asks for its own context again."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> float:
        before = get_context()
        inner = ReproLoader(Recorder(), batch_size=2, seed=99)
        assert [len(b) for b in inner] == [2, 2, 2]
        after = get_context()
        assert after == before
        return float(after.seed)


def test_a_dataset_iterating_another_loader_keeps_its_own_context() -> None:
    loader = ReproLoader(Nested(), batch_size=2, seed=5)
    assert [b.tolist() for b in loader] == [[5.0, 5.0], [5.0, 5.0]]
    with pytest.raises(ContextError):
        get_context()


class StreamRecorder(torch.utils.data.IterableDataset[int]):
    def __init__(self) -> None:
        self.seen: list[WorkerContext] = []

    def __iter__(self):  # type: ignore[no-untyped-def]
        for i in range(6):
            self.seen.append(get_context())
            yield i


def test_an_iterable_batch_shares_one_context_object_and_the_next_batch_gets_its_own() -> None:
    # Inside a batch-scope unit the context is published once: every sample of the
    # batch reads the same object (it would hold the same values), the next batch a new one.
    dataset = StreamRecorder()
    list(ReproLoader(dataset, batch_size=3, seed=11))
    first, second = dataset.seen[:3], dataset.seen[3:]
    assert all(ctx is first[0] for ctx in first)
    assert all(ctx is second[0] for ctx in second)
    assert first[0] is not second[0]
    assert (first[0].batch_index, second[0].batch_index) == (0, 1)
