from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reproloader.seeding import MAX_PATH_ELEMENT, MAX_SEED, Lane, Purpose, SeedTree, UnitStreams

paths = st.tuples(st.integers(0, 50), st.integers(0, 3))


def words(
    tree: SeedTree, purpose: Purpose, path: tuple[int, ...], unit: int, lane: Lane
) -> list[int]:
    return UnitStreams().words(tree.key(purpose, *path), unit, lane, 4).tolist()  # type: ignore[no-any-return]


def test_seed_plus_epoch_does_not_collide() -> None:
    # seed 1 at epoch 1 and seed 2 at epoch 0 are different streams (they would
    # be the same stream under seed + epoch).
    assert words(SeedTree(1), Purpose.BATCH, (1, 0), 0, Lane.RNG) != words(
        SeedTree(2), Purpose.BATCH, (0, 0), 0, Lane.RNG
    )


@given(seed=st.integers(0, MAX_SEED - 1), a=paths, b=paths)
def test_distinct_nodes_have_distinct_keys(
    seed: int, a: tuple[int, int], b: tuple[int, int]
) -> None:
    tree = SeedTree(seed)
    if a != b:
        assert tree.key(Purpose.BATCH, *a).tolist() != tree.key(Purpose.BATCH, *b).tolist()


def test_units_and_lanes_are_distinct_streams() -> None:
    tree = SeedTree(0)
    seen = {
        tuple(words(tree, Purpose.BATCH, (0, 0), unit, lane))
        for unit in range(200)
        for lane in Lane
    }
    assert len(seen) == 200 * len(Lane)


def test_key_is_a_pure_function_of_the_path() -> None:
    tree = SeedTree(5)
    fresh = SeedTree(5)
    assert tree.key(Purpose.WORKER, 2, 1).tolist() == fresh.key(Purpose.WORKER, 2, 1).tolist()
    # equal to what spawning down the tree would give
    spawned = np.random.SeedSequence(5, spawn_key=(int(Purpose.WORKER), 2, 1))
    assert tree.key(Purpose.WORKER, 2, 1).tolist() == spawned.generate_state(2, np.uint64).tolist()


def test_cached_keys_are_read_only() -> None:
    key = SeedTree(5).key(Purpose.BATCH, 0, 0)
    with pytest.raises(ValueError, match="read-only"):
        key[0] = 1


def test_seed_tree_pickles_without_its_cache() -> None:
    tree = SeedTree(9)
    tree.key(Purpose.BATCH, 0, 0)
    clone = pickle.loads(pickle.dumps(tree))
    assert clone == tree
    assert clone._keys == {}
    assert repr(clone) == "SeedTree(seed=9)"


@pytest.mark.parametrize("bad", [-1, MAX_SEED])
def test_seed_out_of_range_raises_value_error(bad: int) -> None:
    with pytest.raises(ValueError, match=rf"seed must be in \[0, {MAX_SEED}\), got {bad}"):
        SeedTree(bad)


@pytest.mark.parametrize("bad", [1.5, "3", True, None])
def test_seed_of_wrong_type_raises_type_error(bad: object) -> None:
    message = f"seed must be an int, got {bad!r} of type {type(bad).__name__}"
    with pytest.raises(TypeError, match=re.escape(message)):
        SeedTree(bad)  # type: ignore[arg-type]


def test_trees_are_equal_when_their_seeds_are() -> None:
    assert SeedTree(1) == SeedTree(1)
    assert hash(SeedTree(1)) == hash(SeedTree(1))
    assert SeedTree(1) != SeedTree(2)
    assert SeedTree(1) != 1


def test_keys_are_computed_once_per_tree() -> None:
    # UnitStreams.position relies on it: the same cached array means the same key.
    tree = SeedTree(5)
    assert tree.key(Purpose.BATCH, 0, 0) is tree.key(Purpose.BATCH, 0, 0)
    assert tree.key(Purpose.BATCH, 0, 1) is not tree.key(Purpose.BATCH, 0, 0)


def test_units_use_all_64_bits_of_their_counter_word() -> None:
    # Units above 2**53 (where a float64 counter would round) are still distinct streams.
    streams, key = UnitStreams(), SeedTree(1).key(Purpose.SAMPLE, 0)
    big = 2**53
    words = [streams.words(key, unit, Lane.RNG, 2).tolist() for unit in (big, big + 1, 2**64 - 1)]
    assert len({tuple(w) for w in words}) == 3


def test_path_elements_must_fit_32_bits() -> None:
    with pytest.raises(ValueError, match=rf"path element must be in \[0, {MAX_PATH_ELEMENT}\)"):
        SeedTree(0).key(Purpose.BATCH, MAX_PATH_ELEMENT, 0)


def test_numpy_integers_are_accepted_as_path_elements() -> None:
    tree = SeedTree(0)
    assert tree.node(Purpose.SAMPLE, np.int64(3)).spawn_key == (int(Purpose.SAMPLE), 3)


def test_permutation_is_a_permutation_and_differs_by_epoch() -> None:
    tree = SeedTree(3)
    first, second = tree.permutation(0, 1000), tree.permutation(1, 1000)
    assert sorted(first.tolist()) == list(range(1000))
    assert first.tolist() != second.tolist()
    assert first.tolist() == SeedTree(3).permutation(0, 1000).tolist()


def test_position_moves_a_generator_in_place() -> None:
    streams = UnitStreams()
    rng = streams.new_generator()
    bit_generator = rng.bit_generator
    key = SeedTree(1).key(Purpose.BATCH, 0, 0)
    streams.position(bit_generator, key, 4, Lane.RNG)  # type: ignore[arg-type]
    first = rng.random(3).tolist()
    rng.random(100)
    streams.position(bit_generator, key, 4, Lane.RNG)  # type: ignore[arg-type]
    assert rng.bit_generator is bit_generator
    assert rng.random(3).tolist() == first
