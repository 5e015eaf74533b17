"""``ReproLoader``: the DataLoader drop-in. A facade: it resolves arguments and delegates.

How a batch is made (docs/how-it-works.md has the diagram):

1. ``__iter__`` asks the :class:`~reproloader._runtime.cursor.PassCursor` for a new
   *pass* (the epoch advances, or stays after ``set_epoch``/``load_state_dict``) and
   ``set_epoch`` reaches sampler, batch sampler and dataset.
2. torch builds the iterator from a view of the loader
   (:mod:`reproloader._runtime.bridge`) whose dataset is a wrapper, whose index
   sampler yields units ``(epoch, serial, position, indices)``, whose ``generator``
   is private (so iterating never draws from the caller's RNG) and whose
   ``worker_init_fn`` seeds workers from the tree first. ``loader.dataset`` and
   every other attribute stay what the user passed.
3. Whichever process fetches a unit reseeds for it
   (:class:`~reproloader._runtime.producer.Producer`); with ``num_workers=0`` inside
   an isolation window that restores the caller's RNG states afterwards.
4. ``state_dict``/``load_state_dict`` are the cursor's: a position, checked whole
   before anything changes.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

import torch
from torch.utils.data import Dataset, IterableDataset, Sampler

from reproloader import distributed
from reproloader._runtime import ondemand
from reproloader._runtime.arguments import (
    check_config,
    resolve_sampler,
    resolve_seed,
    resolve_start_method,
    warn_unpicklable,
)
from reproloader._runtime.bridge import (
    BridgedLoader,
    IteratorView,
    attributes_without_iterator,
    forget_iterator,
    iterator_out_of_order,
    iterator_progress,
    own_worker_state,
    quiet_torchdata,
    running_iterator,
)
from reproloader._runtime.cursor import PassCursor, pick_rank
from reproloader._runtime.isolation import Isolation
from reproloader._runtime.ledger import Ledger, LedgerWriter
from reproloader._runtime.machinery import Machinery
from reproloader._runtime.skips import steps_to_batches
from reproloader._runtime.units import set_epoch_everywhere
from reproloader.config import ReproConfig
from reproloader.context import RngScope
from reproloader.exceptions import ConfigError, StateError, StateFieldError
from reproloader.seeding import MAX_PATH_ELEMENT, check_int
from reproloader.state import WorkersState

__all__ = ["ReproLoader"]

_T_co = TypeVar("_T_co", covariant=True)

# Attributes that, like DataLoader's own guarded ones, fix what the loader produces.
_FROZEN_AFTER_INIT = frozenset({"seed", "config", "shuffle", "shard", "ledger"})


class ReproLoader(BridgedLoader[_T_co]):
    """A ``torch.utils.data.DataLoader`` whose randomness is a pure function of its position.

    Change the import and the class name; every DataLoader argument keeps its meaning
    and default. Each batch's randomness (python ``random``, numpy's global RNG,
    torch's CPU RNG, RNG objects on the dataset, and :func:`get_context`'s
    ``rng``) derives from (seed, epoch, rank, batch index), so it does not depend on
    ``num_workers``, the start method, ``persistent_workers``, or what ran before.
    Iterating never changes the caller's RNG states.

    Every DataLoader argument keeps its meaning and default (``batch_size``,
    ``num_workers``, ``pin_memory``, ``drop_last``, ``timeout``, ``prefetch_factor``,
    ``pin_memory_device``... as documented there); ``loader.dataset`` stays your object.
    Where ReproLoader adds to one:

    Args:
        dataset: a map-style or iterable dataset, or a DataPipe: as DataLoader does,
            an ``IterDataPipe`` is sharded over ranks and workers at each pass, and
            its ``shuffle`` pipes are seeded alike everywhere, here from (seed, epoch).
        shuffle: each epoch's order is derived from (seed, epoch) by
            :class:`SeededRandomSampler`; for an ``IterDataPipe`` it turns its
            ``shuffle`` pipes on or off, as in DataLoader.
        sampler: its ``set_epoch`` is called at each epoch.
        batch_sampler: its ``set_epoch`` is called at each epoch.
        collate_fn: runs inside the unit, so its randomness (MixUp) is reproducible.
        worker_init_fn: runs after the worker is seeded from the tree, so its draws
            are reproducible too.
        multiprocessing_context: or set ``config.start_method``.
        generator: when ``seed`` is None the seed is drawn from it (instead of
            torch's global RNG) once, at construction.
        persistent_workers: gives the same batches as ``False``.
        in_order: with ``False`` batches keep their contents but may arrive in
            another order.
        snapshot_every_n_steps: torchdata's; only used where workers hold state the
            main process cannot recompute.
        shard: split each epoch's global order over the ranks of
            ``torch.distributed`` (:class:`reproloader.distributed.ShardedSampler`),
            so a state resumes on another number of ranks.
        seed: the root seed, an int in ``[0, 2**128)``. ``None`` takes
            ``config.seed``, or draws one from torch's global RNG (or ``generator``),
            and then ``load_state_dict`` adopts the seed of the state it loads. The
            effective seed is ``loader.seed``.
        config: a :class:`ReproConfig` (or a mapping of its fields): rng_scope,
            start method, which RNGs to reseed.
        rng_scope: what one random stream covers, ``"batch"`` (the default),
            ``"sample"`` or ``"worker"``: the same as ``config.rng_scope``; given in
            both places, the two must agree.
        ledger: a directory (or a :class:`reproloader.Ledger`) where each rank
            records every batch it hands out: epoch, batch index, step, digests of
            the indices and of the content (``reproloader diff`` compares two runs).
            ``None`` (the default) records nothing and costs nothing.

    Example:
        >>> loader = ReproLoader(dataset, batch_size=32, shuffle=True, num_workers=2, seed=0)
        >>> for epoch in range(3):
        ...     for batch in loader:  # loader.epoch is 0, 1, 2
        ...         ...
    """

    def __init__(
        self,
        dataset: Dataset[_T_co],
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Sampler[Any] | Iterable[Any] | None = None,
        batch_sampler: Sampler[list[Any]] | Iterable[list[Any]] | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: Any = None,
        generator: torch.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        snapshot_every_n_steps: int | None = 1,
        shard: bool = False,
        seed: int | None = None,
        config: ReproConfig | Mapping[str, Any] | None = None,
        rng_scope: RngScope | None = None,
        ledger: Ledger | str | os.PathLike[str] | None = None,
    ) -> None:
        config = check_config(config, rng_scope)
        seed_given = seed is not None or config.seed is not None
        seed = resolve_seed(seed, config, generator)
        multiprocessing_context = resolve_start_method(multiprocessing_context, config, num_workers)
        iterable = isinstance(dataset, IterableDataset)
        given_sampler = sampler
        sampler, pass_shuffle = resolve_sampler(
            dataset,
            iterable=iterable,
            shuffle=shuffle,
            shard=shard,
            sampler=sampler,
            batch_sampler=batch_sampler,
            batch_size=batch_size,
            drop_last=drop_last,
            seed=seed,
        )
        with quiet_torchdata():
            super().__init__(  # type: ignore[call-arg]  # StatefulDataLoader's, at runtime
                dataset,
                batch_size=batch_size,
                shuffle=pass_shuffle,
                sampler=sampler,
                batch_sampler=batch_sampler,
                num_workers=num_workers,
                collate_fn=collate_fn,
                pin_memory=pin_memory,
                drop_last=drop_last,
                timeout=timeout,
                worker_init_fn=worker_init_fn,
                multiprocessing_context=multiprocessing_context,
                generator=generator,
                prefetch_factor=prefetch_factor,
                persistent_workers=persistent_workers,
                pin_memory_device=pin_memory_device,
                in_order=in_order,
                snapshot_every_n_steps=snapshot_every_n_steps,
            )

        # Public: every __init__ argument is readable under its own name, so that
        # frameworks can rebuild the loader from its attributes (Lightning does).
        self.shuffle = shuffle
        self.shard = shard
        self.seed = seed
        self.config = config
        self.ledger = Ledger.of(ledger)
        self._ledger = None if self.ledger is None else LedgerWriter(self.ledger)

        self._seed_given = seed_given
        self._own_sampler = sampler is not given_sampler  # made from seed: follows it
        self._cursor = PassCursor()
        self._machinery = Machinery(
            self,
            seed=seed,
            config=config,
            iterable=iterable,
            batch_sampler_given=batch_sampler is not None,
        )
        self._ReproLoader__initialized = True

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FROZEN_AFTER_INIT and self.__dict__.get("_ReproLoader__initialized", False):
            raise ValueError(
                f"{name} attribute should not be set after ReproLoader is initialized; "
                f"build a new ReproLoader with {name}={value!r}"
            )
        super().__setattr__(name, value)

    # -- epochs ---------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The epoch of the running pass; before a pass, the epoch it will run.

        Once a pass has run to its end, the next pass's: reading ``loader.epoch``
        before each of three passes gives 0, 1, 2.
        """
        iterator = running_iterator(self)
        return self._cursor.epoch_now(iterator is not None and iterator_progress(iterator)[1])

    @property
    def rng_scope(self) -> RngScope:
        """What one random stream covers: ``config.rng_scope``."""
        return self.config.rng_scope

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass (the next ``iter(loader)``) run epoch ``epoch``.

        Without calls to ``set_epoch`` the loader counts epochs itself: each new
        iterator after a previous one starts the next epoch.
        """
        # Set as an attribute: frameworks that rebuild a loader replay the attributes
        # set on it after construction (Lightning does, for its DistributedSampler), so
        # the rebuilt loader runs this epoch too.
        self._next_epoch = epoch

    @property
    def _next_epoch(self) -> int:
        return self._cursor.epoch

    @_next_epoch.setter
    def _next_epoch(self, epoch: int) -> None:
        self._cursor.set_epoch(epoch)

    def __iter__(self) -> Any:
        current = self._cursor.begin_pass(*distributed.rank_and_world_size())
        # The batch sampler's own sampler too: frameworks that rebuild a loader for
        # DDP (Lightning) put their DistributedSampler only there.
        set_epoch_everywhere(
            (
                self.sampler,
                self.batch_sampler,
                getattr(self.batch_sampler, "sampler", None),
                self.dataset,
            ),
            current.epoch,
        )
        self._machinery.announce(current)
        if self._ledger is not None:
            header = self._machinery.ledger_header(self, current)
            per_epoch = self._machinery.batches(self)
            self._ledger.begin_pass(header, current.epoch, current.start, per_epoch)
        return super().__iter__()

    # -- what torch's iterators are built from (see BridgedLoader) --------------

    def iterator_view(self) -> IteratorView:
        """The loader as the next iterator sees it."""
        return self._machinery.view(self, self._cursor)

    def resume_workers(self) -> WorkersState | None:
        """Worker state the next iterator resumes from (after a mid-epoch load)."""
        return self._cursor.take_resume_workers()

    def workers_failed_to_start(self) -> None:
        """Say which part could not be pickled for the workers, if one could not."""
        warn_unpicklable(self)

    def batch_hook(self) -> Callable[[Any], Any] | None:
        """The run ledger's writer, which each batch handed out goes through (or None)."""
        return self._ledger

    def main_isolation(self) -> Isolation:
        """The window in which this process produces data with ``num_workers=0``."""
        return self._machinery.isolation()

    # -- any batch on demand, batches left out (docs/inspect.md) ---------------

    def indices_at(
        self,
        epoch: int,
        index: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        replay: bool = False,
    ) -> Any:
        """The dataset indices of batch ``index`` of ``epoch``, as iteration gives them.

        O(batch size) for the loader's own samplers (sequential, ``shuffle=True``,
        ``shard=True``); a sampler you passed is drawn through the batches before it
        with ``replay=True`` (no data loaded). Skipped batches keep their indices.

        Args:
            epoch: the epoch.
            index: the batch's position in the epoch (``0 <= index < len(loader)``).
            rank: the rank whose batch (default: this process's); with ``shard=True``
                each rank has its own part of a global step.
            world_size: the number of ranks of the run (default: this process's).
            replay: allow drawing a user's sampler through the batches before.

        Raises:
            IndexError: the epoch has no batch ``index``.
            BatchUnavailableError: an iterable dataset, or a user's sampler without
                ``replay=True``.

        .. versionadded:: 0.1
        """
        return self._unit_at(epoch, index, rank, world_size, replay, fetch=False)[3]

    def batch_at(
        self,
        epoch: int,
        index: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        replay: bool = False,
    ) -> Any:
        """The batch that iteration yields at position ``index`` of ``epoch``, made here.

        Bitwise what iterating gives, random values included, whatever
        ``num_workers`` the run had, for map-style datasets in batch or sample scope;
        in O(1) of the position with the loader's own samplers. It is produced in this
        process, through the loader's dataset and ``collate_fn``, and changes nothing:
        not the caller's RNG states, not the loader's position or running iterator.
        Arguments as :meth:`indices_at`.

        Raises:
            IndexError: the epoch has no batch ``index``.
            BatchUnavailableError: where the batch cannot be made exactly here (an
                iterable dataset, worker scope, a dataset with its own state_dict, a
                user's sampler without ``replay=True``); the message says why.

        .. versionadded:: 0.1
        """
        rank, world_size = self._where(rank, world_size)
        unit = self._unit_at(epoch, index, rank, world_size, replay, fetch=True)
        return ondemand.batch_at(
            self,
            self._machinery,
            unit,
            rank=rank,
            world_size=world_size,
            restore_epoch=self._cursor.epoch,
        )

    def _where(self, rank: int | None, world_size: int | None) -> tuple[int, int]:
        own_rank, own_size = distributed.rank_and_world_size()
        world_size = own_size if world_size is None else world_size
        rank = own_rank if rank is None else rank
        if not 0 <= rank < world_size:
            raise ValueError(
                f"rank must be in [0, world_size={world_size}), got {rank}; pass world_size "
                "too to ask for a rank of a run on more ranks than this process sees"
            )
        return rank, world_size

    def _unit_at(
        self,
        epoch: int,
        index: int,
        rank: int | None,
        world_size: int | None,
        replay: bool,
        *,
        fetch: bool,
    ) -> Any:
        rank, world_size = self._where(rank, world_size)
        ondemand.check_available(
            self,
            self._machinery,
            rank=rank,
            own_rank=distributed.rank_and_world_size()[0],
            replay=replay,
            fetch=fetch,
        )
        return ondemand.unit_at(
            self,
            self._machinery,
            epoch=epoch,
            index=index,
            rank=rank,
            world_size=world_size,
            owners=(self.sampler, self.batch_sampler, getattr(self.batch_sampler, "sampler", None)),
            restore_epoch=self._cursor.epoch,
        )

    def skip_batches(self, epoch: int, start: int, stop: int | None = None) -> None:
        """Leave out batches ``start .. stop - 1`` of ``epoch`` (``stop``: ``start + 1``).

        Every other batch stays bitwise what it is without skipping (randomness is
        keyed by position, and a skipped position is not reused); a skipped range
        costs O(1) with the loader's own samplers. Positions keep their meaning: the
        batch after a skipped range still has its own index, and ``len(loader)``
        still counts the skipped ones. The list goes into :meth:`state_dict`, so a
        resumed loader leaves them out too; with ``shard=True`` every rank leaves out
        the same global steps. Call before iterating the epoch (after
        :meth:`load_state_dict`, or between epochs).

        Raises:
            ConfigError: ``epoch`` is the epoch of a pass running now; or the loader's
                batches do not allow it (an iterable dataset, worker scope). A dataset
                with its own ``state_dict`` gets a warning: its items may depend on
                what it served.

        .. versionadded:: 0.1
        """
        ondemand.check_skippable(self, self._machinery)
        self._skip([(epoch, start, start + 1 if stop is None else stop)])

    def skip_steps(self, start: int, stop: int | None = None) -> None:
        """Leave out global steps ``start .. stop - 1`` (``stop``: ``start + 1``).

        Step ``s`` is batch ``s % len(loader)`` of epoch ``s // len(loader)`` (on
        this world size with ``shard=True``): skipped steps keep their numbers. See
        :meth:`skip_batches`.

        .. versionadded:: 0.1
        """
        ondemand.check_skippable(self, self._machinery)
        check_int("start", start, 2**63)
        stop = start + 1 if stop is None else check_int("stop", stop, 2**63 + 1)
        self._skip(steps_to_batches(start, stop, len(self)))

    def _skip(self, ranges: list[tuple[int, int, int]]) -> None:
        # Every range is checked before any is added: all of them, or none.
        iterator = running_iterator(self)
        running = (
            self._cursor.started and iterator is not None and not iterator_progress(iterator)[1]
        )
        for epoch, start, stop in ranges:
            check_int("epoch", epoch, MAX_PATH_ELEMENT)
            check_int("start", start, 2**63)
            check_int("stop", stop, 2**63 + 1)
            if stop <= start:
                raise ValueError(f"stop must be greater than start={start}, got {stop}")
            if running and epoch == self._cursor.epoch:
                raise ConfigError(
                    f"cannot skip batches of epoch {epoch} while a pass over it runs: its "
                    "batches are already being handed out. Call skip_batches or skip_steps "
                    "before iterating the epoch (after load_state_dict, or between epochs)"
                )
        self._cursor.add_skips(ranges)

    @property
    def last_position(self) -> tuple[int, int] | None:
        """``(epoch, index)`` of the batch handed out last by the running pass, or None.

        The index is the batch's position in the epoch, which skipped batches keep:
        global step ``epoch * len(loader) + index`` names the same batch in a run
        with and without skipping, and :meth:`batch_at` gives it again. None before
        the pass's first batch.

        Raises:
            ConfigError: ``in_order=False`` with workers, where batches arrive in the
                order workers finish them.

        .. versionadded:: 0.1
        """
        iterator = running_iterator(self)
        if iterator is None or not self._cursor.started:
            return None
        if self.num_workers and not self.in_order:
            raise ConfigError(
                "last_position is not known with in_order=False: batches arrive in the "
                "order workers finish them. Use in_order=True, or read "
                "get_context().batch_index in the dataset"
            )
        consumed, _ = iterator_progress(iterator)
        if not consumed:
            return None
        return self._cursor.current.epoch, self._cursor.position_of(consumed - 1)

    @property
    def skipped(self) -> list[tuple[int, int, int]]:
        """The batches left out: ``(epoch, start, stop)`` ranges, sorted and merged."""
        return self._cursor.skips

    # -- checkpointing ---------------------------------------------------------

    def _progress(self) -> tuple[int, bool, list[int]]:
        iterator = running_iterator(self)
        consumed, finished = iterator_progress(iterator)
        if self.num_workers == 0 or self.in_order or finished or self._machinery.iterable:
            # (An iterable dataset's workers each hand out their own stream in order:
            # the workers' part holds where each one is, whatever the interleaving.)
            return consumed, finished, []
        # in_order=False: batches arrive as workers finish them, so what was handed
        # out need not be the epoch's first batches: the state lists the others.
        first, others = iterator_out_of_order(iterator)
        holding = self._machinery.workers_hold_state(self)
        if others and (holding or self.shard):
            raise StateError(
                "cannot take this mid-epoch state with in_order=False: batches were "
                "handed out ahead of earlier ones, and "
                + (
                    "workers hold state here (worker scope, or a map-style dataset with "
                    "its own state_dict) that such a state cannot order"
                    if holding
                    else "shard=True keeps one global offset per epoch"
                )
                + ". Checkpoint at epoch boundaries, or use in_order=True."
            )
        return first, finished, others

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is: resume with :meth:`load_state_dict` on a new loader.

        Can be taken between any two batches, before the first and after the last.
        The state is small and plain (see :class:`reproloader.state.LoaderState`):
        ``torch.save`` it with your checkpoint; ``torch.load(weights_only=True)``
        reads it back.

        Raises:
            StateError: mid-epoch with ``in_order=False`` and workers, where the
                batches handed out are not the first ones of the epoch.
        """
        machinery = self._machinery
        state = self._cursor.snapshot(
            machinery.identity(self),
            self._progress,
            workers_hold_state=machinery.workers_hold_state(self),
            worker_state=partial(machinery.worker_state, self),
            offset_after=partial(machinery.offset_after, self) if self.shard else None,
            dataset_state=machinery.dataset_state(self),
            end_workers=partial(machinery.end_workers, self),
            started_with_state=machinery.iterator_state_before_first_next(self),
            batches=machinery.batches(self),
        )
        if state["workers"] is None:
            machinery.warn_if_workers_kept_dataset_state(self)
        else:
            machinery.warn_if_dataset_state_is_lossy(self, state)
        # The caller's to keep or change (DCP loads in place): nothing in it is shared
        # with the loader or torchdata's worker snapshots.
        return copy.deepcopy(dict(state))

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` taken from a loader built the same way.

        Call it on a fresh loader, before iterating. The batches that follow are
        bitwise equal to those the saved loader would have produced next, random
        values included, for the rest of the epoch and later ones. Map-style datasets
        in batch or sample scope resume into any ``num_workers``, and start at the
        saved batch without loading or replaying the ones before. A state gathered
        from every rank (:func:`reproloader.distributed.gather_state`) is accepted
        too: each rank takes its own part.

        Raises:
            StateVersionError: not a ReproLoader state, or a newer format.
            StateMismatchError: the state was taken from a loader that differs from
                this one; the message lists every differing field, both values.
        """
        machinery = self._machinery
        identity = machinery.identity(self)
        # Nothing the loader keeps may change when the caller reuses its dict.
        state_dict = copy.deepcopy(state_dict)
        adopted = self._seed_to_adopt(state_dict, identity)
        if adopted is not None:
            identity["seed"] = adopted
        before = copy.copy(self._cursor)
        dataset_state = self._cursor.restore(
            state_dict,
            identity,
            elastic=self.shard,
            workers_hold_state=machinery.workers_hold_state(self),
            batches=machinery.batches(self),
            legacy_workers=own_worker_state,
            stateful_dataset=machinery.stateful_dataset(self),
            dataset_rngs=partial(machinery.dataset_rngs, self),
            keeps_copies=machinery.keeps_copies(self),
        )
        if dataset_state is not None:
            try:
                self.dataset.load_state_dict(dataset_state)  # type: ignore[attr-defined]
            except Exception as error:
                self._cursor = before  # the loader stays as it was
                raise StateFieldError(
                    "dataset",
                    "a state the dataset's own load_state_dict accepts (it raised "
                    f"{type(error).__name__}: {error})",
                    dataset_state,
                ) from error
        if adopted is not None:
            self._adopt_seed(adopted)  # a new machinery: flags go on it
        if dataset_state is not None:
            self._machinery.dataset_loaded = True
        saved = pick_rank(state_dict, identity["rank"], identity["world_size"])
        self._machinery.warn_if_copies_not_restored(self, self._cursor, saved["num_workers"])
        if self._ledger is not None:
            self._ledger.resumed = True  # the next pass's header records where
        forget_iterator(self)

    def _seed_to_adopt(self, state: Mapping[str, Any], identity: Mapping[str, Any]) -> int | None:
        # A loader built without a seed drew one; it takes the seed of the state it
        # resumes (as StatefulDataLoader restores its generator), so a job restarted
        # without torch.manual_seed can load its own checkpoint.
        if self._seed_given:
            return None
        saved = pick_rank(state, identity["rank"], identity["world_size"])
        seed = saved.get("seed") if isinstance(saved, Mapping) else None
        if isinstance(seed, int) and not isinstance(seed, bool) and seed != self.seed:
            return seed
        return None

    def _adopt_seed(self, seed: int) -> None:
        self.__dict__["seed"] = seed  # past the frozen-attribute guard: the state's seed
        if self._own_sampler:
            self.sampler.reseed(seed)  # type: ignore[attr-defined]
        self._machinery = Machinery(
            self,
            seed=seed,
            config=self.config,
            iterable=self._machinery.iterable,
            batch_sampler_given=self._machinery.batch_sampler_given,
        )

    # -- copies -----------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """What ``copy.deepcopy`` and ``pickle`` copy: the loader where it is, no iterator.

        torch's iterators cannot be copied. Where one runs (mid-epoch, or after an
        epoch's end), the copy carries this loader's ``state_dict()`` instead and
        loads it, so the copy's next ``iter()`` gives the batches this loader would
        give next, as a resumed loader does (where no exact state can be taken now,
        copying raises the error ``state_dict()`` raises). The copy gets its own
        per-process machinery.
        """
        machinery = self._machinery
        attributes = attributes_without_iterator(self)
        attributes["_machinery"] = (machinery.iterable, machinery.batch_sampler_given)
        running = running_iterator(self) is not None
        attributes["_ReproLoader__resume"] = self.state_dict() if running else None
        return attributes

    def __setstate__(self, attributes: dict[str, Any]) -> None:
        resume = attributes.pop("_ReproLoader__resume", None)
        iterable, batch_sampler_given = attributes.pop("_machinery")
        self.__dict__.update(attributes)
        self.__dict__["_machinery"] = Machinery(
            self,
            seed=self.seed,
            config=self.config,
            iterable=iterable,
            batch_sampler_given=batch_sampler_given,
        )
        if resume is not None:
            self.load_state_dict(resume)

    def __len__(self) -> int:
        if self.shard:
            _, world_size = distributed.rank_and_world_size()
            return len(self.sampler.steps(world_size))  # type: ignore[attr-defined]
        return super().__len__()

    def __repr__(self) -> str:
        return (
            f"ReproLoader(dataset={type(self.dataset).__name__}, batch_size={self.batch_size}, "
            f"num_workers={self.num_workers}, seed={self.seed}, "
            f"rng_scope={self.config.rng_scope!r}, epoch={self.epoch})"
        )
