"""``audit()``: find the silent data-loading bugs of a pipeline by running it.

Each check is a small experiment on the user's own loader (a few batches): the audit
feeds it the same indices again and again, in the main process and in workers, in
two epochs, in fresh processes, and compares the numbers in the batches. Values that
change when nothing but a random draw should change mark the random parts of a batch;
the checks then look at what those parts do.

It needs no change to the dataset, and works on a plain DataLoader (to show what
ReproLoader would fix) as on a ReproLoader (to show the pipeline is clean).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from reproloader._diagnose.compare import Mask, differ, difference, numbers, vector
from reproloader._diagnose.doctor import doctor
from reproloader._diagnose.experiments import (
    Pipeline,
    TargetError,
    fresh_run,
    frozen_entropy,
    load_target,
    payload,
    raised,
    rebuild,
    take,
)
from reproloader._diagnose.findings import Finding, Reported
from reproloader._runtime.discovery import DEFAULT_BUDGET, Discovery, discover
from reproloader._runtime.wrappers import stateful

__all__ = ["AuditReport", "audit"]


@dataclass(frozen=True)
class AuditReport(Reported):
    """What :func:`audit` found.

    Attributes:
        target: what was audited, in words.
        findings: one per check, in order.
        seconds: how long the audit took.
    """

    target: str
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0


def _random_positions(p: Pipeline) -> Mask:
    """Positions of a probe batch whose values change from draw to draw."""
    # The same samples under another seed, in another epoch, and (map-style: the probe
    # feeds the same indices twice) in the next batch. An iterable dataset's next batch
    # holds other samples, so there it says nothing.
    a = p.run(repeats=2, limit=1 if p.iterable else None)[0]
    b = p.run(seed=1, limit=1 if p.iterable else None)[0]
    c = p.run(epochs=2, limit=1 if p.iterable else None)
    first = numbers(a[0])
    masks = [
        differ(first, numbers(a[1])) if len(a) > 1 else None,
        differ(first, numbers(b[0])) if b else None,
        differ(first, numbers(c[1][0])) if c[1] else None,
    ]
    random_mask = np.zeros(first.shape, dtype=bool)
    for mask in masks:
        if mask is not None:
            random_mask |= mask
    return random_mask


def _check_workers(p: Pipeline, random_mask: Mask) -> Finding:
    name = "random streams duplicated across workers"
    batches = p.run(num_workers=p.workers, repeats=4, limit=4)[0]
    if len(batches) < 4:
        return Finding(name, True, "info", "too few batches to compare workers")
    e = [numbers(b) for b in batches]
    within, across_a, across_b = differ(e[0], e[2]), differ(e[0], e[1]), differ(e[2], e[3])
    if within is None or across_a is None or across_b is None:
        return Finding(name, True, "info", "batches of different shapes; not compared")
    duplicated = within & ~across_a & ~across_b
    what = "the same" if p.iterable else f"samples {p.indices}"
    if duplicated.any():
        source = (
            "the dataset does not shard its stream by worker, or copies its RNG"
            if p.iterable
            else "both workers copied the same RNG state"
        )
        return Finding(
            name,
            False,
            "error",
            f"worker 0 and worker 1 produced equal values for {what}: "
            f"{int(duplicated.sum())} of {int(within.sum())} numbers that change between "
            f"a worker's batches are the same in both workers' ({source})",
            "use ReproLoader, which gives every batch its own stream whatever worker makes "
            "it, or draw from reproloader.get_context().rng",
        )
    evidence = (
        "no random values found"
        if not random_mask.any()
        else "each worker drew its own values"
        if within.any()
        else "values depend on the sample, not on the worker"
    )
    return Finding(name, True, "error", evidence)


def _check_epochs(p: Pipeline, random_mask: Mask) -> Finding:
    name = "random values repeating across epochs"
    epochs = p.run(num_workers=p.workers, repeats=2, epochs=2, limit=2)
    first, second = vector(epochs[0]), vector(epochs[1])
    changes = differ(first, second)
    random_all = np.tile(random_mask, max(1, first.size // max(1, random_mask.size)))
    if changes is None or random_all.shape != first.shape:
        return Finding(name, True, "info", "epochs gave batches of different shapes; not compared")
    repeated = random_all & ~changes
    if repeated.any():
        return Finding(
            name,
            False,
            "error",
            f"epoch 0 and epoch 1 gave the same values for the same samples: "
            f"{int(repeated.sum())} of {int(random_all.sum())} random numbers repeat "
            f"(with num_workers={p.workers})",
            "workers restart each epoch from the same RNG state (a Generator made in "
            "__init__, or a worker_init_fn seeding numpy from a fixed value); ReproLoader "
            "reseeds per (epoch, batch)",
        )
    return Finding(
        name, True, "error", "epochs differ" if random_mask.any() else "no random values found"
    )


def _check_layout(p: Pipeline, start_methods: tuple[str, ...]) -> Finding:
    name = "results depend on num_workers or start method"
    if p.iterable:
        return Finding(
            name, True, "info", "iterable datasets decide per worker what they read; not compared"
        )
    base = vector(p.run(repeats=2)[0])
    facts = []
    comparisons: list[tuple[str, dict[str, Any]]] = [
        (f"num_workers={p.workers}", {"num_workers": p.workers}),
        *[
            (f"start method {m!r}", {"num_workers": p.workers, "start_method": m})
            for m in start_methods
        ],
    ]
    for label, kwargs in comparisons:
        other = vector(p.run(repeats=2, **kwargs)[0])
        changed = differ(base, other)
        if changed is None or changed.any():
            count = (
                "shapes differ"
                if changed is None
                else f"{int(changed.sum())} of {base.size} numbers differ"
            )
            facts.append(f"num_workers=0 and {label} gave different values ({count})")
    if facts:
        scope = getattr(getattr(p.loader, "config", None), "rng_scope", None)
        fix = (
            "rng_scope='worker' ties values to the worker layout by design; use 'batch' or 'sample'"
            if scope == "worker"
            else "use ReproLoader: each batch's randomness derives from (seed, epoch, batch), "
            "whichever process makes it"
        )
        return Finding(name, False, "warning", "; ".join(facts), fix)
    return Finding(name, True, "warning", "the same values with 0 and " + f"{p.workers} workers")


def _summary(first: list[Any], second: list[Any]) -> str | None:
    """Where two runs' batches differ, in a few words; None if they are equal."""
    if not difference(first, second, "batch"):
        return None
    for i, (a, b) in enumerate(zip(first, second, strict=False)):
        x, y = (v if isinstance(v, np.ndarray) else numbers(v) for v in (a, b))
        changed = differ(x, y)
        if changed is None:
            return f"batch {i} has another shape"
        if changed.any():
            at = int(np.argmax(changed))
            return f"batch {i}: {int(changed.sum())} of {x.size} numbers differ, first {x[at]:.6g} vs {y[at]:.6g}"
    return f"{len(first)} batches against {len(second)}"


def _check_same_seed(p: Pipeline, target: Any, fresh_processes: bool) -> Finding:
    name = "two runs with the same seed differ"
    limit = 2 if p.iterable else None
    first = p.run(repeats=2, limit=limit)[0]
    again = p.run(repeats=2, limit=limit)[0]
    found = _summary(first, again)
    if found:
        with frozen_entropy():
            frozen = [p.run(repeats=2, limit=limit)[0] for _ in range(2)]
        if not _summary(*frozen):
            return Finding(
                name,
                False,
                "error",
                f"two runs in this process with seed 0 differ ({found}), and agree when "
                "time.time and os.urandom are frozen: an RNG inside the pipeline is seeded "
                "from the clock or os.urandom (webdataset's .shuffle(n) without rng= is one)",
                "give that RNG a seed from the run: pass it a seeded generator (webdataset: "
                ".shuffle(n, rng=random.Random(seed)), which ReproLoader then reseeds per "
                "batch), or draw from reproloader.get_context().rng",
            )
        return Finding(
            name,
            False,
            "error",
            f"two runs in this process with seed 0 differ ({found}): the pipeline keeps RNG "
            "state between runs, or reads the clock, os.urandom or an unseeded generator",
            "draw from reproloader.get_context().rng (or an rng argument); ReproLoader "
            "also reseeds RNG objects stored on the dataset",
        )
    if not fresh_processes:
        return Finding(name, True, "error", "two runs in this process agree")
    try:
        packed = payload(target, p.loader, p.workers)
    except Exception as error:  # noqa: BLE001 - any pickling problem: say so and go on
        return Finding(
            name,
            True,
            "info",
            f"two runs in this process agree; fresh processes not tried ({type(error).__name__}: "
            f"{error}); audit a 'module:factory' to try them",
        )
    results = []
    context = multiprocessing.get_context("spawn")
    previous = os.environ.get("PYTHONHASHSEED")
    try:
        for hash_seed in ("1", "2"):
            os.environ["PYTHONHASHSEED"] = hash_seed  # a spawned child gets this environment
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                results.append(pool.submit(fresh_run, packed).result(timeout=300))
    finally:
        if previous is None:
            os.environ.pop("PYTHONHASHSEED", None)
        else:
            os.environ["PYTHONHASHSEED"] = previous
    found = _summary(results[0], results[1])
    if found:
        return Finding(
            name,
            False,
            "error",
            f"two fresh processes with seed 0 (and PYTHONHASHSEED 1 and 2) differ ({found}): "
            "something reads the clock, os.urandom, an unseeded generator, or iterates a "
            "set of strings",
            "seed every generator from the run's seed (reproloader.get_context().rng in "
            "datasets); export PYTHONHASHSEED=0 if the pipeline iterates sets of strings",
        )
    return Finding(name, True, "error", "two runs in this process, and two fresh processes, agree")


def _check_resume(p: Pipeline) -> Finding:
    name = "mid-epoch resume reproduces the stream"
    loader = p.loader
    if not (
        callable(getattr(loader, "state_dict", None))
        and callable(getattr(loader, "load_state_dict", None))
    ):
        return Finding(
            name,
            True,
            "info",
            f"{type(loader).__name__} has no state_dict: resuming mid-epoch means iterating "
            "the epoch again and dropping the batches already seen",
            "ReproLoader resumes exactly from loader.state_dict()",
        )
    changes: dict[str, Any] = {"num_workers": 0}
    total = 6
    torch.manual_seed(0)
    reference = take(rebuild(loader, **changes), total)
    if len(reference) < 3:
        return Finding(name, True, "info", "fewer than 3 batches; not tried")
    torch.manual_seed(0)
    first = rebuild(loader, **changes)
    it = iter(first)
    head = [next(it), next(it)]
    state = first.state_dict()
    torch.manual_seed(0)
    resumed = rebuild(loader, **changes)
    resumed.load_state_dict(state)
    rest = take(resumed, total - 2)
    found = difference(reference, head + rest, "batch")
    dataset = loader.dataset
    if found and p.iterable and p.repro and stateful(dataset):
        kind = type(dataset).__name__
        return Finding(
            name,
            False,
            "error",
            f"stopped after 2 batches and resumed from state_dict(): {found}. The resume "
            f"went through the dataset's own state (dataset.state_dict() of {kind}), which "
            "does not hold everything its stream depends on (Hugging Face iterable "
            "datasets leave out their shuffle buffer)",
            f"make {kind}.state_dict() hold the whole position, or wrap the dataset in an "
            "IterableDataset without state_dict/load_state_dict: ReproLoader then resumes "
            "by replaying the pass, exactly",
        )
    if found:
        return Finding(
            name,
            False,
            "error",
            f"stopped after 2 batches and resumed from state_dict(): {found}",
            "ReproLoader resumes bit for bit, random values included",
        )
    return Finding(
        name, True, "error", f"resumed after 2 batches: the next {len(rest)} batches match"
    )


def _check_settings() -> Finding:
    off = [f for f in doctor().findings if not f.passed and f.severity != "info"]
    if off:
        return Finding(
            "process-wide determinism settings",
            False,
            "warning",
            "; ".join(f.evidence for f in off),
            "apply a ReproConfig at the start of training (reproloader.seed_everything(config))",
        )
    return Finding(
        "process-wide determinism settings", True, "warning", "nothing off (see reproloader doctor)"
    )


def _numpy_key() -> npt.NDArray[np.uint32]:
    state: Any = np.random.get_state()  # ('MT19937', key, pos, has_gauss, gauss)
    return np.append(state[1], np.uint32(state[2]))  # the key and the position


def _global_rng_use(p: Pipeline) -> Finding:
    """Which process-wide RNGs one batch draws from (an info finding)."""
    name = "process-wide RNGs the pipeline draws from"
    loader = p.loader
    dataset = loader.dataset
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    before = (random.getstate(), _numpy_key(), torch.get_rng_state())
    if p.iterable:
        it = iter(dataset)
        samples = [s for _, s in zip(range(4), it, strict=False)]
    else:
        samples = [dataset[i] for i in p.indices]
    if loader.batch_size is not None and loader.collate_fn is not None:
        loader.collate_fn(samples)
    used = [
        label
        for label, changed in (
            ("random", random.getstate() != before[0]),
            ("numpy", not np.array_equal(_numpy_key(), before[1])),
            ("torch", not torch.equal(torch.get_rng_state(), before[2])),
        )
        if changed
    ]
    evidence = (
        f"one batch drew from {', '.join(used)}; ReproConfig(reseed_globals={set(used)!r}) "
        "would reseed only these (faster in sample scope), as long as nothing else draws "
        "from the others"
        if used
        else "one batch drew from none of python random, numpy's global RNG and torch's"
    )
    return Finding(name, True, "info", evidence)


def _search(p: Pipeline) -> Discovery:
    """The RNG objects of the audited dataset and collate_fn, as the loader searches them."""
    loader = p.loader
    roots = {"dataset": loader.dataset}
    if loader.collate_fn is not None:
        roots["collate_fn"] = loader.collate_fn
    config = getattr(loader, "config", None)
    return discover(roots, getattr(config, "rng_search_budget", DEFAULT_BUDGET))


def _check_rng_objects(p: Pipeline) -> Finding:
    name = "RNG objects stored in the dataset"
    found = [path for path, _ in _search(p).rngs]
    if not found:
        return Finding(name, True, "warning", "none found")
    config = getattr(p.loader, "config", None)
    if config is not None and getattr(config, "reseed_dataset_rngs", False):
        return Finding(
            name, True, "warning", f"{', '.join(found)}: reseeded before every unit by ReproLoader"
        )
    return Finding(
        name,
        False,
        "warning",
        f"{', '.join(found)}: every worker starts from a copy of it in the same state",
        "ReproLoader reseeds such RNGs in place per unit; or draw from "
        "reproloader.get_context().rng",
    )


def _check_reach(p: Pipeline) -> Finding:
    name = "RNGs beyond the loader's reach"
    found = _search(p)
    problems = found.problems
    if not problems:
        return Finding(
            name,
            True,
            "warning",
            f"searched {found.visited} objects of the dataset and collate_fn; every RNG "
            "found can be reseeded",
        )
    return Finding(
        name,
        False,
        "warning",
        "; ".join(f"{path}: {what}" for path, what, _ in problems),
        "; ".join(f"{path}: {fix}" for path, _, fix in problems),
    )


def _pipeline(target: Any, workers: int) -> Pipeline:
    """The audited pipeline, once it has made one batch in this process."""
    pipeline = Pipeline(load_target(target), workers)
    try:
        pipeline.run(limit=1)
    except Exception as error:
        name = target if isinstance(target, str) else pipeline.describe()
        raise TargetError(
            f"{name} could not make a batch: {raised(error)}",
            "iterate the loader once in python (next(iter(loader))) to see the traceback",
        ) from error
    return pipeline


def audit(
    target: Any,
    *,
    workers: int = 2,
    start_methods: tuple[str, ...] = ("spawn",),
    fresh_processes: bool = True,
    progress: Callable[[str], None] | None = None,
) -> AuditReport:
    """Run short experiments on a data pipeline and report its reproducibility bugs.

    Args:
        target: a DataLoader (ReproLoader included), a Dataset (audited in a
            ``DataLoader(dataset, batch_size=4)``), a function that returns either, or
            ``"module:function"``. The loader is rebuilt from its attributes with
            other ``num_workers``, start methods and chosen indices, as frameworks do.
        workers: the worker count compared with in-process loading.
        start_methods: start methods compared with the default one (spawn costs a
            second or two).
        fresh_processes: also compare two fresh interpreters (with different hash
            seeds); a ``"module:function"`` target is rebuilt there from scratch.
        progress: called with each check's name as it starts.

    Returns:
        An :class:`AuditReport`; ``report.ok`` is False when a check failed.

    Raises:
        TargetError: (a ``ValueError``) a ``"module:function"`` target that cannot be
            imported, names nothing or gives no loader, or a pipeline that cannot make
            its first batch: nothing could be checked.
        TypeError: a target that is not a loader, a dataset, a function or a string.
    """
    started = time.perf_counter()
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        pipeline = _pipeline(target, workers)
        findings = []
        steps: list[tuple[str, Callable[[], Finding]]] = []
        random_mask: list[Mask] = []

        def step(label: str, fn: Callable[[], Finding]) -> None:
            steps.append((label, fn))

        def mask() -> Mask:
            if not random_mask:
                random_mask.append(_random_positions(pipeline))
            return random_mask[0]

        step("duplicated streams", lambda: _check_workers(pipeline, mask()))
        step("repeating epochs", lambda: _check_epochs(pipeline, mask()))
        step("num_workers and start method", lambda: _check_layout(pipeline, start_methods))
        step("same seed twice", lambda: _check_same_seed(pipeline, target, fresh_processes))
        step("mid-epoch resume", lambda: _check_resume(pipeline))
        step("determinism settings", _check_settings)
        step("RNG objects in the dataset", lambda: _check_rng_objects(pipeline))
        step("RNGs beyond reach", lambda: _check_reach(pipeline))
        step("process-wide RNGs used", lambda: _global_rng_use(pipeline))
        for number, (label, fn) in enumerate(steps, start=1):
            if progress is not None:
                progress(f"[{number}/{len(steps)}] {label}")
            try:
                findings.append(fn())
            except Exception as error:  # noqa: BLE001 - report, and run the other checks
                findings.append(
                    Finding(label, True, "info", f"could not run: {type(error).__name__}: {error}")
                )
        return AuditReport(pipeline.describe(), findings, time.perf_counter() - started)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])
