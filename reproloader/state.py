"""``LoaderState``: the versioned, plain-data schema of ``ReproLoader.state_dict()``.

A state is small: where the loader is (epoch, batches handed out, whether the pass
ended) and what that position means (the seed and every argument that decides the
batches). Only where workers hold state the main process cannot recompute (worker
scope, iterable datasets, datasets with their own ``state_dict``) does it carry
torchdata's per-worker snapshots as well.

It holds ints, floats, strings, bools, lists, dicts and (worker scope only) torch
tensors: ``torch.load(f, weights_only=True)`` reads it and, tensors aside, so does
``json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, TypedDict

from reproloader.exceptions import StateMismatchError, StateVersionError

__all__ = ["FORMAT", "RANKS_FORMAT", "VERSION", "LoaderState", "check_compatible", "upgrade"]

FORMAT: Final = "reproloader.ReproLoader"
VERSION: Final = 2

RANKS_FORMAT: Final = "reproloader.ReproLoader/ranks"
"""The format of a state gathered from every rank (``distributed.gather_state``):
``{"format": RANKS_FORMAT, "version": 1, "world_size": W, "ranks": [state, ...]}``."""

# Fields that decide which data a position means. A resumed loader must agree on all;
# on world_size too unless the loader shards itself (its position is global), and on
# rank and num_workers where workers hold per-rank state. Without worker state every
# rank of a lockstep job is at the same position, so any rank's state resumes any rank.
IDENTITY_FIELDS: Final = (
    "seed",
    "rng_scope",
    "reseed_globals",
    "reseed_dataset_rngs",
    "dataset_length",
    "batch_size",
    "drop_last",
    "sampler",
)


class LoaderState(TypedDict):
    """What ``ReproLoader.state_dict()`` returns (format version 2).

    Version 2 has the fields of version 1; it marks the shuffle order of
    :mod:`reproloader._runtime.shuffle` (see :func:`upgrade`).

    Attributes:
        format: always ``"reproloader.ReproLoader"``.
        version: the format version, 2.
        seed: the loader's root seed.
        rng_scope: ``"batch"``, ``"sample"`` or ``"worker"``.
        reseed_globals: sorted names of the reseeded global RNGs.
        reseed_dataset_rngs: whether RNG objects on the dataset are reseeded.
        dataset_length: ``len(dataset)``, or None for an iterable dataset without one.
        batch_size: the loader's batch size (None without automatic batching).
        drop_last: the loader's ``drop_last``.
        sampler: what orders the data: ``"sequential"``, ``"shuffle"``,
            ``"sharded"``, ``"sharded, shuffle"``, ``"iterable"``, or
            ``"sampler:<class>"`` / ``"batch_sampler:<class>"`` for one passed in.
        world_size: ranks when the state was taken.
        rank: this loader's rank then.
        num_workers: the loader's ``num_workers`` (must match only where ``workers``
            is not None).
        epoch: the epoch of the current pass (or of the next one, if none started).
        position: batches this rank handed out in that epoch.
        offset: with ``shard=True``, samples of the epoch handed out across all ranks;
            else None.
        finished: whether that pass ran to its end; the next pass is then the next
            epoch.
        serial: the pass's serial number (worker scope matches streams by it).
        workers: torchdata's iterator state, where workers hold state; else None.
    """

    format: str
    version: int
    seed: int
    rng_scope: str
    reseed_globals: list[str]
    reseed_dataset_rngs: bool
    dataset_length: int | None
    batch_size: int | None
    drop_last: bool
    sampler: str
    world_size: int
    rank: int
    num_workers: int
    epoch: int
    position: int
    offset: int | None
    finished: bool
    serial: int
    workers: dict[str, Any] | None


def upgrade(state: Mapping[str, Any]) -> LoaderState:
    """Check the format and version of a state; convert older versions to this one.

    Version 2 changed the shuffle order (a keyed bijection replaced a materialized
    permutation). A version-1 state of a shuffled sampler (``"shuffle"``,
    ``"shuffle(seed=...)"``, ``"sharded, shuffle"``) taken mid-epoch is refused: the
    rest of its epoch in the new order would repeat some samples and skip others.
    Taken at an epoch's end or before its first batch it loads (no order is half
    used); so do version-1 states of unshuffled samplers, whose batches are the same.

    Raises:
        StateVersionError: not a ReproLoader state, from a newer release, or a
            version-1 state mid-way through a shuffled epoch.
    """
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise StateVersionError(
            f"not a ReproLoader state: expected format {FORMAT!r}, got {found!r}; pass "
            "what ReproLoader.state_dict() returned (StatefulDataLoader states do not "
            "carry the seed and epoch a ReproLoader needs)"
        )
    version = state.get("version")
    if not isinstance(version, int) or version < 1:
        raise StateVersionError(f"unknown ReproLoader state version {version!r}")
    if version > VERSION:
        raise StateVersionError(
            f"this state has format version {version}, written by a newer reproloader; "
            f"this release reads versions up to {VERSION}. Upgrade reproloader to resume it."
        )
    missing = sorted(set(LoaderState.__annotations__) - set(state))
    if missing:
        raise StateVersionError(f"ReproLoader state (version {version}) lacks fields {missing}")
    if version == 1:
        sampler, epoch = state["sampler"], state["epoch"]
        shuffled = sampler in ("shuffle", "sharded, shuffle") or str(sampler).startswith(
            "shuffle(seed="
        )
        mid_epoch = not state["finished"] and (state["position"] > 0 or bool(state["offset"]))
        if shuffled and mid_epoch:
            raise StateVersionError(
                f"cannot resume this state: it has format version 1 and was taken mid-way "
                f"through epoch {epoch} of a shuffled sampler ({sampler!r}); version 2 "
                "shuffles epochs in a different order, so the rest of this epoch would "
                "repeat some samples and skip others. Finish epoch "
                f"{epoch} with the reproloader release that wrote the state and resume from "
                f"a state taken at its end, or restart epoch {epoch}: call "
                f"loader.set_epoch({epoch}) instead of load_state_dict."
            )
    return {**state, "version": VERSION}  # type: ignore[typeddict-item]


def check_compatible(
    saved: LoaderState, current: Mapping[str, Any], *, workers: bool, elastic: bool
) -> None:
    """Raise if ``saved`` was taken from a loader that differs from ``current``.

    Args:
        saved: the state to resume.
        current: the same fields, describing this loader.
        workers: whether the state carries worker-held state, which ties it to
            the same rank, world size and ``num_workers``.
        elastic: whether the loader shards itself, so another world size is fine.

    Raises:
        StateMismatchError: naming every differing field with both values.
    """
    fields = list(IDENTITY_FIELDS)
    if workers or not elastic:
        fields.append("world_size")
    if workers:
        fields += ["rank", "num_workers"]
    mismatches = {
        name: (saved[name], current[name])  # type: ignore[literal-required]
        for name in fields
        if saved[name] != current[name]  # type: ignore[literal-required]
    }
    if not mismatches:
        return
    listed = "; ".join(
        f"{name}: saved {a!r}, this loader {b!r}" for name, (a, b) in mismatches.items()
    )
    advice = "rebuild the loader with the saved values"
    if "num_workers" in mismatches or "rank" in mismatches:
        advice += (
            " (rank, world size and num_workers must match because workers hold "
            "per-rank state in worker scope, for iterable datasets and for datasets with "
            "their own state_dict; save every rank's state: each rank its own file, or "
            "one from reproloader.distributed.gather_state)"
        )
    if "world_size" in mismatches and str(saved["sampler"]).startswith("sampler:Distributed"):
        advice += (
            " (a DistributedSampler ties the order to the world size: to resume on "
            "another number of ranks, shard with ReproLoader(..., shard=True), whose "
            "position is global)"
        )
    raise StateMismatchError(
        f"cannot resume: the state was saved by a different loader. {listed}. Either {advice}, "
        "or start this loader without the state.",
        mismatches,
    )
