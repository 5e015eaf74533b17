"""``ReproLoader``: the DataLoader drop-in. It connects the parts and does no RNG math.

How a batch is made (see docs/how-it-works.md for the diagram):

1. ``__iter__`` starts a *pass*: the epoch advances (or stays, after
   ``set_epoch``/``load_state_dict``), ``set_epoch`` reaches sampler, batch sampler
   and dataset, and the pass gets a serial number.
2. The torch/torchdata iterator is built from a *view* of the loader whose
   ``dataset`` is a wrapper, whose index sampler yields units
   ``(epoch, serial, position, indices)``, whose ``generator`` is private (so
   iterating never draws from the caller's RNG) and whose ``worker_init_fn`` seeds
   workers from the tree first. ``loader.dataset`` and every other attribute stay
   what the user passed.
3. Whichever process fetches a unit reseeds for it (``_producer.Producer``); with
   ``num_workers=0`` that happens inside an :class:`~reproloader._runtime.isolation.Isolation`
   window that restores the caller's RNG states afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.multiprocessing
import torch.utils.data
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler
from torch.utils.data.datapipes.datapipe import IterDataPipe, MapDataPipe
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.stateful_dataloader import (
    _StatefulMultiProcessingDataLoaderIter,
    _StatefulSingleProcessDataLoaderIter,
)

from reproloader import distributed
from reproloader._runtime.arguments import (
    check_config,
    check_shard,
    resolve_seed,
    resolve_start_method,
)
from reproloader._runtime.bridge import quiet_torchdata
from reproloader._runtime.isolation import Isolation
from reproloader._runtime.producer import Plan, search
from reproloader._runtime.rngs import GlobalRngs
from reproloader._runtime.units import Pass, SamplerRngs, UnitSampler, fast_mode
from reproloader._runtime.wrappers import IterableWrapper, MapWrapper, WorkerInit, stateful
from reproloader.config import ReproConfig
from reproloader.exceptions import StateError, StateMismatchError
from reproloader.sampler import SeededRandomSampler
from reproloader.seeding import MAX_PATH_ELEMENT, SeedTree
from reproloader.state import FORMAT, VERSION, LoaderState, check_compatible, upgrade

__all__ = ["ReproLoader"]

_T_co = TypeVar("_T_co", covariant=True)

if TYPE_CHECKING:
    # torchdata ships no type information; to type checkers a ReproLoader is the
    # DataLoader it stands in for.
    _Base = DataLoader
else:
    _Base = StatefulDataLoader

# Attributes that, like DataLoader's own guarded ones, fix what the loader produces.
_FROZEN_AFTER_INIT = frozenset({"seed", "config", "shuffle", "shard"})


class _IteratorView:
    """The loader as torch's iterators must see it; every other attribute delegates."""

    def __init__(self, loader: ReproLoader[Any], **overrides: Any) -> None:
        self._loader = loader
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _SingleProcessIter(_StatefulSingleProcessDataLoaderIter):  # type: ignore[misc]
    """torchdata's in-process iterator, fetching each batch inside an isolation window."""

    def __init__(self, view: _IteratorView, state: Any, isolation: Isolation) -> None:
        self._isolation = isolation
        super().__init__(view, state)

    def _next_data(self) -> Any:
        with self._isolation:
            return super()._next_data()


class ReproLoader(_Base[_T_co]):
    """A ``torch.utils.data.DataLoader`` whose randomness is a pure function of its position.

    Change the import and the class name; every DataLoader argument keeps its meaning
    and default. Each batch's randomness (python ``random``, numpy's global RNG,
    torch's CPU RNG, RNG objects on the dataset, and :func:`get_context`'s
    ``rng``) derives from (seed, epoch, rank, batch index), so it does not depend on
    ``num_workers``, the start method, ``persistent_workers``, or what ran before.
    Iterating never changes the caller's RNG states.

    Args:
        dataset: as for DataLoader; ``loader.dataset`` stays this object.
        batch_size: as for DataLoader.
        shuffle: as for DataLoader; the order of each epoch is a permutation derived
            from (seed, epoch) by :class:`SeededRandomSampler`.
        sampler: as for DataLoader. Its ``set_epoch`` is called at each epoch.
        batch_sampler: as for DataLoader. Its ``set_epoch`` is called at each epoch.
        num_workers: as for DataLoader.
        collate_fn: as for DataLoader; it runs inside the unit, so its randomness
            (MixUp, say) is reproducible too.
        pin_memory: as for DataLoader.
        drop_last: as for DataLoader.
        timeout: as for DataLoader.
        worker_init_fn: as for DataLoader; it runs after the worker is seeded from
            the tree, so its draws are reproducible too.
        multiprocessing_context: as for DataLoader; or set ``config.start_method``.
        generator: as for DataLoader; when ``seed`` is None the seed is drawn from it
            (instead of torch's global RNG) once, at construction.
        prefetch_factor: as for DataLoader.
        persistent_workers: as for DataLoader; gives the same batches as ``False``.
        pin_memory_device: as for DataLoader.
        in_order: as for DataLoader. With ``False`` batches keep their contents but
            may arrive in another order.
        snapshot_every_n_steps: as for torchdata's StatefulDataLoader; only used
            where workers hold state the main process cannot recompute.
        seed: the root seed, an int in ``[0, 2**128)``. ``None`` takes
            ``config.seed``, or draws one from torch's global RNG (or ``generator``).
            The effective seed is ``loader.seed``.
        config: a :class:`ReproConfig` (or a mapping of its fields): rng_scope,
            start method, which RNGs to reseed.

    Example:
        >>> loader = ReproLoader(dataset, batch_size=32, shuffle=True, num_workers=2, seed=0)
        >>> for epoch in range(3):
        ...     for batch in loader:  # loader.epoch is 0, 1, 2
        ...         ...
    """

    next_iter_state: dict[str, Any] | None
    _iterator: Any  # torchdata's iterators, which carry no type information

    # Hugging Face accelerate: Accelerator.prepare() rebuilds a DataLoader as a plain one
    # from its dataset and batch sampler, which would drop everything this class adds;
    # it returns objects marked as prepared unchanged, and its save_state/load_state carry
    # the state_dict() of tracked loaders that say they are stateful.
    _is_accelerate_prepared = True
    use_stateful_dataloader = True

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
    ) -> None:
        config = check_config(config)
        if isinstance(dataset, (IterDataPipe, MapDataPipe)):
            raise TypeError(
                f"ReproLoader does not support DataPipes (got {type(dataset).__name__}); "
                "torch deprecated them. Wrap the pipe in an IterableDataset."
            )
        seed = resolve_seed(seed, config, generator)
        multiprocessing_context = resolve_start_method(multiprocessing_context, config, num_workers)
        iterable = isinstance(dataset, IterableDataset)
        pass_shuffle = shuffle
        if shard:
            check_shard(iterable, sampler, batch_sampler, batch_size)
            assert batch_size is not None
            sampler = distributed.ShardedSampler(
                dataset,  # type: ignore[arg-type]
                seed=seed,
                shuffle=bool(shuffle),
                batch_size=batch_size,
                drop_last=drop_last,
            )
            pass_shuffle = False
        elif shuffle and not iterable and batch_sampler is None:
            if sampler is None:
                sampler = SeededRandomSampler(dataset, seed=seed)  # type: ignore[arg-type]
                pass_shuffle = False
            elif isinstance(sampler, SeededRandomSampler):
                # A loader rebuilt from its own attributes passes shuffle=True with
                # the sampler that shuffle=True made: that is consistent, not a clash.
                pass_shuffle = False

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

        self._tree = SeedTree(seed)
        self._iterable = iterable
        self._epoch = 0
        self._started = False  # has an iterator started in the current epoch?
        self._serial = 0
        self._pending_start = 0  # where the next pass starts (set by load_state_dict)
        self._pending_offset = 0  # with sharding, the global sample offset it starts at
        self._loaded_end: int | None = None  # position of a finished pass that was loaded
        self._current: list[Pass] = [Pass(epoch=0, serial=0)]
        self._batch_sampler_given = batch_sampler is not None
        self._fast = None if iterable else fast_mode(self.sampler, self._batch_sampler_given)
        # Draws for torch's per-iterator base seed come from here, not from the
        # caller's generator; the workers are reseeded from the tree anyway.
        self._private_generator = torch.Generator().manual_seed(seed % 2**63)
        self._shared_pass: torch.Tensor | None = None
        self._isolation: Isolation | None = None
        self._sampler_rngs: SamplerRngs | None = None
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
        """The epoch of the current (or next, if none has started) pass."""
        return self._epoch

    @property
    def rng_scope(self) -> str:
        """What one random stream covers: ``config.rng_scope``."""
        return self.config.rng_scope

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass (the next ``iter(loader)``) run epoch ``epoch``.

        Without calls to ``set_epoch`` the loader counts epochs itself: each new
        iterator after a previous one starts the next epoch.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError(f"epoch must be an int, got {epoch!r} of type {type(epoch).__name__}")
        if not 0 <= epoch < MAX_PATH_ELEMENT:
            raise ValueError(f"epoch must be in [0, {MAX_PATH_ELEMENT}), got {epoch}")
        self._epoch = epoch
        self._started = False
        self._pending_start = 0
        self._pending_offset = 0
        self._loaded_end = None

    def __iter__(self) -> Any:
        if self._started:
            self.set_epoch(self._epoch + 1)
        self._started = True
        epoch = self._epoch
        rank, world_size = distributed.rank_and_world_size()
        self._current[0] = Pass(
            epoch=epoch,
            serial=self._serial,
            start=self._pending_start,
            offset=self._pending_offset,
            rank=rank,
            world_size=world_size,
        )
        self._serial += 1
        self._pending_start = 0
        self._pending_offset = 0
        self._loaded_end = None
        # The batch sampler's own sampler too: frameworks that rebuild a loader for
        # DDP (Lightning) put their DistributedSampler only there.
        owners = (
            self.sampler,
            self.batch_sampler,
            getattr(self.batch_sampler, "sampler", None),
            self.dataset,
        )
        seen: set[int] = set()
        for owner in owners:
            set_epoch = getattr(owner, "set_epoch", None)
            if id(owner) not in seen and callable(set_epoch):
                seen.add(id(owner))
                set_epoch(epoch)
        if self._shared_pass is not None:
            self._shared_pass.copy_(torch.tensor([epoch, self._current[0].serial]))
        return super().__iter__()

    # -- iterator construction -----------------------------------------------

    def _plan(self) -> Plan:
        rank, world_size = distributed.rank_and_world_size()
        return Plan(
            tree=self._tree,
            scope=self.config.rng_scope,
            rank=rank,
            world_size=world_size,
            num_workers=self.num_workers,
            batch_size=self.batch_size or 1,
            reseed_globals=frozenset(self.config.reseed_globals),
            reseed_dataset_rngs=self.config.reseed_dataset_rngs,
            collate_fn=self.collate_fn,
            rng_search_budget=self.config.rng_search_budget,
        )

    def _view(self) -> _IteratorView:
        plan = self._plan()
        if self.num_workers > 0 and plan.reseed_dataset_rngs:
            # Workers search quietly; say here, once, what they will not reseed.
            search(plan, self.dataset).warn(stacklevel=5)
        overrides: dict[str, Any] = {
            "generator": self._private_generator,
            "worker_init_fn": WorkerInit(self._epoch, self.worker_init_fn),
        }
        if self._iterable:
            if self.num_workers > 0 and self._shared_pass is None:
                shared = torch.zeros(2, dtype=torch.int64)
                self._shared_pass = shared.share_memory_()  # type: ignore[no-untyped-call]
                self._shared_pass.copy_(torch.tensor([self._epoch, self._current[0].serial]))
            wrapper: Any = IterableWrapper(self.dataset, plan, self._shared_pass)  # type: ignore[arg-type]
            wrapper.epoch, wrapper.serial = self._current[0].epoch, self._current[0].serial
        else:
            wrapper = MapWrapper(self.dataset, plan)
            overrides["_index_sampler"] = UnitSampler(
                self._current,
                self._index_sampler,
                self.sampler,  # type: ignore[arg-type]
                batch_size=self.batch_size,
                drop_last=self.drop_last,
                fast=self._fast,
                sampler_rngs=None if self._fast else self._get_sampler_rngs(plan.rank),
                batch_sampler_given=self._batch_sampler_given,
            )
            if not self._workers_hold_state:
                # Map-style positions are (epoch, batches yielded): workers hold
                # nothing the main process cannot recompute, so skip torchdata's
                # per-batch worker snapshots (about 50 us per batch).
                overrides["snapshot_every_n_steps"] = 0
        overrides["dataset"] = wrapper
        return _IteratorView(self, **overrides)

    def _get_sampler_rngs(self, rank: int) -> SamplerRngs:
        if self._sampler_rngs is None:
            self._sampler_rngs = SamplerRngs(
                self._tree,
                rank,
                frozenset(self.config.reseed_globals),
                {"sampler": self.sampler, "batch_sampler": self.batch_sampler},
                self.config.reseed_dataset_rngs,
            )
        return self._sampler_rngs

    def _main_isolation(self) -> Isolation:
        if self._isolation is None:
            self._isolation = Isolation(
                GlobalRngs(frozenset(self.config.reseed_globals)),
                swap=self.config.rng_scope == "worker",
                clears_context=True,
            )
        return self._isolation

    def _get_iterator(self) -> Any:
        view = self._view()
        state = self.next_iter_state
        self.next_iter_state = None
        if self.num_workers == 0:
            isolation = self._main_isolation()
            with isolation:
                return _SingleProcessIter(view, state, isolation)
        self.check_worker_number_rationality()
        return _StatefulMultiProcessingDataLoaderIter(view, state)

    # -- checkpointing ---------------------------------------------------------

    @property
    def _workers_hold_state(self) -> bool:
        # Where a position alone does not say what the workers would do next.
        return self._iterable or self.config.rng_scope == "worker" or stateful(self.dataset)

    def _sampler_kind(self) -> str:
        if self._iterable:
            return "iterable"
        if self._fast == "sequential":
            return "sequential"
        if self._fast == "sharded":
            return "sharded, shuffle" if self.shuffle else "sharded"
        if self._fast == "permutation":
            sampler_seed = self.sampler.seed  # type: ignore[attr-defined]
            return "shuffle" if sampler_seed == self.seed else f"shuffle(seed={sampler_seed})"
        if self._fast is None and self.batch_sampler is not None and self.batch_size is None:
            return f"batch_sampler:{type(self.batch_sampler).__qualname__}"
        return f"sampler:{type(self.sampler).__qualname__}"

    def _describe(self) -> dict[str, Any]:
        """The fields of a state that say which data a position means, for this loader."""
        rank, world_size = distributed.rank_and_world_size()
        try:
            length: int | None = len(self.dataset)  # type: ignore[arg-type]
        except TypeError:
            length = None
        return {
            "seed": self.seed,
            "rng_scope": self.config.rng_scope,
            "reseed_globals": sorted(self.config.reseed_globals),
            "reseed_dataset_rngs": self.config.reseed_dataset_rngs,
            "dataset_length": length,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "sampler": self._sampler_kind(),
            "world_size": world_size,
            "rank": rank,
            "num_workers": self.num_workers,
        }

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
        workers: dict[str, Any] | None = None
        offset = None
        if not self._started:
            epoch, position, finished, serial = (
                self._epoch,
                self._pending_start,
                False,
                self._serial,
            )
            workers = self.next_iter_state
            offset = self._pending_offset
        elif self._iterator is None:  # a finished pass was loaded and nothing iterated since
            epoch, finished, serial = self._epoch, True, self._serial - 1
            position = self._loaded_end or 0
        else:
            current = self._current[0]
            iterator = self._iterator
            epoch, serial = current.epoch, current.serial
            position = current.start + iterator._num_yielded
            finished = bool(iterator._finished)
            if self.shard:
                steps = self.sampler.steps(current.world_size, current.offset)  # type: ignore[attr-defined]
                offset = current.offset + sum(steps[: iterator._num_yielded])
            if self.num_workers > 0 and not self.in_order and not finished and position:
                raise StateError(
                    "cannot take a mid-epoch state with in_order=False: batches arrive in "
                    "the order workers finish them, so the ones handed out are not the "
                    "epoch's first ones. Checkpoint at epoch boundaries, or use in_order=True."
                )
            if self._workers_hold_state and position and not finished:
                if self.num_workers == 0:
                    # The loader's own RNG states are swapped in only inside the window.
                    with self._main_isolation():
                        workers = iterator.state_dict()
                else:
                    workers = iterator.state_dict()
        state: LoaderState = {
            "format": FORMAT,
            "version": VERSION,
            **self._describe(),  # type: ignore[typeddict-item]
            "epoch": epoch,
            "position": position,
            "offset": offset if self.shard and not finished else None,
            "finished": finished,
            "serial": serial,
            "workers": workers,
        }
        return dict(state)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` taken from a loader built the same way.

        Call it on a fresh loader, before iterating. The batches that follow are
        bitwise equal to those the saved loader would have produced next, random
        values included, for the rest of the epoch and later ones. Map-style datasets
        in batch or sample scope resume into any ``num_workers``, and start at the
        saved batch without loading or replaying the ones before.

        Raises:
            StateVersionError: not a ReproLoader state, or a newer format.
            StateMismatchError: the state was taken from a loader that differs from
                this one; the message lists every differing field, both values.
        """
        state = upgrade(state_dict)
        workers = state["workers"]
        check_compatible(state, self._describe(), workers=workers is not None, elastic=self.shard)
        # Worker state is needed mid-pass, where workers hold state (worker scope,
        # iterable datasets, datasets with a state_dict), and only there.
        needed = self._workers_hold_state and state["position"] > 0 and not state["finished"]
        if (workers is not None) != needed:
            raise StateMismatchError(
                "cannot resume: the state "
                f"{'carries' if workers is not None else 'lacks'} worker state, which this "
                f"loader {'needs' if needed else 'does not use'} here (worker scope, iterable "
                "datasets and datasets with a state_dict make workers hold state); resume "
                "with the same dataset and rng_scope",
                {"worker state": (workers is not None, needed)},
            )
        self.set_epoch(state["epoch"])
        self._iterator = None
        self.next_iter_state = None
        self._initial_iter_for_state_dict = False
        if state["finished"]:
            self._started = True  # the next pass is the next epoch
            self._loaded_end = state["position"]
            self._serial = state["serial"] + 1
        else:
            self._serial = state["serial"]
            if workers is not None:
                # torchdata restores positions and worker states; it skips the units
                # before the position in the unit sampler, which loads nothing.
                self.next_iter_state = workers
            else:
                self._pending_start = state["position"]
                self._pending_offset = state["offset"] or 0

    def __len__(self) -> int:
        if self.shard:
            _, world_size = distributed.rank_and_world_size()
            return len(self.sampler.steps(world_size))  # type: ignore[attr-defined]
        return super().__len__()

    def __repr__(self) -> str:
        return (
            f"ReproLoader(dataset={type(self.dataset).__name__}, batch_size={self.batch_size}, "
            f"num_workers={self.num_workers}, seed={self.seed}, "
            f"rng_scope={self.config.rng_scope!r}, epoch={self._epoch})"
        )
