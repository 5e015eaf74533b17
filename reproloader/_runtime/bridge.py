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
import warnings
from collections.abc import Iterator
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
    "default_index_sampler",
    "forget_iterator",
    "iterator_progress",
    "iterator_worker_state",
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
    "torch.utils.data._utils.worker._worker_info": "what get_worker_info() returns",
    "accelerate: DataLoader._is_accelerate_prepared": "prepare() returns such loaders as is",
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


class _SingleProcessIter(_StatefulSingleProcessDataLoaderIter):  # type: ignore[misc]
    """torchdata's in-process iterator, fetching each batch inside an isolation window."""

    def __init__(
        self, view: IteratorView, state: Any, isolation: AbstractContextManager[object]
    ) -> None:
        self._isolation = isolation
        super().__init__(view, state)

    def _next_data(self) -> Any:
        with self._isolation:
            return super()._next_data()


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

    def resume_workers(self) -> dict[str, Any] | None:
        """Worker state the next iterator resumes from, or None to start afresh."""
        raise NotImplementedError

    def main_isolation(self) -> AbstractContextManager[object]:
        """The window in which the main process produces data (``num_workers=0``)."""
        raise NotImplementedError

    def _get_iterator(self) -> Any:
        view = self.iterator_view()
        state = self.resume_workers()
        if self.num_workers == 0:
            isolation = self.main_isolation()
            with isolation:
                return _SingleProcessIter(view, state, isolation)
        self.check_worker_number_rationality()
        return _StatefulMultiProcessingDataLoaderIter(view, state)


def running_iterator(loader: DataLoader[Any]) -> Any:
    """The loader's running (or persistent) iterator, or None."""
    return loader._iterator


def forget_iterator(loader: DataLoader[Any]) -> None:
    """Drop the loader's iterator, so the next ``iter()`` builds one (after a resume)."""
    loader._iterator = None
    loader._initial_iter_for_state_dict = False


def default_index_sampler(loader: DataLoader[Any]) -> Any:
    """What DataLoader's iterators would draw from: its batch sampler, or its sampler."""
    return loader._index_sampler


def iterator_progress(iterator: Any) -> tuple[int, bool]:
    """``(batches handed out in the pass, whether the pass ended)`` of an iterator."""
    return iterator._num_yielded, bool(iterator._finished)


def iterator_worker_state(iterator: Any) -> dict[str, Any]:
    """Torchdata's state of an iterator: its workers' snapshots and positions."""
    state: dict[str, Any] = iterator.state_dict()
    return state


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
