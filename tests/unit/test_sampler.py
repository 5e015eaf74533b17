from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import RandomSampler

from reproloader import SeededRandomSampler
from reproloader._runtime.cursor import Pass
from reproloader._runtime.shuffle import BLOCK
from reproloader._runtime.units import UnitSampler


def test_is_a_random_sampler_for_framework_checks() -> None:
    assert isinstance(SeededRandomSampler(range(4), seed=0), RandomSampler)


def test_order_is_a_function_of_seed_and_epoch_only() -> None:
    sampler = SeededRandomSampler(range(50), seed=1)
    first = list(sampler)
    torch.rand(10)  # global RNG use in between changes nothing
    assert list(sampler) == first
    assert sorted(first) == list(range(50))
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert list(SeededRandomSampler(range(50), seed=1, epoch=1)) == list(sampler)
    assert list(SeededRandomSampler(range(50), seed=2)) != first


def test_len_and_repr() -> None:
    sampler = SeededRandomSampler(range(7), seed=3, epoch=2)
    assert len(sampler) == 7
    assert repr(sampler) == "SeededRandomSampler(n=7, seed=3, epoch=2)"


@pytest.mark.parametrize(
    ("epoch", "error"), [(-1, ValueError), (2**32, ValueError), (1.0, TypeError)]
)
def test_bad_epoch_raises(epoch: object, error: type) -> None:
    with pytest.raises(error, match="epoch must be"):
        SeededRandomSampler(range(3), seed=0).set_epoch(epoch)  # type: ignore[arg-type]


def test_bad_epoch_type_is_named() -> None:
    with pytest.raises(TypeError, match="epoch must be an int, got '1' of type str"):
        SeededRandomSampler(range(3), seed=0).set_epoch("1")  # type: ignore[arg-type]


def test_permutation_of_another_epoch_leaves_the_current_one() -> None:
    sampler = SeededRandomSampler(range(50), seed=1)
    current = list(sampler)
    later = SeededRandomSampler(range(50), seed=1, epoch=3)
    assert sampler.permutation(3).tolist() == list(later) != current
    assert sampler.epoch == 0
    assert sampler.permutation().tolist() == current


class _Cursor:
    def __init__(self, current: Pass) -> None:
        self.current = current


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 3 * BLOCK + 5),
    bs=st.one_of(st.integers(1, 300), st.integers(BLOCK - 2, BLOCK + 3)),
    start_fraction=st.floats(0, 1),
    drop_last=st.booleans(),
    epoch=st.integers(0, 3),
)
def test_shuffled_batches_are_the_epochs_order_cut_from_any_start(
    n: int, bs: int, start_fraction: float, drop_last: bool, epoch: int
) -> None:
    # The unit sampler cuts batches from Python lists of whole blocks of the order:
    # batches across a block's end, starts inside a block, batches longer than a block.
    sampler = SeededRandomSampler(range(n), seed=5)
    count = n // bs if drop_last else -(-n // bs)
    start = int(start_fraction * count)
    units = UnitSampler(
        _Cursor(Pass(epoch=epoch, serial=7, start=start)),  # type: ignore[arg-type]
        None,
        sampler,
        batch_size=bs,
        drop_last=drop_last,
        fast="permutation",
        sampler_rngs=None,
    )
    expected = [
        (epoch, 7, k, sampler.indices(epoch, k * bs, min((k + 1) * bs, n)).tolist())
        for k in range(start, count)
    ]
    assert list(units) == expected
