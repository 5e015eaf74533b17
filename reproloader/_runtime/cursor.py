"""The pass cursor: the one owner of a loader's position, and of its conversion to a state.

A *pass* is one ``iter(loader)``. The cursor knows which epoch the next pass runs,
where it starts (a batch index, and with sharding a global sample offset), and
whether a pass ran to its end; it turns that position into a
:class:`~reproloader.state.LoaderState` and back. It is pure Python: what the
iterators report (batches handed out, finished) is passed in, so every branch is
unit-tested without torch (``tests/unit/test_cursor.py``).

The loader calls, in this order of a pass's life:

* :meth:`PassCursor.add_skips` (``skip_batches``/``skip_steps``; the skip list lasts
  across passes and travels in the state);
* :meth:`PassCursor.set_epoch` (optional) and :meth:`PassCursor.begin_pass` from
  ``__iter__``; the unit sampler reads :attr:`PassCursor.current` while it runs;
* :meth:`PassCursor.take_resume_workers` when the iterator is built;
* :meth:`PassCursor.snapshot` from ``state_dict``;
* :meth:`PassCursor.restore` from ``load_state_dict``, which checks the whole state
  (and takes this rank's part of a gathered one) before it changes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reproloader._runtime.skips import Ranges, SkipList, advance, is_skipped, merge, of_epoch
from reproloader.exceptions import StateFieldError, StateMismatchError
from reproloader.seeding import MAX_PATH_ELEMENT, check_int
from reproloader.state import (
    FORMAT,
    RANKS_FORMAT,
    VERSION,
    LoaderState,
    WorkersState,
    check_compatible,
    check_fields,
    check_workers,
    upgrade,
)

__all__ = ["Pass", "PassCursor"]


@dataclass(frozen=True)
class Pass:
    """One iteration over the loader.

    Attributes:
        epoch: the epoch it runs.
        serial: its number among the loader's passes (worker scope matches streams by it).
        start: the position (batch index in the epoch) of its first unit.
        offset: with sharding, the global sample offset where it starts.
        rank: the rank it runs on.
        world_size: the number of ranks.
        skip: positions after ``start`` already handed out before a restore
            (``in_order=False`` delivers out of order); the pass does not give them again.
        skipped: the ranges ``(start, stop)`` of this epoch's positions the user left
            out (:meth:`PassCursor.add_skips`); sorted and disjoint.
        stop: the position the pass ends before (a batch made on demand is a pass of
            one unit); None: the epoch's end.
    """

    epoch: int
    serial: int
    start: int = 0
    offset: int = 0
    rank: int = 0
    world_size: int = 1
    skip: frozenset[int] = frozenset()
    skipped: Ranges = ()
    stop: int | None = None


class PassCursor:
    """Where a loader is between passes and inside one.

    Attributes:
        current: the pass being iterated (the unit sampler reads it at each pass; it
            is replaced, never changed, so a running pass keeps its own).
    """

    __slots__ = (
        "_copies",
        "_epoch",
        "_loaded_end",
        "_offset",
        "_resume",
        "_serial",
        "_skip",
        "_skips",
        "_start",
        "_started",
        "current",
    )

    def __init__(self) -> None:
        self._epoch = 0
        self._started = False  # has a pass of the current epoch begun?
        self._serial = 0  # serial of the next pass
        self._start = 0  # where the next pass starts (set by restore)
        self._offset = 0  # with sharding, the global sample offset it starts at
        self._loaded_end: int | None = None  # position of a finished pass that was restored
        self._skip: frozenset[int] = frozenset()  # positions after _start handed out already
        # A mid-pass worker state for the next iterator, with its (position, offset).
        self._resume: tuple[WorkersState, int, int | None] | None = None
        # A restored pass end's worker part: persistent workers' copies of the dataset,
        # which the next iterator's new workers take over (set_epoch keeps them: the
        # workers of the uninterrupted run kept theirs whatever epoch came next).
        self._copies: WorkersState | None = None
        # Batches the user left out, in every epoch: kept across passes and resumes.
        self._skips: SkipList = []
        self.current = Pass(epoch=0, serial=0)

    @property
    def skips(self) -> SkipList:
        """The batches left out: ``(epoch, start, stop)`` ranges, sorted and merged."""
        return list(self._skips)

    def add_skips(self, ranges: SkipList) -> None:
        """Leave out more batches (from the next pass on; the running one keeps its own)."""
        self._skips = merge([*self._skips, *ranges])

    @property
    def started(self) -> bool:
        """Whether a pass of the current epoch has begun (and was not restored away)."""
        return self._started

    @property
    def epoch(self) -> int:
        """The epoch of the current pass, or of the next one if none has begun."""
        return self._epoch

    def epoch_now(self, pass_ended: bool) -> int:
        """The epoch a user reads: the next pass's once the current one ran to its end.

        Args:
            pass_ended: whether the running iterator reached its end.
        """
        if self._started and (pass_ended or self._loaded_end is not None):
            return self._epoch + 1
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass run ``epoch`` from its start."""
        self._epoch = check_int("epoch", epoch, MAX_PATH_ELEMENT)
        self._started = False
        self._start = 0
        self._offset = 0
        self._loaded_end = None
        self._resume = None
        self._skip = frozenset()

    def begin_pass(self, rank: int, world_size: int) -> Pass:
        """Start a pass: the next epoch if a pass of this one has begun already."""
        if self._started:
            self.set_epoch(self._epoch + 1)
        self._started = True
        self.current = Pass(
            epoch=self._epoch,
            serial=self._serial,
            start=self._start,
            offset=self._offset,
            rank=rank,
            world_size=world_size,
            skip=self._skip,
            skipped=of_epoch(self._skips, self._epoch),
        )
        self._serial += 1
        self._start = 0
        self._offset = 0
        self._skip = frozenset()
        self._loaded_end = None
        return self.current

    def position_of(self, task: int) -> int:
        """The position of the running pass's ``task``-th unit (from 0), in order."""
        current = self.current
        if not current.skip:
            return advance(current.start, task, current.skipped)
        position = advance(current.start, 0, current.skipped)
        while True:  # after an out-of-order restore: walk past the positions handed out
            if position not in current.skip:
                if not task:
                    return position
                task -= 1
            position = advance(position + 1, 0, current.skipped)

    def take_resume_workers(self) -> WorkersState | None:
        """The workers' state that the next iterator resumes from (once), or None."""
        resume, self._resume = self._resume, None
        return None if resume is None else resume[0]

    @property
    def restored_end_without_copies(self) -> bool:
        """Whether the last restore was of a pass's end whose state carries no worker part."""
        return self._loaded_end is not None and self._copies is None

    def take_copies(self) -> WorkersState | None:
        """A restored pass end's worker part, for the next iterator's workers (once), or None."""
        copies, self._copies = self._copies, None
        return copies

    def snapshot(
        self,
        identity: Mapping[str, Any],
        progress: Callable[[], tuple[int, bool, list[int]]],
        *,
        workers_hold_state: bool,
        worker_state: Callable[[], Any],
        offset_after: Callable[[Pass, int], int] | None = None,
        dataset_state: Callable[[], Any] | None = None,
        end_workers: Callable[[], Any] | None = None,
        started_with_state: bool = False,
        batches: int | None = None,
    ) -> LoaderState:
        """The position as a state.

        Args:
            identity: the fields that say which data a position means (see
                :data:`reproloader.state.IDENTITY_FIELDS`), for this loader.
            progress: ``(n, finished, others)`` of the running iterator: its first
                ``n`` tasks were consumed (handed out, or their fetch raised), and so were
                the tasks listed in ``others`` (out of order); called only mid-pass.
            workers_hold_state: whether workers hold state a position cannot recompute.
            worker_state: the running iterator's worker state; called only mid-pass
                where workers hold state.
            offset_after: with sharding, the global sample offset after ``n`` batches
                of a pass; None without sharding.
            dataset_state: where the main process's dataset holds its own state (a
                stateful dataset, no workers), that state; called only where no worker
                state carries it (outside a pass).
            end_workers: the worker part that carries persistent workers' copies of
                a dataset with its own state (None where there is none to carry, or
                it is not exact); called only outside a pass's batches: at its end,
                or before its first batch.
            started_with_state: the running pass was started when its iterator was
                made (``num_workers=0``, an iterable dataset), nothing was pulled from
                it yet, and the user's iterator holds a state of its own: the worker
                part carries it, as it does once batches were handed out.
            batches: the exact number of batches of an epoch here, or None: a skipped
                range past the epoch's end moves the position to the end, not past it.
        """
        workers: Any = None
        offset: int | None = None
        done: list[int] = []
        if not self._started:  # nothing iterated since set_epoch or a mid-epoch restore
            epoch, serial, position, finished = self._epoch, self._serial, self._start, False
            workers = self._copies
            offset = self._offset
            done = sorted(self._skip)
            if self._resume is not None:  # the iterator will restore where the state was
                workers, position, offset = self._resume
        elif self._loaded_end is not None:  # a finished pass was restored, nothing since
            epoch, serial, position, finished = (
                self._epoch,
                self._serial - 1,
                self._loaded_end,
                True,
            )
            workers = self._copies
        else:
            yielded, finished, others = progress()
            current = self.current
            epoch, serial = current.epoch, current.serial
            position, done = _handed_out(current, yielded, others)
            if batches is not None and position > batches:  # skipped to past the end
                position = batches
            if offset_after is not None:
                # Skipped positions hand out no batch but move through the order too.
                offset = offset_after(current, position - current.start)
            if workers_hold_state and (position or started_with_state) and not finished:
                workers = worker_state()
            elif (finished or not position) and end_workers is not None:
                workers = end_workers()
        return {
            "format": FORMAT,
            "version": VERSION,
            **identity,  # type: ignore[typeddict-item]
            "epoch": epoch,
            "position": position,
            "offset": offset if offset_after is not None and not finished else None,
            "finished": finished,
            "serial": serial,
            "workers": workers,
            "done": [] if finished else done,
            "dataset": dataset_state() if dataset_state is not None and workers is None else None,
            "skip": [list(skipped) for skipped in self._skips],
        }

    def restore(
        self,
        state: Mapping[str, Any],
        identity: Mapping[str, Any],
        *,
        elastic: bool,
        workers_hold_state: bool,
        batches: int | None = None,
        legacy_workers: Callable[[Mapping[str, Any]], Any] | None = None,
        stateful_dataset: bool = False,
        dataset_rngs: Callable[[], Sequence[str]] = tuple,
        keeps_copies: bool = False,
    ) -> Any:
        """Continue from ``state``; checks all of it before changing anything.

        Args:
            state: what :meth:`snapshot` returned, or a gathered state
                (``reproloader.distributed.gather_state``), of which this rank's part
                is taken.
            identity: this loader's identity fields, rank and world size included.
            elastic: whether the position is global (the loader shards itself), so
                another world size may resume it.
            workers_hold_state: whether workers hold state a position cannot recompute.
            batches: the exact number of batches of an epoch here, or None.
            legacy_workers: converts the worker part of a version-1 state (which held
                torchdata's own state) to :class:`~reproloader.state.WorkersState`.
            stateful_dataset: whether the dataset has its own ``state_dict``.
            dataset_rngs: the paths of the RNG objects on the dataset here, which
                worker-scope streams carry a state for (asked only where a worker
                part is checked).
            keeps_copies: whether this loader's workers keep their copies of the
                dataset from pass to pass (persistent workers, a dataset with its own
                state): only then may a pass end's state carry them.

        Returns:
            The dataset's own state to load into it (see ``LoaderState.dataset``), or
            None.

        Raises:
            StateVersionError: not a ReproLoader state, or a newer format.
            StateFieldError: a field of the wrong type or range, or out of step with
                the others.
            StateMismatchError: the state was taken from a loader that differs.
        """
        part = pick_rank(state, identity["rank"], identity["world_size"])
        legacy = isinstance(part, Mapping) and part.get("version") == 1
        saved = upgrade(part)
        check_fields(saved, batches=batches, elastic=elastic, world_size=identity["world_size"])
        workers: Any = saved["workers"]
        check_compatible(saved, identity, workers=workers is not None, elastic=elastic)
        # Worker state is needed mid-pass where workers hold state, and only there; at
        # a pass's end, or before its first batch, it may carry persistent workers'
        # copies of the dataset.
        # In-process (num_workers=0), before a pass's first batch: the state of the
        # user's iterator, made when the loader's iterator was.
        ahead = (
            workers is not None
            and not saved["num_workers"]
            and saved["position"] == 0
            and not saved["finished"]
        )
        copies = workers is not None and not ahead and (saved["finished"] or saved["position"] == 0)
        if copies and not keeps_copies:
            raise StateMismatchError(
                "cannot resume: the state was taken outside an epoch's batches with "
                "persistent workers and carries each worker's copy of the dataset's own "
                "state, which "
                "this loader's workers would not keep (they start every epoch from fresh "
                "copies); resume with persistent_workers=True, the same num_workers and "
                "the same dataset",
                {"persistent workers keeping the dataset's state": (True, False)},
            )
        needed = workers_hold_state and saved["position"] > 0 and not saved["finished"]
        if (workers is not None) != needed and not copies and not (ahead and workers_hold_state):
            raise StateMismatchError(
                "cannot resume: the state "
                f"{'carries' if workers is not None else 'lacks'} worker state, which this "
                f"loader {'needs' if needed else 'does not use'} here (worker scope, iterable "
                "datasets and datasets with a state_dict make workers hold state); resume "
                "with the same dataset and rng_scope",
                {"worker state": (workers is not None, needed)},
            )
        if workers is not None:
            if legacy and legacy_workers is not None:
                try:
                    workers = legacy_workers(workers)
                except (KeyError, TypeError, ValueError, AttributeError, IndexError):
                    raise StateFieldError(
                        "workers", "the worker state version 1 wrote", workers
                    ) from None
            workers = check_workers(
                workers,
                saved,
                stateful_dataset=stateful_dataset,
                batches=batches,
                dataset_rngs=dataset_rngs(),
            )
        if saved["dataset"] is not None and (
            workers is not None or not stateful_dataset or saved["num_workers"]
        ):
            # Only a main process that produced (num_workers=0) saves its dataset here.
            why = (
                "the dataset's state is in the workers' part"
                if stateful_dataset
                else "this dataset has no state_dict"
            )
            raise StateFieldError("dataset", f"None ({why})", saved["dataset"])
        self.set_epoch(saved["epoch"])
        self._skips = merge([*self._skips, *((e, a, b) for e, a, b in saved["skip"])])
        self._copies = workers if copies else None
        if saved["finished"]:
            self._started = True  # the next pass is the next epoch
            self._loaded_end = saved["position"]
            self._serial = saved["serial"] + 1
        else:
            self._serial = saved["serial"]
            if workers is not None and not copies:
                # The iterator restores positions and worker states; the unit sampler
                # skips the units before the position without loading them.
                self._resume = (workers, saved["position"], saved["offset"])
            else:
                self._start = saved["position"]
                self._offset = saved["offset"] or 0
                self._skip = frozenset(saved["done"])
        return saved["dataset"]


def _handed_out(current: Pass, consumed: int, others: list[int]) -> tuple[int, list[int]]:
    # Task i of a pass is its i-th position neither skipped by the user nor handed out
    # before a restore: the first ``consumed`` tasks and ``others`` were consumed.
    # Returns the first position not consumed (past any range the user skipped), and
    # the consumed positions after it.
    ranges = current.skipped
    if not current.skip and not others:
        return advance(current.start, consumed, ranges), []
    wanted = max([consumed - 1, *others]) + 1
    positions: list[int] = []
    p = advance(current.start, 0, ranges)
    while len(positions) < wanted:
        if p not in current.skip:
            positions.append(p)
        p = advance(p + 1, 0, ranges)
    handed = set(current.skip) | set(positions[:consumed]) | {positions[i] for i in others}
    first = advance(current.start, 0, ranges)
    while first in handed:
        first = advance(first + 1, 0, ranges)
    return first, sorted(p for p in handed if p > first and not is_skipped(p, ranges))


def pick_rank(state: Mapping[str, Any], rank: int, world_size: int) -> Mapping[str, Any]:
    """This rank's part of a gathered state, or ``state`` itself if it is one rank's.

    On the world size it was gathered on, rank ``r`` takes part ``r``. On another, only
    a global position can resume, which every rank holds alike: part 0 (a part that
    carries worker state is then refused, naming the rank it came from).
    """
    if not isinstance(state, Mapping) or state.get("format") != RANKS_FORMAT:
        return state
    ranks = state.get("ranks")
    if not isinstance(ranks, list) or not ranks:
        raise StateMismatchError(
            f"cannot resume: a gathered state needs a non-empty list 'ranks', got {ranks!r}; "
            "pass what reproloader.distributed.gather_state returned",
            {"ranks": (ranks, "a list of every rank's state")},
        )
    part: Mapping[str, Any] = ranks[rank] if len(ranks) == world_size else ranks[0]
    return part
