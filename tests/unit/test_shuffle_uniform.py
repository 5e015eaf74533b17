"""Shuffles are uniform at every size: exact for small n, like numpy's permutation for large n.

The draws are fixed (seeds ``0 .. N - 1``), so these tests are deterministic: each
statistic is computed once, and the thresholds are those of a test at p = 0.001.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import numpy.typing as npt
import pytest

from reproloader import ReproLoader, SeededRandomSampler
from reproloader._runtime import shuffle as shuffle_module
from reproloader._runtime.shuffle import EXACT_MAX, Shuffle, epoch_order, exact_order
from reproloader.distributed import ShardedSampler
from reproloader.seeding import Purpose, SeedTree

Z_999 = 3.090232306167813
"""The standard normal quantile of 0.999: a one-sided test at p = 0.001."""


def chi2_critical(df: int, z: float = Z_999) -> float:
    """The chi-square quantile at the normal quantile ``z``: Wilson and Hilferty (1931).

    ``(X / df) ** (1/3)`` is nearly normal with mean ``1 - 2 / (9 df)`` and variance
    ``2 / (9 df)``. At p = 0.001 it gives 11.16 for df=1 (tables: 10.83), 20.79 for df=5
    (20.52), 49.8 for df=23 (49.73) and is closer still for more degrees of freedom:
    slightly lenient only where the exact order cannot be biased anyway (n=2).
    """
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def order_of(n: int, seed: int) -> tuple[int, ...]:
    # What SeededRandomSampler(range(n), seed=seed).permutation(0) gives, without the sampler.
    return tuple(epoch_order(SeedTree(seed).node(Purpose.SHUFFLE, 0), n).indices(0, n).tolist())


def permutation_chi2(n: int, draws: int) -> tuple[float, int]:
    """Pearson's chi-square of the orders of ``range(n)`` over seeds ``0 .. draws - 1``."""
    counts = Counter(order_of(n, seed) for seed in range(draws))
    cells = math.factorial(n)
    expected = draws / cells
    chi2 = sum(
        (counts.get(p, 0) - expected) ** 2 / expected for p in itertools.permutations(range(n))
    )
    return chi2, cells - 1


@pytest.mark.parametrize("n", range(2, 9))
def test_every_order_of_a_small_dataset_is_equally_likely(n: int) -> None:
    # 10 draws per order up to n=7 (5,040 orders), 1 per order for n=8 (40,320): with
    # that many cells Pearson's statistic is still near chi-square (mean df, variance
    # about 2 df). Version 3's Feistel gave n=5 a chi-square of 1,806 on 119 df.
    cells = math.factorial(n)
    chi2, df = permutation_chi2(n, max(10 * cells, 1000) if n < 8 else cells)
    assert chi2 < chi2_critical(df), f"n={n}: chi-square {chi2:.1f} on {df} df"


def test_the_sampler_gives_the_order_the_test_counts() -> None:
    for n, seed in ((5, 3), (8, 11)):
        sampler = SeededRandomSampler(range(n), seed=seed)
        assert tuple(sampler.permutation(0).tolist()) == order_of(n, seed)


def test_orders_up_to_the_exact_size_are_exact_and_above_it_keyed_bijections() -> None:
    for n in (0, 1, 2, 100, EXACT_MAX):
        order = epoch_order(SeedTree(1).node(Purpose.SHUFFLE, 0), n)
        assert order.exact
        assert sorted(order.indices(0, n).tolist()) == list(range(n))
    above = epoch_order(SeedTree(1).node(Purpose.SHUFFLE, 0), EXACT_MAX + 1)
    assert not above.exact
    assert sorted(above.indices(0, EXACT_MAX + 1).tolist()) == list(range(EXACT_MAX + 1))


def test_an_exact_order_is_read_only_and_any_stretch_of_it_is_its_slice() -> None:
    node = SeedTree(4).node(Purpose.SHUFFLE, 2)
    whole = exact_order(node, 1000)
    assert not whole.flags.writeable
    order = Shuffle(1000, None, whole=whole)
    for start, stop in ((0, 1000), (0, 1), (999, 1000), (17, 560), (300, 300)):
        assert order.indices(start, stop).tolist() == whole[start:stop].tolist()
    with pytest.raises(ValueError, match=r"need 0 <= start <= stop <= 1000, got 990, 1001"):
        order.indices(990, 1001)
    with pytest.raises(ValueError, match=r"n must be in \[0, 8192\] for an exact order, got 8193"):
        exact_order(node, EXACT_MAX + 1)
    with pytest.raises(ValueError, match="Shuffle needs either keys or a whole order of 5"):
        Shuffle(5, None)


class _TiedFirst:
    """A PCG64 stand-in whose first draw has a tie: the order must come from the second."""

    def __init__(self, node: object) -> None:
        self.draws = [np.array([5, 5, 1], dtype=np.uint64), np.array([3, 1, 2], dtype=np.uint64)]

    def random_raw(self, n: int) -> npt.NDArray[np.uint64]:
        return self.draws.pop(0)


def test_tied_words_are_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # Ranking tied words would favour the lower index: such a draw is rejected whole.
    monkeypatch.setattr(shuffle_module.np.random, "PCG64", _TiedFirst)
    assert exact_order(SeedTree(0).node(Purpose.SHUFFLE, 0), 3).tolist() == [1, 2, 0]


def test_sharded_and_loader_orders_are_the_exact_order() -> None:
    n = 40
    expected = SeededRandomSampler(range(n), seed=9).permutation(1).tolist()
    sharded = ShardedSampler(range(n), seed=9, shuffle=True, batch_size=4, drop_last=False)
    assert sharded.order(1).tolist() == expected
    loader = ReproLoader(list(range(n)), batch_size=8, shuffle=True, seed=9)
    loader.set_epoch(1)
    assert [i for batch in loader for i in batch.tolist()] == expected


# Large n: the Feistel order against numpy's permutation, on what training sees.
N_LARGE = 3 * EXACT_MAX + 5
SEEDS_LARGE = 12


def _statistics(order: npt.NDArray[np.int64]) -> tuple[float, float, int]:
    """(classes per batch of 32 of a class-sorted dataset of 10 classes, of a
    class-interleaved one, fixed points)."""
    n = len(order)
    batches = order[: n - n % 32].reshape(-1, 32)
    sorted_classes = batches * 10 // n
    interleaved = batches % 10
    distinct = [
        float(np.mean([len(np.unique(b)) for b in c])) for c in (sorted_classes, interleaved)
    ]
    return distinct[0], distinct[1], int((order == np.arange(n)).sum())


def test_a_large_order_mixes_batches_as_numpys_permutation_does() -> None:
    ours = np.array(
        [
            _statistics(SeededRandomSampler(range(N_LARGE), seed=s).permutation(0))
            for s in range(SEEDS_LARGE)
        ]
    )
    theirs = np.array(
        [_statistics(np.random.default_rng(s).permutation(N_LARGE)) for s in range(SEEDS_LARGE)]
    )
    for column in (0, 1):  # mean classes per batch: within 4 standard errors of numpy's
        a, b = ours[:, column], theirs[:, column]
        error = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / SEEDS_LARGE)
        assert abs(a.mean() - b.mean()) < 4 * error + 1e-3, (column, a.mean(), b.mean())
    # Fixed points: about Poisson(1) per order for both (sum below 12 + 4 * sqrt(12)).
    assert ours[:, 2].sum() < SEEDS_LARGE + 4 * math.sqrt(SEEDS_LARGE)


def test_a_large_order_has_no_lag_correlation() -> None:
    order = SeededRandomSampler(range(N_LARGE), seed=5).permutation(0).astype(np.float64)
    bound = 4.5 / math.sqrt(N_LARGE)  # a random permutation's correlations: sd 1 / sqrt(n)
    for lag in (1, 2, 3, 5, 8, 32, 1000):
        assert abs(np.corrcoef(order[:-lag], order[lag:])[0, 1]) < bound, lag
