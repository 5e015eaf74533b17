"""Any batch on demand: the unit at (epoch, position, rank), produced in this process.

A map-style unit is ``(epoch, serial, position, indices)`` and, in batch and sample
scope, its randomness is keyed by (epoch, rank, position) or (epoch, sample) only:
not by the worker, the pass or anything produced before it. So the batch an
iteration yields at a position can be made again here, with the parts iteration
uses: the :class:`~reproloader._runtime.units.UnitSampler` of a one-unit pass
starting there (the loader's samplers compute it in O(1)), a
:class:`~reproloader._runtime.wrappers.MapWrapper` whose Producer reseeds for it,
and the loader's ``collate_fn``, inside an isolation window that gives the caller's
RNG states back. Nothing of the loader's own (cursor, running iterator, sampler RNG
states) is used or changed.

Where the unit cannot be made this way, :func:`check_available` says why
(:class:`~reproloader.exceptions.BatchUnavailableError`), never a different batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from torch.utils.data import DataLoader

from reproloader._runtime.cursor import Pass, PassCursor
from reproloader._runtime.isolation import Isolation
from reproloader._runtime.machinery import Machinery
from reproloader._runtime.rngs import GlobalRngs
from reproloader._runtime.rngstate import dump_rng, load_rng
from reproloader._runtime.units import set_epoch_everywhere
from reproloader._runtime.wrappers import MapWrapper, Unit, stateful
from reproloader.distributed import ShardedSampler
from reproloader.exceptions import BatchUnavailableError, ConfigError
from reproloader.seeding import MAX_PATH_ELEMENT, check_int

__all__ = ["batch_at", "check_available", "check_skippable", "unit_at"]


def check_available(
    loader: DataLoader[Any],
    machinery: Machinery,
    *,
    rank: int,
    own_rank: int,
    replay: bool,
    fetch: bool,
) -> None:
    """Raise :class:`BatchUnavailableError` where a unit cannot be made exactly here.

    ``fetch``: the batch itself is asked for, not only its indices (which no scope
    or dataset state changes).
    """
    at = "cannot give a batch on demand" if fetch else "cannot give a batch's indices on demand"
    if machinery.iterable:
        raise BatchUnavailableError(
            f"{at}: the dataset is an IterableDataset, whose batches are cut from each "
            "worker's stream as it runs, so batch k is known only by running the streams "
            "to it. Iterate a loader built the same way to that batch (the cost of every "
            "batch before it), or use a map-style dataset"
        )
    if fetch and machinery.scope == "worker":
        raise BatchUnavailableError(
            f"{at}: rng_scope='worker' continues one stream per worker from batch to "
            "batch, so a batch's random values depend on every batch its worker made "
            "before it in the pass. Use rng_scope='batch' or 'sample' (a stream per "
            "batch or sample), or iterate a loader built the same way to that batch"
        )
    if fetch and stateful(loader.dataset):
        raise BatchUnavailableError(
            f"{at}: the dataset {type(loader.dataset).__name__} has its own "
            "state_dict, so its batches may depend on that state, which a position does "
            "not determine. Iterate a loader built the same way to that batch"
        )
    if machinery.fast is None:
        sampler = loader.batch_sampler if machinery.batch_sampler_given else loader.sampler
        if not replay:
            raise BatchUnavailableError(
                f"{at} in O(1): the batches come from iterating your "
                f"{type(sampler).__name__}, which has no way to start at a batch. Pass "
                "replay=True to draw it through the batches before (no data is loaded: "
                "the cost is the sampler's draws, O(index)), or use shuffle=True or "
                "shard=True, whose batches are computed"
            )
        if rank != own_rank:
            raise BatchUnavailableError(
                f"{at} for rank {rank} on rank {own_rank}: your "
                f"{type(sampler).__name__} gives this process's rank its indices. Ask on "
                "that rank, or use shard=True"
            )


def check_skippable(loader: DataLoader[Any], machinery: Machinery) -> None:
    """Refuse skipping where it would change the batches kept; warn where it may."""
    at = "cannot skip batches exactly"
    if machinery.iterable:
        raise ConfigError(
            f"{at}: the dataset is an IterableDataset, whose batches are cut from each "
            "worker's stream as it runs: leaving one out would not move the others' "
            "samples. Filter the samples in the dataset, or use a map-style dataset"
        )
    if machinery.scope == "worker":
        raise ConfigError(
            f"{at}: rng_scope='worker' continues one stream per worker from batch to "
            "batch, so leaving a batch out changes the random values of the batches its "
            "worker makes after it. Use rng_scope='batch' or 'sample'"
        )
    if stateful(loader.dataset):
        warnings.warn(
            f"skipping batches of a dataset with its own state_dict "
            f"({type(loader.dataset).__name__}): the batches kept are exact only if its "
            "items do not depend on that state (a skipped batch's items are never "
            "fetched, so a state that counts them differs from the run without skipping)",
            UserWarning,
            stacklevel=3,
        )


def unit_at(
    loader: DataLoader[Any],
    machinery: Machinery,
    *,
    epoch: int,
    index: int,
    rank: int,
    world_size: int,
    owners: Iterable[object],
    restore_epoch: int,
) -> Unit:
    """The unit iteration gives at position ``index`` of ``epoch`` on ``rank``.

    Raises:
        IndexError: the epoch has no batch at ``index``.
    """
    check_int("epoch", epoch, MAX_PATH_ELEMENT)
    check_int("index", index, 2**63)
    offset = 0
    if machinery.fast == "sharded":
        sampler: ShardedSampler = loader.sampler  # type: ignore[assignment]
        offset = sampler.steps(world_size).consumed(index)
    cursor = PassCursor()
    cursor.current = Pass(
        epoch=epoch,
        serial=0,
        start=index,
        offset=offset,
        rank=rank,
        world_size=world_size,
        stop=index + 1,
    )
    rngs = None if machinery.fast else machinery.new_sampler_rngs(loader, rank)
    units = machinery.units(loader, cursor, rngs)
    if machinery.fast is not None and index >= len(units):
        raise IndexError(
            f"epoch {epoch} has {len(units)} batches here (indices 0 to {len(units) - 1}), "
            f"got index {index}"
        )
    found: Unit | None
    if rngs is None:
        found = next(iter(units))
    else:
        # A user's sampler: its epoch and RNG objects are set as a pass sets them, then
        # put back, so a pass running in this process draws on as it would have.
        held = [(rng, dump_rng(rng)) for _, rng in rngs.attribute_rngs]
        set_epoch_everywhere(owners, epoch)
        try:
            found = next(iter(units), None)
        finally:
            set_epoch_everywhere(owners, restore_epoch)
            for rng, state in held:
                load_rng(rng, state)
        if found is None:
            raise IndexError(f"epoch {epoch} has fewer than {index + 1} batches here")
    return found


def batch_at(
    loader: DataLoader[Any],
    machinery: Machinery,
    unit: Unit,
    *,
    rank: int,
    world_size: int,
    restore_epoch: int,
) -> Any:
    """Produce ``unit`` in this process as a worker would: fetch, collate, reseeded for it."""
    plan = machinery.plan(loader, rank, world_size)
    wrapper = MapWrapper(loader.dataset, plan)
    isolation = Isolation(GlobalRngs(plan.reseed_globals), swap=False, clears_context=True)
    dataset = [loader.dataset]
    set_epoch_everywhere(dataset, unit[0])  # as the pass of that epoch set it
    try:
        with isolation:
            producer = wrapper.producer()
            producer.enter_epoch(unit[0])
            held = producer.hold_attributes()  # the dataset's RNG objects, put back after
            try:
                if loader.batch_sampler is not None:  # automatic batching
                    data = wrapper.__getitems__(unit)
                else:
                    data = wrapper[unit]
                return loader.collate_fn(data)
            finally:
                producer.release_attributes(held)
    finally:
        set_epoch_everywhere(dataset, restore_epoch)
