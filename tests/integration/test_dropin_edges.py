"""Drop-in edges a user meets: copying a loader, a ``shuffle`` that is not a bool.

(Other edges are pinned where their feature is: a changed loader at resume in
``unit/test_state.py``, user samplers and randomness in ``collate_fn`` and
``worker_init_fn`` in ``unit/test_loader.py`` and ``integration/test_workers.py``,
persistent workers at epoch boundaries in ``integration/test_resume_stateful.py``.)
"""

from __future__ import annotations

import copy
import pickle
import re
from typing import Any

import pytest

from reproloader import ConfigError, ReproLoader
from tests.datasets import AllSources, Stream


def values(batches: Any) -> list[list[float]]:
    return [b.tolist() for b in batches]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_loader_copied_mid_epoch_continues_where_it_was(workers: int, how: str) -> None:
    def make() -> ReproLoader[Any]:
        return ReproLoader(AllSources(20), batch_size=4, shuffle=True, seed=3, num_workers=workers)

    def duplicate(loader: ReproLoader[Any]) -> ReproLoader[Any]:
        if how == "deepcopy":
            return copy.deepcopy(loader)
        return pickle.loads(pickle.dumps(loader))  # type: ignore[no-any-return]

    straight = values(make()) + values(make_at(make, 1))
    loader = make()
    it = iter(loader)
    head = [next(it).tolist(), next(it).tolist()]
    copied = duplicate(loader)  # mid-epoch: the copy carries the position
    rest = values(it)
    assert head + rest == straight[:5]
    assert values(copied) == straight[2:5]
    assert values(copied) == straight[5:]  # and then the next epoch
    after_the_epoch = duplicate(loader)  # the original's pass ended
    assert values(after_the_epoch) == straight[5:]
    assert values(duplicate(make())) == straight[:5]  # a fresh loader's copy starts at 0


def make_at(make: Any, epoch: int) -> ReproLoader[Any]:
    loader = make()
    loader.set_epoch(epoch)
    return loader  # type: ignore[no-any-return]


def test_an_iterable_loader_copied_mid_pass_continues_where_it_was() -> None:
    def make() -> ReproLoader[Any]:
        return ReproLoader(Stream(12), batch_size=3, seed=2)

    straight = values(make())
    loader = make()
    it = iter(loader)
    next(it)
    copied = copy.deepcopy(loader)
    assert values(it) == straight[1:]
    assert values(copied) == straight[1:]


@pytest.mark.parametrize("shuffle", ["no", 1, 0.0])
def test_a_shuffle_that_is_not_a_bool_is_refused_by_name(shuffle: Any) -> None:
    # DataLoader reads any truthy value as True: shuffle="no" would shuffle.
    message = (
        f"shuffle must be True, False or None, got {shuffle!r} of type "
        f"{type(shuffle).__name__}; pass shuffle=True or shuffle=False"
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        ReproLoader(AllSources(8), batch_size=2, shuffle=shuffle, seed=0)
