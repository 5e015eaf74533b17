from __future__ import annotations

import copy
import io
import json
import random
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from reproloader import ReproLoader, StateError, StateMismatchError, StateVersionError
from reproloader.exceptions import StateFieldError
from reproloader.state import (
    IDENTITY_FIELDS,
    VERSION,
    check_compatible,
    check_fields,
    check_rng_state,
    check_workers,
    upgrade,
)
from tests.datasets import AllSources, Curriculum, GlobalDraws, InitGenerator, Stream, same


def loader(**kwargs: Any) -> ReproLoader[Any]:
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("seed", 5)
    return ReproLoader(AllSources(20), shuffle=True, **kwargs)


def mid_epoch_state(**kwargs: Any) -> dict[str, Any]:
    source = loader(**kwargs)
    it = iter(source)
    next(it)
    next(it)
    return source.state_dict()


def plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str, torch.Tensor))


def test_state_is_small_plain_and_json_safe() -> None:
    state = mid_epoch_state()
    assert plain(state)
    assert json.loads(json.dumps(state)) == state
    buffer = io.BytesIO()
    torch.save(state, buffer)
    assert buffer.tell() < 2048
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == state


def test_state_records_position_and_what_it_means() -> None:
    state = mid_epoch_state()
    assert state["format"] == "reproloader.ReproLoader"
    assert state["version"] == VERSION
    assert (state["epoch"], state["position"], state["finished"]) == (0, 2, False)
    assert (state["seed"], state["batch_size"], state["dataset_length"]) == (5, 4, 20)
    assert (state["sampler"], state["rng_scope"], state["world_size"]) == ("shuffle", "batch", 1)
    assert state["workers"] is None


def test_positions_before_during_and_after_an_epoch() -> None:
    source = loader()
    assert source.state_dict()["position"] == 0
    batches = iter(source)
    for _ in range(5):
        next(batches)
    state = source.state_dict()
    assert (state["position"], state["finished"]) == (5, False)
    with pytest.raises(StopIteration):
        next(batches)
    state = source.state_dict()
    assert (state["epoch"], state["position"], state["finished"]) == (0, 5, True)


def test_a_loaded_state_reads_back_unchanged_before_iterating() -> None:
    for state in (mid_epoch_state(), loader().state_dict()):
        resumed = loader()
        resumed.load_state_dict(state)
        assert resumed.state_dict() == state


def test_every_mismatched_field_is_named_with_both_values() -> None:
    state = mid_epoch_state()
    other = ReproLoader(AllSources(21), batch_size=5, drop_last=True, seed=6)
    message = (
        "cannot resume: the state was saved by a different loader. "
        "seed: saved 5, this loader 6; dataset_length: saved 20, this loader 21; "
        "batch_size: saved 4, this loader 5; drop_last: saved False, this loader True; "
        "sampler: saved 'shuffle', this loader 'sequential'. Either rebuild the loader with "
        "the saved values, or start this loader without the state."
    )
    with pytest.raises(StateMismatchError, match=re.escape(message)) as info:
        other.load_state_dict(state)
    assert info.value.mismatches["batch_size"] == (4, 5)
    assert isinstance(info.value, ValueError)


def test_scope_and_reseeding_settings_must_match() -> None:
    state = mid_epoch_state()
    with pytest.raises(StateMismatchError, match="rng_scope: saved 'batch', this loader 'sample'"):
        loader(config={"rng_scope": "sample"}).load_state_dict(state)
    with pytest.raises(
        StateMismatchError,
        match=r"reseed_globals: saved \['numpy', 'random', 'torch'\], this loader \['torch'\]",
    ):
        loader(config={"reseed_globals": ["torch"]}).load_state_dict(state)


def test_num_workers_may_change_for_map_style_batch_scope() -> None:
    state = mid_epoch_state(num_workers=0)
    loader(num_workers=2).load_state_dict(state)  # no error


def test_num_workers_must_match_where_workers_hold_state() -> None:
    state = mid_epoch_state(num_workers=2, config={"rng_scope": "worker"})
    assert state["workers"] is not None
    with pytest.raises(
        StateMismatchError, match=r"num_workers: saved 2, this loader 1.*num_workers must match"
    ):
        loader(num_workers=1, config={"rng_scope": "worker"}).load_state_dict(state)


def test_newer_version_is_refused_with_advice() -> None:
    state = {**mid_epoch_state(), "version": VERSION + 1}
    message = f"this state has format version {VERSION + 1}, written by a newer reproloader; this release reads versions up to {VERSION}. Upgrade reproloader to resume it."
    with pytest.raises(StateVersionError, match=re.escape(message)):
        loader().load_state_dict(state)


@pytest.mark.parametrize("state", [{}, {"_snapshot": {}}, [1, 2]])
def test_foreign_states_are_refused(state: Any) -> None:
    with pytest.raises(
        StateVersionError,
        match=re.escape("not a ReproLoader state: expected format 'reproloader.ReproLoader'"),
    ):
        loader().load_state_dict(state)


def test_missing_fields_are_named() -> None:
    state = mid_epoch_state()
    del state["epoch"], state["serial"]
    with pytest.raises(StateVersionError, match=re.escape("lacks fields ['epoch', 'serial']")):
        loader().load_state_dict(state)


def test_only_states_older_than_version_4_get_an_empty_skip_list() -> None:
    state = {k: v for k, v in mid_epoch_state().items() if k != "skip"}
    assert upgrade({**state, "version": 3, "sampler": "sequential"})["skip"] == []
    with pytest.raises(StateVersionError, match=re.escape("(version 4) lacks fields ['skip']")):
        upgrade({**state, "version": 4})


def test_state_errors_are_value_errors() -> None:
    assert issubclass(StateVersionError, StateError)
    assert issubclass(StateError, ValueError)


class _SlowFirstBatch(torch.utils.data.Dataset[Any]):
    """Batch 0 (indices 0-3) is slow in a worker: with in_order=False batch 1 arrives first.

    (In the main process it is not: the order there is the order asked for anyway.)
    """

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> Any:
        if i < 4 and torch.utils.data.get_worker_info() is not None:
            time.sleep(0.4)
        return torch.tensor([float(i), float(torch.rand(()))])


def _out_of_order(**kwargs: Any) -> ReproLoader[Any]:
    kwargs.setdefault("config", {})
    return ReproLoader(
        _SlowFirstBatch(),
        batch_size=4,
        seed=3,
        num_workers=2,
        in_order=False,
        multiprocessing_context="fork",
        **kwargs,
    )


def test_a_mid_epoch_state_with_out_of_order_workers_resumes_every_batch_once() -> None:
    in_order = ReproLoader(_SlowFirstBatch(), batch_size=4, seed=3)
    reference, next_epoch = [[b.tolist() for b in in_order] for _ in range(2)]
    source = _out_of_order()
    it = iter(source)
    head = [next(it).tolist()]
    assert head[0] == reference[1], "batch 1 was to arrive first"
    state = source.state_dict()
    assert (state["position"], state["done"]) == (0, [1])
    del it
    for resumed in (_out_of_order(), ReproLoader(_SlowFirstBatch(), batch_size=4, seed=3)):
        resumed.load_state_dict(state)
        rest = [b.tolist() for b in resumed]
        assert sorted(head + rest) == sorted(reference)  # every batch once, its own values
        assert sorted(b.tolist() for b in resumed) == sorted(next_epoch)  # then as usual


def test_out_of_order_states_where_workers_hold_state_are_refused() -> None:
    source = _out_of_order(config={"rng_scope": "worker"})
    it = iter(source)
    next(it)
    with pytest.raises(StateError, match="in_order=False: batches were handed out ahead"):
        source.state_dict()
    for _ in it:
        pass
    assert source.state_dict()["finished"] is True  # epoch boundaries are fine


def test_iterable_dataset_state_carries_worker_positions() -> None:
    source = ReproLoader(Stream(20), batch_size=2, num_workers=2, seed=0)
    it = iter(source)
    for _ in range(3):
        next(it)
    state = source.state_dict()
    assert state["sampler"] == "iterable"
    assert state["dataset_length"] is None
    rest = [b.tolist() for b in it]
    assert len(rest) == 7, "20 samples in batches of 2; 3 taken"
    # The position lives in the workers (each iterates its own shard): a fresh loader
    # resumes from the state, through JSON, to exactly the batches the source went on to.
    resumed = ReproLoader(Stream(20), batch_size=2, num_workers=2, seed=0)
    resumed.load_state_dict(json.loads(json.dumps(state)))
    assert [b.tolist() for b in resumed] == rest


def version_1(state: dict[str, Any]) -> dict[str, Any]:
    """A state as release 0.1.0.dev0 (format version 1, the PCG64 shuffle) wrote it."""
    return {**state, "version": 1}


ONLY_TORCH = {"reseed_globals": ["torch"]}
NO_TORCH = {"reseed_globals": ["numpy"]}  # neither torch (version 2) nor python random (3)


def test_version_1_state_mid_way_through_a_shuffled_epoch_is_refused() -> None:
    state = version_1(mid_epoch_state(config=NO_TORCH))
    message = (
        "cannot resume this state: it has format version 1 and it was taken mid-way through "
        "epoch 0 of a shuffled sampler ('shuffle'); version 2 shuffles epochs in a different "
        "order, so the rest of this epoch would repeat some samples and skip others. Finish "
        "epoch 0 with the reproloader release that wrote the state and resume from a state "
        "taken at its end, or restart epoch 0: call loader.set_epoch(0) instead of "
        "load_state_dict."
    )
    with pytest.raises(StateVersionError, match=re.escape(message)):
        loader(config=NO_TORCH).load_state_dict(state)
    for kind in ("sharded, shuffle", "shuffle(seed=3)"):
        with pytest.raises(StateVersionError, match=re.escape(f"shuffled sampler ({kind!r})")):
            upgrade({**state, "sampler": kind})


def test_a_version_1_state_that_two_changes_affect_names_both() -> None:
    state = version_1(mid_epoch_state(config=ONLY_TORCH))
    with pytest.raises(StateVersionError) as info:
        upgrade(state)
    assert (
        "would repeat some samples and skip others; and it was taken mid-way through epoch 0 "
        "with torch reseeded; version 2 seeds torch below 2**63"
    ) in str(info.value)


def test_version_1_shuffled_state_at_an_epoch_boundary_loads() -> None:
    source = loader()
    for _ in source:
        pass
    finished = version_1(source.state_dict())
    assert upgrade(finished)["version"] == VERSION
    resumed = loader()
    resumed.load_state_dict(finished)
    fresh = loader()
    fresh.set_epoch(1)
    assert torch.equal(next(iter(resumed)), next(iter(fresh)))
    before_first = version_1(loader().state_dict())
    loader().load_state_dict(before_first)  # no batch handed out: nothing to refuse


def test_version_1_state_of_an_unshuffled_loader_without_torch_reseeding_resumes() -> None:
    source = ReproLoader(AllSources(20), batch_size=4, seed=5, config=NO_TORCH)
    it = iter(source)
    next(it)
    state = version_1(source.state_dict())
    rest = list(it)
    resumed = ReproLoader(AllSources(20), batch_size=4, seed=5, config=NO_TORCH)
    resumed.load_state_dict(state)
    kept = [0, 2, 4, 5]  # every column but python's and torch's, which nothing reseeds here
    assert all(torch.equal(a[:, kept], b[:, kept]) for a, b in zip(resumed, rest, strict=True))
    assert upgrade(state)["version"] == VERSION


def test_version_1_state_mid_epoch_with_torch_reseeded_is_refused() -> None:
    source = ReproLoader(AllSources(20), batch_size=4, seed=5, config=ONLY_TORCH)
    it = iter(source)
    next(it)
    state = version_1(source.state_dict())
    message = (
        "cannot resume this state: it has format version 1 and it was taken mid-way through "
        "epoch 0 with torch reseeded; version 2 seeds torch below 2**63, so the rest of this "
        "epoch would draw other torch values than the release that saved it. Finish epoch 0"
    )
    with pytest.raises(StateVersionError, match=re.escape(message)):
        ReproLoader(AllSources(20), batch_size=4, seed=5, config=ONLY_TORCH).load_state_dict(state)


def version_2(state: dict[str, Any]) -> dict[str, Any]:
    """A state as format version 2 wrote it (python random seeded by ``random.seed``)."""
    return {**state, "version": 2}


@pytest.mark.parametrize("make_old", [version_1, version_2])
def test_an_older_state_mid_epoch_with_python_random_reseeded_is_refused(
    make_old: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    config = {"reseed_globals": ["numpy", "random"]}
    source = ReproLoader(AllSources(20), batch_size=4, seed=5, config=config)
    it = iter(source)
    next(it)
    state = make_old(source.state_dict())
    message = (
        f"cannot resume this state: it has format version {state['version']} and it was "
        "taken mid-way through epoch 0 with python random reseeded; version 3 fills python "
        "random's state from the unit's words instead of random.seed, so the rest of this "
        "epoch would draw other python random values than the release that saved it. "
        "Finish epoch 0 with the reproloader release that wrote the state and resume from "
        "a state taken at its end, or restart epoch 0: call loader.set_epoch(0) instead of "
        "load_state_dict."
    )
    with pytest.raises(StateVersionError, match=re.escape(message)):
        ReproLoader(AllSources(20), batch_size=4, seed=5, config=config).load_state_dict(state)
    for _ in it:
        pass
    finished = make_old(source.state_dict())  # at the epoch's end: nothing changed to refuse
    resumed = ReproLoader(AllSources(20), batch_size=4, seed=5, config=config)
    resumed.load_state_dict(finished)
    fresh = ReproLoader(AllSources(20), batch_size=4, seed=5, config=config)
    fresh.set_epoch(1)
    kept = [0, 1, 2, 4, 5]  # every column but torch's, which nothing reseeds here
    assert all(torch.equal(a[:, kept], b[:, kept]) for a, b in zip(resumed, fresh, strict=True))


def test_a_version_2_state_mid_epoch_without_python_random_reseeded_resumes_exactly() -> None:
    # (Unshuffled: version 4 changed the shuffle order of 20 samples.)
    config = {"reseed_globals": ["numpy", "torch"]}
    source = ReproLoader(AllSources(20), batch_size=4, seed=5, config=config)
    it = iter(source)
    next(it)
    state = version_2(source.state_dict())
    rest = list(it)
    resumed = ReproLoader(AllSources(20), batch_size=4, seed=5, config=config)
    resumed.load_state_dict(state)
    kept = [0, 2, 3, 4, 5]  # every column but python's, which nothing reseeds here
    assert all(torch.equal(a[:, kept], b[:, kept]) for a, b in zip(resumed, rest, strict=True))
    assert upgrade(state)["version"] == VERSION


def version_3(state: dict[str, Any]) -> dict[str, Any]:
    """A state as format version 3 wrote it (small datasets shuffled by the Feistel)."""
    return {**state, "version": 3}


def test_a_version_3_state_mid_way_through_a_small_shuffled_epoch_is_refused() -> None:
    state = version_3(mid_epoch_state(config=NO_TORCH))
    message = (
        "cannot resume this state: it has format version 3 and it was taken mid-way through "
        "epoch 0 of a shuffled sampler ('shuffle') over 20 samples; version 4 shuffles "
        "datasets of at most 8192 samples with an exact uniform permutation instead of the "
        "keyed bijection, so the rest of this epoch would repeat some samples and skip "
        "others. Finish epoch 0 with the reproloader release that wrote the state and resume "
        "from a state taken at its end, or restart epoch 0: call loader.set_epoch(0) instead "
        "of load_state_dict."
    )
    with pytest.raises(StateVersionError, match=re.escape(message)):
        loader(config=NO_TORCH).load_state_dict(state)
    source = loader(config=NO_TORCH)
    for _ in source:
        pass
    finished = version_3(source.state_dict())  # at the epoch's end: nothing to refuse
    resumed = loader(config=NO_TORCH)
    resumed.load_state_dict(finished)
    fresh = loader(config=NO_TORCH)
    fresh.set_epoch(1)
    kept = [0, 2, 4, 5]  # every column but python's and torch's, which nothing reseeds here
    assert all(torch.equal(a[:, kept], b[:, kept]) for a, b in zip(resumed, fresh, strict=True))


class _Indices(torch.utils.data.Dataset[int]):
    def __len__(self) -> int:
        return 8193  # just above the exact orders: the Feistel's order, as in version 3

    def __getitem__(self, i: int) -> int:
        return i


def test_a_version_3_state_mid_way_through_a_large_shuffled_epoch_resumes_exactly() -> None:
    def make() -> ReproLoader[Any]:
        return ReproLoader(_Indices(), batch_size=1024, shuffle=True, seed=5, config=NO_TORCH)

    source = make()
    it = iter(source)
    next(it)
    state = version_3(source.state_dict())
    rest = [b.tolist() for b in it]
    resumed = make()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == rest


@pytest.mark.parametrize(
    ("changes", "refused_"),
    [
        ({"sampler": "shuffle", "position": 1, "dataset_length": 8192}, True),
        ({"sampler": "shuffle(seed=3)", "position": 1, "dataset_length": 2}, True),
        ({"sampler": "sharded, shuffle", "position": 0, "offset": 5}, True),
        ({"sampler": "shuffle", "position": 1, "dataset_length": 8193}, False),
        (
            {"sampler": "sharded, shuffle", "position": 0, "offset": 5, "dataset_length": 9000},
            False,
        ),
        ({"sampler": "shuffle", "position": 0}, False),
        ({"sampler": "shuffle", "position": 10, "finished": True}, False),
        ({"sampler": "sharded", "position": 0, "offset": 5}, False),
        ({"sampler": "sequential", "position": 1}, False),
        ({"sampler": "sampler:RandomSampler", "position": 1}, False),
    ],
)
def test_version_3_is_refused_exactly_mid_way_through_a_small_shuffled_epoch(
    changes: dict[str, Any], refused_: bool
) -> None:
    old = {**TOP, **changes, "version": 3}  # python random reseeded: no matter since version 3
    if refused_:
        with pytest.raises(StateVersionError, match="format version 3 and it was taken mid-way"):
            upgrade(old)
    else:
        assert upgrade(old)["version"] == VERSION


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_loader_built_without_a_seed_adopts_the_seed_of_the_state_it_loads(
    shuffle: bool,
) -> None:
    torch.manual_seed(1)
    source = ReproLoader(GlobalDraws(20), batch_size=4, shuffle=shuffle)
    it = iter(source)
    next(it)
    state = source.state_dict()
    rest = [b.tolist() for b in it]
    torch.manual_seed(2)  # a restarted job: another drawn seed
    resumed = ReproLoader(GlobalDraws(20), batch_size=4, shuffle=shuffle)
    assert resumed.seed != source.seed
    resumed.load_state_dict(state)
    assert resumed.seed == source.seed
    assert [b.tolist() for b in resumed] == rest
    assert [b.tolist() for b in resumed] == [b.tolist() for b in source]  # next epochs too


def test_a_loader_built_with_another_seed_refuses_the_state_naming_both() -> None:
    state = ReproLoader(GlobalDraws(20), batch_size=4, seed=5).state_dict()
    for other in (
        ReproLoader(GlobalDraws(20), batch_size=4, seed=6),
        ReproLoader(GlobalDraws(20), batch_size=4, config={"seed": 6}),
    ):
        with pytest.raises(StateMismatchError, match="seed: saved 5, this loader 6"):
            other.load_state_dict(state)
        assert other.seed == 6


def test_a_refused_state_does_not_change_the_seed_of_a_seedless_loader() -> None:
    state = ReproLoader(GlobalDraws(20), batch_size=4, seed=5).state_dict()
    torch.manual_seed(3)
    loader = ReproLoader(GlobalDraws(21), batch_size=4)
    drawn = loader.seed
    with pytest.raises(StateMismatchError, match="dataset_length"):
        loader.load_state_dict(state)
    assert loader.seed == drawn


# Field checks (state.check_fields, check_workers, check_compatible): each wrong field is
# refused by its path, with what it must be and what it is.

TOP: dict[str, Any] = {
    "format": "reproloader.ReproLoader",
    "version": VERSION,
    "seed": 7,
    "rng_scope": "batch",
    "reseed_globals": ["numpy", "random", "torch"],
    "reseed_dataset_rngs": True,
    "dataset_length": 100,
    "batch_size": 10,
    "drop_last": False,
    "sampler": "sequential",
    "world_size": 2,
    "rank": 1,
    "num_workers": 0,
    "epoch": 3,
    "position": 4,
    "offset": None,
    "finished": False,
    "serial": 5,
    "workers": None,
    "done": [],
    "dataset": None,
    "skip": [],
}


GLOBALS_EXPECTED = "a sorted list of names from ['numpy', 'random', 'torch']"
PASS_EXPECTED = "[0, 0] (the state's pass) or an earlier pass"
DONE_ONLY_OUT_OF_ORDER = "[] (only a map-style pass delivered out of order has some)"
INT0 = "an int in [0, inf)"
AS_WRITTEN = "RNG state as state_dict() writes it"
NUMPY_STATE = "a numpy " + AS_WRITTEN
GENERATOR = "a generator " + AS_WRITTEN
ENDED = "False (the state's finished)"
ONE_OF = "exactly one of map and iterable set"
RESEEDED = "a state (random is reseeded)"
DICT_SAMPLER = "a dict with exactly the keys ['samples_yielded']"
DICT_MAP = "a dict with exactly the keys ['dataset', 'stream']"
DICT_STREAM = "a dict with exactly the keys ['attributes', 'globals', 'rng', 'stream']"
DICT_GLOBALS = "a dict with exactly the keys ['numpy', 'random', 'torch']"
DICT_ITERABLE = (
    "a dict with exactly the keys ['epoch', 'kind', 'position', 'serial', 'stream', 'user']"
)


def refused(call: Any, *args: Any, **kwargs: Any) -> StateFieldError:
    with pytest.raises(StateFieldError) as info:
        call(*args, **kwargs)
    error = info.value
    # Its traceback's frames reach the test's: the test's loaders would then live on in
    # a reference cycle until a garbage collection, and torch's shutdown of a worker
    # iterator collected in a cycle waits 5 s for each worker (10 s a test, measured).
    error.__traceback__ = None
    del info
    return error


@pytest.mark.parametrize(
    ("changes", "path", "expected"),
    [
        ({"seed": -1}, "seed", f"an int in [0, {2**128})"),
        ({"seed": 2**128}, "seed", f"an int in [0, {2**128})"),
        ({"seed": "7"}, "seed", "an int"),
        ({"seed": True}, "seed", "an int"),
        ({"rng_scope": "epoch"}, "rng_scope", "one of ['batch', 'sample', 'worker']"),
        *(
            ({"reseed_globals": names}, "reseed_globals", GLOBALS_EXPECTED)
            for names in (["torch", "numpy"], ["cuda"], ["numpy", "numpy"], ("numpy",))
        ),
        ({"reseed_dataset_rngs": 1}, "reseed_dataset_rngs", "True or False"),
        ({"dataset_length": -1}, "dataset_length", "an int in [0, inf)"),
        ({"batch_size": 0}, "batch_size", "an int in [1, inf)"),
        ({"drop_last": None}, "drop_last", "True or False"),
        ({"sampler": 3}, "sampler", "a string"),
        ({"world_size": 0}, "world_size", "an int in [1, inf)"),
        ({"rank": 2}, "rank", "an int in [0, 2)"),
        ({"num_workers": -1}, "num_workers", "an int in [0, inf)"),
        ({"epoch": 2**32}, "epoch", "an int in [0, 4294967296)"),
        ({"epoch": -1}, "epoch", "an int in [0, 4294967296)"),
        ({"position": -1}, "position", f"an int in [0, {2**63})"),
        ({"position": 2**70}, "position", f"an int in [0, {2**63})"),
        ({"finished": "no"}, "finished", "True or False"),
        ({"serial": -1}, "serial", "an int in [0, inf)"),
        ({"offset": 101}, "offset", "an int in [0, 101)"),
        ({"offset": -1, "dataset_length": None}, "offset", "an int in [0, inf)"),
        ({"offset": 0, "finished": True}, "offset", "None once the pass finished"),
        ({"reseed_globals": 5}, "reseed_globals", GLOBALS_EXPECTED),
        ({"reseed_globals": [["numpy"]]}, "reseed_globals", GLOBALS_EXPECTED),
        ({"done": "5"}, "done", "a list of ints"),
        ({"done": [True]}, "done", "a list of ints"),
        ({"done": [6, 5]}, "done", "increasing positions after position 4"),
        ({"done": [6, 6]}, "done", "increasing positions after position 4"),
        ({"done": [4, 6]}, "done", "increasing positions after position 4"),
        *(
            ({"done": [6], **other}, "done", DONE_ONLY_OUT_OF_ORDER)
            for other in ({"finished": True}, {"workers": {}}, {"offset": 10})
        ),
    ],
)
def test_each_wrong_top_level_field_is_refused_by_name(
    changes: dict[str, Any], path: str, expected: str
) -> None:
    error = refused(check_fields, {**TOP, **changes}, batches=None, elastic=False)
    assert (error.path, error.expected) == (path, expected)
    assert error.got == changes[path]
    assert f"state field {path} must be {expected}, got" in str(error)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"seed": 0},
        {"seed": 2**128 - 1},
        {"reseed_globals": []},
        {"reseed_globals": ["torch"]},
        {"dataset_length": None, "batch_size": None},
        {"dataset_length": 0, "batch_size": 1},
        {"world_size": 1, "rank": 0},
        {"epoch": 2**32 - 1},
        {"offset": 100},  # every sample of the epoch handed out, pass not yet ended
        {"offset": 0},
        {"offset": 10**9, "dataset_length": None},
        {"position": 0, "finished": True},
    ],
)
def test_fields_at_the_edges_of_their_range_pass(changes: dict[str, Any]) -> None:
    check_fields({**TOP, **changes}, batches=None, elastic=False)


def test_done_positions_must_be_below_the_batches_of_an_epoch_here() -> None:
    check_fields({**TOP, "done": [6, 8]}, batches=9, elastic=False)
    error = refused(check_fields, {**TOP, "done": [6, 9]}, batches=9, elastic=False)
    assert (error.path, error.expected, error.got) == (
        "done",
        "positions below 9, the batches of an epoch here",
        [6, 9],
    )


def test_a_sharded_state_needs_an_offset_until_its_pass_finished() -> None:
    error = refused(check_fields, TOP, batches=None, elastic=True)
    assert (error.path, error.expected) == (
        "offset",
        "an int (shard=True: where the pass is in the epoch's order)",
    )
    assert "state field offset must be an int (shard=True: where the pass is" in str(error)
    check_fields({**TOP, "offset": 40}, batches=None, elastic=True)
    check_fields({**TOP, "position": 5, "finished": True}, batches=None, elastic=True)


def test_the_position_must_fit_the_batches_of_an_epoch_here() -> None:
    for finished in (False, True):
        check_fields({**TOP, "position": 10, "finished": finished}, batches=10, elastic=False)
    check_fields({**TOP, "position": 9}, batches=10, elastic=False)
    error = refused(check_fields, {**TOP, "position": 11}, batches=10, elastic=False)
    assert (error.path, error.expected, error.got) == (
        "position",
        "at most 10, the batches of an epoch here",
        11,
    )
    error = refused(
        check_fields, {**TOP, "position": 9, "finished": True}, batches=10, elastic=False
    )
    assert (error.path, error.expected, error.got) == (
        "position",
        "10 in a finished pass (all its batches)",
        9,
    )
    # Where the number of batches is not known, any position passes.
    check_fields({**TOP, "position": 11, "finished": True}, batches=None, elastic=False)


def test_an_elastic_state_from_another_world_size_is_not_held_to_this_ranks_batches() -> None:
    # shard=True: 100 samples in batches of 10 are 5 batches per rank on 2 ranks, 3 on 4.
    # A finished pass saved on 2 ranks resumes on 4 (its offset is what counts); on the
    # world size it was saved on, it is held to the batches there.
    saved = {**TOP, "sampler": "sharded", "position": 5, "finished": True, "rank": 0}
    check_fields(saved, batches=3, elastic=True, world_size=4)
    with pytest.raises(StateFieldError, match="state field position must be at most 3"):
        check_fields(saved, batches=3, elastic=True, world_size=2)
    # Without a world size given, the state's own is this loader's.
    with pytest.raises(StateFieldError, match="state field position must be at most 3"):
        check_fields(saved, batches=3, elastic=True)


@pytest.fixture(scope="module")
def worker_scope_state() -> dict[str, Any]:
    """A mid-pass state of a map-style dataset in worker scope (main process)."""
    return mid_epoch_state(config={"rng_scope": "worker"})


@pytest.fixture(scope="module")
def iterable_state() -> dict[str, Any]:
    """A mid-pass state of an iterable dataset in batch scope (main process)."""
    source = ReproLoader(Stream(20), batch_size=2, seed=0)
    it = iter(source)
    next(it)
    return source.state_dict()


STREAM = "workers.workers[0].map.stream"
ITERABLE = "workers.workers[0].iterable"
WORKER_KEYS = sorted(
    [
        "version",
        "processes",
        "yielded",
        "failed",
        "since_snapshot",
        "drawn",
        "sampler",
        "len_called",
        "base_seed",
        "last_worker",
        "ended",
        "workers",
    ]
)


def _edit(state: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``state`` with the field at ``path`` (dotted, [i] for lists) set or deleted."""
    state = copy.deepcopy(state)
    keys = [int(k) if k.isdigit() else k for k in re.split(r"\.|\[|\]\.?", path) if k]
    holder = state
    for key in keys[:-1]:
        holder = holder[key]
    if value is DELETE:
        del holder[keys[-1]]
    else:
        holder[keys[-1]] = value
    return state


DELETE = object()
SKIP = object()
DICT_WORKERS = f"a dict with exactly the keys {WORKER_KEYS}"
DICT_PART = "a dict with exactly the keys ['ended', 'id', 'iterable', 'map']"
PART_KEYS = ["ended", "extra", "id", "iterable", "map"]
MAP_CASES: list[tuple[str, Any, str, str, Any]] = [
    # (field to change, new value, path named, expected, got)
    ("workers", [], "workers", "a dict", []),
    ("workers.failed", DELETE, "workers", DICT_WORKERS, [k for k in WORKER_KEYS if k != "failed"]),
    ("workers.version", 2, "workers.version", "1 (the only version there is)", 2),
    ("workers.version", True, "workers.version", "1 (the only version there is)", True),
    ("workers.processes", -1, "workers.processes", "an int in [0, inf)", -1),
    ("workers.processes", 1, "workers.processes", "0 (the state's num_workers)", 1),
    ("workers.yielded", None, "workers.yielded", "an int", None),
    ("workers.failed", -1, "workers.failed", "an int in [0, inf)", -1),
    ("workers.yielded", 3, "workers.yielded + workers.failed", "2 (position)", 3),
    ("workers.failed", 1, "workers.yielded + workers.failed", "2 (position)", 3),
    ("workers.since_snapshot", 3, "workers.since_snapshot", "an int in [0, 3)", 3),
    ("workers.drawn", 1, "workers.drawn", "an int in [2, inf)", 1),
    ("workers.sampler", {"x": 1}, "workers.sampler", DICT_SAMPLER, ["x"]),
    ("workers.sampler", {"samples_yielded": -1}, "workers.sampler.samples_yielded", INT0, -1),
    ("workers.len_called", -1, "workers.len_called", "an int in [0, inf)", -1),
    ("workers.ended", True, "workers.ended", ENDED, True),
    ("workers.base_seed", 5, "workers.base_seed", "None (the main process produced)", 5),
    ("workers.last_worker", 0, "workers.last_worker", "None (the main process produced)", 0),
    ("workers.workers", (), "workers.workers", "a list of 1 worker parts", ()),
    ("workers.workers", [], "workers.workers", "a list of 1 worker parts", []),
    ("workers.workers[0]", None, "workers.workers[0]", "a dict", None),
    ("workers.workers[0].extra", 1, "workers.workers[0]", DICT_PART, PART_KEYS),
    ("workers.workers[0].id", 1, "workers.workers[0].id", "0 (workers are listed by id)", 1),
    ("workers.workers[0].ended", None, "workers.workers[0].ended", "True or False", None),
    ("workers.workers[0].map", None, "workers.workers[0]", ONE_OF, {"map": None, "iterable": None}),
    ("workers.workers[0].map.dataset", DELETE, "workers.workers[0].map", DICT_MAP, ["stream"]),
    (
        "workers.workers[0].map.dataset",
        {"i": 1},
        "workers.workers[0].map.dataset",
        "None (this dataset has no state_dict)",
        {"i": 1},
    ),
    (f"{STREAM}.stream", [0, -1], f"{STREAM}.stream", PASS_EXPECTED, [0, -1]),
    (f"{STREAM}.stream", [0, False], f"{STREAM}.stream", PASS_EXPECTED, [0, False]),
    (
        STREAM,
        None,
        STREAM,
        "the stream of pass [0, 0] (worker 0 produced a batch of it)",
        None,
    ),
    (f"{STREAM}.rng", DELETE, STREAM, DICT_STREAM, ["attributes", "globals", "stream"]),
    (
        f"{STREAM}.stream",
        [0, 1],
        f"{STREAM}.stream",
        "[0, 0] (the state's pass) or an earlier pass",
        [0, 1],
    ),
    (
        f"{STREAM}.stream",
        [1, 0],
        f"{STREAM}.stream",
        "[0, 0] (the state's pass) or an earlier pass",
        [1, 0],
    ),
    (f"{STREAM}.globals.torch", DELETE, f"{STREAM}.globals", DICT_GLOBALS, ["numpy", "random"]),
    (f"{STREAM}.globals.random", None, f"{STREAM}.globals.random", RESEEDED, None),
    (f"{STREAM}.globals.numpy.pos", 625, f"{STREAM}.globals.numpy", NUMPY_STATE, SKIP),
    (f"{STREAM}.globals.torch", "x", f"{STREAM}.globals.torch", "a torch " + AS_WRITTEN, "x"),
    (f"{STREAM}.rng", {"bit_generator": "x"}, f"{STREAM}.rng", GENERATOR, {"bit_generator": "x"}),
    (f"{STREAM}.attributes", [], f"{STREAM}.attributes", "a dict", []),
    (f"{STREAM}.attributes", {"r": 1}, f"{STREAM}.attributes['r']", "a object " + AS_WRITTEN, 1),
]


def _check_refused(state: dict[str, Any], path: str, expected: str, got: Any) -> None:
    error = refused(check_workers, state["workers"], state)
    assert (error.path, error.expected) == (path, expected)
    if got is not SKIP:
        assert error.got == got


@pytest.mark.parametrize(("field", "value", "path", "expected", "got"), MAP_CASES)
def test_each_wrong_field_of_a_worker_part_is_refused_by_name(
    worker_scope_state: dict[str, Any], field: str, value: Any, path: str, expected: str, got: Any
) -> None:
    check_workers(worker_scope_state["workers"], worker_scope_state)  # as saved: it passes
    _check_refused(_edit(worker_scope_state, field, value), path, expected, got)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("workers.yielded", 1),  # 1 handed out + 1 failed: position 2
        ("workers.since_snapshot", 2),
        ("workers.drawn", 9),
        ("workers.sampler", {"samples_yielded": 0}),
        ("workers.len_called", 0),
        (f"{STREAM}.rng", None),
        (f"{STREAM}.attributes", {}),
    ],
)
def test_worker_parts_at_the_edges_of_their_range_pass(
    worker_scope_state: dict[str, Any], field: str, value: Any
) -> None:
    state = _edit(worker_scope_state, field, value)
    if field == "workers.yielded":
        state["workers"]["failed"] = 1
    assert check_workers(state["workers"], state) == state["workers"]


def test_worker_processes_need_a_base_seed_and_a_last_worker(
    worker_scope_state: dict[str, Any],
) -> None:
    state = copy.deepcopy(worker_scope_state)
    state["num_workers"] = 2
    w = state["workers"]
    w.update(processes=2, base_seed=2**64 - 1, last_worker=1)
    w["workers"].append({**copy.deepcopy(w["workers"][0]), "id": 1})
    check_workers(w, state)
    for field, value, expected in [
        ("base_seed", 2**64, f"an int in [0, {2**64})"),
        ("base_seed", None, "an int"),
        ("last_worker", 2, "an int in [0, 2)"),
    ]:
        _check_refused(_edit(state, f"workers.{field}", value), f"workers.{field}", expected, value)
    _check_refused(
        _edit(state, "workers.workers[1].id", 0),
        "workers.workers[1].id",
        "1 (workers are listed by id)",
        0,
    )


def test_a_stream_must_match_the_reseeded_globals_and_the_scope(
    worker_scope_state: dict[str, Any],
) -> None:
    state = {**worker_scope_state, "reseed_globals": ["numpy", "torch"]}
    stream = state["workers"]["workers"][0]["map"]["stream"]
    _check_refused(
        state,
        f"{STREAM}.globals.random",
        "None (random is not reseeded)",
        stream["globals"]["random"],
    )
    _check_refused(
        {**worker_scope_state, "rng_scope": "sample"}, STREAM, "None outside worker scope", stream
    )


ITERABLE_CASES: list[tuple[str, Any, str, str]] = [
    (ITERABLE, [], ITERABLE, "a dict"),
    (f"{ITERABLE}.user", DELETE, ITERABLE, DICT_ITERABLE),
    (f"{ITERABLE}.epoch", 1, f"{ITERABLE}.epoch", "0 (the state's epoch)"),
    (f"{ITERABLE}.serial", 1, f"{ITERABLE}.serial", "0 (the state's serial)"),
    (f"{ITERABLE}.position", -1, f"{ITERABLE}.position", INT0),
    (
        f"{ITERABLE}.position",
        3,
        "workers.workers[].iterable.position",
        "at most 2 in all (1 batches of 2)",
    ),
    (f"{ITERABLE}.kind", "other", f"{ITERABLE}.kind", "None, 'dataset' or 'iterator'"),
    (f"{ITERABLE}.user", {}, f"{ITERABLE}.user", "None when kind is None"),
    (f"{ITERABLE}.stream", {}, f"{ITERABLE}.stream", "None outside worker scope"),
    ("workers.workers[0].map", {"dataset": None, "stream": None}, "workers.workers[0]", ONE_OF),
]


@pytest.mark.parametrize(("field", "value", "path", "expected"), ITERABLE_CASES)
def test_each_wrong_field_of_an_iterable_part_is_refused_by_name(
    iterable_state: dict[str, Any], field: str, value: Any, path: str, expected: str
) -> None:
    check_workers(iterable_state["workers"], iterable_state)  # as saved: it passes
    got = value if path == field else SKIP
    _check_refused(_edit(iterable_state, field, value), path, expected, got)


@pytest.mark.parametrize("kind", ["dataset", "iterator"])
def test_an_iterable_part_carries_a_user_state_only_with_its_kind(
    iterable_state: dict[str, Any], kind: str
) -> None:
    state = _edit(_edit(iterable_state, f"{ITERABLE}.kind", kind), f"{ITERABLE}.user", {"i": 1})
    check_workers(state["workers"], state, stateful_dataset=True)


def test_check_rng_state_names_the_kind_and_the_path() -> None:
    error = refused(check_rng_state, "random", "not a state", "a.b")
    assert (error.path, error.expected, error.got) == (
        "a.b",
        "a random RNG state as state_dict() writes it",
        "not a state",
    )
    check_rng_state("random", json.loads(json.dumps(random.getstate())), "a")


@pytest.mark.parametrize(("state", "found"), [([1, 2], "'list'"), ({"format": "x"}, "'x'")])
def test_a_foreign_state_is_refused_naming_what_it_is(state: Any, found: str) -> None:
    with pytest.raises(StateVersionError) as info:
        upgrade(state)
    assert str(info.value) == (
        f"not a ReproLoader state: expected format 'reproloader.ReproLoader', got {found}; "
        "pass what ReproLoader.state_dict() returned (StatefulDataLoader states do not "
        "carry the seed and epoch a ReproLoader needs)"
    )


@pytest.mark.parametrize("version", [0, -1, "2", None, 1.0])
def test_an_unknown_version_is_refused(version: Any) -> None:
    with pytest.raises(StateVersionError) as info:
        upgrade({**TOP, "version": version})
    assert str(info.value) == f"unknown ReproLoader state version {version!r}"


def test_upgrade_returns_a_copy_of_the_current_version() -> None:
    old = {**TOP, "version": 1, "reseed_globals": ["numpy"]}
    new = upgrade(old)
    assert new == {**old, "version": VERSION}
    assert old["version"] == 1
    assert upgrade(TOP) == TOP


@pytest.mark.parametrize(
    ("changes", "refused_"),
    [
        ({"sampler": "sharded, shuffle", "position": 0, "offset": 5}, True),
        ({"sampler": "shuffle", "position": 1}, True),
        ({"sampler": "shuffle(seed=3)", "position": 1}, True),
        ({"sampler": "shuffle", "position": 0, "offset": 0}, False),
        ({"sampler": "shuffle", "position": 0, "offset": None}, False),
        ({"sampler": "shuffle", "position": 3, "finished": True}, False),
        ({"sampler": "sampler:shuffle(seed=3)", "position": 1}, False),
        ({"sampler": "sequential", "position": 1}, False),
        ({"sampler": None, "position": 1}, False),
    ],
)
def test_version_1_is_refused_exactly_mid_way_through_a_shuffled_epoch(
    changes: dict[str, Any], refused_: bool
) -> None:
    # Without torch or python random reseeded: the other rules stay out of it.
    old = {**TOP, **changes, "version": 1, "reseed_globals": ["numpy"]}
    if refused_:
        with pytest.raises(StateVersionError, match="taken mid-way through epoch 3"):
            upgrade(old)
    else:
        assert upgrade(old)["version"] == VERSION


CURRENT = {name: TOP[name] for name in (*IDENTITY_FIELDS, "world_size", "rank", "num_workers")}


@pytest.mark.parametrize(
    ("changes", "workers", "elastic", "mismatches"),
    [
        ({"world_size": 4, "rank": 3, "num_workers": 2}, False, True, {}),
        ({"rank": 0, "num_workers": 2}, False, False, {}),
        ({"world_size": 4}, False, False, {"world_size": (2, 4)}),
        (
            {"world_size": 4, "rank": 3, "num_workers": 2},
            True,
            True,
            {"world_size": (2, 4), "rank": (1, 3), "num_workers": (0, 2)},
        ),
        (
            {"seed": 8, "sampler": "shuffle"},
            False,
            True,
            {"seed": (7, 8), "sampler": ("sequential", "shuffle")},
        ),
    ],
)
def test_check_compatible_compares_the_fields_that_tie_a_state_to_a_loader(
    changes: dict[str, Any], workers: bool, elastic: bool, mismatches: dict[str, Any]
) -> None:
    current = {**CURRENT, **changes}
    if not mismatches:
        check_compatible(TOP, current, workers=workers, elastic=elastic)  # type: ignore[arg-type]
        return
    with pytest.raises(StateMismatchError) as info:
        check_compatible(TOP, current, workers=workers, elastic=elastic)  # type: ignore[arg-type]
    assert info.value.mismatches == mismatches


def test_check_compatible_advises_on_worker_state_and_distributed_samplers() -> None:
    with pytest.raises(StateMismatchError) as info:
        check_compatible(TOP, {**CURRENT, "rank": 0}, workers=True, elastic=False)  # type: ignore[arg-type]
    assert str(info.value) == (
        "cannot resume: the state was saved by a different loader. rank: saved 1, this "
        "loader 0. Either rebuild the loader with the saved values (rank, world size and "
        "num_workers must match because workers hold per-rank state in worker scope, for "
        "iterable datasets and for datasets with their own state_dict; save every rank's "
        "state: each rank its own file, or one from reproloader.distributed.gather_state), "
        "or start this loader without the state."
    )
    saved = {**TOP, "sampler": "sampler:DistributedSampler"}
    current = {**CURRENT, "sampler": "sampler:DistributedSampler", "world_size": 4}
    with pytest.raises(StateMismatchError) as info:
        check_compatible(saved, current, workers=False, elastic=False)  # type: ignore[arg-type]
    assert str(info.value) == (
        "cannot resume: the state was saved by a different loader. world_size: saved 2, "
        "this loader 4. Either rebuild the loader with the saved values (a "
        "DistributedSampler ties the order to the world size: to resume on another number "
        "of ranks, shard with ReproLoader(..., shard=True), whose position is global), or "
        "start this loader without the state."
    )
    with pytest.raises(StateMismatchError) as info:
        check_compatible(TOP, {**CURRENT, "num_workers": 1}, workers=True, elastic=False)  # type: ignore[arg-type]
    assert "(rank, world size and num_workers must match" in str(info.value)


def test_units_drawn_stop_at_the_batches_of_an_epoch_and_below_2_to_the_63(
    worker_scope_state: dict[str, Any],
) -> None:
    # drawn counts the units the sampler handed the workers: at most every batch of
    # the epoch, whatever it is, and below islice's limit where it is not known.
    state = copy.deepcopy(worker_scope_state)
    for drawn in (2, 9):
        state["workers"]["drawn"] = drawn
        check_workers(state["workers"], state, batches=9)
    state["workers"]["drawn"] = 10
    error = refused(check_workers, state["workers"], state, batches=9)
    assert (error.path, error.expected, error.got) == ("workers.drawn", "an int in [2, 10)", 10)
    state["workers"]["drawn"] = 2**63 - 1
    check_workers(state["workers"], state)
    state["workers"]["drawn"] = 2**63
    error = refused(check_workers, state["workers"], state)
    assert (error.path, error.expected, error.got) == ("workers.drawn", "below 2**63", 2**63)
    assert "state field workers.drawn must be below 2**63, got" in str(error)


def test_a_snapshot_before_any_batch_needs_no_stream_from_the_workers_that_produced_since(
    worker_scope_state: dict[str, Any],
) -> None:
    # since_snapshot batches are replayed from the workers' snapshot, taken before
    # them: a worker that produced only those need not hold the pass's stream yet.
    state = _edit(worker_scope_state, STREAM, None)
    state["workers"]["since_snapshot"] = 2
    check_workers(state["workers"], state)
    state["workers"]["since_snapshot"] = 1
    _check_refused(
        state, STREAM, "the stream of pass [0, 0] (worker 0 produced a batch of it)", None
    )


def test_a_worker_that_produced_must_hold_this_pass_s_stream_not_an_earlier_one(
    worker_scope_state: dict[str, Any],
) -> None:
    # Worker 0 produced a batch of pass [0, 1], yet holds the stream of pass [0, 0]:
    # a stream an idle persistent worker may hold, but not one that produced.
    state = {**copy.deepcopy(worker_scope_state), "serial": 1}
    stream = state["workers"]["workers"][0]["map"]["stream"]
    _check_refused(
        state, STREAM, "the stream of pass [0, 1] (worker 0 produced a batch of it)", stream
    )


def test_an_iterable_datasets_units_drawn_may_be_any_count(iterable_state: dict[str, Any]) -> None:
    # Its sampler is an endless constant one: nothing skips it, so no least count.
    state = _edit(iterable_state, "workers.drawn", 0)
    assert check_workers(state["workers"], state)["drawn"] == 0


@pytest.mark.parametrize(
    ("changes", "pulls", "expected"),
    [
        ({}, 2, "at most 2 in all (1 batches of 2)"),
        ({"yielded": 0, "failed": 1}, 2, "at most 2 in all (1 batches of 2)"),
        ({"batch_size": None}, 1, "at most 1 in all (1 batches of 1)"),
    ],
)
def test_an_iterable_datasets_workers_pulled_at_most_a_batch_for_each_batch_consumed(
    iterable_state: dict[str, Any], changes: dict[str, Any], pulls: int, expected: str
) -> None:
    state = copy.deepcopy(iterable_state)
    state["batch_size"] = changes.get("batch_size", state["batch_size"])
    state["workers"].update({k: v for k, v in changes.items() if k != "batch_size"})
    state["workers"]["workers"][0]["iterable"]["position"] = pulls
    check_workers(state["workers"], state)
    state["workers"]["workers"][0]["iterable"]["position"] = pulls + 1
    _check_refused(state, "workers.workers[].iterable.position", expected, [pulls + 1])


def test_an_iterable_part_holds_the_datasets_state_only_where_it_has_one(
    iterable_state: dict[str, Any],
) -> None:
    state = _edit(iterable_state, f"{ITERABLE}.kind", "dataset")
    check_workers(state["workers"], state, stateful_dataset=True)
    _check_refused(
        state, f"{ITERABLE}.kind", "not 'dataset' (this dataset has no state_dict)", "dataset"
    )


def test_a_worker_scope_stream_of_an_iterable_part_is_checked_as_a_map_parts_is(
    worker_scope_state: dict[str, Any], iterable_state: dict[str, Any]
) -> None:
    # A stateful iterable dataset in worker scope: its part carries the unit's stream.
    stream = copy.deepcopy(worker_scope_state["workers"]["workers"][0]["map"]["stream"])
    state = _edit(iterable_state, f"{ITERABLE}.kind", "iterator")
    state["rng_scope"] = "worker"
    state["workers"]["workers"][0]["iterable"]["stream"] = stream
    check_workers(state["workers"], state)
    error = refused(check_workers, state["workers"], state, dataset_rngs=("gen", "aug"))
    assert (error.path, error.expected, error.got) == (
        f"{ITERABLE}.stream.attributes",
        "a state for each RNG object on the dataset (missing: ['aug', 'gen'])",
        sorted(stream["attributes"]),  # the paths it has a state for
    )


def test_units_drawn_count_the_failed_ones_too(worker_scope_state: dict[str, Any]) -> None:
    state = copy.deepcopy(worker_scope_state)
    state["workers"].update(yielded=1, failed=1, drawn=2)
    check_workers(state["workers"], state)
    state["workers"]["drawn"] = 1  # fewer than handed out and failed together
    _check_refused(state, "workers.drawn", "an int in [2, inf)", 1)


def test_the_distributed_sampler_advice_comes_only_with_another_world_size() -> None:
    saved = {**TOP, "sampler": "sampler:DistributedSampler"}
    current = {**CURRENT, "sampler": "sampler:DistributedSampler", "seed": 8}
    with pytest.raises(StateMismatchError) as info:
        check_compatible(saved, current, workers=False, elastic=False)  # type: ignore[arg-type]
    assert "DistributedSampler ties the order" not in str(info.value)
    assert info.value.mismatches == {"seed": (7, 8)}


def test_a_dataset_state_in_a_state_saved_with_workers_is_refused() -> None:
    # Only a main process that produced (num_workers=0) saves its dataset's own state
    # at the top level; with workers it travels in the workers' part, mid-epoch.
    def make() -> ReproLoader[Any]:
        return ReproLoader(Curriculum(8), batch_size=4, num_workers=2, seed=1)

    loader = make()
    list(loader)
    state = loader.state_dict()  # at the end of the epoch: no workers' part
    assert state["dataset"] is None
    error = refused(make().load_state_dict, {**state, "dataset": {"level": 2**70}})
    assert error.path == "dataset"


def _worker_scope_loader(num_workers: int) -> ReproLoader[Any]:
    # A dataset holding an RNG object, in worker scope: its state carries streams.
    return ReproLoader(
        InitGenerator(16),
        batch_size=2,
        num_workers=num_workers,
        seed=6,
        config={"rng_scope": "worker"},
    )


def _worker_scope_state_after(num_workers: int, batches: int) -> tuple[Any, dict[str, Any]]:
    """A worker-scope loader after ``batches`` batches, and its state then."""
    source = _worker_scope_loader(num_workers)
    it = iter(source)
    for _ in range(batches):
        next(it)
    return source, source.state_dict()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_worker_scope_stream_without_a_state_for_a_dataset_rng_is_refused_at_load(
    num_workers: int,
) -> None:
    # Every process's copy of the dataset has the RNG objects found on it here; a stream
    # without a state for one would otherwise be refused only inside a worker, later.
    def make() -> ReproLoader[Any]:
        return _worker_scope_loader(num_workers)

    _, state = _worker_scope_state_after(num_workers, 1)
    stream = state["workers"]["workers"][0]["map"]["stream"]
    assert sorted(stream["attributes"]) == ["dataset.rng"]
    stream["attributes"] = {}
    loader = make()
    error = refused(loader.load_state_dict, state)
    assert error.path == "workers.workers[0].map.stream.attributes"
    assert "missing: ['dataset.rng']" in str(error)


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("damage", ["none", "another pass"])
def test_a_worker_scope_stream_of_a_worker_that_produced_is_required_at_load(
    num_workers: int, damage: str
) -> None:
    # Found by the state fuzz: a worker that handed out a batch of this pass but whose
    # stream was None resumed from a fresh stream, silently other batches.
    def make() -> ReproLoader[Any]:
        return _worker_scope_loader(num_workers)

    source, state = _worker_scope_state_after(num_workers, 3)
    part = state["workers"]["workers"][0]["map"]
    if damage == "none":
        part["stream"] = None
    else:
        part["stream"]["stream"] = [state["epoch"], state["serial"] + 1]
    error = refused(make().load_state_dict, state)
    assert error.path.startswith("workers.workers[0].map.stream")
    untouched = make()
    untouched.load_state_dict(source.state_dict())  # the undamaged state still loads


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_state_shares_nothing_with_the_loader_either_way(num_workers: int) -> None:
    # A state handed out, or loaded, is the caller's: changing it afterwards (DCP loads
    # in place into the dict it is given) changes neither the loader's next state nor
    # what a loaded loader resumes. (With workers the worker part came straight from
    # torchdata's snapshots.)
    def make() -> ReproLoader[Any]:
        return _worker_scope_loader(num_workers)

    source, state = _worker_scope_state_after(num_workers, 3)
    kept = copy.deepcopy(state)
    state["workers"]["workers"][0]["map"]["stream"] = None
    again = source.state_dict()["workers"]["workers"][0]["map"]["stream"]
    assert again is not None
    assert again["stream"] == kept["workers"]["workers"][0]["map"]["stream"]["stream"]
    loaded = make()
    loaded.load_state_dict(kept)
    kept["workers"]["workers"][0]["map"]["stream"] = None
    reference = make()
    reference.load_state_dict(source.state_dict())
    assert same([list(loaded)], [list(reference)])


@pytest.fixture(scope="module")
def end_state() -> dict[str, Any]:
    """A state at an epoch's end carrying persistent workers' copies of the dataset."""
    source = ReproLoader(
        Curriculum(8), batch_size=2, num_workers=2, persistent_workers=True, seed=0
    )
    list(source)
    state = source.state_dict()
    assert state["finished"]
    assert state["workers"]["ended"]
    return state


@pytest.mark.parametrize(
    ("field", "value", "path", "expected"),
    [
        ("ended", False, "workers.ended", "True (the state's finished)"),
        (
            "since_snapshot",
            1,
            "workers.since_snapshot",
            "0 (0 at a pass's end (copies as of its end))",
        ),
    ],
)
def test_a_pass_ends_worker_part_is_checked(
    end_state: dict[str, Any], field: str, value: Any, path: str, expected: str
) -> None:
    check_workers(end_state["workers"], end_state, stateful_dataset=True)  # as saved: it passes
    state = copy.deepcopy(end_state)
    state["workers"][field] = value
    error = refused(check_workers, state["workers"], state, stateful_dataset=True)
    assert (error.path, error.expected) == (path, expected)


def test_a_second_load_replaces_the_first_wholly() -> None:
    # A mid-epoch state, then one taken before an epoch's first batch that carries the
    # persistent workers' copies: the loader stands where the second one says.
    def make() -> ReproLoader[Any]:
        return ReproLoader(
            Curriculum(8), batch_size=2, num_workers=2, persistent_workers=True, seed=0
        )

    source = make()
    it = iter(source)
    next(it), next(it)
    mid = source.state_dict()
    list(it)
    it = iter(source)
    before_first = source.state_dict()
    assert (before_first["position"], before_first["epoch"]) == (0, 1)
    assert before_first["workers"] is not None
    rest = [b.tolist() for b in it]
    loader = make()
    loader.load_state_dict(mid)
    loader.load_state_dict(before_first)
    assert loader.state_dict() == before_first  # was position 2, the first state's
    assert [b.tolist() for b in loader] == rest


def test_a_pass_ends_worker_part_without_workers_is_refused(end_state: dict[str, Any]) -> None:
    state = copy.deepcopy(end_state)
    state["num_workers"] = state["workers"]["processes"] = 0
    state["workers"].update(base_seed=None, last_worker=None)
    state["workers"]["workers"] = state["workers"]["workers"][:1]
    error = refused(check_workers, state["workers"], state, stateful_dataset=True)
    assert (error.path, error.expected, error.got) == (
        "workers.ended",
        "False with num_workers=0 (no workers keep copies)",
        True,
    )


def test_a_dataset_state_its_own_load_state_dict_rejects_is_refused_by_name() -> None:
    # The state's dataset field goes to the dataset's own load_state_dict: where that
    # raises, the load is refused naming the field, and the loader stays as it was.
    def make() -> ReproLoader[Any]:
        return ReproLoader(Curriculum(6), batch_size=2, seed=0)

    source = make()
    fresh = [b.tolist() for b in make()]
    list(source)
    state = source.state_dict()
    state["dataset"] = "x"
    loader = make()
    error = refused(loader.load_state_dict, state)
    assert error.path == "dataset"
    assert "load_state_dict accepts (it raised TypeError" in str(error)
    assert [b.tolist() for b in loader] == fresh
