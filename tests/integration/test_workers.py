"""Same batches whatever the process layout: num_workers, start method, worker lifetime."""

from __future__ import annotations

import gc
import multiprocessing
import weakref
from typing import Any

import pytest
import torch

from reproloader import ReproLoader
from tests.datasets import (
    AllSources,
    EpochAware,
    GlobalDraws,
    InitGenerator,
    KeywordOnlyRng,
    Offset,
    RngArgument,
    RngArgumentItems,
    Stream,
    collect,
    draw_offset,
    flat,
    same,
)

SCOPES = ["batch", "sample"]


def make(dataset: Any = None, **kwargs: Any) -> ReproLoader[Any]:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("seed", 7)
    return ReproLoader(AllSources(22) if dataset is None else dataset, **kwargs)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_are_identical_for_0_1_2_4_workers(scope: str, shuffle: bool) -> None:
    results = [
        collect(make(num_workers=n, shuffle=shuffle, config={"rng_scope": scope}), epochs=2)
        for n in (0, 1, 2, 4)
    ]
    assert all(same(results[0], r) for r in results[1:])


@pytest.mark.slow
@pytest.mark.parametrize("scope", [*SCOPES, "worker"])
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_batches_are_identical_across_start_methods(scope: str, method: str) -> None:
    reference = collect(make(num_workers=2, shuffle=True, config={"rng_scope": scope}))
    other = collect(
        make(num_workers=2, shuffle=True, config={"rng_scope": scope, "start_method": method})
    )
    assert same(reference, other)


@pytest.mark.parametrize("scope", [*SCOPES, "worker"])
def test_persistent_workers_give_the_same_batches_in_every_epoch(scope: str) -> None:
    config = {"rng_scope": scope}
    plain = collect(make(num_workers=2, shuffle=True, config=config), epochs=3)
    persistent = collect(
        make(num_workers=2, shuffle=True, persistent_workers=True, config=config), epochs=3
    )
    assert same(plain, persistent)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_worker_scope_repeats_with_the_same_layout(num_workers: int) -> None:
    config = {"rng_scope": "worker"}
    first = collect(make(num_workers=num_workers, config=config), epochs=2)
    again = collect(make(num_workers=num_workers, config=config), epochs=2)
    assert same(first, again)
    assert not torch.equal(flat(first[0]), flat(first[1]))


def test_sample_scope_does_not_depend_on_batch_size() -> None:
    def by_index(batch_size: int) -> dict[int, list[float]]:
        rows = torch.cat(
            list(make(batch_size=batch_size, shuffle=True, config={"rng_scope": "sample"}))
        )
        return {int(r[0]): r[1:].tolist() for r in rows}

    assert by_index(3) == by_index(5) == by_index(22)


def test_same_seed_repeats_and_other_seed_differs() -> None:
    first = collect(make(seed=1, shuffle=True, num_workers=2), epochs=2)
    assert same(first, collect(make(seed=1, shuffle=True, num_workers=2), epochs=2))
    assert not same(first, collect(make(seed=2, shuffle=True, num_workers=2), epochs=2))


@pytest.mark.parametrize("scope", [*SCOPES, "worker"])
def test_epochs_differ(scope: str) -> None:
    first, second = collect(make(config={"rng_scope": scope}), epochs=2)
    # Same order (no shuffle) but fresh random values in every column but the index.
    a, b = torch.stack(first[:-1]), torch.stack(second[:-1])
    assert torch.equal(a[..., 0], b[..., 0])
    assert not (a[..., 1:] == b[..., 1:]).any()


@pytest.mark.parametrize("scope", ["batch", "worker"])
def test_ranks_differ(scope: str, monkeypatch: pytest.MonkeyPatch) -> None:
    results = []
    for rank in (0, 1):
        monkeypatch.setattr(
            "reproloader.distributed.rank_and_world_size", lambda rank=rank: (rank, 2)
        )
        results.append(torch.stack(collect(make(config={"rng_scope": scope}))[0][:-1]))
    assert not (results[0][..., 1:] == results[1][..., 1:]).any()


def test_sample_scope_does_not_depend_on_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    results = []
    for rank in (0, 1):
        monkeypatch.setattr(
            "reproloader.distributed.rank_and_world_size", lambda rank=rank: (rank, 2)
        )
        results.append(collect(make(config={"rng_scope": "sample"})))
    assert same(results[0], results[1])


@pytest.mark.parametrize("dataset_cls", [RngArgument, RngArgumentItems, KeywordOnlyRng])
@pytest.mark.parametrize("scope", SCOPES)
def test_rng_argument_is_reproducible_across_workers(dataset_cls: type, scope: str) -> None:
    results = [
        collect(make(dataset_cls(22), num_workers=n, shuffle=True, config={"rng_scope": scope}), 2)
        for n in (0, 2)
    ]
    assert same(results[0], results[1])
    values = flat(results[0][0]).reshape(-1, 2)[:, 1]
    assert len(set(values.tolist())) == len(values)


@pytest.mark.parametrize("persistent", [False, True])
def test_dataset_set_epoch_reaches_every_worker(persistent: bool) -> None:
    loader = make(EpochAware(8), num_workers=2, persistent_workers=persistent)
    for expected in (0, 1, 2):
        epochs = torch.cat(list(loader))[:, 1]
        assert epochs.eq(expected).all(), (expected, epochs)


@pytest.mark.parametrize("scope", [*SCOPES, "worker"])
@pytest.mark.parametrize("persistent", [False, True])
def test_iterable_dataset_repeats_and_changes_per_epoch(scope: str, persistent: bool) -> None:
    def run() -> list[list[Any]]:
        return collect(
            make(
                Stream(20),
                num_workers=2,
                persistent_workers=persistent,
                config={"rng_scope": scope},
            ),
            epochs=2,
        )

    first = run()
    assert same(first, run())
    assert not torch.equal(flat(first[0]), flat(first[1]))


@pytest.mark.parametrize("scope", SCOPES)
def test_iterable_dataset_with_one_worker_matches_main_process(scope: str) -> None:
    # With one worker, the worker's stream is the whole dataset, as in the main process.
    a = collect(make(Stream(10), num_workers=0, config={"rng_scope": scope}), epochs=2)
    b = collect(make(Stream(10), num_workers=1, config={"rng_scope": scope}), epochs=2)
    assert same(a, b)


def test_dataset_global_draws_are_independent_across_units() -> None:
    values = flat(collect(make(GlobalDraws(40), num_workers=2, batch_size=2))[0]).reshape(-1, 4)
    for column in range(1, 4):
        assert len(set(values[:, column].tolist())) == 40


def test_prefetch_factor_does_not_change_the_batches() -> None:
    a = collect(make(num_workers=2, prefetch_factor=1, shuffle=True), epochs=2)
    b = collect(make(num_workers=2, prefetch_factor=4, shuffle=True), epochs=2)
    assert same(a, b)


@pytest.mark.parametrize("scope", SCOPES)
def test_out_of_order_delivery_keeps_each_batch(scope: str) -> None:
    def by_first_index(batches: list[Any]) -> dict[int, list[float]]:
        return {int(b[0, 0]): b.tolist() for b in batches}

    ordered = collect(make(num_workers=2, shuffle=True, config={"rng_scope": scope}))[0]
    loose = collect(make(num_workers=2, shuffle=True, in_order=False, config={"rng_scope": scope}))[
        0
    ]
    assert by_first_index(ordered) == by_first_index(loose)


def test_worker_init_fn_draws_are_reproducible() -> None:
    def run() -> list[list[float]]:
        loader = make(Offset(), num_workers=2, batch_size=4, worker_init_fn=draw_offset)
        return [flat(epoch).tolist() for epoch in collect(loader, epochs=2)]

    first = run()
    assert first == run()
    worker0, worker1 = first[0][0], first[0][4]
    assert worker0 != worker1 != -1.0
    assert first[0] != first[1]  # workers are started again, for the new epoch


def test_switching_off_dataset_rng_reseeding_brings_the_init_generator_bug_back() -> None:
    def distinct(reseed: bool) -> int:
        loader = ReproLoader(
            InitGenerator(16),
            batch_size=4,
            num_workers=2,
            seed=0,
            config={"reseed_dataset_rngs": reseed},
        )
        return len(set(flat(collect(loader)[0]).tolist()))

    assert distinct(True) == 16
    assert distinct(False) == 8  # both workers replay the same copied Generator


def test_narrowed_reseed_globals_leaves_the_others_alone() -> None:
    def columns(num_workers: int) -> torch.Tensor:
        loader = make(GlobalDraws(8), num_workers=num_workers, config={"reseed_globals": ["torch"]})
        return torch.cat(collect(loader)[0])

    in_process, workers = columns(0), columns(2)
    assert torch.equal(in_process[:, 3], workers[:, 3])  # torch: reseeded, reproducible
    assert not torch.equal(in_process[:, 1], workers[:, 1])  # python random: not reseeded


@pytest.mark.parametrize("dataset", ["map", "iterable"])
@pytest.mark.parametrize("scope", ["batch", "worker"])
@pytest.mark.parametrize("persistent", [False, True])
def test_a_dropped_loader_is_freed_at_once_with_its_workers(
    dataset: str, scope: str, persistent: bool
) -> None:
    # Without a reference cycle through the loader, dropping the last reference shuts
    # its workers down at once, in order. In a cycle, only a garbage collection frees
    # it, and that closes the worker queues before the iterator's shutdown can send
    # them their stop: each worker is then waited for 5 s and terminated.
    # Long enough that no worker runs out of its part (and exits) while this runs.
    data = AllSources(64) if dataset == "map" else Stream(64)
    kwargs: dict[str, Any] = {"num_workers": 2, "persistent_workers": persistent}
    kwargs["config"] = {"rng_scope": scope}
    before = set(multiprocessing.active_children())
    loader = make(data, **kwargs)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    resumed = make(data, **kwargs)
    resumed.load_state_dict(state)
    next(iter(resumed))
    workers = [p for p in multiprocessing.active_children() if p not in before]
    assert len(workers) == 4
    refs = [weakref.ref(loader), weakref.ref(resumed)]
    gc.disable()
    try:
        del loader, iterator, resumed
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]  # stopped, not terminated
