"""The one bridge to torch's and torchdata's private DataLoader internals.

Nothing else in reproloader touches a private name of torch, torchdata (or
accelerate): ``tests/unit/test_bridge.py`` scans the package and fails when one
appears elsewhere, and holds one contract test per internal listed in
:data:`INTERNALS`, whose failure names the internal a torch release moved. When
torch or torchdata changes, this file (and that test) is what to read.

What the loader builds on, and why:

* ``DataLoader.__iter__`` builds iterators through the private hook
  ``_get_iterator``; :class:`BridgedLoader` overrides it to hand torch a *view* of
  the loader (:class:`IteratorView`) whose dataset, index sampler, generator and
  ``worker_init_fn`` are the loader's own machinery, while every public attribute of
  the loader stays what the user passed.
* torchdata's iterator classes are private; the in-process one is subclassed so each
  fetch runs inside the loader's isolation window.
* Batches handed out and whether a pass ended are the iterators' ``_num_yielded`` and
  ``_finished``; the running iterator is the loader's ``_iterator``.
* ``get_worker_info().dataset`` is made the user's dataset, not the wrapper, by
  replacing torch's private per-worker ``_worker_info``.
"""

from __future__ import annotations

import contextlib
import pickle
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final, TypeVar

import torch.utils.data
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.stateful_dataloader import (
    _StatefulMultiProcessingDataLoaderIter,
    _StatefulSingleProcessDataLoaderIter,
)

__all__ = [
    "INTERNALS",
    "BridgedLoader",
    "IteratorView",
    "attributes_without_iterator",
    "default_index_sampler",
    "forget_iterator",
    "iterator_end_worker_state",
    "iterator_out_of_order",
    "iterator_progress",
    "iterator_worker_state",
    "own_worker_state",
    "pin_batch",
    "quiet_torchdata",
    "running_iterator",
    "show_user_dataset_to_worker",
]

INTERNALS: Final = {
    "DataLoader._get_iterator": "called by __iter__ to build each iterator",
    "DataLoader._index_sampler": "the batch sampler (or sampler) iterators draw from",
    "DataLoader._iterator": "the running (or persistent) iterator",
    "StatefulDataLoader._initial_iter_for_state_dict": "reset on load_state_dict",
    "_StatefulSingleProcessDataLoaderIter": "in-process iterator: (loader, state) and _next_data",
    "_StatefulMultiProcessingDataLoaderIter": "worker iterator: (loader, state)",
    "iterator._num_yielded": "batches handed out in the pass",
    "iterator._finished": "whether the pass ran to its end",
    "iterator._task_info, _send_idx": "which units an in_order=False pass handed out",
    "iterator.state_dict() layout": "converted to and from reproloader's own worker schema",
    "iterator._worker_snapshots, _get_main_state, _last_yielded_worker_id": (
        "each worker's last reported state at a pass's end (persistent workers' copies)"
    ),
    "torch.utils.data._utils.worker._worker_info": "what get_worker_info() returns",
    "accelerate: DataLoader._is_accelerate_prepared": "prepare() returns such loaders as is",
    "torch.utils.data._utils.pin_memory.pin_memory": "pins a batch the run ledger carries",
}
"""Every private name this module relies on, with what for."""


class IteratorView:
    """The loader as torch's iterators must see it; every other attribute delegates.

    Args:
        loader: the loader.
        dataset: what the iterators fetch from (the loader's wrapper).
        index_sampler: what the iterators draw indices from (the unit sampler), or
            None for the loader's own.
        overrides: other attributes to replace (``generator``, ``worker_init_fn``,
            ``snapshot_every_n_steps``).
    """

    def __init__(
        self, loader: DataLoader[Any], *, dataset: Any, index_sampler: Any, **overrides: Any
    ) -> None:
        self._loader = loader
        self.dataset = dataset
        if index_sampler is not None:
            self._index_sampler = index_sampler
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _CountsFailures:
    """Counts batches whose fetch raised: their units are consumed.

    As in a loop that catches the error and goes on; torch's iterators count only the
    batches they hand out.
    """

    failed = 0
    # What each batch handed out goes through (the run ledger), or None.
    hook: Callable[[Any], Any] | None = None

    def __next__(self) -> Any:
        try:
            data = super().__next__()  # type: ignore[misc]
        except StopIteration:
            raise
        except Exception:
            self.failed += 1
            raise
        hook = self.hook
        return data if hook is None else hook(data)


class _SingleProcessIter(_CountsFailures, _StatefulSingleProcessDataLoaderIter):  # type: ignore[misc]
    """torchdata's in-process iterator, fetching each batch inside an isolation window."""

    def __init__(
        self, view: IteratorView, state: Any, isolation: AbstractContextManager[object]
    ) -> None:
        self._isolation = isolation
        super().__init__(view, state)
        # DataLoader's fetcher calls iter(dataset) when the iterator is made; the
        # wrapper's iterator defers it to its first unit: start that unit now.
        start = getattr(
            getattr(self._dataset_fetcher, "dataset_iter", None), "start_pass_now", None
        )
        if start is not None:
            start()

    def _next_data(self) -> Any:
        with self._isolation:
            return super()._next_data()


class _MultiProcessIter(_CountsFailures, _StatefulMultiProcessingDataLoaderIter):  # type: ignore[misc]
    """torchdata's worker iterator, counting failed batches."""


_T_co = TypeVar("_T_co", covariant=True)

if TYPE_CHECKING:
    # torchdata ships no type information; to type checkers the loader is the
    # DataLoader it stands in for.
    _Base = DataLoader
else:
    _Base = StatefulDataLoader


class BridgedLoader(_Base[_T_co]):
    """torchdata's StatefulDataLoader, building its iterators from a subclass's view.

    Subclasses implement :meth:`iterator_view`, :meth:`resume_workers` and
    :meth:`main_isolation`; torch calls ``_get_iterator`` whenever ``__iter__``
    needs a new iterator (every pass, or once with persistent workers).
    """

    # Hugging Face accelerate: Accelerator.prepare() rebuilds a DataLoader as a plain
    # one from its dataset and batch sampler, dropping everything a subclass adds; it
    # returns objects marked as prepared unchanged, and its save_state/load_state carry
    # the state_dict() of tracked loaders that say they are stateful.
    _is_accelerate_prepared = True
    use_stateful_dataloader = True

    def iterator_view(self) -> IteratorView:
        """The view the next iterator is built from."""
        raise NotImplementedError

    def resume_workers(self) -> Mapping[str, Any] | None:
        """Worker state (``state.WorkersState``) the next iterator resumes from, or None."""
        raise NotImplementedError

    def main_isolation(self) -> AbstractContextManager[object]:
        """The window in which the main process produces data (``num_workers=0``)."""
        raise NotImplementedError

    def workers_failed_to_start(self) -> None:
        """Called when starting the worker processes raised a pickling-kind error."""

    def batch_hook(self) -> Callable[[Any], Any] | None:
        """What each batch an iterator hands out goes through (its result is handed out)."""
        return None

    def _get_iterator(self) -> Any:
        view = self.iterator_view()
        own = self.resume_workers()
        state = None if own is None else _torchdata_state(own)
        iterator: _CountsFailures
        if self.num_workers == 0:
            isolation = self.main_isolation()
            with isolation:
                iterator = _SingleProcessIter(view, state, isolation)
        else:
            self.check_worker_number_rationality()
            try:
                iterator = _MultiProcessIter(view, state)
            except (TypeError, AttributeError, pickle.PicklingError):
                self.workers_failed_to_start()
                raise
        iterator.failed = 0 if own is None else own["failed"]
        iterator.hook = self.batch_hook()
        return iterator


def running_iterator(loader: DataLoader[Any]) -> Any:
    """The loader's running (or persistent) iterator, or None."""
    return loader._iterator


def forget_iterator(loader: DataLoader[Any]) -> None:
    """Drop the loader's iterator, so the next ``iter()`` builds one (after a resume)."""
    loader._iterator = None
    loader._initial_iter_for_state_dict = False


def attributes_without_iterator(loader: DataLoader[Any]) -> dict[str, Any]:
    """The loader's attributes, its iterator left out (torch's iterators cannot be copied)."""
    attributes = loader.__dict__.copy()
    attributes["_iterator"] = None
    attributes["_initial_iter_for_state_dict"] = False
    return attributes


def default_index_sampler(loader: DataLoader[Any]) -> Any:
    """What DataLoader's iterators would draw from: its batch sampler, or its sampler."""
    return loader._index_sampler


def iterator_progress(iterator: Any) -> tuple[int, bool]:
    """``(units consumed in the pass, whether the pass ended)`` of an iterator.

    Consumed: batches handed out, and batches whose fetch raised.
    """
    return iterator._num_yielded + iterator.failed, bool(iterator._finished)


def iterator_out_of_order(iterator: Any) -> tuple[int, list[int]]:
    """Units consumed by an iterator with ``in_order=False``: ``(first n, others)``.

    Task ``i`` of a pass is the ``i``-th unit the unit sampler gave. A task is consumed
    once it left ``_task_info`` (handed out, or its fetch raised); the first ``n`` tasks
    all are, and ``others`` lists the consumed tasks after them (delivered before
    an earlier one).
    """
    pending = set(iterator._task_info)
    sent = iterator._send_idx
    first = min(pending) if pending else sent
    return first, [i for i in range(first, sent) if i not in pending]


def iterator_worker_state(iterator: Any) -> dict[str, Any]:
    """An iterator's worker state, in reproloader's own schema (``state.WorkersState``)."""
    return own_worker_state(iterator.state_dict(), iterator.failed)


def iterator_end_worker_state(iterator: Any) -> dict[str, Any]:
    """A multi-process iterator's worker state as of each worker's last report.

    For a pass that ended: torchdata's ``state_dict`` gives its last snapshot, taken
    at the last batch handed out, before the workers that ran out afterwards
    reported their final states; its running per-worker states have them.
    """
    return own_worker_state(
        {
            "_snapshot": {
                "_snapshot_step": iterator._num_yielded,
                "_last_yielded_worker_id": iterator._last_yielded_worker_id,
                "_main_snapshot": iterator._get_main_state(),
                "_worker_snapshots": {
                    key: worker.get_state() for key, worker in iterator._worker_snapshots.items()
                },
            },
            "_steps_since_snapshot": 0,
            "_iterator_finished": bool(iterator._finished),
        },
        iterator.failed,
    )


def _iterable_part(fetcher: Any) -> tuple[Any, bool]:
    if fetcher is None:
        return None, False
    return fetcher["dataset_iter_state"], bool(fetcher["fetcher_ended"])


def own_worker_state(state: Mapping[str, Any], failed: int = 0) -> dict[str, Any]:
    """Torchdata's iterator state (single- or multi-process) in reproloader's schema.

    Also converts the worker part of version-1 states, which held torchdata's state.

    Raises:
        KeyError, TypeError, ValueError: where ``state`` is not laid out as torchdata
            lays it out.
    """
    if "_snapshot" in state:
        snapshot = state["_snapshot"]
        main = snapshot["_main_snapshot"]
        since = state["_steps_since_snapshot"]
        workers = []
        for key in sorted(snapshot["_worker_snapshots"], key=lambda k: int(k.split("_")[-1])):
            worker = snapshot["_worker_snapshots"][key]
            iterable, ended = _iterable_part(worker["fetcher_state"])
            workers.append(
                {
                    "id": worker["worker_id"],
                    "map": worker["dataset_state"],
                    "iterable": iterable,
                    "ended": ended,
                }
            )
        return {
            "version": 1,
            "processes": main["_num_workers"],
            "yielded": snapshot["_snapshot_step"] + since,
            "failed": failed,
            "since_snapshot": since,
            "drawn": main["_sampler_iter_yielded"],
            "sampler": main["_sampler_iter_state"],
            "len_called": main["_IterableDataset_len_called"],
            "base_seed": main["_base_seed"],
            "last_worker": snapshot["_last_yielded_worker_id"],
            "ended": state["_iterator_finished"],
            "workers": workers,
        }
    iterable, ended = _iterable_part(state["fetcher_state"])
    return {
        "version": 1,
        "processes": 0,
        "yielded": state["_num_yielded"],
        "failed": failed,
        "since_snapshot": 0,
        "drawn": state["_sampler_iter_yielded"],
        "sampler": state["_sampler_iter_state"],
        "len_called": state["_IterableDataset_len_called"],
        "base_seed": None,
        "last_worker": None,
        "ended": state["_iterator_finished"],
        "workers": [{"id": 0, "map": state["dataset_state"], "iterable": iterable, "ended": ended}],
    }


def _fetcher(worker: Mapping[str, Any]) -> dict[str, Any] | None:
    if worker["iterable"] is None:
        return None
    return {"dataset_iter_state": worker["iterable"], "fetcher_ended": worker["ended"]}


def _torchdata_state(own: Mapping[str, Any]) -> dict[str, Any]:
    # The inverse of own_worker_state, for a state that state.check_workers accepted.
    workers = own["workers"]
    if own["processes"] == 0:
        return {
            "_IterableDataset_len_called": own["len_called"],
            "_index_sampler_state": None,
            "_iterator_finished": own["ended"],
            "_num_yielded": own["yielded"],
            "_sampler_iter_state": own["sampler"],
            "_sampler_iter_yielded": own["drawn"],
            "_shared_seed": None,
            "dataset_state": workers[0]["map"],
            "fetcher_state": _fetcher(workers[0]),
        }
    return {
        "_iterator_finished": own["ended"],
        "_snapshot": {
            "_last_yielded_worker_id": own["last_worker"],
            "_main_snapshot": {
                "_IterableDataset_len_called": own["len_called"],
                "_base_seed": own["base_seed"],
                "_index_sampler_state": None,
                "_num_workers": own["processes"],
                "_sampler_iter_state": own["sampler"],
                "_sampler_iter_yielded": own["drawn"],
                "_shared_seed": None,
            },
            "_snapshot_step": own["yielded"] - own["since_snapshot"],
            "_worker_snapshots": {
                f"worker_{w['id']}": {
                    "dataset_state": w["map"],
                    "fetcher_state": _fetcher(w),
                    "worker_id": w["id"],
                }
                for w in workers
            },
        },
        "_steps_since_snapshot": own["since_snapshot"],
    }


def show_user_dataset_to_worker(dataset: Any, seed: int) -> None:
    """Make ``get_worker_info()`` in this worker report ``dataset`` and ``seed``.

    The documented IterableDataset recipe configures shards through
    ``get_worker_info().dataset``: it must be the user's dataset, not the wrapper.
    """
    worker = torch.utils.data._utils.worker
    info = worker._worker_info
    assert info is not None, "only in DataLoader workers"
    worker._worker_info = worker.WorkerInfo(
        id=info.id, num_workers=info.num_workers, seed=seed, dataset=dataset
    )


@contextlib.contextmanager
def quiet_torchdata() -> Iterator[None]:
    """Construct torchdata loaders without torchdata's own deprecation warning.

    torchdata 0.11 calls ``torch.set_vital``, which torch 2.13 deprecates: a warning
    about torchdata's internals that users can do nothing about.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
        yield


def pin_batch(data: Any, device: Any = None) -> Any:
    """Pin a batch as torch's pin-memory thread does (for a batch inside another object)."""
    from torch.utils.data._utils.pin_memory import pin_memory

    return pin_memory(data, device)  # type: ignore[no-untyped-call]
