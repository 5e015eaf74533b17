"""The shuffle: the keyed bijection (a permutation, well spread, O(batch) to evaluate) and
the exact order of small datasets."""

from __future__ import annotations

import pickle
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset

from reproloader import ReproLoader, SeededRandomSampler
from reproloader._runtime.shuffle import (
    BLOCK,
    EXACT_MAX,
    MAX_N,
    EpochOrders,
    Shuffle,
    exact_order,
    permuted,
    round_keys,
)
from reproloader.seeding import Purpose, SeedTree

PRIMES = [3, 5, 7, 11, 13, 97, 101, 127, 257, 509, 1009, 2039, 4093]
POWERS = [2**k for k in range(13)]
NEAR_POWERS = [2**k + d for k in range(2, 13) for d in (-1, 1)]
SMALL = sorted({1, 2, *range(1, 65), *PRIMES, *POWERS, *NEAR_POWERS, 3000, 4999, 6561})

seeds = st.integers(0, 2**128 - 1)
epochs = st.integers(0, 2**32 - 1)


def keys(seed: int = 0, epoch: int = 0) -> Any:
    return round_keys(SeedTree(seed).node(Purpose.SHUFFLE, epoch))


def order(n: int, seed: int = 0, epoch: int = 0) -> Any:
    return permuted(n, keys(seed, epoch), np.arange(n))


@pytest.mark.parametrize("seed", [0, 1, 2**128 - 1])
def test_every_small_n_gives_a_permutation(seed: int) -> None:
    for n in SMALL:
        got = order(n, seed)
        assert got.dtype == np.int64
        assert np.array_equal(np.sort(got), np.arange(n)), n


def test_empty_domain_gives_nothing() -> None:
    assert order(0).tolist() == []
    assert Shuffle(0, keys()).indices(0, 0).tolist() == []


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), seed=seeds, epoch=epochs)
def test_is_a_bijection_for_any_n_and_seed(n: int, seed: int, epoch: int) -> None:
    assert np.array_equal(np.sort(order(n, seed, epoch)), np.arange(n))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1000, 30000), seed=seeds, epoch=epochs)
def test_positions_do_not_predict_indices(n: int, seed: int, epoch: int) -> None:
    got = order(n, seed, epoch).astype(np.float64)
    positions = np.arange(n, dtype=np.float64)
    # A random permutation's correlation has standard deviation 1 / sqrt(n - 1).
    assert abs(np.corrcoef(positions, got)[0, 1]) < 6 / np.sqrt(n)
    # Consecutive outputs are as far apart as two random indices: n / 3 on average
    # (standard deviation of the mean about 0.24 n / sqrt(n)).
    spread = np.abs(np.diff(got)).mean() / n
    assert abs(spread - 1 / 3) < 2 / np.sqrt(n)
    assert abs(np.corrcoef(got[:-1], got[1:])[0, 1]) < 6 / np.sqrt(n)
    # Every tenth of the positions takes its indices evenly from every tenth of [0, n).
    cells = np.histogram2d(positions * 10 // n, got * 10 // n, bins=10)[0]
    expected = n / 100
    chi2 = ((cells - expected) ** 2 / expected).sum()
    assert chi2 < 81 + 6 * np.sqrt(2 * 81)  # 81 degrees of freedom, six standard deviations


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1000, 20000), seed=seeds, epoch=st.integers(0, 2**32 - 2))
def test_epochs_and_seeds_give_different_orders(n: int, seed: int, epoch: int) -> None:
    base = order(n, seed, epoch)
    others = [order(n, seed, epoch + 1), order(n, (seed + 1) % 2**128, epoch)]
    for other in others:
        # Two random permutations agree at about one position.
        assert (base == other).sum() < 20


def test_order_is_a_pure_function_of_seed_epoch_and_n() -> None:
    n = EXACT_MAX + 100  # the Feistel's
    assert order(n, 7, 3).tolist() == order(n, 7, 3).tolist()
    assert order(n, 7, 3).tolist() == SeedTree(7).permutation(3, n).tolist()
    assert order(n, 7, 3).tolist() != order(n + 1, 7, 3)[:n].tolist()
    small = SeedTree(7).permutation(3, 1000).tolist()  # an exact order
    assert small == exact_order(SeedTree(7).node(Purpose.SHUFFLE, 3), 1000).tolist()
    assert small == SeededRandomSampler(range(1000), seed=7).permutation(3).tolist()
    assert small != SeedTree(7).permutation(3, 1001)[:1000].tolist()


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 3 * BLOCK),
    bounds=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    seed=seeds,
)
def test_any_stretch_equals_the_whole_order_sliced(
    n: int, bounds: tuple[float, float], seed: int
) -> None:
    start, stop = sorted(int(b * n) for b in bounds)
    full = order(n, seed)
    shuffle = Shuffle(n, keys(seed))
    assert shuffle.indices(start, stop).tolist() == full[start:stop].tolist()
    assert shuffle.indices(0, n).tolist() == full.tolist()  # one call longer than a block


def test_cached_blocks_are_read_only_and_bounded() -> None:
    shuffle = Shuffle(10 * BLOCK, keys())
    for k in range(0, 9 * BLOCK, 1000):
        shuffle.indices(k, k + 1000)
    assert not shuffle.indices(BLOCK, BLOCK + 10).flags.writeable
    assert len(shuffle._blocks) <= 2


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(
        ValueError, match=r"positions must be in \[0, 10\), got values in \[3, 10\]"
    ):
        permuted(10, keys(), np.array([3, 10]))
    with pytest.raises(ValueError, match=r"n must be in \[0, 4611686018427387904\], got -1"):
        Shuffle(-1, keys())
    with pytest.raises(ValueError, match=r"need 0 <= start <= stop <= 5, got 4, 6"):
        Shuffle(5, keys()).indices(4, 6)
    assert permuted(MAX_N, keys(), np.array([MAX_N - 1])).item() < MAX_N


def test_epoch_orders_keep_the_last_epoch_and_pickle_without_blocks() -> None:
    tree = SeedTree(3)
    orders = EpochOrders(lambda epoch: tree.node(Purpose.SHUFFLE, epoch))
    first = orders.get(2, 100)
    assert orders.get(2, 100) is first
    assert orders.get(3, 100) is not first
    assert orders.get(3, 100).indices(0, 100).tolist() == SeedTree(3).permutation(3, 100).tolist()
    sampler = SeededRandomSampler(range(100), seed=3)
    sampler.indices(0, 0, 10)
    copy = pickle.loads(pickle.dumps(sampler))
    assert copy._orders._last is None
    assert list(copy) == list(sampler)


class Indices(Dataset[int]):
    """Item i is i; no storage, any length."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def test_a_batch_deep_in_a_huge_epoch_is_computed_without_building_the_epoch() -> None:
    n, bs, k = 10**10, 16, 5 * 10**8
    sampler = SeededRandomSampler(Indices(n), seed=11)
    tracemalloc.start()
    try:
        batch = sampler.indices(0, k * bs, (k + 1) * bs)
        first = next(iter(ReproLoader(Indices(n), batch_size=32, shuffle=True, seed=11)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(set(batch.tolist())) == bs
    assert all(0 <= i < n for i in batch.tolist())
    assert first.tolist() == sampler.indices(0, 0, 32).tolist()
    assert peak < 16 * 2**20  # a block of indices, not 80 GB of them


def test_the_loader_never_builds_a_whole_permutation(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loader built a whole permutation")

    monkeypatch.setattr(SeededRandomSampler, "permutation", refuse)
    monkeypatch.setattr(SeedTree, "permutation", refuse)
    expected = SeededRandomSampler(range(50), seed=4).order(0).indices(0, 50).tolist()
    loader = ReproLoader(Indices(50), batch_size=8, shuffle=True, seed=4)
    assert [i for b in loader for i in b.tolist()] == expected
    per_sample = ReproLoader(Indices(50), batch_size=None, shuffle=True, seed=4)
    assert [int(i) for i in per_sample] == expected
    interrupted = ReproLoader(Indices(50), batch_size=8, shuffle=True, seed=4)
    next(iter(interrupted))
    state = interrupted.state_dict()
    resumed = ReproLoader(Indices(50), batch_size=8, shuffle=True, seed=4)
    resumed.load_state_dict(state)
    assert [i for b in resumed for i in b.tolist()] == expected[8:]
