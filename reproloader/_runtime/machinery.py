"""What a loader's iterators run instead of the user's objects, assembled for each pass.

For each pass torch builds an iterator from a view of the loader
(:class:`~reproloader._runtime.bridge.IteratorView`); :class:`Machinery` makes its
parts: the :class:`~reproloader._runtime.producer.Plan` every producing process
follows, the dataset wrapper, the unit sampler (map-style), the ``worker_init_fn``
that seeds workers from the tree, and a private generator for torch's per-iterator
base seed, so that iterating never draws from the caller's RNG. It also keeps what
lives as long as the loader: the main-process isolation window, the user samplers'
RNGs, and the shared tensor that tells persistent workers of an iterable dataset
which pass runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader

from reproloader import distributed
from reproloader._diagnose.compare import difference
from reproloader._runtime.bridge import (
    IteratorView,
    default_index_sampler,
    iterator_end_worker_state,
    iterator_worker_state,
    running_iterator,
)
from reproloader._runtime.cursor import Pass, PassCursor
from reproloader._runtime.isolation import Isolation
from reproloader._runtime.ledger import LedgerCollate
from reproloader._runtime.probe import ResumeCheck, known_loss, warn_lossy
from reproloader._runtime.producer import Plan, search, search_from
from reproloader._runtime.rngs import GlobalRngs
from reproloader._runtime.units import SamplerRngs, UnitSampler, describe_sampler, fast_mode
from reproloader._runtime.wrappers import (
    IterableWrapper,
    MapWrapper,
    UnitIterator,
    WorkerInit,
    stateful,
)
from reproloader.config import ReproConfig
from reproloader.distributed import ShardedSampler
from reproloader.exceptions import StateError
from reproloader.seeding import SeedTree

__all__ = ["Machinery"]


class Machinery:
    """Builds each pass's iterator view for one loader.

    The loader is an argument of each method, not an attribute: a loader that held
    its machinery holding it would be a reference cycle, which Python frees only in
    a garbage collection, where the worker queues' finalizers run before the
    iterator's shutdown and each worker is then waited for 5 s and terminated.

    Args:
        loader: the loader (its dataset and sampler are read once, here).
        seed: the loader's root seed.
        config: the loader's config.
        iterable: whether the dataset is an IterableDataset.
        batch_sampler_given: whether the user passed a batch sampler.
    """

    def __init__(
        self,
        loader: DataLoader[Any],
        *,
        seed: int,
        config: ReproConfig,
        iterable: bool,
        batch_sampler_given: bool,
    ) -> None:
        self._seed = seed
        self._config = config
        self._tree = SeedTree(seed)
        self.iterable = iterable
        self.batch_sampler_given = batch_sampler_given
        self._fast = None if iterable else fast_mode(loader.sampler, batch_sampler_given)
        # Draws for torch's per-iterator base seed come from here, not from the
        # caller's generator; the workers are reseeded from the tree anyway.
        self._generator = torch.Generator().manual_seed(seed % 2**63)
        self._shared_pass: torch.Tensor | None = None
        self._isolation: Isolation | None = None
        self._sampler_rngs: SamplerRngs | None = None
        # Whether load_state_dict gave the dataset a state of its own (see dataset_state).
        self.dataset_loaded = False
        # The last in-process iterable wrapper (num_workers=0): whether the dataset
        # holds a state of its own passes from each one to the next.
        self._main_wrapper: IterableWrapper | None = None
        self._warned_kept_state = False
        # Once per loader: whether a resume through an iterable dataset's own state is
        # exact (reproloader._runtime.probe).
        self.resume_check = ResumeCheck()

    def stateful_dataset(self, loader: DataLoader[Any]) -> bool:
        """Whether the loader's dataset has its own ``state_dict``/``load_state_dict``."""
        return stateful(loader.dataset)

    def dataset_state(self, loader: DataLoader[Any]) -> Callable[[], Any] | None:
        """How to read the main-process dataset's own state, where it is the one that ran.

        A dataset with its own state, produced from in this process: its state at an
        epoch's end is the next epoch's start (an epoch counter an iterable dataset
        keeps, say; mid-pass, an iterable dataset's state is its iterator's, in the
        workers' part). An iterable dataset is asked only once its ``__iter__`` ran
        here, or a state was loaded into it, as StatefulDataLoader asks. Its
        ``__iter__`` runs when the iterator is made; until the first batch (a state
        taken right after ``iter(loader)``) the state is the one the pass began with
        (a generator's body has not run: its own state may not exist yet), and the
        user's iterator, where it has a state, is in the workers' part.
        """
        dataset = loader.dataset
        if loader.num_workers or not stateful(dataset):
            return None
        if self.iterable:
            running = self._started_ahead(loader)
            if running is not None:
                # iter(dataset) ran, no sample was pulled: the state the pass began
                # with (a generator's __iter__ may need its first next for its own).
                start = running.start_state
                return None if start is None else lambda: start
            if not self._dataset_touched():
                return None
        return dataset.state_dict  # type: ignore[attr-defined,no-any-return]

    def _started_ahead(self, loader: DataLoader[Any]) -> UnitIterator | None:
        # The main process's pass over an iterable dataset, started when its iterator
        # was made and not pulled from yet (None otherwise, or after a restore).
        wrapper = self._main_wrapper
        if wrapper is None or running_iterator(loader) is None:
            return None
        running = wrapper.running
        return running if running is not None and running.before_first_next else None

    def iterator_state_before_first_next(self, loader: DataLoader[Any]) -> bool:
        """Whether a pass started ahead holds its iterator's own state (nothing pulled)."""
        running = self._started_ahead(loader)
        return running is not None and running.iterator_holds_state

    def _dataset_touched(self) -> bool:
        """Whether a pass here started the dataset, or a state was loaded into it."""
        wrapper = self._main_wrapper
        return self.dataset_loaded or (wrapper is not None and wrapper.touched)

    def dataset_rngs(self, loader: DataLoader[Any]) -> list[str]:
        """Paths of the RNG objects a worker-scope stream carries a state for, found here."""
        config = self._config
        if config.rng_scope != "worker" or not config.reseed_dataset_rngs:
            return []
        found = search_from(loader.dataset, loader.collate_fn, config.rng_search_budget)
        return [path for path, _ in found.rngs]

    def warn_if_workers_kept_dataset_state(self, loader: DataLoader[Any]) -> None:
        """Warn (once) where persistent workers' copies of the dataset moved on from it.

        A state outside a pass carries no worker part: a resumed run starts the next
        pass from fresh copies of the dataset. Persistent workers keep theirs from pass
        to pass, so where a copy's own state (``state_dict``) differs from the main
        process's dataset, the resumed run differs from the uninterrupted one.
        """
        iterator = running_iterator(loader)
        if (
            self._warned_kept_state
            or iterator is None
            or not loader.persistent_workers
            or not loader.num_workers
            or not stateful(loader.dataset)
        ):
            return
        if not copies_moved_on(loader, iterator_worker_state(iterator)):
            return
        self._warned_kept_state = True
        warnings.warn(
            "this state is taken outside a pass, with persistent_workers=True: each "
            "worker keeps its own copy of the dataset, whose own state (state_dict) has "
            "moved on from the main process's copy, and a state outside a pass does not "
            "carry the workers' copies. A run resumed from it starts the next pass from "
            "fresh copies, so it differs from this one if the dataset's next pass "
            "depends on that state. Take the state mid-epoch (it carries each worker's "
            "copy), or use persistent_workers=False.",
            UserWarning,
            stacklevel=3,
        )

    def warn_if_dataset_state_is_lossy(self, loader: DataLoader[Any], state: Any) -> None:
        """Warn (once) where a mid-pass state resumes a dataset known to lose its position.

        Any number of workers: the state carries the iterable dataset's (or its
        iterator's) own state, and :func:`~reproloader._runtime.probe.known_loss` knows
        that state leaves something out. (With ``num_workers=0`` the first such state is
        also checked against a restored copy; see ``reproloader._runtime.probe``.)
        """
        check = self.resume_check
        workers = state["workers"]
        if check.done or not self.iterable or workers is None or state["finished"]:
            return
        if self._config.iterable_resume == "replay":
            return
        if not any(w["iterable"] and w["iterable"]["kind"] for w in workers["workers"]):
            return
        why = known_loss(loader.dataset)
        if why is not None:
            check.done = True
            warn_lossy(loader.dataset, why, stacklevel=4)

    def warn_if_copies_not_restored(
        self, loader: DataLoader[Any], cursor: PassCursor, saved_num_workers: int
    ) -> None:
        """Warn where a loaded pass end, saved with workers, carries no copies for ours.

        Such a state (an older release's, one whose copies were not known at the end,
        for which ``state_dict()`` warned then, or one edited) resumes the next epoch
        from fresh copies of the dataset, where the run that saved it, if its workers
        were persistent, kept copies that may have moved on.
        """
        if not (
            saved_num_workers and cursor.restored_end_without_copies and self.keeps_copies(loader)
        ):
            return
        warnings.warn(
            "this state was taken at an epoch's end with workers but carries no copies "
            "of the dataset (its workers field is None): the resumed run's persistent "
            "workers start the next epoch from fresh copies, which differs from the run "
            "that saved it if that run's workers were persistent too and the dataset's "
            "own state (state_dict) changed in them. Save the state with "
            "snapshot_every_n_steps=1, where the copies are carried, or resume with "
            "persistent_workers=False.",
            UserWarning,
            stacklevel=3,
        )

    def keeps_copies(self, loader: DataLoader[Any]) -> bool:
        """Whether workers keep copies of a dataset with its own state from pass to pass."""
        return bool(loader.persistent_workers and loader.num_workers and stateful(loader.dataset))

    def end_workers(self, loader: DataLoader[Any]) -> dict[str, Any] | None:
        """Outside a pass's batches: the worker part carrying persistent workers' copies.

        At a pass's end, or before its first batch, each persistent worker's copy of
        a dataset with its own state is what the next batches start from. Carried
        where exact: every worker reported its copy as of its last batch (a worker of
        an iterable dataset reports as it runs out; a map-style one with each batch
        only with ``snapshot_every_n_steps=1``) and no batch raised in a worker; and
        needed: some copy differs from the main process's dataset, which fresh
        copies would be. Elsewhere None, and
        :meth:`warn_if_workers_kept_dataset_state` says where copies moved on.
        """
        iterator = running_iterator(loader)
        exact = self.iterable or getattr(loader, "snapshot_every_n_steps", None) == 1
        if not (self.keeps_copies(loader) and exact) or iterator is None or iterator.failed:
            return None
        workers = iterator_end_worker_state(iterator)
        return workers if copies_moved_on(loader, workers) else None

    def workers_hold_state(self, loader: DataLoader[Any]) -> bool:
        """Whether workers hold state that a position alone cannot recompute."""
        return self.iterable or self._config.rng_scope == "worker" or stateful(loader.dataset)

    def identity(self, loader: DataLoader[Any]) -> dict[str, Any]:
        """The fields of a state that say which data a position means, for this loader."""
        rank, world_size = distributed.rank_and_world_size()  # one lookup, as the loader's
        try:
            length: int | None = len(loader.dataset)  # type: ignore[arg-type]
        except TypeError:
            length = None
        sampler = "iterable"
        if not self.iterable:
            sampler = describe_sampler(
                self._fast,
                loader.sampler,
                loader.batch_sampler,
                batch_size=loader.batch_size,
                seed=self._seed,
            )
        return {
            "seed": self._seed,
            "rng_scope": self._config.rng_scope,
            "reseed_globals": sorted(self._config.reseed_globals),
            "reseed_dataset_rngs": self._config.reseed_dataset_rngs,
            "dataset_length": length,
            "batch_size": loader.batch_size,
            "drop_last": loader.drop_last,
            "sampler": sampler,
            "world_size": world_size,
            "rank": rank,
            "num_workers": loader.num_workers,
        }

    def worker_state(self, loader: DataLoader[Any]) -> dict[str, Any]:
        """The running iterator's worker state (``state.WorkersState``)."""
        iterator = running_iterator(loader)
        if loader.num_workers and iterator.failed:
            # A worker's state travels with the batches it hands out; one whose fetch
            # raised sends none, so what it drew or read before raising is in no state.
            raise StateError(
                f"cannot take an exact state: {iterator.failed} batch(es) of this pass "
                "raised in a worker, and workers hold state here (worker scope, an "
                "iterable dataset, or a dataset with its own state_dict) that a failed "
                "batch changes without reporting it. Checkpoint at the end of the epoch, "
                "or use num_workers=0 or rng_scope='batch'/'sample' with a stateless "
                "map-style dataset."
            )
        if loader.num_workers == 0:
            # The loader's own RNG states are swapped in only inside the window.
            with self.isolation():
                return iterator_worker_state(iterator)
        return iterator_worker_state(iterator)

    def batches(self, loader: DataLoader[Any]) -> int | None:
        """The exact number of batches of an epoch on this rank, where it is known."""
        return len(loader) if self._fast is not None else None

    def offset_after(self, loader: DataLoader[Any], current: Pass, batches: int) -> int:
        """With ``shard=True``: the global sample offset after ``batches`` of ``current``."""
        sampler: ShardedSampler = loader.sampler  # type: ignore[assignment]
        return sampler.offset_after(current.world_size, current.offset, batches)

    def announce(self, current: Pass) -> None:
        """Tell persistent workers of an iterable dataset which pass runs now."""
        if self._shared_pass is not None:
            self._shared_pass.copy_(torch.tensor([current.epoch, current.serial]))

    def isolation(self) -> Isolation:
        """The window in which the main process produces data with ``num_workers=0``."""
        if self._isolation is None:
            self._isolation = Isolation(
                GlobalRngs(frozenset(self._config.reseed_globals)),
                swap=self._config.rng_scope == "worker",  # its streams continue across units
                clears_context=True,
                swaps_attributes=self._config.rng_scope == "worker",
            )
        return self._isolation

    def plan(self, loader: DataLoader[Any], rank: int, world_size: int) -> Plan:
        """What every process producing this loader's units on ``rank`` follows."""
        config = self._config
        return Plan(
            tree=self._tree,
            scope=config.rng_scope,
            rank=rank,
            world_size=world_size,
            num_workers=loader.num_workers,
            batch_size=loader.batch_size or 1,
            reseed_globals=frozenset(config.reseed_globals),
            reseed_dataset_rngs=config.reseed_dataset_rngs,
            iterable=self.iterable,
            collate_fn=loader.collate_fn,
            rng_search_budget=config.rng_search_budget,
            iterable_resume=config.iterable_resume,
        )

    def units(
        self, loader: DataLoader[Any], cursor: PassCursor, sampler_rngs: SamplerRngs | None
    ) -> UnitSampler:
        """A map-style loader's unit sampler over ``cursor``'s current pass.

        ``sampler_rngs``: the seeded RNG states a user's sampler draws from (None
        where the loader computes its batches).
        """
        return UnitSampler(
            cursor,
            default_index_sampler(loader),
            loader.sampler,  # type: ignore[arg-type]
            batch_size=loader.batch_size,
            drop_last=loader.drop_last,
            fast=self._fast,
            sampler_rngs=sampler_rngs,
            batch_sampler_given=self.batch_sampler_given,
        )

    @property
    def fast(self) -> str | None:
        """How the loader's batches are computed: ``None`` where a user's sampler is iterated."""
        return self._fast

    @property
    def scope(self) -> str:
        """The loader's rng_scope."""
        return self._config.rng_scope

    @property
    def tree(self) -> SeedTree:
        """The loader's seed tree."""
        return self._tree

    def view(self, loader: DataLoader[Any], cursor: PassCursor) -> IteratorView:
        """The loader as the iterator of the cursor's current pass sees it."""
        current = cursor.current
        plan = self.plan(loader, current.rank, current.world_size)
        if loader.num_workers > 0 and plan.reseed_dataset_rngs:
            # Workers search quietly; say here, once, what they will not reseed.
            search(plan, loader.dataset).warn(stacklevel=6)
        copies = cursor.take_copies()
        overrides: dict[str, Any] = {
            "generator": self._generator,
            "worker_init_fn": WorkerInit(
                current.epoch,
                loader.worker_init_fn,
                None if copies is None else worker_copies(copies),
            ),
        }
        if self.iterable:
            if loader.num_workers > 0 and self._shared_pass is None:
                shared = torch.tensor([current.epoch, current.serial], dtype=torch.int64)
                self._shared_pass = shared.share_memory_()  # type: ignore[no-untyped-call]
            wrapper = IterableWrapper(loader.dataset, plan, self._shared_pass)  # type: ignore[arg-type]
            wrapper.epoch, wrapper.serial = current.epoch, current.serial
            if loader.num_workers == 0:
                # The same dataset object runs every pass here: it holds a state of
                # its own once a pass started it or a state was loaded into it.
                wrapper.touched = self._dataset_touched()
                wrapper.check = self.resume_check
                self._main_wrapper = wrapper
            self._collate_with_ledger(loader, wrapper, overrides)
            return IteratorView(loader, dataset=wrapper, index_sampler=None, **overrides)
        rngs = None if self._fast else self._user_sampler_rngs(loader, plan.rank)
        units = self.units(loader, cursor, rngs)
        if not self.workers_hold_state(loader):
            # Map-style positions are (epoch, batches yielded): workers hold nothing
            # the main process cannot recompute, so skip torchdata's per-batch worker
            # snapshots (about 50 us per batch).
            overrides["snapshot_every_n_steps"] = 0
        wrapper_ = MapWrapper(loader.dataset, plan)
        self._collate_with_ledger(loader, wrapper_, overrides)
        return IteratorView(loader, dataset=wrapper_, index_sampler=units, **overrides)

    @staticmethod
    def _collate_with_ledger(
        loader: DataLoader[Any], wrapper: Any, overrides: dict[str, Any]
    ) -> None:
        # With a run ledger the batch is digested where it is made (see _runtime/ledger.py).
        ledger = getattr(loader, "ledger", None)
        if ledger is not None:
            overrides["collate_fn"] = LedgerCollate(
                loader.collate_fn, wrapper, indices=ledger.indices, content=ledger.content
            )

    def ledger_header(self, loader: DataLoader[Any], current: Pass) -> dict[str, Any]:
        """What a run ledger's header records of this loader (its identity, and more)."""
        header = self.identity(loader)
        header["rank"], header["world_size"] = current.rank, current.world_size
        dataset = type(loader.dataset)
        header["dataset_type"] = f"{dataset.__module__}.{dataset.__qualname__}"
        header["shuffle"] = getattr(loader, "shuffle", None)
        header["shard"] = getattr(loader, "shard", False)
        header["in_order"] = getattr(loader, "in_order", True)
        config = self._config.model_dump(mode="json")
        for name, value in self._config:
            if isinstance(value, frozenset):  # a set's order changes with the hash seed
                config[name] = sorted(value)
        header["config"] = config
        return header

    def _user_sampler_rngs(self, loader: DataLoader[Any], rank: int) -> SamplerRngs:
        if self._sampler_rngs is None:
            self._sampler_rngs = self.new_sampler_rngs(loader, rank)
        return self._sampler_rngs

    def new_sampler_rngs(self, loader: DataLoader[Any], rank: int) -> SamplerRngs:
        """Seeded RNG states for a user's sampler on ``rank``, apart from the loader's own."""
        return SamplerRngs(
            self._tree,
            rank,
            frozenset(self._config.reseed_globals),
            {"sampler": loader.sampler, "batch_sampler": loader.batch_sampler},
            self._config.reseed_dataset_rngs,
        )


def worker_copies(workers: Mapping[str, Any]) -> list[Any]:
    """Each worker's copy of the dataset's own state in a worker part, by id (None: none)."""
    copies = []
    for worker in workers["workers"]:
        if worker["map"] is not None:
            copies.append(worker["map"]["dataset"])
        elif worker["iterable"]["kind"] == "dataset":
            copies.append(worker["iterable"]["user"])
        else:  # an iterator's state, not the dataset's
            copies.append(None)
    return copies


def copies_moved_on(loader: DataLoader[Any], workers: Mapping[str, Any]) -> bool:
    """Whether a worker part holds a copy of the dataset unlike the main process's.

    Fresh copies are copies of the main process's dataset: where none of the copies
    differs from it (or the part holds none), carrying them changes nothing. A main
    dataset whose ``state_dict`` raises cannot be compared: the copies count as moved.
    """
    copies = [copy for copy in worker_copies(workers) if copy is not None]
    if not copies:
        return False
    try:
        here = loader.dataset.state_dict()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - not comparable: take them as moved
        return True
    return any(difference(here, copy, "state") for copy in copies)
