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

from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn, TypedDict

from reproloader._runtime import rngstate
from reproloader._runtime.shuffle import EXACT_MAX
from reproloader.exceptions import StateFieldError, StateMismatchError, StateVersionError

__all__ = [
    "FORMAT",
    "RANKS_FORMAT",
    "VERSION",
    "WORKERS_VERSION",
    "LoaderState",
    "WorkerPart",
    "WorkersState",
    "check_compatible",
    "check_fields",
    "check_rng_state",
    "check_workers",
    "upgrade",
]

FORMAT: Final = "reproloader.ReproLoader"
VERSION: Final = 4
"""Version 4: shuffle orders of at most ``EXACT_MAX`` (8192) samples are exact uniform
permutations, and the state carries the skip list (see :func:`upgrade`)."""

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
    """What ``ReproLoader.state_dict()`` returns (format version 4).

    Version 2 has the fields of version 1; it marks the shuffle order of
    :mod:`reproloader._runtime.shuffle`. Version 3 has version 2's fields; it marks
    python random filled from a unit's words. Version 4 adds ``skip`` and marks the
    exact shuffle orders of datasets of at most 8192 samples (see :func:`upgrade`).

    Attributes:
        format: always ``"reproloader.ReproLoader"``.
        version: the format version, 4.
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
        workers: where workers hold state, mid-pass: :class:`WorkersState`; outside a
            pass's batches (at its end, ``ended`` True, or before its first batch)
            with persistent workers and a dataset with its own state, the one that
            carries each worker's copy of the dataset where a copy moved on; else
            None.
        done: positions after ``position`` already handed out (``in_order=False``
            delivers batches in the order workers finish them); the rest of the pass
            skips them. Empty in order. (New in version 2.)
        dataset: with ``num_workers=0``, outside a pass (at its end, or before it):
            the dataset's own ``state_dict()``, for a dataset that has one (the main
            process's dataset is the one that ran; an iterable one once its
            ``__iter__`` ran); else None. (New in version 2.)
        skip: the batches left out (``ReproLoader.skip_batches``/``skip_steps``), as
            ``[epoch, start, stop]`` ranges of positions, sorted and merged; a resumed
            loader leaves them out too. (New in version 4; ``[]`` in older states.)
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
    workers: WorkersState | None
    done: list[int]
    dataset: Any
    skip: list[list[int]]


class WorkerPart(TypedDict):
    """One producing process's part of :class:`WorkersState`.

    Attributes:
        id: the worker id (0 for the main process).
        map: a map-style dataset's part: ``{"dataset": its own state or None,
            "stream": a worker-scope stream or None}``; else None.
        iterable: an iterable dataset's part: ``{"epoch", "serial", "position" (pulls from
            the dataset's iterator in this worker, those that raised included), "kind"
            (None, ``"dataset"`` or ``"iterator"``: whose ``state_dict`` ``user`` is),
            "user", "stream"}``.
        ended: whether this worker's iterable dataset ran out.
    """

    id: int
    map: dict[str, Any] | None
    iterable: dict[str, Any] | None
    ended: bool


class WorkersState(TypedDict):
    """What the producing processes hold mid-pass, where a position cannot recompute it.

    Its own versioned schema: torchdata's iterator state is converted to it on
    ``state_dict()`` and back on resume (``reproloader._runtime.bridge``), and every
    field is checked on load.

    Attributes:
        version: 1.
        processes: ``num_workers`` (0: the main process produced).
        yielded: batches handed out in the pass.
        failed: batches whose fetch raised (consumed too).
        since_snapshot: batches handed out since the workers' last snapshot.
        drawn: units taken from the unit sampler (handed out, failed or in flight).
        sampler: the batch sampler's state over an iterable dataset, or None.
        len_called: ``len(dataset)`` as torch recorded it for an iterable dataset, or None.
        base_seed: torch's base seed of the iterator (None in the main process).
        last_worker: the worker that produced the last batch handed out (None in the
            main process).
        ended: whether the pass ended: True only in a state taken at a pass's end with
            persistent workers, whose parts carry each worker's copy of the dataset.
        workers: one :class:`WorkerPart` per process, by id.
    """

    version: int
    processes: int
    yielded: int
    failed: int
    since_snapshot: int
    drawn: int
    sampler: dict[str, int] | None
    len_called: int | None
    base_seed: int | None
    last_worker: int | None
    ended: bool
    workers: list[WorkerPart]


WORKERS_VERSION: Final = 1
_SCOPES: Final = ("batch", "sample", "worker")
_GLOBAL_NAMES: Final = ("numpy", "random", "torch")
_MAX_WORD: Final = 2**32


def _fail(path: str, expected: str, got: object) -> NoReturn:
    raise StateFieldError(path, expected, got)


def _int(value: object, path: str, low: int = 0, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(path, "an int", value)
    if value < low or (high is not None and value >= high):
        _fail(path, f"an int in [{low}, {'inf' if high is None else high})", value)
    return value


def _optional_int(value: object, path: str, low: int = 0) -> None:
    if value is not None:
        _int(value, path, low)


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        _fail(path, "True or False", value)
    return value


def _dict(value: object, path: str, keys: tuple[str, ...] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _fail(path, "a dict", value)
    if keys is not None and set(value) != set(keys):
        _fail(path, f"a dict with exactly the keys {sorted(keys)}", sorted(map(str, value)))
    return value


def _equal(value: object, path: str, expected: object, why: str) -> None:
    if isinstance(value, bool) != isinstance(expected, bool) or value != expected:
        _fail(path, f"{expected!r} ({why})", value)


def check_fields(
    state: Mapping[str, Any], *, batches: int | None, elastic: bool, world_size: int | None = None
) -> None:
    """Check the type and range of every top-level field, and that they agree.

    Args:
        state: an upgraded state.
        batches: how many batches an epoch of this loader has on this rank, where
            that is exact (the loader's own samplers); None where it is not known.
        elastic: whether the loader shards itself, so the state may come from
            another world size (its position then means nothing here: its offset does).
        world_size: this loader's world size (None: the state's).

    Raises:
        StateFieldError: naming the first field that is wrong.
    """
    _int(state["seed"], "seed", 0, 2**128)
    if state["rng_scope"] not in _SCOPES:
        _fail("rng_scope", f"one of {list(_SCOPES)}", state["rng_scope"])
    names = state["reseed_globals"]
    if (
        not isinstance(names, list)
        or not all(isinstance(name, str) for name in names)
        or names != sorted(set(names) & set(_GLOBAL_NAMES))
    ):
        _fail("reseed_globals", f"a sorted list of names from {list(_GLOBAL_NAMES)}", names)
    _bool(state["reseed_dataset_rngs"], "reseed_dataset_rngs")
    _optional_int(state["dataset_length"], "dataset_length")
    _optional_int(state["batch_size"], "batch_size", 1)
    _bool(state["drop_last"], "drop_last")
    if not isinstance(state["sampler"], str):
        _fail("sampler", "a string", state["sampler"])
    saved_world_size = _int(state["world_size"], "world_size", 1)
    _int(state["rank"], "rank", 0, saved_world_size)
    here = saved_world_size if world_size is None else world_size
    _int(state["num_workers"], "num_workers")
    _int(state["epoch"], "epoch", 0, 2**32)
    # (Batches: a sampler is skipped with islice, whose limit is 2**63 - 1.)
    position = _int(state["position"], "position", 0, 2**63)
    finished = _bool(state["finished"], "finished")
    _int(state["serial"], "serial")
    offset = state["offset"]
    if elastic and offset is None and not finished:
        _fail("offset", "an int (shard=True: where the pass is in the epoch's order)", offset)
    if offset is not None:
        length = state["dataset_length"]
        _int(offset, "offset", 0, None if length is None else length + 1)
        if finished:
            _fail("offset", "None once the pass finished", offset)
    done = state["done"]
    if not isinstance(done, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in done
    ):
        _fail("done", "a list of ints", done)
    if done != sorted(set(done)) or (done and done[0] <= position):
        _fail("done", f"increasing positions after position {position}", done)
    if done and (finished or state["workers"] is not None or offset is not None):
        _fail("done", "[] (only a map-style pass delivered out of order has some)", done)
    if batches is not None and done and done[-1] >= batches:
        _fail("done", f"positions below {batches}, the batches of an epoch here", done)
    _check_skip(state["skip"])
    if batches is not None and not (elastic and saved_world_size != here):
        if position > batches:
            _fail("position", f"at most {batches}, the batches of an epoch here", position)
        if finished and position != batches:
            _fail("position", f"{batches} in a finished pass (all its batches)", position)


def _check_skip(skip: object) -> None:
    expected = "a list of [epoch, start, stop] with start < stop, sorted and merged"
    if not isinstance(skip, list):
        _fail("skip", expected, skip)
    previous: list[int] | None = None
    for i, entry in enumerate(skip):
        if not isinstance(entry, list) or len(entry) != 3:
            _fail(f"skip[{i}]", "[epoch, start, stop]", entry)
        epoch = _int(entry[0], f"skip[{i}][0]", 0, 2**32)
        start = _int(entry[1], f"skip[{i}][1]", 0, 2**63)
        _int(entry[2], f"skip[{i}][2]", start + 1, 2**63 + 1)
        if previous is not None and (
            epoch < previous[0] or (epoch == previous[0] and start <= previous[2])
        ):
            _fail("skip", expected, skip)
        previous = entry


def check_workers(
    part: object,
    state: Mapping[str, Any],
    *,
    stateful_dataset: bool = False,
    batches: int | None = None,
    dataset_rngs: Sequence[str] = (),
) -> WorkersState:
    """Check a :class:`WorkersState` field by field, and against its state.

    ``stateful_dataset`` says whether this loader's dataset has ``state_dict``: only
    then may a worker part carry the dataset's own state. ``batches`` is the exact
    number of batches of an epoch here, where it is known. ``dataset_rngs`` are the
    paths of the RNG objects found on this loader's dataset here: every process's copy
    has them too (a ``worker_init_fn`` may add more), so a worker-scope stream that
    carries them has a state for each.

    Raises:
        StateFieldError: naming the first field that is wrong.
    """
    w = _dict(part, "workers", tuple(WorkersState.__annotations__))
    _equal(w["version"], "workers.version", WORKERS_VERSION, "the only version there is")
    processes = _int(w["processes"], "workers.processes")
    _equal(processes, "workers.processes", state["num_workers"], "the state's num_workers")
    yielded = _int(w["yielded"], "workers.yielded")
    failed = _int(w["failed"], "workers.failed")
    _equal(yielded + failed, "workers.yielded + workers.failed", state["position"], "position")
    since = _int(w["since_snapshot"], "workers.since_snapshot", 0, yielded + 1)
    # Units drawn as of the workers' last snapshot (torchdata resumes from there, then
    # replays the batches since): for a map-style dataset at least those consumed by
    # then, never past the epoch (nor islice's limit). An iterable dataset's sampler
    # is an endless constant one, which nothing skips, so any count will do.
    least = 0 if state["sampler"] == "iterable" else yielded + failed - since
    drawn = _int(w["drawn"], "workers.drawn", least, None if batches is None else batches + 1)
    if drawn >= 2**63:
        _fail("workers.drawn", "below 2**63", drawn)
    if w["sampler"] is not None:
        sampler = _dict(w["sampler"], "workers.sampler", ("samples_yielded",))
        _int(sampler["samples_yielded"], "workers.sampler.samples_yielded")
    _optional_int(w["len_called"], "workers.len_called")
    # A pass's end carries worker state only for persistent workers' copies of the
    # dataset, as of every worker's last batch.
    _equal(w["ended"], "workers.ended", state["finished"], "the state's finished")
    if w["ended"]:
        if not processes:
            _fail("workers.ended", "False with num_workers=0 (no workers keep copies)", True)
        _equal(since, "workers.since_snapshot", 0, "0 at a pass's end (copies as of its end)")
    if processes:
        _int(w["base_seed"], "workers.base_seed", 0, 2**64)
        _int(w["last_worker"], "workers.last_worker", 0, processes)
    else:
        _equal(w["base_seed"], "workers.base_seed", None, "the main process produced")
        _equal(w["last_worker"], "workers.last_worker", None, "the main process produced")
    parts = w["workers"]
    ids = list(range(max(processes, 1)))
    if not isinstance(parts, list) or len(parts) != len(ids):
        _fail("workers.workers", f"a list of {len(ids)} worker parts", parts)
    for i, worker in enumerate(parts):
        _check_worker(worker, f"workers.workers[{i}]", i, state, stateful_dataset, dataset_rngs)
    if state["rng_scope"] == "worker" and state["sampler"] != "iterable" and not w["ended"]:
        # Map-style tasks go to the workers in turn, so the first batches of a pass
        # came from workers 0, 1, ...: each of those holds this pass's stream as of
        # the workers' snapshot (without it the worker would start the stream afresh).
        for i in range(min(yielded - since, len(ids))):
            stream = parts[i]["map"]["stream"]
            if stream is None or stream["stream"] != [state["epoch"], state["serial"]]:
                _fail(
                    f"workers.workers[{i}].map.stream",
                    f"the stream of pass [{state['epoch']}, {state['serial']}] (worker {i} "
                    "produced a batch of it)",
                    stream,
                )
    # An iterable dataset's workers pulled at most a batch's samples for each batch
    # consumed (a position past that would replay beyond the stream's end).
    pulls = [w["iterable"]["position"] for w in parts if w["iterable"] is not None]
    most = (yielded + failed) * (state["batch_size"] or 1)
    if pulls and sum(pulls) > most:
        _fail(
            "workers.workers[].iterable.position",
            f"at most {most} in all ({yielded + failed} batches of {state['batch_size'] or 1})",
            pulls,
        )
    return w  # type: ignore[return-value]


def _check_worker(
    part: object,
    path: str,
    worker_id: int,
    state: Mapping[str, Any],
    stateful_dataset: bool,
    dataset_rngs: Sequence[str],
) -> None:
    w = _dict(part, path, tuple(WorkerPart.__annotations__))
    _equal(w["id"], f"{path}.id", worker_id, "workers are listed by id")
    _bool(w["ended"], f"{path}.ended")
    if (w["map"] is None) == (w["iterable"] is None):
        _fail(
            path,
            "exactly one of map and iterable set",
            {"map": w["map"], "iterable": w["iterable"]},
        )
    if w["map"] is not None:
        m = _dict(w["map"], f"{path}.map", ("dataset", "stream"))
        if m["dataset"] is not None and not stateful_dataset:
            _fail(f"{path}.map.dataset", "None (this dataset has no state_dict)", m["dataset"])
        _check_stream(m["stream"], f"{path}.map.stream", state, dataset_rngs)
        return
    it = _dict(
        w["iterable"], f"{path}.iterable", ("epoch", "serial", "position", "kind", "user", "stream")
    )
    _equal(it["epoch"], f"{path}.iterable.epoch", state["epoch"], "the state's epoch")
    _equal(it["serial"], f"{path}.iterable.serial", state["serial"], "the state's serial")
    _int(it["position"], f"{path}.iterable.position")
    if it["kind"] not in (None, "dataset", "iterator"):
        _fail(f"{path}.iterable.kind", "None, 'dataset' or 'iterator'", it["kind"])
    if it["kind"] == "dataset" and not stateful_dataset:
        _fail(f"{path}.iterable.kind", "not 'dataset' (this dataset has no state_dict)", "dataset")
    if it["kind"] is None and it["user"] is not None:
        _fail(f"{path}.iterable.user", "None when kind is None", it["user"])
    _check_stream(it["stream"], f"{path}.iterable.stream", state, dataset_rngs)


def _check_stream(
    stream: object, path: str, state: Mapping[str, Any], dataset_rngs: Sequence[str]
) -> None:
    # A worker-scope stream that continues from unit to unit (rngs as plain data).
    if stream is None:
        return
    if state["rng_scope"] != "worker":
        _fail(path, "None outside worker scope", stream)
    s = _dict(stream, path, ("stream", "globals", "rng", "attributes"))
    # The pass whose stream the worker holds: this one, or with persistent workers an
    # earlier one (a worker that has produced nothing yet in this pass; its next unit
    # starts this pass's stream afresh).
    pass_ = s["stream"]
    if not (
        isinstance(pass_, list)
        and len(pass_) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pass_)
        and (pass_[1] < state["serial"] or pass_ == [state["epoch"], state["serial"]])
    ):
        _fail(
            f"{path}.stream",
            f"[{state['epoch']}, {state['serial']}] (the state's pass) or an earlier pass",
            pass_,
        )
    g = _dict(s["globals"], f"{path}.globals", _GLOBAL_NAMES)
    for name in _GLOBAL_NAMES:
        value, at = g[name], f"{path}.globals.{name}"
        if (value is None) == (name in state["reseed_globals"]):
            enabled = "reseeded" if name in state["reseed_globals"] else "not reseeded"
            _fail(at, f"{'a state' if value is None else 'None'} ({name} is {enabled})", value)
        if value is not None:
            check_rng_state(name, value, at)
    if s["rng"] is not None:
        check_rng_state("generator", s["rng"], f"{path}.rng")
    attributes = _dict(s["attributes"], f"{path}.attributes")
    missing = sorted(set(dataset_rngs) - set(attributes))
    if missing:
        _fail(
            f"{path}.attributes",
            f"a state for each RNG object on the dataset (missing: {missing})",
            sorted(attributes),
        )
    for key, value in attributes.items():
        check_rng_state("object", value, f"{path}.attributes[{key!r}]")


def check_rng_state(kind: str, value: object, path: str) -> None:
    """Check one RNG state in plain form by loading it into a scratch RNG of its kind.

    Args:
        kind: ``"random"``, ``"torch"``, ``"numpy"`` (the legacy global RNG as
            ``{"key", "pos", "gauss"}``), ``"generator"`` (a numpy Generator's bit
            generator state) or ``"object"`` (an RNG object found on a dataset, any
            of those forms).
        value: the plain state.
        path: the field, for the error.
    """
    if not rngstate.loads(kind, value):
        _fail(path, f"a {kind} RNG state as state_dict() writes it", value)


def upgrade(state: Mapping[str, Any]) -> LoaderState:
    """Check the format and version of a state; convert older versions to this one.

    Version 2 changed the shuffle order (a keyed bijection replaced a materialized
    permutation), seeds torch below 2**63, and gives the worker part a schema of its
    own (a version-1 worker part, torchdata's layout, is converted). Version 3 fills
    python random's state from a unit's words (it was ``random.seed``); its fields are
    version 2's. Version 4 shuffles a dataset of at most ``EXACT_MAX`` (8192) samples
    with an exact uniform permutation (it was the Feistel bijection, not uniform on so
    few) and adds the skip list (an older state gets ``[]``: nothing skipped). A version-1 state taken mid-epoch of a shuffled
    sampler (``"shuffle"``, ``"shuffle(seed=...)"``, ``"sharded, shuffle"``) or with
    torch reseeded, a version-1 or 2 state taken mid-epoch with python random
    reseeded, and a version-1 to 3 state taken mid-epoch of a shuffled sampler over at
    most 8192 samples, is refused: the rest of its epoch would not be what the release
    that saved it gives. Taken at an epoch's end or before its first batch it loads; so does one
    whose epoch draws nothing changed.

    Raises:
        StateVersionError: not a ReproLoader state, from a newer release, or a
            state of an older version mid-way through an epoch this release
            draws differently.
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
    if version == 1:
        state = {"dataset": None, "done": [], **state}  # version 2 added the fields
    if version < 4:
        state = {"skip": [], **state}  # version 4 added the skip list (nothing skipped)
    missing = sorted(set(LoaderState.__annotations__) - set(state))
    if missing:
        raise StateVersionError(f"ReproLoader state (version {version}) lacks fields {missing}")
    if version < VERSION:
        _refuse_a_changed_epoch(state, version)
    return {**state, "version": VERSION}  # type: ignore[typeddict-item]


def _refuse_a_changed_epoch(state: Mapping[str, Any], version: int) -> None:
    # An older state taken mid-epoch whose rest this release would draw differently.
    sampler, epoch = state["sampler"], state["epoch"]
    reseeded = state["reseed_globals"] or ()
    mid_epoch = not state["finished"] and (state["position"] > 0 or bool(state["offset"]))
    changes = []
    shuffled = sampler in ("shuffle", "sharded, shuffle") or str(sampler).startswith(
        "shuffle(seed="
    )
    length = state["dataset_length"]
    if version == 1:
        torch_reseeded = "torch" in reseeded
        if shuffled:
            changes.append(
                f"it was taken mid-way through epoch {epoch} of a shuffled sampler "
                f"({sampler!r}); version 2 shuffles epochs in a different order, so the "
                "rest of this epoch would repeat some samples and skip others"
            )
        if torch_reseeded:
            changes.append(
                f"it was taken mid-way through epoch {epoch} with torch reseeded; version "
                "2 seeds torch below 2**63, so the rest of this epoch would draw other "
                "torch values than the release that saved it"
            )
    elif shuffled and isinstance(length, int) and length <= EXACT_MAX:
        changes.append(
            f"it was taken mid-way through epoch {epoch} of a shuffled sampler "
            f"({sampler!r}) over {length} samples; version 4 shuffles datasets of at most "
            f"{EXACT_MAX} samples with an exact uniform permutation instead of the keyed "
            "bijection, so the rest of this epoch would repeat some samples and skip others"
        )
    if "random" in reseeded and version < 3:
        changes.append(
            f"it was taken mid-way through epoch {epoch} with python random reseeded; "
            "version 3 fills python random's state from the unit's words instead of "
            "random.seed, so the rest of this epoch would draw other python random "
            "values than the release that saved it"
        )
    if changes and mid_epoch:
        raise StateVersionError(
            f"cannot resume this state: it has format version {version} and "
            + "; and ".join(changes)
            + f". Finish epoch {epoch} with the reproloader release that wrote the "
            "state and resume from a state taken at its end, or restart epoch "
            f"{epoch}: call loader.set_epoch({epoch}) instead of load_state_dict."
        )


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
