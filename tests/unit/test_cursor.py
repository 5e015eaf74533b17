"""The pass cursor on its own: positions, passes, snapshots and restores, without torch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reproloader._runtime.cursor import Pass, PassCursor, pick_rank
from reproloader.exceptions import StateFieldError, StateMismatchError, StateVersionError
from reproloader.state import FORMAT, RANKS_FORMAT, VERSION

IDENTITY: dict[str, Any] = {
    "seed": 7,
    "rng_scope": "batch",
    "reseed_globals": ["numpy", "random", "torch"],
    "reseed_dataset_rngs": True,
    "dataset_length": 100,
    "batch_size": 10,
    "drop_last": False,
    "sampler": "sequential",
    "world_size": 1,
    "rank": 0,
    "num_workers": 0,
}


def workers_part(yielded: int, processes: int = 0, base_seed: int = 5) -> dict[str, Any]:
    """A valid worker part (state.WorkersState) of a map-style dataset in batch scope."""
    return {
        "version": 1,
        "processes": processes,
        "yielded": yielded,
        "failed": 0,
        "since_snapshot": 0,
        "drawn": yielded,
        "sampler": None,
        "len_called": None,
        "base_seed": base_seed if processes else None,
        "last_worker": 0 if processes else None,
        "ended": False,
        "workers": [
            {
                "id": i,
                "map": {"dataset": None, "stream": None},
                "iterable": None,
                "ended": False,
            }
            for i in range(max(processes, 1))
        ],
    }


def _never() -> Any:
    raise AssertionError("must not be called here")


def snapshot(
    cursor: PassCursor,
    yielded: int = 0,
    finished: bool = False,
    *,
    workers_hold_state: bool = False,
    worker_state: Any = _never,
    offset_after: Any = None,
    identity: dict[str, Any] = IDENTITY,
) -> dict[str, Any]:
    return dict(
        cursor.snapshot(
            identity,
            lambda: (yielded, finished, []),
            workers_hold_state=workers_hold_state,
            worker_state=worker_state,
            offset_after=offset_after,
        )
    )


def test_a_new_cursor_is_at_the_start_of_epoch_0() -> None:
    cursor = PassCursor()
    assert cursor.epoch == 0
    state = snapshot(cursor)
    assert (state["epoch"], state["position"], state["finished"], state["serial"]) == (
        0,
        0,
        False,
        0,
    )
    assert state["format"] == FORMAT
    assert state["version"] == VERSION
    assert state["workers"] is None
    assert state["offset"] is None
    # Its current pass is the first one (the unit sampler's len reads its world size).
    assert cursor.current == Pass(epoch=0, serial=0, start=0, offset=0, rank=0, world_size=1)


def test_each_pass_after_the_first_is_the_next_epoch_with_a_new_serial() -> None:
    cursor = PassCursor()
    passes = [cursor.begin_pass(0, 1) for _ in range(3)]
    assert [(p.epoch, p.serial) for p in passes] == [(0, 0), (1, 1), (2, 2)]
    assert cursor.current is passes[-1]


def test_set_epoch_makes_the_next_pass_run_that_epoch_from_its_start() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    cursor.set_epoch(5)
    assert cursor.epoch == 5
    assert cursor.begin_pass(0, 1) == Pass(epoch=5, serial=1, start=0, offset=0)
    cursor.set_epoch(5)
    assert cursor.begin_pass(0, 1).epoch == 5  # set_epoch again: the same epoch again


@pytest.mark.parametrize(
    ("epoch", "error", "match"),
    [
        (-1, ValueError, r"epoch must be in \[0, 4294967296\), got -1"),
        (2**32, ValueError, "got 4294967296"),
        (1.0, TypeError, "epoch must be an int, got 1.0 of type float"),
        (True, TypeError, "epoch must be an int"),
    ],
)
def test_set_epoch_rejects_what_is_not_an_epoch(
    epoch: Any, error: type[Exception], match: str
) -> None:
    cursor = PassCursor()
    with pytest.raises(error, match=match):
        cursor.set_epoch(epoch)
    assert cursor.epoch == 0


def test_a_mid_pass_snapshot_counts_from_the_start_of_the_pass() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = snapshot(cursor, yielded=4)
    assert (state["epoch"], state["position"], state["finished"], state["serial"]) == (
        0,
        4,
        False,
        0,
    )
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=False)
    current = resumed.begin_pass(0, 1)
    assert (current.epoch, current.serial, current.start) == (0, 0, 4)
    assert snapshot(resumed, yielded=2)["position"] == 6  # 4 restored + 2 yielded since


def test_a_finished_pass_resumes_into_the_next_epoch() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = snapshot(cursor, yielded=10, finished=True)
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=False)
    # Before iterating, the restored cursor reports the finished pass as it was saved.
    assert snapshot(resumed) == state
    assert resumed.begin_pass(0, 1) == Pass(epoch=1, serial=1)


def test_a_restored_unstarted_state_snapshots_to_itself() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = snapshot(cursor, yielded=3)
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=False)
    assert snapshot(resumed) == state


def test_worker_state_is_taken_mid_pass_where_workers_hold_state_and_handed_on_once() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    workers = workers_part(2)
    state = snapshot(cursor, yielded=2, workers_hold_state=True, worker_state=lambda: workers)
    assert state["workers"] == workers
    # At the start of a pass and at its end there is nothing to take.
    assert snapshot(cursor, yielded=0, workers_hold_state=True)["workers"] is None
    assert snapshot(cursor, yielded=10, finished=True, workers_hold_state=True)["workers"] is None
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=True)
    assert snapshot(resumed, workers_hold_state=True)["workers"] == workers
    assert resumed.take_resume_workers() == workers
    assert resumed.take_resume_workers() is None


def test_set_epoch_after_a_restore_drops_the_restored_worker_state() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = snapshot(
        cursor, yielded=2, workers_hold_state=True, worker_state=lambda: workers_part(2)
    )
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=True)
    resumed.set_epoch(3)
    assert resumed.take_resume_workers() is None
    assert resumed.begin_pass(0, 1).start == 0


def test_a_state_lacking_or_carrying_worker_state_where_it_should_not_is_refused() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    without = snapshot(cursor, yielded=2)
    with pytest.raises(StateMismatchError, match="lacks worker state, which this loader needs"):
        PassCursor().restore(without, IDENTITY, elastic=False, workers_hold_state=True)
    with_workers = {**without, "workers": workers_part(2)}
    with pytest.raises(StateMismatchError, match="carries worker state, which this loader does"):
        PassCursor().restore(with_workers, IDENTITY, elastic=False, workers_hold_state=False)


def test_sharded_offsets_come_from_the_pass_and_restore_into_the_next() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 2)

    def offset_after(current: Pass, batches: int) -> int:
        return current.offset + 20 * batches

    state = snapshot(cursor, yielded=3, offset_after=offset_after)
    assert state["offset"] == 60
    assert snapshot(cursor, yielded=5, finished=True, offset_after=offset_after)["offset"] is None
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=True, workers_hold_state=False)
    assert resumed.begin_pass(0, 2).offset == 60


def test_a_rejected_restore_changes_nothing() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    good = snapshot(cursor, yielded=4)
    target = PassCursor()
    target.set_epoch(2)
    before = snapshot(target)
    for bad in (
        {**good, "seed": 8},
        {**good, "format": "other"},
        {**good, "version": VERSION + 1},
        {k: v for k, v in good.items() if k != "epoch"},
    ):
        with pytest.raises((StateMismatchError, StateVersionError)):
            target.restore(bad, IDENTITY, elastic=False, workers_hold_state=False)
        assert snapshot(target) == before


def test_another_world_size_is_refused_unless_the_position_is_global() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 2)
    state = snapshot(
        cursor,
        yielded=1,
        identity={**IDENTITY, "world_size": 2},
        offset_after=lambda p, n: p.offset + 20 * n,  # shard=True: a global offset
    )
    with pytest.raises(StateMismatchError, match="world_size: saved 2, this loader 1"):
        PassCursor().restore(state, IDENTITY, elastic=False, workers_hold_state=False)
    PassCursor().restore(state, IDENTITY, elastic=True, workers_hold_state=False)


def _gathered(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"format": RANKS_FORMAT, "version": 1, "world_size": len(parts), "ranks": list(parts)}


@pytest.mark.parametrize(("rank", "world_size", "expected"), [(1, 2, {"r": 1}), (2, 3, {"r": 0})])
def test_pick_rank_takes_this_ranks_part_or_part_0_on_another_world_size(
    rank: int, world_size: int, expected: dict[str, int]
) -> None:
    assert pick_rank(_gathered({"r": 0}, {"r": 1}), rank, world_size) == expected


def test_pick_rank_passes_one_ranks_state_through_and_refuses_an_empty_gathering() -> None:
    assert pick_rank({"format": FORMAT, "x": 1}, 0, 1) == {"format": FORMAT, "x": 1}
    with pytest.raises(StateMismatchError, match="non-empty list 'ranks'"):
        pick_rank(_gathered(), 0, 1)


def test_a_gathered_state_restores_each_rank_from_its_own_part() -> None:
    parts = []
    for rank in range(2):
        cursor = PassCursor()
        cursor.begin_pass(rank, 2)
        identity = {**IDENTITY, "rank": rank, "world_size": 2, "num_workers": 1}
        parts.append(
            snapshot(
                cursor,
                yielded=3 + rank,
                identity=identity,
                workers_hold_state=True,
                worker_state=lambda rank=rank: workers_part(3 + rank, 1, base_seed=rank),
            )
        )
    for rank in range(2):
        identity = {**IDENTITY, "rank": rank, "world_size": 2, "num_workers": 1}
        resumed = PassCursor()
        resumed.restore(_gathered(*parts), identity, elastic=False, workers_hold_state=True)
        assert resumed.take_resume_workers() == workers_part(3 + rank, 1, base_seed=rank)
    # Worker state of rank 0 cannot resume rank 1 on another world size: refused by name.
    identity = {**IDENTITY, "rank": 1, "world_size": 3, "num_workers": 1}
    with pytest.raises(StateMismatchError, match="rank: saved 0, this loader 1"):
        PassCursor().restore(_gathered(*parts), identity, elastic=False, workers_hold_state=True)


@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("pass"), st.integers(0, 9), st.booleans()),
            st.tuples(st.just("epoch"), st.integers(0, 50), st.just(False)),
        ),
        max_size=12,
    )
)
def test_any_history_snapshots_to_a_state_that_restores_to_the_same_snapshot(
    steps: list[tuple[str, int, bool]],
) -> None:
    cursor = PassCursor()
    yielded, finished = 0, False
    for kind, n, end in steps:
        if kind == "pass":
            cursor.begin_pass(0, 1)
            yielded, finished = (10, True) if end else (n, False)
        else:
            cursor.set_epoch(n)
    state = snapshot(cursor, yielded, finished)
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=False)
    assert snapshot(resumed) == state
    # ...and its next pass is the one the saved loader would have run next.
    following = resumed.begin_pass(0, 1)
    if state["finished"]:
        assert (following.epoch, following.start) == (state["epoch"] + 1, 0)
        assert following.serial == state["serial"] + 1
    else:
        assert (following.epoch, following.start) == (state["epoch"], state["position"])
        assert following.serial == state["serial"]


def test_out_of_order_tasks_become_a_first_position_and_the_positions_done_after_it() -> None:
    cursor = PassCursor()
    state = {**snapshot(cursor), "position": 2, "done": [4]}
    cursor.restore(state, IDENTITY, elastic=False, workers_hold_state=False, batches=25)
    current = cursor.begin_pass(0, 1)
    assert (current.start, current.skip) == (2, frozenset({4}))
    # Tasks are the pass's positions not skipped: 2, 3, 5, 6...; tasks 0 and 2 consumed.
    taken = dict(
        cursor.snapshot(
            IDENTITY,
            lambda: (1, False, [2]),
            workers_hold_state=False,
            worker_state=_never,
        )
    )
    assert (taken["position"], taken["done"]) == (3, [4, 5])
    again = PassCursor()
    again.restore(taken, IDENTITY, elastic=False, workers_hold_state=False, batches=25)
    assert again.begin_pass(0, 1).skip == frozenset({4, 5})


@pytest.mark.parametrize("done", [[2], [5, 4], [4, 4], [True], ["5"], [30], None], ids=repr)
def test_done_positions_that_no_pass_could_leave_are_refused(done: Any) -> None:
    state = {**snapshot(PassCursor()), "position": 2, "done": done}
    with pytest.raises(StateFieldError, match="state field done must be"):
        PassCursor().restore(state, IDENTITY, elastic=False, workers_hold_state=False, batches=25)


def test_epoch_now_names_the_next_pass_once_a_pass_ended_or_a_finished_one_was_restored() -> None:
    cursor = PassCursor()
    assert (cursor.epoch_now(False), cursor.epoch_now(True)) == (0, 0)  # nothing began
    cursor.begin_pass(0, 1)
    assert (cursor.epoch_now(False), cursor.epoch_now(True)) == (0, 1)
    finished = snapshot(cursor, yielded=10, finished=True)
    resumed = PassCursor()
    resumed.restore(finished, IDENTITY, elastic=False, workers_hold_state=False)
    assert resumed.epoch_now(False) == 1
    resumed.begin_pass(0, 1)  # the restored end is behind it now
    assert (resumed.epoch_now(False), resumed.epoch_now(True)) == (1, 2)
    mid = PassCursor()
    mid.restore(snapshot(cursor, yielded=4), IDENTITY, elastic=False, workers_hold_state=False)
    assert (mid.epoch_now(False), mid.epoch_now(True)) == (0, 0)


def test_a_pass_records_its_rank_and_world_size() -> None:
    current = PassCursor().begin_pass(2, 3)
    assert (current.rank, current.world_size) == (2, 3)


def _sharded_state(yielded: int) -> dict[str, Any]:
    cursor = PassCursor()
    cursor.begin_pass(0, 2)
    return snapshot(cursor, yielded=yielded, offset_after=lambda p, n: p.offset + 20 * n)


def test_a_restored_sharded_state_snapshots_its_offset_until_a_pass_begins() -> None:
    state = _sharded_state(3)
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=True, workers_hold_state=False)
    assert snapshot(resumed, offset_after=_never)["offset"] == 60
    assert snapshot(resumed, offset_after=_never) == state
    # Without sharding a snapshot has no offset, whatever the cursor holds.
    assert snapshot(resumed)["offset"] is None


def test_set_epoch_and_a_begun_pass_drop_a_restored_offset() -> None:
    state = _sharded_state(3)
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=True, workers_hold_state=False)
    resumed.set_epoch(0)
    assert resumed.begin_pass(0, 2).offset == 0
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=True, workers_hold_state=False)
    assert resumed.begin_pass(0, 2).offset == 60
    assert resumed.begin_pass(0, 2) == Pass(epoch=1, serial=1, start=0, offset=0, world_size=2)
    # A state with offset None (no sharding) restores to offset 0.
    plain = PassCursor()
    plain.restore({**state, "offset": None}, IDENTITY, elastic=False, workers_hold_state=False)
    assert (plain.begin_pass(0, 2).offset, plain.current.start) == (0, 3)


def test_a_mid_pass_snapshot_takes_worker_state_only_where_workers_hold_it() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    assert snapshot(cursor, yielded=2, workers_hold_state=False)["workers"] is None
    calls: list[int] = []
    snapshot(cursor, yielded=2, workers_hold_state=True, worker_state=lambda: calls.append(1))
    assert calls == [1]


def test_a_worker_state_mismatch_names_both_sides() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    without = snapshot(cursor, yielded=2)
    with pytest.raises(StateMismatchError) as info:
        PassCursor().restore(without, IDENTITY, elastic=False, workers_hold_state=True)
    assert info.value.mismatches == {"worker state": (False, True)}
    message = (
        "cannot resume: the state lacks worker state, which this loader needs here (worker "
        "scope, iterable datasets and datasets with a state_dict make workers hold state); "
        "resume with the same dataset and rng_scope"
    )
    assert str(info.value) == message
    with pytest.raises(StateMismatchError) as info:
        PassCursor().restore(
            {**without, "workers": workers_part(2)},
            IDENTITY,
            elastic=False,
            workers_hold_state=False,
        )
    assert info.value.mismatches == {"worker state": (True, False)}
    assert "carries worker state, which this loader does not use here" in str(info.value)
    # A finished pass or one not begun needs none, even where workers hold state.
    finished = snapshot(cursor, yielded=10, finished=True)
    PassCursor().restore(finished, IDENTITY, elastic=False, workers_hold_state=True)
    PassCursor().restore(snapshot(PassCursor()), IDENTITY, elastic=False, workers_hold_state=True)


# Version 1 mid-epoch states with torch reseeded are refused (torch's seeds changed):
# these reseed python and numpy only.
V1_IDENTITY = {**IDENTITY, "reseed_globals": ["numpy"]}  # no rule of versions 2, 3 applies


def _version_1_with_workers() -> dict[str, Any]:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = snapshot(
        cursor,
        yielded=2,
        workers_hold_state=True,
        worker_state=lambda: {"old": 2},
        identity=V1_IDENTITY,
    )
    return {**state, "version": 1}


def test_a_version_1_worker_part_is_converted_then_checked() -> None:
    state = _version_1_with_workers()
    seen: list[Any] = []

    def convert(old: Any) -> Any:
        seen.append(old)
        return workers_part(2)

    resumed = PassCursor()
    resumed.restore(
        state, V1_IDENTITY, elastic=False, workers_hold_state=True, legacy_workers=convert
    )
    assert seen == [{"old": 2}]
    assert resumed.take_resume_workers() == workers_part(2)
    # Version 2 worker parts are never converted.
    resumed = PassCursor()
    resumed.restore(
        {**state, "version": 2, "workers": workers_part(2)},
        V1_IDENTITY,
        elastic=False,
        workers_hold_state=True,
        legacy_workers=_never,
    )
    # Without a converter a version-1 part is checked as it is (and refused).
    with pytest.raises(StateFieldError) as error:
        PassCursor().restore(state, V1_IDENTITY, elastic=False, workers_hold_state=True)
    assert error.value.path == "workers"


@pytest.mark.parametrize("raised", [KeyError, TypeError, ValueError, AttributeError, IndexError])
def test_a_version_1_worker_part_that_does_not_convert_is_refused_by_name(
    raised: type[Exception],
) -> None:
    def convert(old: Any) -> Any:
        raise raised("broken")

    with pytest.raises(StateFieldError) as info:
        PassCursor().restore(
            _version_1_with_workers(),
            V1_IDENTITY,
            elastic=False,
            workers_hold_state=True,
            legacy_workers=convert,
        )
    assert (info.value.path, info.value.expected, info.value.got) == (
        "workers",
        "the worker state version 1 wrote",
        {"old": 2},
    )
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize("ranks", [None, (), [], {"0": {}}])
def test_pick_rank_refuses_a_gathering_without_a_list_of_ranks(ranks: Any) -> None:
    gathered = {"format": RANKS_FORMAT, "version": 1, "ranks": ranks}
    with pytest.raises(StateMismatchError) as info:
        pick_rank(gathered, 0, 1)
    assert str(info.value) == (
        f"cannot resume: a gathered state needs a non-empty list 'ranks', got {ranks!r}; "
        "pass what reproloader.distributed.gather_state returned"
    )
    assert info.value.mismatches == {"ranks": (ranks, "a list of every rank's state")}


def test_pick_rank_passes_anything_but_a_gathering_through() -> None:
    for state in ([1], "x", {"format": "other", "ranks": []}):
        assert pick_rank(state, 0, 1) is state  # type: ignore[arg-type]


def test_restore_holds_the_position_to_the_batches_of_an_epoch_here() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = snapshot(cursor, yielded=4)
    PassCursor().restore(state, IDENTITY, elastic=False, workers_hold_state=False, batches=4)
    with pytest.raises(StateFieldError) as info:
        PassCursor().restore(state, IDENTITY, elastic=False, workers_hold_state=False, batches=3)
    assert (info.value.path, info.value.got) == ("position", 4)


def test_worker_state_is_needed_from_the_first_batch_on() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = snapshot(
        cursor, yielded=1, workers_hold_state=True, worker_state=lambda: workers_part(1)
    )
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=True)
    assert resumed.take_resume_workers() == workers_part(1)


# Persistent workers' copies of a dataset with its own state: a state taken outside a
# pass's batches (before its first, or at its end) carries them in its worker part.
WORKERS_2 = {**IDENTITY, "num_workers": 2}


def _copies_state(position: int, finished: bool = False) -> dict[str, Any]:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    part = workers_part(position, processes=2)
    part["ended"] = finished
    return {**snapshot(cursor, position, finished, identity=WORKERS_2), "workers": part}


@pytest.mark.parametrize(("position", "finished"), [(0, False), (10, True)])
def test_a_state_with_workers_copies_hands_them_to_the_next_iterator_once(
    position: int, finished: bool
) -> None:
    state = _copies_state(position, finished)
    resumed = PassCursor()
    resumed.restore(state, WORKERS_2, elastic=False, workers_hold_state=True, keeps_copies=True)
    assert snapshot(resumed, workers_hold_state=True, identity=WORKERS_2) == state
    assert resumed.take_resume_workers() is None  # no mid-pass worker state to resume
    assert resumed.take_copies() == state["workers"]
    assert resumed.take_copies() is None
    assert resumed.begin_pass(0, 1).epoch == (1 if finished else 0)


@pytest.mark.parametrize(("position", "finished"), [(0, False), (10, True)])
def test_workers_copies_are_refused_where_this_loaders_workers_would_not_keep_them(
    position: int, finished: bool
) -> None:
    with pytest.raises(StateMismatchError) as info:
        PassCursor().restore(
            _copies_state(position, finished), WORKERS_2, elastic=False, workers_hold_state=True
        )
    assert str(info.value) == (
        "cannot resume: the state was taken outside an epoch's batches with persistent "
        "workers and carries each worker's copy of the dataset's own state, which this "
        "loader's workers would not keep (they start every epoch from fresh copies); resume "
        "with persistent_workers=True, the same num_workers and the same dataset"
    )
    assert info.value.mismatches == {
        "persistent workers keeping the dataset's state": (True, False)
    }


def test_a_state_made_with_its_iterator_before_its_first_batch_resumes_its_workers() -> None:
    # num_workers=0, position 0: the worker part holds the user's iterator, made with
    # the loader's iterator; it is resumed from (not a copy kept across passes).
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = {**snapshot(cursor, 0), "workers": workers_part(0)}
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=True)
    assert resumed.take_copies() is None
    assert resumed.take_resume_workers() == workers_part(0)


def _mid_pass_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """A state after 3 batches of a pass whose 2 workers hold state, and the workers' part."""
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    part = workers_part(3, processes=2)
    state = snapshot(
        cursor, 3, workers_hold_state=True, worker_state=lambda: part, identity=WORKERS_2
    )
    return state, part


def test_a_mid_pass_worker_state_is_resumed_from_and_never_kept_as_copies() -> None:
    state, part = _mid_pass_state()
    resumed = PassCursor()
    resumed.restore(state, WORKERS_2, elastic=False, workers_hold_state=True, keeps_copies=True)
    assert resumed.take_copies() is None
    assert resumed.take_resume_workers() == part


def test_a_restore_forgets_the_worker_state_of_an_earlier_restore() -> None:
    # A position-0 state with copies restored after a mid-pass one: its snapshot is
    # itself, not the earlier state's position.
    mid, _ = _mid_pass_state()
    start = _copies_state(0)
    resumed = PassCursor()
    resumed.restore(mid, WORKERS_2, elastic=False, workers_hold_state=True, keeps_copies=True)
    resumed.restore(start, WORKERS_2, elastic=False, workers_hold_state=True, keeps_copies=True)
    assert snapshot(resumed, workers_hold_state=True, identity=WORKERS_2) == start
    assert resumed.take_resume_workers() is None


def test_a_restored_sharded_worker_state_snapshots_its_offset() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 2)
    state = snapshot(
        cursor,
        3,
        workers_hold_state=True,
        worker_state=lambda: workers_part(3),
        offset_after=lambda p, n: p.offset + 20 * n,
    )
    assert state["offset"] == 60
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=True, workers_hold_state=True)
    assert snapshot(resumed, workers_hold_state=True, offset_after=_never) == state


def test_a_dataset_state_is_refused_where_it_does_not_belong() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    plain = {**snapshot(cursor, 3), "dataset": {"i": 1}}
    with_workers = {**plain, "workers": workers_part(3)}
    cases = [
        (plain, False, False, "None (this dataset has no state_dict)"),
        (with_workers, True, True, "None (the dataset's state is in the workers' part)"),
        (with_workers, False, True, "None (this dataset has no state_dict)"),
    ]
    for state, stateful, hold, expected in cases:
        with pytest.raises(StateFieldError) as info:
            PassCursor().restore(
                state, IDENTITY, elastic=False, workers_hold_state=hold, stateful_dataset=stateful
            )
        assert (info.value.path, info.value.expected, info.value.got) == (
            "dataset",
            expected,
            {"i": 1},
        )
    # Saved by a main process that produced, of a dataset with a state_dict: it is handed back.
    dataset = PassCursor().restore(
        plain, IDENTITY, elastic=False, workers_hold_state=False, stateful_dataset=True
    )
    assert dataset == {"i": 1}


def test_restore_checks_the_worker_part_against_this_loaders_dataset_and_batches() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    part = workers_part(3)
    part["workers"][0]["map"]["dataset"] = {"i": 1}
    state = snapshot(cursor, 3, workers_hold_state=True, worker_state=lambda: part)
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=True, stateful_dataset=True)
    assert resumed.take_resume_workers() == part
    with pytest.raises(StateFieldError) as info:
        PassCursor().restore(state, IDENTITY, elastic=False, workers_hold_state=True)
    assert info.value.path == "workers.workers[0].map.dataset"
    part["drawn"] = 5  # units drawn past the 4 batches of an epoch here
    with pytest.raises(StateFieldError) as info:
        PassCursor().restore(
            state,
            IDENTITY,
            elastic=False,
            workers_hold_state=True,
            stateful_dataset=True,
            batches=4,
        )
    assert (info.value.path, info.value.got) == ("workers.drawn", 5)


def test_a_sharded_state_resumes_on_another_world_size_held_to_its_offset_not_position() -> None:
    # 100 samples in batches of 10: 5 batches per rank on 2 ranks, 3 on 4. A finished
    # pass saved on 2 ranks resumes on 4; on 2 it is held to the 3 batches given.
    cursor = PassCursor()
    cursor.begin_pass(0, 2)
    saved_on_2 = {**IDENTITY, "world_size": 2, "sampler": "sharded"}
    state = snapshot(cursor, 5, True, offset_after=lambda p, n: 20 * n, identity=saved_on_2)
    on_4 = {**saved_on_2, "world_size": 4}
    PassCursor().restore(state, on_4, elastic=True, workers_hold_state=False, batches=3)
    with pytest.raises(StateFieldError) as info:
        PassCursor().restore(state, saved_on_2, elastic=True, workers_hold_state=False, batches=3)
    assert (info.value.path, info.value.got) == ("position", 5)


def test_a_pass_takes_the_skipped_ranges_of_its_own_epoch() -> None:
    cursor = PassCursor()
    cursor.add_skips([(0, 2, 4), (1, 0, 1)])
    assert cursor.begin_pass(0, 1).skipped == ((2, 4),)
    assert cursor.begin_pass(0, 1).skipped == ((0, 1),)
    assert cursor.begin_pass(0, 1).skipped == ()
    assert snapshot(cursor)["skip"] == [[0, 2, 4], [1, 0, 1]]


def test_a_snapshot_past_a_skipped_end_of_the_epoch_stands_at_its_end() -> None:
    cursor = PassCursor()
    cursor.add_skips([(0, 8, 20)])
    cursor.begin_pass(0, 1)
    progress = (8, False, [])
    state = cursor.snapshot(
        IDENTITY, lambda: progress, workers_hold_state=False, worker_state=_never, batches=10
    )
    assert state["position"] == 10


def test_a_sharded_snapshot_counts_the_offset_from_where_the_pass_started() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 2)
    state = snapshot(cursor, 3, offset_after=lambda p, n: p.offset + 20 * n)
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=True, workers_hold_state=False)
    assert resumed.begin_pass(0, 2).start == 3
    later = snapshot(resumed, 2, offset_after=lambda p, n: p.offset + 20 * n)
    assert (later["position"], later["offset"]) == (5, 100)


def test_end_workers_are_taken_only_outside_a_pass_s_batches() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)

    def take(yielded: int, finished: bool) -> Any:
        state = cursor.snapshot(
            IDENTITY,
            lambda: (yielded, finished, []),
            workers_hold_state=False,
            worker_state=_never,
            end_workers=lambda: {"copies": 1},
        )
        return state["workers"]

    assert take(0, False) == {"copies": 1}
    assert take(10, True) == {"copies": 1}
    assert take(3, False) is None


def test_a_finished_pass_lists_no_out_of_order_positions() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = cursor.snapshot(
        IDENTITY, lambda: (8, True, [9]), workers_hold_state=False, worker_state=_never
    )
    assert (state["finished"], state["done"]) == (True, [])


def test_the_dataset_s_own_state_is_saved_only_where_no_worker_part_carries_it() -> None:
    cursor = PassCursor()
    cursor.begin_pass(0, 1)

    def take(workers_hold_state: bool) -> Any:
        return cursor.snapshot(
            IDENTITY,
            lambda: (3, False, []),
            workers_hold_state=workers_hold_state,
            worker_state=lambda: workers_part(3),
            dataset_state=lambda: {"i": 3},
        )["dataset"]

    assert take(False) == {"i": 3}
    assert take(True) is None


def test_positions_handed_out_before_a_restore_are_walked_past_in_order() -> None:
    # Restored at position 3 with 5 handed out already: the next tasks are 3, 4, 6, 7.
    cursor = PassCursor()
    cursor.begin_pass(0, 1)
    state = cursor.snapshot(
        IDENTITY, lambda: (3, False, [5]), workers_hold_state=False, worker_state=_never
    )
    assert (state["position"], state["done"]) == (3, [5])
    resumed = PassCursor()
    resumed.restore(state, IDENTITY, elastic=False, workers_hold_state=False)
    resumed.begin_pass(0, 1)
    for consumed, position in [(1, 4), (2, 6), (3, 7)]:
        assert (snapshot(resumed, consumed)["position"], snapshot(resumed, consumed)["done"]) == (
            position,
            [5] if position < 5 else [],
        )
