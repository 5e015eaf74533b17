from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch

from reproloader._runtime.discovery import find_rngs
from reproloader._runtime.rngs import AttributeRngs, GlobalRngs, LegacyState, PythonRandomState

ALL = frozenset({"numpy", "random", "torch"})


def legacy_state(rs: np.random.RandomState) -> tuple[bytes, int, int, float]:
    _, key, pos, has_gauss, gauss = rs.get_state()
    return key.tobytes(), pos, has_gauss, gauss


def words(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**63, n, dtype=np.uint64)


@pytest.mark.parametrize("cached_gauss", [False, True])
@pytest.mark.parametrize("fast", [True, False])
def test_legacy_save_restore_is_exact(cached_gauss: bool, fast: bool) -> None:
    rs = np.random.RandomState(5)
    if cached_gauss:
        rs.standard_normal()
    legacy = LegacyState(rs, raw=fast)
    assert legacy.fast == fast
    before = legacy_state(rs)
    snapshot = legacy.save()
    legacy.reseed(words(312))
    rs.standard_normal(3)
    legacy.restore(snapshot)
    assert legacy_state(rs) == before


def test_legacy_fast_and_slow_reseed_agree() -> None:
    a, b = np.random.RandomState(0), np.random.RandomState(1)
    a.standard_normal()  # a cached deviate that reseeding must clear
    fast, slow = LegacyState(a), LegacyState(b, raw=False)
    assert fast.fast
    assert not slow.fast
    fast.reseed(words(312))
    slow.reseed(words(312))
    assert legacy_state(a) == legacy_state(b)
    assert a.standard_normal(5).tolist() == b.standard_normal(5).tolist()


def test_legacy_reseed_fills_the_whole_state() -> None:
    rs = np.random.RandomState(0)
    LegacyState(rs).reseed(words(312))
    key, pos, has_gauss, _ = legacy_state(rs)
    assert np.frombuffer(key, np.uint32)[1:].tolist() == words(312).view(np.uint32)[1:].tolist()
    assert (pos, has_gauss) == (624, 0)


def test_python_fast_and_slow_reseed_agree() -> None:
    a, b = random.Random(0), random.Random(1)
    a.gauss(0, 1)  # a cached deviate that reseeding must clear
    fast, slow = PythonRandomState(a), PythonRandomState(b, raw=False)
    assert fast.fast
    assert not slow.fast
    fast.reseed(words(312))
    slow.reseed(words(312))
    assert a.getstate() == b.getstate()
    assert [a.random() for _ in range(700)] == [b.random() for _ in range(700)]


@pytest.mark.parametrize("fast", [True, False])
def test_python_reseed_fills_the_whole_state_as_numpy_seeds_its_own(fast: bool) -> None:
    rng = _stirred(4, True)  # drawn from, a gauss deviate cached
    PythonRandomState(rng, raw=fast).reseed(words(312))
    version, internal, gauss_next = rng.getstate()
    expected = words(312).view(np.uint32).tolist()
    expected[0] = 0x80000000
    assert (version, list(internal), gauss_next) == (3, [*expected, 624], None)
    # numpy's MT19937 from the same 624 words (after its own seeding's rule for the
    # first) draws the same 32-bit numbers: the two twisters are one algorithm.
    mt = np.random.MT19937(0)
    mt.state = {
        "bit_generator": "MT19937",
        "state": {"key": np.array(expected, np.uint32), "pos": 624},
    }
    assert [rng.getrandbits(32) for _ in range(1000)] == mt.random_raw(1000).tolist()


def test_global_rngs_reseed_all_three_deterministically() -> None:
    rngs = GlobalRngs(ALL)
    rngs.reseed(words(rngs.n_words))
    first = (random.random(), np.random.random(), torch.rand(()).item())
    rngs.reseed(words(rngs.n_words))
    assert (random.random(), np.random.random(), torch.rand(()).item()) == first


def test_each_global_rng_keeps_its_words_whatever_the_others() -> None:
    w = words(627)
    GlobalRngs(ALL).reseed(w)
    both = (random.random(), torch.rand(()).item())
    GlobalRngs(frozenset({"random", "torch"})).reseed(w)
    assert (random.random(), torch.rand(()).item()) == both


@pytest.mark.parametrize("name", sorted(ALL))
def test_each_global_rng_alone_is_reseeded(name: str) -> None:
    rngs = GlobalRngs(frozenset({name}))
    draw = {
        "random": random.random,
        "numpy": np.random.random,
        "torch": lambda: torch.rand(()).item(),
    }[name]
    rngs.reseed(words(rngs.n_words))
    first = draw()
    rngs.reseed(words(rngs.n_words))
    assert draw() == first
    rngs.reseed(words(rngs.n_words, seed=1))
    assert draw() != first


def test_disabled_global_rng_is_not_touched() -> None:
    rngs = GlobalRngs(frozenset({"torch"}))
    state = random.getstate()
    np_state = legacy_state(np.random.mtrand._rand)
    rngs.reseed(words(rngs.n_words))
    assert random.getstate() == state
    assert legacy_state(np.random.mtrand._rand) == np_state
    assert GlobalRngs(frozenset()).n_words == 0


def test_global_save_restore_round_trips() -> None:
    rngs = GlobalRngs(ALL)
    before = (random.getstate(), torch.get_rng_state(), legacy_state(np.random.mtrand._rand))
    snapshot = rngs.save()
    rngs.reseed(words(rngs.n_words))
    rngs.restore(snapshot)
    assert random.getstate() == before[0]
    assert torch.equal(torch.get_rng_state(), before[1])
    assert legacy_state(np.random.mtrand._rand) == before[2]


def test_unknown_global_rng_name_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown global RNG names \['jax'\]"):
        GlobalRngs(frozenset({"jax"}))


class Augment:
    def __init__(self) -> None:
        self.rng = np.random.default_rng(1)


class Holder:
    def __init__(self) -> None:
        self.gen = np.random.default_rng(0)
        self.legacy = np.random.RandomState(0)
        self.py = random.Random(0)
        self.torch_gen = torch.Generator().manual_seed(0)
        self.transforms = [Augment(), "text", 3]
        self.alias = self.gen  # reported once, under its first path
        self.global_random = random._inst  # type: ignore[attr-defined]
        self.table = {"aug": Augment()}


def test_find_rngs_terminates_on_cycles_and_reports_each_object_once() -> None:
    reads: Counter[int] = Counter()

    class Node:
        def __getattribute__(self, name: str) -> Any:
            if name == "__dict__":
                reads[id(self)] += 1
            return object.__getattribute__(self, name)

    root, child = Node(), Node()
    gen = np.random.default_rng(0)
    root.loop = root  # type: ignore[attr-defined]
    root.child = child  # type: ignore[attr-defined]
    root.rng = gen  # type: ignore[attr-defined]
    child.parent = root  # type: ignore[attr-defined]
    child.rng = gen  # type: ignore[attr-defined]
    child.again = [root, child, (root, child), gen]  # type: ignore[attr-defined]
    found = find_rngs(root, "d")
    assert len(found) == 1, found
    assert found[0][1] is gen
    assert set(reads) == {id(root), id(child)}
    assert max(reads.values()) == 1, "each object's attributes are walked once, cycles or not"


def test_attribute_rngs_of_one_kind_get_distinct_words() -> None:
    class Three:
        def __init__(self) -> None:
            self.a, self.b, self.c = (np.random.default_rng(0) for _ in range(3))
            self.p, self.q, self.r = (random.Random(0) for _ in range(3))

    holder = Three()
    found = AttributeRngs(find_rngs(holder, "d"))
    found.reseed(words(found.n_words))
    assert len({holder.a.random(), holder.b.random(), holder.c.random()}) == 3
    assert len({holder.p.random(), holder.q.random(), holder.r.random()}) == 3


def test_attribute_rngs_reseed_in_place_and_repeat() -> None:
    holder = Holder()
    found = AttributeRngs(find_rngs(holder, "dataset"))
    gen = holder.gen
    found.reseed(words(found.n_words))
    first = [
        holder.gen.random(),
        holder.legacy.random(),
        holder.py.random(),
        torch.rand((), generator=holder.torch_gen).item(),
        holder.transforms[0].rng.random(),
    ]
    found.reseed(words(found.n_words))
    again = [
        holder.gen.random(),
        holder.legacy.random(),
        holder.py.random(),
        torch.rand((), generator=holder.torch_gen).item(),
        holder.transforms[0].rng.random(),
    ]
    assert holder.gen is gen
    assert first == again
    found.reseed(words(found.n_words, seed=1))
    assert holder.gen.random() != first[0]


@pytest.mark.parametrize(
    "bit_generator",
    [np.random.PCG64, np.random.PCG64DXSM, np.random.Philox, np.random.SFC64, np.random.MT19937],
)
def test_every_numpy_bit_generator_can_be_reseeded(bit_generator: type) -> None:
    class Owner:
        rng = None

    owner = Owner()
    owner.rng = np.random.Generator(bit_generator(0))  # type: ignore[assignment]
    found = AttributeRngs(find_rngs(owner, "o"))
    found.reseed(words(found.n_words))
    first = owner.rng.random(2).tolist()  # type: ignore[union-attr]
    found.reseed(words(found.n_words))
    assert owner.rng.random(2).tolist() == first  # type: ignore[union-attr]


# -- python random through raw memory -------------------------------------------


def _stirred(seed: int, gauss: bool) -> random.Random:
    rng = random.Random(seed)
    for _ in range(700):  # past one regeneration of the 624 words
        rng.random()
    if gauss:
        rng.gauss(0.0, 1.0)  # leaves gauss_next cached
    return rng


def test_python_random_raw_path_is_found_on_cpython() -> None:
    assert PythonRandomState(random.Random(0)).fast
    assert not PythonRandomState(random.Random(0), raw=False).fast


@pytest.mark.parametrize("gauss", [False, True])
@pytest.mark.parametrize("raw", [True, False])
def test_python_random_save_restore_is_byte_exact(gauss: bool, raw: bool) -> None:
    rng = _stirred(3, gauss)
    state = PythonRandomState(rng, raw=raw)
    before = rng.getstate()
    assert (before[2] is not None) == gauss
    snapshot = state.save()
    assert rng.getstate() == before  # saving does not move it
    rng.seed(99)
    rng.gauss(0.0, 1.0)
    state.restore(snapshot)
    assert rng.getstate() == before
    assert rng.gauss(0.0, 1.0) == _stirred(3, gauss).gauss(0.0, 1.0)


def test_python_random_plain_snapshots_are_getstate() -> None:
    rng = _stirred(5, True)
    fast, slow = PythonRandomState(rng), PythonRandomState(rng, raw=False)
    plain = fast.to_plain(fast.save())
    assert plain == slow.to_plain(slow.save())
    assert plain == [3, list(rng.getstate()[1]), rng.getstate()[2]]
    rng.seed(0)
    fast.restore(fast.from_plain(plain))
    assert [3, list(rng.getstate()[1]), rng.getstate()[2]] == plain


def test_python_random_raw_write_reaches_the_global_instance() -> None:
    rngs = GlobalRngs(frozenset({"random"}))
    before = random.getstate()
    snapshot = rngs.save()
    rngs.reseed(words(rngs.n_words))
    reseeded = random.getstate()
    assert reseeded != before
    rngs.restore(snapshot)
    assert random.getstate() == before
    expected = random.Random()
    PythonRandomState(expected, raw=False).reseed(words(rngs.n_words)[3 + 312 :])
    rngs.reseed(words(rngs.n_words))
    assert random.getstate() == expected.getstate() == reseeded


@pytest.mark.parametrize("cached_gauss", [False, True])
def test_legacy_plain_snapshots_agree_fast_and_slow(cached_gauss: bool) -> None:
    rs = np.random.RandomState(7)
    rs.random_sample(700)
    if cached_gauss:
        rs.standard_normal()
    fast, slow = LegacyState(rs), LegacyState(rs, raw=False)
    plain = fast.to_plain(fast.save())
    fast.restore(fast.from_plain(plain))
    assert plain == slow.to_plain(slow.save())
    expected = rs.get_state()
    assert plain["pos"] == expected[2]
    assert plain["key"] == expected[1].tolist()
    assert plain["gauss"] == (expected[4] if cached_gauss else None)


def test_legacy_states_of_the_global_share_what_they_know_of_its_cache() -> None:
    """One LegacyState putting back a cached deviate is seen by another's next save."""
    rs = np.random.mtrand._rand
    first, second = LegacyState(rs), LegacyState(rs)
    second.restore(second.save())  # second has now seen this state with an empty cache
    plain = first.to_plain(first.save())
    first.restore(first.from_plain({**plain, "gauss": 0.5}))  # same state, a cached 0.5
    before = legacy_state(rs)
    snapshot = second.save()
    second.reseed(words(312))
    reseeded = np.random.RandomState(0)
    LegacyState(reseeded).reseed(words(312))
    assert rs.standard_normal() == reseeded.standard_normal()  # not the cached 0.5
    second.restore(snapshot)
    assert legacy_state(rs) == before
    assert rs.standard_normal() == 0.5
