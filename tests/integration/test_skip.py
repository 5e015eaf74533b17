"""Batches left out (``skip_batches``/``skip_steps``): every other batch stays bitwise the same."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch.utils.data import RandomSampler

from reproloader import ConfigError, ReproLoader
from reproloader.state import upgrade
from tests.datasets import AllSources, Stream

N, BS = 17, 3  # 6 batches an epoch, the last one short
EPOCHS = 2


def build(kind: str, scope: str = "batch", **kwargs: Any) -> Any:
    if kind == "user":  # a user's sampler: drawn through skipped batches, nothing loaded
        kwargs["sampler"] = RandomSampler(range(N), generator=torch.Generator().manual_seed(1))
    return ReproLoader(
        AllSources(N),
        batch_size=BS,
        shuffle=kind in ("shuffle", "shard"),
        shard=kind == "shard",
        seed=3,
        rng_scope=scope,  # type: ignore[arg-type]
        **kwargs,
    )


def passes(loader: Any, epochs: int = EPOCHS) -> Iterator[tuple[int, torch.Tensor]]:
    """(epoch, batch) of every batch handed out until the loader reaches ``epochs``."""
    while loader.epoch < epochs:
        epoch = loader.epoch
        for batch in loader:
            yield epoch, batch


def same(a: list[tuple[int, torch.Tensor]], b: list[tuple[int, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True)
    )


def skipped(epoch: int, k: int, ranges: list[tuple[int, int, int]]) -> bool:
    return any(e == epoch and a <= k < b for e, a, b in ranges)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["sequential", "shuffle", "shard", "user"]),
    scope=st.sampled_from(["batch", "sample"]),
    ranges=st.lists(
        st.tuples(st.integers(0, EPOCHS - 1), st.integers(0, 7), st.integers(1, 4)), max_size=4
    ),
    by_steps=st.booleans(),
    stop_after=st.integers(0, 12),
)
# A sharded state taken after a skipped step: its global offset counts the step too.
@example(kind="shard", scope="batch", ranges=[(0, 0, 1)], by_steps=False, stop_after=1)
# A state taken where the rest of the epoch is skipped, past its end: at the end.
@example(kind="sequential", scope="batch", ranges=[(0, 4, 4)], by_steps=False, stop_after=4)
@example(kind="user", scope="sample", ranges=[(0, 1, 2), (1, 0, 9)], by_steps=True, stop_after=2)
def test_skipping_leaves_every_other_batch_bitwise_equal_and_survives_a_resume(
    kind: str,
    scope: str,
    ranges: list[tuple[int, int, int]],
    by_steps: bool,
    stop_after: int,
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        if kind == "shard":  # rank 1 of 2: every rank leaves out the same global steps
            patch.setattr("reproloader.distributed.rank_and_world_size", lambda: (1, 2))
        full = []
        for epoch, batch in passes(build(kind, scope)):
            full.append((epoch, batch))
        per_epoch = len(build(kind, scope))
        wanted = [(e, a, a + n) for e, a, n in ranges]
        loader = build(kind, scope)
        for e, a, b in wanted:
            if by_steps:
                loader.skip_steps(e * per_epoch + a, e * per_epoch + b)
            else:
                loader.skip_batches(e, a, b)
        assert len(loader) == per_epoch, "len(loader) counts the skipped batches too"
        positions = [(e, k) for e in range(EPOCHS) for k in range(per_epoch)]
        if by_steps:  # global step s = e * per_epoch + k: a range may run into the next epoch
            steps = [(e * per_epoch + a, e * per_epoch + b) for e, a, b in wanted]
            left_out = {
                (e, k) for e, k in positions if any(a <= e * per_epoch + k < b for a, b in steps)
            }
        else:
            left_out = {(e, k) for e, k in positions if skipped(e, k, wanted)}
        kept = [at for at in positions if at not in left_out]
        expected = [batch for batch, at in zip(full, positions, strict=True) if at not in left_out]
        got: list[tuple[int, torch.Tensor]] = []
        at_positions = []
        state = loader.state_dict() if stop_after == 0 else None
        for item in passes(loader):
            got.append(item)
            at_positions.append(loader.last_position)
            if len(got) == stop_after:
                state = loader.state_dict()
        assert same(got, expected)
        assert at_positions == kept, "last_position names each batch's own position"
        if state is None:
            return
        assert state["skip"] == [list(r) for r in loader.skipped]
        resumed = build(kind, scope)
        resumed.load_state_dict(state)  # the skip list comes with the state
        assert same(got[stop_after:], list(passes(resumed)))


@pytest.mark.parametrize("in_order", [True, False])
def test_skipping_with_workers_and_a_resume_mid_epoch(in_order: bool) -> None:
    full = list(build("shuffle", num_workers=2))
    loader = build("shuffle", num_workers=2, in_order=in_order)
    loader.skip_batches(0, 1, 3)
    it = iter(loader)
    got = [next(it), next(it)]  # positions 0 and 3
    state = loader.state_dict()
    got += list(it)
    assert state["skip"] == [[0, 1, 3]]
    resumed = build("shuffle", num_workers=2, in_order=in_order)
    resumed.load_state_dict(state)
    rest = list(resumed)
    kept = [full[k] for k in (0, 3, 4, 5)]
    key = lambda t: t[0, 0].item()
    if in_order:
        assert all(torch.equal(a, b) for a, b in zip(got, kept, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(rest, kept[2:], strict=True))
    else:  # the same batches, perhaps in another order
        assert sorted(map(key, got)) == sorted(map(key, kept))
        assert {key(b) for b in got[:2]} | {key(b) for b in rest} == {key(b) for b in kept}


def test_skip_steps_names_batches_across_epochs_and_the_list_is_merged() -> None:
    loader = build("shuffle")
    loader.skip_steps(4, 9)  # 6 batches an epoch: batches 4-5 of epoch 0, 0-2 of epoch 1
    loader.skip_batches(1, 3)
    loader.skip_batches(0, 0, 2)
    assert loader.skipped == [(0, 0, 2), (0, 4, 6), (1, 0, 4)]


def test_skipping_batches_of_the_running_epoch_is_refused_and_others_are_not() -> None:
    loader = build("shuffle")
    it = iter(loader)
    next(it)
    with pytest.raises(ConfigError) as raised:
        loader.skip_batches(0, 3)
    assert str(raised.value) == (
        "cannot skip batches of epoch 0 while a pass over it runs: its batches are already "
        "being handed out. Call skip_batches or skip_steps before iterating the epoch "
        "(after load_state_dict, or between epochs)"
    )
    with pytest.raises(ConfigError, match=r"^cannot skip batches of epoch 0 while"):
        loader.skip_steps(5, 8)  # steps 5 of epoch 0 and 6-7 (epoch 1): none is added
    loader.skip_batches(1, 3)
    assert len(list(it)) == 5
    assert loader.skipped == [(1, 3, 4)]


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((0, 3, 3), ValueError, "stop must be greater than start=3, got 3"),
        ((0, -1), ValueError, "start must be in [0, 9223372036854775808), got -1"),
        ((-1, 0), ValueError, "epoch must be in [0, 4294967296), got -1"),
        ((0, 1.5), TypeError, "start must be an int, got 1.5 of type float"),
    ],
)
def test_bad_ranges_are_refused_by_name(args: Any, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        build("shuffle").skip_batches(*args)
    assert str(raised.value) == message


def test_an_older_state_loads_with_nothing_skipped() -> None:
    loader = build("shuffle")
    state = {**loader.state_dict(), "version": 3}
    del state["skip"]
    assert upgrade(state)["skip"] == []
    loader.load_state_dict(state)
    assert loader.skipped == []


def test_last_position_is_refused_where_batches_arrive_out_of_order() -> None:
    loader = build("shuffle", num_workers=2, in_order=False)
    assert loader.last_position is None
    it = iter(loader)
    next(it)
    with pytest.raises(ConfigError) as raised:
        _ = loader.last_position
    list(it)  # run the pass out: its workers stop now, not in a later garbage collection
    assert str(raised.value) == (
        "last_position is not known with in_order=False: batches arrive in the order "
        "workers finish them. Use in_order=True, or read get_context().batch_index in the "
        "dataset"
    )


class Huge(torch.utils.data.Dataset[torch.Tensor]):
    """10**10 samples, each its own index: nothing stored."""

    def __len__(self) -> int:
        return 10**10

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index])


@pytest.mark.parametrize("shard", [False, True])
def test_a_huge_skipped_range_and_a_batch_deep_in_a_huge_epoch_cost_no_walk(shard: bool) -> None:
    # 10**10 samples, 3.1 * 10**8 batches: walking a skipped range or the batches before
    # one asked for would take minutes; computing them takes microseconds.
    def build_huge() -> Any:
        return ReproLoader(Huge(), batch_size=32, shuffle=True, shard=shard, seed=9)

    loader = build_huge()
    last = len(loader) - 1  # 312,499,999
    loader.skip_batches(0, 0, last - 1)
    first, second = list(loader)
    assert loader.last_position == (0, last)
    assert torch.equal(first, loader.batch_at(0, last - 1))
    assert torch.equal(second, build_huge().batch_at(0, last))
    deep = 10**8 + 5
    assert (
        loader.indices_at(0, deep) == loader.sampler.indices(0, 32 * deep, 32 * deep + 32).tolist()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"dataset": Stream(20)},
            (
                "cannot skip batches exactly: the dataset is an IterableDataset, whose batches "
                "are cut from each worker's stream as it runs: leaving one out would not move the "
                "others' samples. Filter the samples in the dataset, or use a map-style dataset"
            ),
        ),
        (
            {"dataset": AllSources(N), "rng_scope": "worker"},
            (
                "cannot skip batches exactly: rng_scope='worker' continues one stream per worker "
                "from batch to batch, so leaving a batch out changes the random values of the "
                "batches its worker makes after it. Use rng_scope='batch' or 'sample'"
            ),
        ),
    ],
    ids=["iterable", "worker-scope"],
)
def test_skipping_is_refused_where_it_would_change_the_batches_kept(
    kwargs: dict[str, Any], message: str
) -> None:
    loader = ReproLoader(batch_size=BS, seed=3, **kwargs)
    with pytest.raises(ConfigError) as raised:
        loader.skip_steps(2)
    assert str(raised.value) == message
    assert loader.skipped == []


class Stateful(AllSources):
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def test_skipping_batches_of_a_dataset_with_its_own_state_warns() -> None:
    loader = ReproLoader(Stateful(N), batch_size=BS, seed=3)
    with pytest.warns(
        UserWarning,
        match=r"^skipping batches of a dataset with its own state_dict \(Stateful\): the batches kept are exact only if its items do not depend on that state",
    ):
        loader.skip_batches(0, 1)
    assert loader.skipped == [(0, 1, 2)]
