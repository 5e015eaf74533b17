"""The per-process engine: gets a process ready to produce one unit.

A :class:`Producer` lives in each process that produces data (every worker, and the
main process with ``num_workers=0``). ``begin`` is the whole per-unit cost: move the
seed-word Philox to the unit, reseed the enabled global RNGs and the dataset's RNG
attributes, move the context Generator (only once it has been handed out: before
that nobody can hold it) and publish the context.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch.utils.data

from reproloader import context as _context
from reproloader._runtime.discovery import DEFAULT_BUDGET, Discovery, discover
from reproloader._runtime.rngs import AttributeRngs, GlobalRngs
from reproloader._runtime.rngstate import dump_rng, load_rng
from reproloader.context import RngScope, WorkerContext
from reproloader.exceptions import StateMismatchError
from reproloader.seeding import Lane, Node, SeedTree, UnitStreams, unit_stream

__all__ = ["Plan", "Producer", "Suspended", "search"]


@dataclass(frozen=True)
class Plan:
    """What every producing process needs to know; fixed for one loader iterator.

    Attributes:
        tree: the loader's seed tree.
        scope: the loader's rng_scope.
        rank: the rank in ``torch.distributed`` when the iterator was made.
        world_size: the number of ranks then.
        num_workers: the loader's ``num_workers``.
        batch_size: samples per batch (1 without automatic batching); for iterable
            datasets it is also where one unit ends in batch scope.
        reseed_globals: names of the process-wide RNGs to reseed.
        reseed_dataset_rngs: whether to reseed RNG objects found on the dataset
            and the collate_fn.
        collate_fn: the loader's collate_fn, searched for RNG objects too (it runs
            inside the unit).
        rng_search_budget: how many objects one search for RNG objects reads at most.
        iterable: whether the dataset is an IterableDataset.
        iterable_resume: ``config.iterable_resume``: ``"state"`` or ``"replay"``.
    """

    tree: SeedTree
    scope: RngScope
    rank: int
    world_size: int
    num_workers: int
    batch_size: int
    reseed_globals: frozenset[str]
    reseed_dataset_rngs: bool
    iterable: bool = False
    collate_fn: Any = field(default=None, compare=False)
    rng_search_budget: int = DEFAULT_BUDGET
    iterable_resume: str = "state"


def search(plan: Plan, dataset: object) -> Discovery:
    """The RNG objects reachable from ``dataset`` and the plan's ``collate_fn``."""
    return search_from(dataset, plan.collate_fn, plan.rng_search_budget)


def search_from(dataset: object, collate_fn: object, budget: int) -> Discovery:
    """The RNG objects reachable from ``dataset`` and ``collate_fn`` (if not None)."""
    roots = {"dataset": dataset}
    if collate_fn is not None:
        roots["collate_fn"] = collate_fn
    return discover(roots, budget)


@dataclass(frozen=True)
class Suspended:
    """A unit put aside mid-way by :meth:`Producer.suspend`: where its RNGs stood."""

    globals: Any
    rng: Any
    attributes: tuple[AttributeRngs, list[Any]]
    key: npt.NDArray[np.uint64] | None
    unit: int
    epoch: int
    batch_index: int | None
    sample_index: int | None


class Producer:
    """Readies this process for a unit; one per process and dataset wrapper."""

    def __init__(self, plan: Plan, dataset: object) -> None:
        self.plan = plan
        self._user_dataset = dataset
        info = torch.utils.data.get_worker_info()
        self.in_worker = info is not None
        self.worker_id = info.id if info is not None else 0
        self._streams = UnitStreams()
        self._globals = GlobalRngs(plan.reseed_globals)
        self._attributes = AttributeRngs([])
        self._rng: np.random.Generator | None = None
        self._key: npt.NDArray[np.uint64] | None = None
        self._unit = 0
        self._entered_epoch: int | None = None
        self.stream: Any = None  # worker scope: which pass the running stream belongs to
        self._epoch = 0
        self._batch_index: int | None = None
        self._sample_index: int | None = None
        self._context: WorkerContext | None = None

    def enter_epoch(self, epoch: int) -> None:
        """First unit of ``epoch`` in this process: propagate the epoch, find RNGs."""
        if epoch == self._entered_epoch:
            return
        self._entered_epoch = epoch
        set_epoch = getattr(self._user_dataset, "set_epoch", None)
        if self.in_worker and callable(set_epoch):
            # The main process already called it on its copy; a persistent worker's
            # copy would otherwise stay at the epoch it was started in.
            set_epoch(epoch)
        self.find_attribute_rngs()

    def find_attribute_rngs(self) -> None:
        """Look for RNG objects on the dataset again (they may be new or replaced).

        The main process warns about what it cannot reseed (workers stay quiet: the
        main process searched the same objects when the iterator was made).
        """
        if self.plan.reseed_dataset_rngs:
            found = search(self.plan, self._user_dataset)
            if not self.in_worker:
                found.warn(stacklevel=4)
            self._attributes = AttributeRngs(found.rngs)

    def hold_attributes(self) -> tuple[AttributeRngs, list[Any]]:
        """The states of the RNG objects reseeded on the dataset, to put back later."""
        attributes = self._attributes
        return attributes, [dump_rng(rng) for _, rng in attributes.rngs]

    def release_attributes(self, held: tuple[AttributeRngs, list[Any]]) -> None:
        """Put back what :meth:`hold_attributes` took (if the RNGs are still the same)."""
        attributes, states = held
        if attributes is self._attributes:
            for (_, rng), state in zip(attributes.rngs, states, strict=True):
                load_rng(rng, state)

    @property
    def attribute_paths(self) -> list[str]:
        """Where the RNGs reseeded on the dataset were found."""
        return self._attributes.paths

    def enter_unit(self, epoch: int, serial: int, *, batch: int, sample: int | None = None) -> None:
        """Ready this process for a unit of pass ``serial``: its stream, in the loader's scope.

        In worker scope a worker's stream starts at its first unit of a pass and
        continues through the others; every other scope starts a stream per unit.
        """
        plan = self.plan
        if plan.scope == "worker":
            if self.stream == (epoch, serial):
                self.at(epoch=epoch, batch_index=batch)
                return
            self.stream = (epoch, serial)
        node, unit = unit_stream(
            plan.scope,
            iterable=plan.iterable,
            epoch=epoch,
            rank=plan.rank,
            worker=self.worker_id,
            batch=batch,
            sample=sample,
        )
        self.begin(
            node,
            unit,
            epoch=epoch,
            batch_index=batch,
            sample_index=sample if plan.scope == "sample" else None,
        )

    def begin(
        self,
        node: Node,
        unit: int,
        *,
        epoch: int,
        batch_index: int | None,
        sample_index: int | None = None,
    ) -> None:
        """Reseed everything for stream ``unit`` of ``node``."""
        key = self.plan.tree.key(*node)
        streams = self._streams
        n = self._globals.n_words
        if n:
            self._globals.reseed(streams.words(key, unit, Lane.GLOBALS, n))
        attributes = self._attributes
        if attributes:
            attributes.reseed(streams.words(key, unit, Lane.ATTRIBUTES, attributes.n_words))
        if self._rng is not None:
            streams.position(self._rng.bit_generator, key, unit, Lane.RNG)  # type: ignore[arg-type]
        self._key = key
        self._unit = unit
        self.at(epoch=epoch, batch_index=batch_index, sample_index=sample_index)

    def at(self, *, epoch: int, batch_index: int | None, sample_index: int | None = None) -> None:
        """Publish the context for a unit without reseeding (a continuing stream).

        Where it is already published with these values (the next sample of an
        iterable dataset's batch) the context object is kept: it would be the same.
        """
        if (
            batch_index == self._batch_index
            and epoch == self._epoch
            and sample_index == self._sample_index
            and _context._current() is self
        ):
            return
        self._epoch = epoch
        self._batch_index = batch_index
        self._sample_index = sample_index
        self._context = None
        _context._activate(self)

    def suspend(self) -> Suspended:
        """Put the running unit aside, to :meth:`resume` it in a later window.

        In the main process each window gives the caller's RNG states back when it
        closes: a unit begun in one window (a pass's first, whose ``iter(dataset)``
        runs when the iterator is made) continues in the next from where its RNGs
        stood, not from a reseed.
        """
        return Suspended(
            globals=self._globals.save(),
            rng=None if self._rng is None else dump_rng(self._rng),
            attributes=self.hold_attributes(),
            key=self._key,
            unit=self._unit,
            epoch=self._epoch,
            batch_index=self._batch_index,
            sample_index=self._sample_index,
        )

    def resume(self, suspended: Suspended) -> None:
        """Continue the unit :meth:`suspend` put aside, whatever ran in between."""
        self._globals.restore(suspended.globals)
        self.release_attributes(suspended.attributes)
        self._key, self._unit = suspended.key, suspended.unit
        if suspended.rng is not None:
            load_rng(self.rng, suspended.rng)
        elif self._rng is not None and self._key is not None:
            # Handed out since, by another unit: back to where this unit's starts.
            self._streams.position(self._rng.bit_generator, self._key, self._unit, Lane.RNG)  # type: ignore[arg-type]
        self.at(
            epoch=suspended.epoch,
            batch_index=suspended.batch_index,
            sample_index=suspended.sample_index,
        )

    @property
    def rng(self) -> np.random.Generator:
        """The unit's Generator; created and moved to the unit on first use."""
        rng = self._rng
        if rng is None:
            if self._key is None:
                raise RuntimeError("Producer.rng used before any unit began")
            rng = self._rng = UnitStreams.new_generator()
            self._streams.position(rng.bit_generator, self._key, self._unit, Lane.RNG)  # type: ignore[arg-type]
        return rng

    def context(self) -> WorkerContext:
        """The frozen context of the current unit (built once per unit, on demand)."""
        ctx = self._context
        if ctx is None:
            plan = self.plan
            ctx = self._context = WorkerContext(
                rng=self.rng,
                seed=plan.tree.seed,
                epoch=self._epoch,
                rank=plan.rank,
                world_size=plan.world_size,
                worker_id=self.worker_id,
                num_workers=plan.num_workers,
                scope=plan.scope,
                batch_index=self._batch_index,
                sample_index=self._sample_index,
            )
        return ctx

    # -- worker scope: a stream that continues across units ------------------

    def stream_state(self) -> dict[str, Any] | None:
        """Where this process's running stream stands, as plain data (or None)."""
        if self.stream is None:
            return None
        return {
            "stream": list(self.stream),
            "globals": self._globals.to_plain(self._globals.peek()),
            "rng": dump_rng(self._rng) if self._rng is not None else None,
            "attributes": {path: dump_rng(rng) for path, rng in self._attributes.rngs},
        }

    def load_stream_state(self, state: dict[str, Any]) -> None:
        """Continue the stream a :meth:`stream_state` describes, in this process."""
        epoch, serial = state["stream"]
        self.enter_epoch(epoch)
        self.stream = (epoch, serial)
        # An rng handed out later must start where the stream starts.
        plan = self.plan
        node, self._unit = unit_stream(
            plan.scope,
            iterable=plan.iterable,
            epoch=epoch,
            rank=plan.rank,
            worker=self.worker_id,
            batch=0,
            sample=None,
        )
        self._key = plan.tree.key(*node)
        self._globals.restore(self._globals.from_plain(state["globals"]))
        if state["rng"] is not None:
            load_rng(self.rng, state["rng"])
        saved = state["attributes"]
        found = self._attributes.paths
        if sorted(saved) != found:
            raise StateMismatchError(
                f"cannot resume: the dataset's RNG attributes were {sorted(saved)} when "
                f"the state was saved and are {found} now; resume with the same dataset",
                {"dataset RNG attributes": (sorted(saved), found)},
            )
        for path, rng in self._attributes.rngs:
            load_rng(rng, saved[path])
