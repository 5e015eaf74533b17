from __future__ import annotations

import io
import json
import re
import time
from typing import Any

import pytest
import torch

from reproloader import ReproLoader, StateError, StateMismatchError, StateVersionError
from reproloader.state import VERSION, upgrade
from tests.datasets import AllSources, GlobalDraws, Stream


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


def test_state_errors_are_value_errors() -> None:
    assert issubclass(StateVersionError, StateError)
    assert issubclass(StateError, ValueError)


class _SlowFirstBatch(torch.utils.data.Dataset[Any]):
    """Batch 0 (indices 0-3) is slow: with in_order=False batch 1 arrives first."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int) -> Any:
        if i < 4:
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


NO_TORCH = {"reseed_globals": ["numpy", "random"]}


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
    kept = [0, 1, 2, 4, 5]  # every column but torch's, which nothing reseeds here
    assert all(torch.equal(a[:, kept], b[:, kept]) for a, b in zip(resumed, rest, strict=True))
    assert upgrade(state)["version"] == VERSION


def test_version_1_state_mid_epoch_with_torch_reseeded_is_refused() -> None:
    source = ReproLoader(AllSources(20), batch_size=4, seed=5)
    it = iter(source)
    next(it)
    state = version_1(source.state_dict())
    message = (
        "cannot resume this state: it has format version 1 and it was taken mid-way through "
        "epoch 0 with torch reseeded; version 2 seeds torch below 2**63, so the rest of this "
        "epoch would draw other torch values than the release that saved it. Finish epoch 0"
    )
    with pytest.raises(StateVersionError, match=re.escape(message)):
        ReproLoader(AllSources(20), batch_size=4, seed=5).load_state_dict(state)


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
