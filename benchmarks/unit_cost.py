"""Per-unit cost of reseeding and isolation, and where its microseconds go.

Three tables:

* by which global RNGs are reseeded: the cost of readying a unit alone
  (``Producer.begin``), and the added cost per sample in a loop that also builds a
  small tensor per sample, as a dataset would (caches are colder there); both against
  the same loop without reseeding, interleaved, best of ``--reps``;
* the same for a whole ``num_workers=0`` batch window: save the caller's states,
  ready the unit, restore (what batch scope adds per batch in the main process);
* each operation on its own, so the totals above can be read as a sum;
* the main steps again, each right after other work evicted the caches (a sample's
  own work runs between two units): what they cost inside a real epoch;
* readying a batch timed in place, inside epochs of 0.2 ms samples (the
  throughput benchmark's): a batch of such work leaves the caches colder still.

Times are CPU time of this thread (``time.thread_time``), best of ``--reps``: on a
shared machine that is steadier than the wall clock.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _report import save
from throughput import Work

from reproloader import ReproLoader
from reproloader._runtime.isolation import WINDOW_LOCK, Isolation
from reproloader._runtime.producer import Plan, Producer
from reproloader._runtime.rngs import GlobalRngs, LegacyState, PythonRandomState
from reproloader.seeding import Lane, Purpose, SeedTree, UnitStreams

SETTINGS = {
    "random, numpy, torch (default)": frozenset({"random", "numpy", "torch"}),
    "torch only": frozenset({"torch"}),
    "none (context rng only)": frozenset(),
}


def producer(globals_: frozenset[str], scope: str = "sample") -> Producer:
    plan = Plan(
        tree=SeedTree(0),
        scope=scope,  # type: ignore[arg-type]
        rank=0,
        world_size=1,
        num_workers=0,
        batch_size=32,
        reseed_globals=globals_,
        reseed_dataset_rngs=True,
    )
    p = Producer(plan, object())
    p.enter_epoch(0)
    return p


def cpu_us(fn: Callable[[], object], number: int, reps: int) -> float:
    """Best-of-``reps`` CPU microseconds per call of ``fn``."""
    best = float("inf")
    for _ in range(reps):
        start = time.thread_time()
        for _ in range(number):
            fn()
        best = min(best, (time.thread_time() - start) / number)
    return best * 1e6


def sample() -> None:
    torch.full((8,), 1.0) + torch.rand(8)


def in_loop_us(step: Callable[[int], object], reps: int, n: int = 4096) -> float:
    """Added CPU microseconds per sample when ``step`` runs beside a tiny sample's work."""
    best_with, best_without = float("inf"), float("inf")
    for _ in range(reps):
        start = time.thread_time()
        for i in range(n):
            step(i)
            sample()
        best_with = min(best_with, (time.thread_time() - start) / n)
        start = time.thread_time()
        for _ in range(n):
            sample()
        best_without = min(best_without, (time.thread_time() - start) / n)
    return (best_with - best_without) * 1e6


def by_setting(reps: int) -> list[dict[str, Any]]:
    rows = []
    units = itertools.count()
    for name, globals_ in SETTINGS.items():
        p = producer(globals_)

        def begin(i: int, p: Producer = p) -> None:
            p.begin((Purpose.SAMPLE, 0), i, epoch=0, batch_index=0)

        b = producer(globals_, "batch")
        isolation = Isolation(GlobalRngs(globals_), swap=False, clears_context=True)

        def window(i: int, b: Producer = b, isolation: Isolation = isolation) -> None:
            with isolation:
                b.begin((Purpose.BATCH, 0, 0), i, epoch=0, batch_index=i)

        rows.append(
            {
                "reseed_globals": name,
                "begin_us": cpu_us(lambda begin=begin: begin(next(units)), 20000, reps),
                "in_loop_us": in_loop_us(begin, reps),
                "window_us": cpu_us(lambda window=window: window(next(units)), 20000, reps),
            }
        )
        print(
            f"{name:<32} begin {rows[-1]['begin_us']:5.1f} us   added per sample in a loop "
            f"{rows[-1]['in_loop_us']:5.1f} us   num_workers=0 batch window "
            f"{rows[-1]['window_us']:5.1f} us"
        )
    return rows


def components(reps: int) -> list[dict[str, Any]]:
    """Each operation of a unit and a window, alone."""
    streams = UnitStreams()
    key = SeedTree(0).key(Purpose.BATCH, 0, 0)
    words = streams.words(key, 1, Lane.GLOBALS, 627)
    py = PythonRandomState(random._inst)  # type: ignore[attr-defined]
    py_public = PythonRandomState(random._inst, raw=False)  # type: ignore[attr-defined]
    legacy = LegacyState(np.random.mtrand._rand)
    legacy_public = LegacyState(np.random.mtrand._rand, raw=False)
    generator = torch.default_generator
    seed = (int(words[0]) << 64) | int(words[1])
    scratch = random.Random()
    py_snap, pyp_snap = py.save(), py_public.save()
    np_snap, npp_snap = legacy.save(), legacy_public.save()
    torch_snap = generator.get_state()
    none = producer(frozenset(), "batch")
    ops: dict[str, Callable[[], object]] = {
        "seed words: move the Philox to the unit, draw 627 words": lambda: streams.words(
            key, 1, Lane.GLOBALS, 627
        ),
        "python random: reseed (write 312 words)": lambda: py.reseed(words[315:]),
        "... through random.seed's init_by_array (before)": lambda: scratch.seed(seed),
        "python random: save + restore, raw memory": lambda: py.restore(py.save()),
        "python random: save + restore, getstate/setstate": lambda: py_public.restore(
            py_public.save()
        ),
        "numpy global: reseed (write 312 words)": lambda: legacy.reseed(words[3:315]),
        "numpy global: save + restore, raw memory": lambda: legacy.restore(legacy.save()),
        "numpy global: save + restore, get_state/set_state": lambda: legacy_public.restore(
            legacy_public.save()
        ),
        "torch: manual_seed": lambda: generator.manual_seed(int(words[2])),
        "torch: get_state + set_state": lambda: generator.set_state(generator.get_state()),
        "window lock: acquire + release": lambda: (WINDOW_LOCK.acquire(), WINDOW_LOCK.release()),
        "Producer.begin bookkeeping (no RNG reseeded)": lambda: none.begin(
            (Purpose.BATCH, 0, 0), 1, epoch=0, batch_index=1
        ),
    }
    rows = []
    for name, op in ops.items():
        rows.append({"operation": name, "us": cpu_us(op, 20000, reps)})
        print(f"{name:<58} {rows[-1]['us']:6.2f} us")
    py.restore(py_snap)
    py_public.restore(pyp_snap)
    legacy.restore(np_snap)
    legacy_public.restore(npp_snap)
    generator.set_state(torch_snap)
    return rows


_JUNK = np.zeros(4 << 20, dtype=np.uint8)


def _evict() -> None:
    # What a sample's work leaves behind: other Python code run, other memory touched.
    for _ in range(20_000):
        pass
    _JUNK[::64] += 1
    sample()


def cold(reps: int) -> list[dict[str, Any]]:
    """The window's steps right after other work evicted the caches (median of runs).

    Between two units a real pipeline runs the sample's own work (and, with
    ``num_workers=0``, a training step): the loader's code and the RNG states are no
    longer in the caches, and each step costs several times its warm cost.
    """
    streams = UnitStreams()
    key = SeedTree(0).key(Purpose.BATCH, 0, 0)
    default = SETTINGS["random, numpy, torch (default)"]
    rngs = GlobalRngs(default)
    words = streams.words(key, 1, Lane.GLOBALS, rngs.n_words)
    caller = rngs.save()
    b = producer(default, "batch")
    isolation = Isolation(GlobalRngs(default), swap=False, clears_context=True)
    units = itertools.count()

    def window() -> None:
        with isolation:
            b.begin((Purpose.BATCH, 0, 0), next(units), epoch=0, batch_index=0)

    ops: dict[str, Callable[[], object]] = {
        "nothing (the clock itself)": lambda: None,
        "seed words (627)": lambda: streams.words(key, 1, Lane.GLOBALS, rngs.n_words),
        "reseed python, numpy, torch": lambda: rngs.reseed(words),
        "save python, numpy, torch": rngs.save,
        "a whole num_workers=0 batch window": window,
    }
    runs = max(31, 10 * reps)
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(runs):
        for name, op in ops.items():
            _evict()
            start = time.perf_counter()
            op()
            times[name].append(time.perf_counter() - start)
    rngs.restore(caller)
    rows = []
    for name, ts in times.items():
        rows.append({"operation": name, "us": sorted(ts)[len(ts) // 2] * 1e6})
        print(f"cold: {name:<52} {rows[-1]['us']:6.2f} us")
    return rows


def in_epoch(reps: int) -> list[dict[str, Any]]:
    """``Producer.begin`` timed in place: batch scope, ``num_workers=0``, 0.2 ms samples.

    Median over ``reps`` epochs of 1,024 samples (32 batches each), by setting.
    """
    dataset = Work(1024)
    original = Producer.begin
    rows = []
    for name, globals_ in SETTINGS.items():
        times: list[float] = []

        def timed(self: Producer, *args: Any, times: list[float] = times, **kwargs: Any) -> None:
            start = time.perf_counter()
            original(self, *args, **kwargs)
            times.append(time.perf_counter() - start)

        loader = ReproLoader(
            dataset,
            batch_size=32,
            shuffle=True,
            seed=0,
            config={"reseed_globals": sorted(globals_), "reseed_dataset_rngs": False},
        )
        Producer.begin = timed  # type: ignore[method-assign]
        try:
            for _ in range(reps):
                for _ in loader:
                    pass
        finally:
            Producer.begin = original  # type: ignore[method-assign]
        rows.append({"operation": f"ready a batch, {name}", "us": statistics.median(times) * 1e6})
        print(
            f"in an epoch of 0.2 ms samples: {rows[-1]['operation']:<44} {rows[-1]['us']:6.2f} us"
        )
    return rows


def table(
    settings: list[dict[str, Any]],
    parts: list[dict[str, Any]],
    cold_parts: list[dict[str, Any]],
    epoch_parts: list[dict[str, Any]],
) -> str:
    lines = [
        "| `reseed_globals` | readying a unit | added per sample in a loop | batch window |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['reseed_globals']} | {r['begin_us']:.1f} us | {r['in_loop_us']:.1f} us | "
        f"{r['window_us']:.1f} us |"
        for r in settings
    ]
    lines += ["", "| operation | cost |", "|---|---|"]
    lines += [f"| {r['operation']} | {r['us']:.2f} us |" for r in parts]
    lines += ["", "| cold (after other work) | cost |", "|---|---|"]
    lines += [f"| {r['operation']} | {r['us']:.2f} us |" for r in cold_parts]
    lines += ["", "| in an epoch of 0.2 ms samples (batch scope) | cost |", "|---|---|"]
    lines += [f"| {r['operation']} | {r['us']:.2f} us |" for r in epoch_parts]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = by_setting(args.reps)
    parts = components(args.reps)
    cold_parts = cold(args.reps)
    epoch_parts = in_epoch(args.reps)
    rows = [
        {"settings": settings, "components": parts, "cold": cold_parts, "in_epoch": epoch_parts}
    ]
    save(args.out, "unit_cost", rows, table(settings, parts, cold_parts, epoch_parts))
    return rows


if __name__ == "__main__":
    main()
