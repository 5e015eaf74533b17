"""What the DataLoader machinery sees instead of the user's dataset.

``ReproLoader.dataset`` stays the user's object; only the iterators get a wrapper.
A map-style wrapper receives *units* from :class:`~reproloader._runtime.units.UnitSampler`,
``(epoch, serial, position, indices)``, instead of bare indices, so the process that
fetches a batch knows exactly which randomness it needs, whichever worker it is and
however many batches were fetched before. An iterable wrapper cannot be told per
batch (torch's fetcher pulls samples with ``next`` and passes no index), so it counts
samples in its worker's stream and starts a unit every ``batch_size`` of them.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import operator
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.utils.data
from torch.utils.data import Dataset, IterableDataset

from reproloader._runtime.bridge import show_user_dataset_to_worker
from reproloader._runtime.datapipes import is_datapipe, start_pass
from reproloader._runtime.lifetime import die_with_parent
from reproloader._runtime.probe import END, ResumeCheck, known_loss
from reproloader._runtime.producer import Plan, Producer, Suspended
from reproloader.exceptions import ConfigError, StateError
from reproloader.seeding import worker_init_stream

__all__ = ["IterableWrapper", "MapWrapper", "Unit", "WorkerInit", "accepts_rng", "stateful"]

Unit = tuple[int, int, int, Any]
"""``(epoch, serial, position, payload)``: payload is a list of indices, or one index
without automatic batching. ``serial`` numbers the loader's passes; only worker scope
reads it, to know when a worker's stream must restart."""


def stateful(obj: object) -> bool:
    """Whether ``obj`` has ``state_dict`` and ``load_state_dict`` (torchdata's Stateful)."""
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def accepts_rng(fn: Callable[..., Any] | None) -> bool:
    """Whether ``fn`` takes an ``rng`` keyword argument."""
    if fn is None:
        return False
    try:
        parameter = inspect.signature(fn).parameters.get("rng")
    except (TypeError, ValueError):  # builtins and C extensions without a signature
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


class _Wrapper:
    # Shared by both wrappers: the per-process Producer, which is never pickled.
    dataset: Any
    plan: Plan
    _producer: Producer | None

    def producer(self) -> Producer:
        producer = self._producer
        if producer is None:
            producer = self._producer = Producer(self.plan, self.dataset)
        return producer

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_producer"] = None
        if "check" in state:
            state["check"] = None  # the main process's, not a worker's
        return state


def _sample_unit(index: object) -> int:
    try:
        return operator.index(index)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(
            f"rng_scope='sample' keys each sample's randomness by its integer dataset "
            f"index, but the sampler produced {index!r} of type {type(index).__name__}; "
            "use rng_scope='batch' for datasets indexed by other keys"
        ) from None


class MapWrapper(_Wrapper, Dataset[Any]):
    """Reseeds before each unit, then calls the user's map-style dataset."""

    def __init__(self, dataset: Dataset[Any], plan: Plan) -> None:
        self.dataset = dataset
        self.plan = plan
        self._producer = None
        items = getattr(dataset, "__getitems__", None)
        self._has_getitems = callable(items)
        self._getitems_rng = accepts_rng(items)
        self._getitem_rng = accepts_rng(getattr(dataset, "__getitem__", None))
        # (position, indices) of the unit fetched last in this process: the run
        # ledger's collate function sends them along with the batch.
        self.last_unit: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def _one(self, producer: Producer, index: Any) -> Any:
        if self._getitem_rng:
            return self.dataset.__getitem__(index, rng=producer.rng)
        return self.dataset[index]

    def _sample(
        self, producer: Producer, epoch: int, serial: int, position: int, index: Any
    ) -> Any:
        producer.enter_unit(epoch, serial, batch=position, sample=_sample_unit(index))
        return self._one(producer, index)

    def __getitems__(self, unit: Unit) -> list[Any]:
        epoch, serial, position, indices = unit
        self.last_unit = (position, indices)
        producer = self.producer()
        producer.enter_epoch(epoch)
        if self.plan.scope == "sample":
            # Per-sample streams: the user's __getitems__ would draw for all samples
            # from one stream, so each sample goes through __getitem__.
            return [self._sample(producer, epoch, serial, position, i) for i in indices]
        producer.enter_unit(epoch, serial, batch=position)
        dataset = self.dataset
        if self._has_getitems:
            if self._getitems_rng:
                return dataset.__getitems__(indices, rng=producer.rng)  # type: ignore[no-any-return]
            return dataset.__getitems__(indices)  # type: ignore[no-any-return]
        if self._getitem_rng:
            rng = producer.rng
            return [dataset.__getitem__(i, rng=rng) for i in indices]
        return [dataset[i] for i in indices]

    # torchdata's worker snapshots call these in the producing process. They are
    # only used where workers hold state: worker scope, or a dataset with its own
    # state_dict (elsewhere the loader turns snapshots off).
    def state_dict(self) -> dict[str, Any]:
        producer = self._producer
        return {
            "dataset": self.dataset.state_dict() if stateful(self.dataset) else None,
            "stream": producer.stream_state() if producer is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("dataset") is not None:
            self.dataset.load_state_dict(state["dataset"])
        if state.get("stream") is not None:
            self.producer().load_stream_state(state["stream"])

    def __getitem__(self, unit: Unit) -> Any:
        # Without automatic batching (batch_size=None) each unit is one sample.
        epoch, serial, position, index = unit
        self.last_unit = (position, index)
        producer = self.producer()
        producer.enter_epoch(epoch)
        if self.plan.scope == "sample":
            return self._sample(producer, epoch, serial, position, index)
        producer.enter_unit(epoch, serial, batch=position)
        return self._one(producer, index)


class IterableWrapper(_Wrapper, IterableDataset[Any]):
    """Reseeds at unit boundaries of each worker's stream of an iterable dataset.

    ``shared`` is a 2-element int64 tensor in shared memory holding the current
    ``(epoch, serial)``: persistent workers call ``iter`` again at every epoch but
    receive nothing else from the main process, so they read the epoch from it.
    """

    def __init__(
        self, dataset: IterableDataset[Any], plan: Plan, shared: torch.Tensor | None
    ) -> None:
        self.dataset = dataset
        self.plan = plan
        self._producer = None
        self._shared = shared
        self._datapipe = is_datapipe(dataset)
        self.epoch = 0
        self.serial = 0
        # Whether the dataset may hold a state of its own here: this process called
        # its __iter__, or gave it a state (a persistent worker's copy, a loaded one).
        self.touched = False
        # The pass's iterator in this process (the main process: one per wrapper).
        self.running: UnitIterator | None = None
        # The main process's once-per-loader check that the dataset's own state
        # resumes it exactly (reproloader._runtime.probe); None in workers.
        self.check: ResumeCheck | None = None

    @property
    def holds_state(self) -> bool:
        """Whether the dataset has a state of its own here.

        It has ``state_dict``, and a pass started it or a state was loaded into it (its
        ``state_dict`` may need ``__iter__`` first).
        """
        return self.touched and stateful(self.dataset)

    def user_state(self) -> Any:
        """The dataset's own ``state_dict()`` (see :attr:`holds_state`)."""
        return self.dataset.state_dict()

    def start(self, epoch: int) -> Iterator[Any]:
        """The user's iterator for a pass of ``epoch`` (a DataPipe sharded and seeded first)."""
        if self._datapipe:
            plan = self.plan
            start_pass(self.dataset, plan.tree, epoch, rank=plan.rank, world_size=plan.world_size)
        self.touched = True
        return iter(self.dataset)

    def __iter__(self) -> UnitIterator:
        if self._shared is not None:
            epoch, serial = self._shared.tolist()
        else:
            epoch, serial = self.epoch, self.serial
        running = self.running = UnitIterator(self, epoch, serial)
        return running


class UnitIterator(Iterator[Any]):
    """One worker's pass over an iterable dataset, reseeding where units start.

    The user's ``iter(dataset)`` is called inside the first unit, after its reseed,
    so randomness in ``__iter__`` (shuffling shards, say) belongs to that unit: in a
    worker at the first ``next``; in the main process when the loader's iterator is
    made (:meth:`start_pass_now`, as DataLoader calls it), the unit then continuing
    at the first ``next`` from where ``__iter__`` left its RNGs. ``position`` counts
    the pulls from the user's iterator in this pass, those that raised included: a
    unit's randomness is keyed by it.

    A fetch that raises mid-batch loses no sample: the ones it had pulled are handed
    out first in the next batch (torch's fetcher drops them).
    """

    def __init__(self, wrapper: IterableWrapper, epoch: int, serial: int) -> None:
        self._wrapper = wrapper
        self.epoch = epoch
        self.serial = serial
        self.position = 0
        self._it: Iterator[Any] | None = None
        # The samples handed out in the torch fetcher's current batch, and those of a
        # batch whose fetch raised, handed out again (last first) at the next ``next``:
        # the fetcher drops a failed batch's list, and the loader loses no sample.
        self._fetched: list[Any] = []
        self._carried: list[Any] = []
        # After a restore, the user's state as loaded, until the restored iterator
        # has produced: its own state_dict may not exist before that.
        self._restored: tuple[str, Any] | None = None
        # Replay: the dataset's own state as this pass began (where an earlier pass or
        # a loaded state had given it one: a persistent worker's copy), and whether the
        # user's iterator ran out (then the state is the one the pass left).
        self._start_user: Any = None
        self._exhausted = False
        # The first unit, begun when the pass was started ahead of its first ``next``.
        self._suspended: Suspended | None = None
        # Whether the next item pulled is compared with a restored copy's (_check_resume).
        self._check_pending = False

    def __iter__(self) -> UnitIterator:
        return self

    def _start(self, *, ahead: bool = False) -> Iterator[Any]:
        # The pass's first unit, and the user's iter(dataset) inside it. The dataset's
        # own state as the pass began is kept for replay, and for a state taken
        # before the first next of a pass started ahead.
        wrapper = self._wrapper
        producer = wrapper.producer()
        producer.enter_epoch(self.epoch)
        producer.enter_unit(self.epoch, self.serial, batch=0, sample=0)
        if (ahead or wrapper.plan.iterable_resume == "replay") and wrapper.holds_state:
            self._start_user = wrapper.user_state()
        it = self._it = wrapper.start(self.epoch)
        return it

    def start_pass_now(self) -> None:
        """Call the user's ``iter(dataset)`` now, as DataLoader does when its iterator is made.

        Called in the main process, inside the loader's window, once a restore (if
        any) is done; a pass a restore already started is left as it is. The first
        unit is put aside and continues at the first ``next``, so the pass draws what
        it draws when ``__iter__`` runs at the first ``next`` (as in a worker).
        """
        if self._it is not None or self._carried or self.position:
            return
        self._start(ahead=True)
        self._suspended = self._wrapper.producer().suspend()

    @property
    def before_first_next(self) -> bool:
        """Whether the pass was started ahead and nothing was pulled from it yet."""
        return self._suspended is not None

    @property
    def iterator_holds_state(self) -> bool:
        """Whether the user's iterator of this pass has its own ``state_dict``."""
        return self._it is not None and stateful(self._it)

    @property
    def start_state(self) -> Any:
        """The dataset's own state as the pass began, where it had one here (or None)."""
        return self._start_user

    def __next__(self) -> Any:
        wrapper = self._wrapper
        batch_size = wrapper.plan.batch_size
        fetched = self._fetched
        if len(fetched) == batch_size:  # the fetcher starts its next batch
            fetched.clear()
        if self._carried:
            item = self._carried.pop()
            fetched.append(item)
            return item
        producer = wrapper.producer()
        position = self.position
        it = self._it
        batch = position // batch_size
        if it is None:
            it = self._start()
        elif self._suspended is not None:  # the first unit, begun by start_pass_now
            producer.resume(self._suspended)
            self._suspended = None
        elif wrapper.plan.scope == "batch" and position % batch_size:
            producer.at(epoch=self.epoch, batch_index=batch)  # inside a batch
        else:
            producer.enter_unit(self.epoch, self.serial, batch=batch, sample=position)
        self._restored = None
        try:
            item = next(it)
        except StopIteration:
            self._exhausted = True
            if self._check_pending:
                self._compare(END)
            raise
        except Exception:
            self.position = position + 1
            self._carried, self._fetched = fetched[::-1], []
            self._check_pending = False
            raise
        self.position = position + 1
        fetched.append(item)
        if self._check_pending:
            self._compare(item)
        return item

    def _compare(self, item: Any) -> None:
        self._check_pending = False
        check = self._wrapper.check
        if check is not None:
            check.compare(item, self._wrapper.dataset)

    def _check_resume(self, part: dict[str, Any]) -> None:
        # The first mid-pass state that holds the dataset's own state, in the main
        # process: a copy of the dataset restored from it gives its next item now, the
        # run's next pull is compared with it (reproloader._runtime.probe).
        wrapper = self._wrapper
        check = wrapper.check
        if (
            check is None
            or check.done
            or part["kind"] is None
            or self._it is None
            or self._suspended is not None
            or self._carried
            or self._exhausted
            or known_loss(wrapper.dataset) is not None  # the loader warns about those
        ):
            return
        saved = copy.deepcopy(part)
        plan = dataclasses.replace(wrapper.plan, collate_fn=None)  # reseeds the copy's only

        def copy_next() -> Any:
            twin = IterableWrapper(copy.deepcopy(wrapper.dataset), plan, None)
            twin.touched = True
            restored = UnitIterator(twin, saved["epoch"], saved["serial"])
            restored.load_state_dict(saved)
            try:
                return next(restored)
            except StopIteration:
                return END

        check.copy_next(copy_next)
        self._check_pending = check.expected is not None

    # torchdata's worker snapshots call these in the producing process.
    def state_dict(self) -> dict[str, Any]:
        wrapper = self._wrapper
        user: Any = None
        kind = None
        # As StatefulDataLoader does, a dataset's (or its iterator's) state_dict is only
        # asked for once its iterator has run, or a state was loaded into it: before
        # this pass's first ``next`` that is the state an earlier pass left (a
        # persistent worker's copy), and right after a restore the state loaded.
        replay = wrapper.plan.iterable_resume == "replay"
        if self._it is None and not self._carried:
            if wrapper.holds_state:
                kind, user = "dataset", wrapper.user_state()
        elif self._suspended is not None and not replay:
            # Started ahead, nothing pulled: iter(dataset) ran (a generator's body has
            # not), so ask its iterator, or keep the dataset's state as the pass began.
            if stateful(self._it):
                user, kind = self._it.state_dict(), "iterator"  # type: ignore[union-attr]
            elif self._start_user is not None:
                kind, user = "dataset", self._start_user
        elif replay:
            # A position: load_state_dict replays the pass up to it, from the dataset's
            # own state as the pass began, if it had one; once the pass ran out, that
            # state as the pass left it (what a persistent worker's copy keeps).
            if self._exhausted and wrapper.holds_state:
                kind, user = "dataset", wrapper.user_state()
            elif self._start_user is not None:
                kind, user = "dataset", self._start_user
        elif self._restored is not None:
            kind, user = self._restored
        elif self._it is not None and stateful(self._it):
            user, kind = self._it.state_dict(), "iterator"  # type: ignore[attr-defined]
        elif self._it is not None and stateful(wrapper.dataset):
            user, kind = wrapper.dataset.state_dict(), "dataset"
        if (
            kind is not None
            and not replay
            and self._carried
            and torch.utils.data.get_worker_info() is None
        ):
            # (In a worker the main process refuses: a batch failed there.)
            raise StateError(
                f"cannot take an exact state now: the last batch raised after "
                f"{len(self._carried)} sample(s) were pulled from the iterable dataset; "
                "they start the next batch and are in no state (the dataset's own "
                "state_dict has moved past them). Take the state after the next batch, "
                "or set config iterable_resume='replay'."
            )
        producer = wrapper._producer  # the wrapper of this process
        stream = None
        if (
            kind is not None
            and not replay
            and wrapper.plan.scope == "worker"
            and producer is not None
        ):
            stream = producer.stream_state()
        part = {
            "epoch": self.epoch,
            "serial": self.serial,
            "position": self.position,
            "kind": kind,
            "user": user,
            "stream": stream,
        }
        if not replay and kind is not None and wrapper.check is not None:
            self._check_resume(part)
        return part

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at ``state["position"]`` of the same pass.

        A dataset (or its iterator) with its own ``state_dict`` is restored through
        it. Any other is fast-forwarded: iterated from the start of the pass with
        the same reseeding, so every RNG ends where it was, at the cost of producing
        the skipped samples again.
        """
        wrapper = self._wrapper
        position = state["position"]
        self.epoch, self.serial = state["epoch"], state["serial"]
        producer = wrapper.producer()
        producer.enter_epoch(self.epoch)
        kind = state["kind"]
        if wrapper.plan.iterable_resume == "replay" or (position == 0 and kind == "dataset"):
            # Replay from the start of the pass, from the dataset's own state as the
            # pass began, if it had one (at position 0: the pass then starts as usual).
            if kind == "dataset":
                wrapper.dataset.load_state_dict(state["user"])
                wrapper.touched = True
            self._it, self.position = None, 0
            while self.position < position:
                self._replay_one()
            return
        if kind in ("dataset", "iterator"):
            # iter() runs where an uninterrupted pass runs it: right after the first
            # unit's reseed, so randomness drawn as iteration starts is the same.
            producer.enter_unit(self.epoch, self.serial, batch=0, sample=0)
            if kind == "dataset":
                wrapper.dataset.load_state_dict(state["user"])
            it: Any = wrapper.start(self.epoch)
            if position == 0:
                # Taken after iter() ran, before the first next: the first unit goes
                # on from where iter() left its RNGs (not from what a user's state
                # holds of the global RNGs: the caller's, outside the loader's window).
                self._suspended = producer.suspend()
            if kind == "iterator":
                it.load_state_dict(state["user"])
            self._it = it
            self._restored = (kind, state["user"])
        else:
            self._it, self.position = None, 0
            while self.position < position:
                self._replay_one()
            return
        self.position = position
        if state["stream"] is not None:
            producer.load_stream_state(state["stream"])

    def _replay_one(self) -> None:
        try:
            next(self)
        except StopIteration:
            raise
        except Exception:  # noqa: BLE001 - it raised in the run replayed too: go on as it did
            return


class WorkerInit:
    """The ``worker_init_fn`` the workers really get; it calls the user's last.

    It seeds the worker from the tree (so the user's ``worker_init_fn`` draws
    reproducible numbers and can call ``get_context()``), and makes
    ``get_worker_info().dataset`` the user's dataset rather than the wrapper, since
    the documented IterableDataset recipe configures shards through it.

    ``copies`` (after a state taken at a pass's end with persistent workers) holds each
    worker's copy of the dataset's own state as the saved run's workers kept it: the
    new worker's copy loads its own, after the user's ``worker_init_fn``.
    """

    def __init__(
        self,
        epoch: int,
        user_fn: Callable[[int], None] | None,
        copies: list[Any] | None = None,
    ) -> None:
        self.epoch = epoch
        self.user_fn = user_fn
        self.copies = copies

    def __call__(self, worker_id: int) -> None:
        die_with_parent()
        info = torch.utils.data.get_worker_info()
        assert info is not None, "WorkerInit runs in DataLoader workers only"
        wrapper: MapWrapper | IterableWrapper = info.dataset  # type: ignore[assignment]
        producer = wrapper.producer()
        producer.enter_epoch(self.epoch)
        node, unit = worker_init_stream(self.epoch, wrapper.plan.rank, worker_id)
        producer.begin(node, unit, epoch=self.epoch, batch_index=None)
        show_user_dataset_to_worker(wrapper.dataset, seed=torch.initial_seed())
        if self.user_fn is not None:
            self.user_fn(worker_id)
        if self.copies is not None and self.copies[worker_id] is not None:
            wrapper.dataset.load_state_dict(self.copies[worker_id])
            if isinstance(wrapper, IterableWrapper):
                wrapper.touched = True
        if self.user_fn is not None or self.copies is not None:
            # worker_init_fn commonly stores a fresh RNG on the dataset
            # (get_worker_info().dataset.rng = ...), as may a loaded state: reseed
            # that one too.
            producer.find_attribute_rngs()
