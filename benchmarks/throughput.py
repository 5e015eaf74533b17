"""Throughput of ReproLoader against DataLoader, measured in one run.

Every configuration runs DataLoader, torchdata's StatefulDataLoader and ReproLoader
(batch scope, sample scope, and batch scope reseeding only the context Generator)
one full epoch each, ``--reps`` times: without workers the loaders take their
batches in turn (each batch between two of other loaders, as a training step sits
between batches); with workers, one whole epoch after the other. Each repetition
gives a paired ratio ``time(DataLoader) / time(loader)``; the reported ratio is the
median over repetitions, so drift of a noisy machine cancels out. A ratio of 0.97
means 97 % of DataLoader's throughput.

On a shared machine ``--cpu-time`` measures the main process's CPU time instead of
the wall clock: much steadier, but it leaves out the workers, so it only stands for
throughput in ``num_workers=0`` rows. ``--workers``, ``--datasets`` and ``--batch-sizes``
pick cases, to repeat the ones that matter (with ``--out`` elsewhere, so that the
full table for the plot stays).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _report import save
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from reproloader import ReproLoader


class Tiny(Dataset[torch.Tensor]):
    """About 3 us per sample in DataLoader: the worst case for per-unit costs."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((8,), float(i))


def _spin(steps: int) -> None:
    for _ in range(steps):
        pass


def steps_for(seconds: float) -> int:
    # How many loop steps take ``seconds`` of CPU here (the best of a few tries).
    steps = 100_000
    best = min(_timed(steps) for _ in range(5))
    return max(1, round(steps * seconds / best))


def _timed(steps: int) -> float:
    start = time.process_time()
    _spin(steps)
    return time.process_time() - start


class Work(Tiny):
    """About 0.2 ms of CPU work per sample, plus a few random draws (augmentation).

    The work is a fixed number of loop steps, calibrated once: a fixed amount of CPU,
    so ``--cpu-time`` measures it (a wall-clock busy-wait would charge whatever
    preemption took to the sample).
    """

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.steps = steps_for(200e-6)

    def __getitem__(self, i: int) -> torch.Tensor:
        _spin(self.steps)
        return torch.full((8,), float(i)) + torch.rand(8) + float(np.random.random())


Factory = Callable[[Dataset[Any], int, int], Any]

LOADERS: dict[str, Factory] = {
    "DataLoader": lambda ds, bs, nw: DataLoader(ds, batch_size=bs, shuffle=True, num_workers=nw),
    "StatefulDataLoader": lambda ds, bs, nw: StatefulDataLoader(
        ds, batch_size=bs, shuffle=True, num_workers=nw
    ),
    "ReproLoader batch": lambda ds, bs, nw: ReproLoader(
        ds, batch_size=bs, shuffle=True, num_workers=nw, seed=0
    ),
    "ReproLoader sample": lambda ds, bs, nw: ReproLoader(
        ds, batch_size=bs, shuffle=True, num_workers=nw, seed=0, config={"rng_scope": "sample"}
    ),
    "ReproLoader batch, Generator only": lambda ds, bs, nw: ReproLoader(
        ds,
        batch_size=bs,
        shuffle=True,
        num_workers=nw,
        seed=0,
        config={"reseed_globals": [], "reseed_dataset_rngs": False},
    ),
}


def epoch_seconds(loader: Any, clock: Callable[[], float] = time.perf_counter) -> float:
    start = clock()
    for _ in loader:
        pass
    return clock() - start


def interleaved_epochs(
    loaders: dict[str, Any], clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """One epoch of every loader, batch by batch in turn: each loader's total time.

    Without workers a loader's time is the main process's, spent in ``next``: taking
    the loaders' batches in turn (the first one rotating) puts all of them under the
    same machine state at every moment, so drift cancels batch by batch instead of
    epoch by epoch, and each batch meets caches another loader's batch left, as a
    training step leaves them.
    """
    totals = dict.fromkeys(loaders, 0.0)
    running: dict[str, Any] = {}
    for name, loader in loaders.items():
        start = clock()
        running[name] = iter(loader)
        totals[name] += clock() - start
    turn = 0
    while running:
        names = list(running)
        turn = (turn + 1) % len(names)
        for name in names[turn:] + names[:turn]:
            start = clock()
            try:
                next(running[name])
            except StopIteration:
                del running[name]
            totals[name] += clock() - start
    return totals


def measure(
    dataset: Dataset[Any],
    batch_size: int,
    num_workers: int,
    reps: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Any]:
    loaders = {name: make(dataset, batch_size, num_workers) for name, make in LOADERS.items()}
    for loader in loaders.values():  # warm up: imports, caches, first fork
        epoch_seconds(loader, clock)
    times: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(reps):
        if num_workers == 0:
            for name, seconds in interleaved_epochs(loaders, clock).items():
                times[name].append(seconds)
            continue
        # Workers run ahead of ``next``: one loader at a time, whole epochs.
        for name, loader in loaders.items():
            times[name].append(epoch_seconds(loader, clock))
    base = times["DataLoader"]
    n = len(dataset)  # type: ignore[arg-type]
    result: dict[str, Any] = {}
    for name, ts in times.items():
        ratios = [b / t for b, t in zip(base, ts, strict=True)]
        extra_us = [(t - b) / n * 1e6 for b, t in zip(base, ts, strict=True)]
        result[name] = {
            "ratio": statistics.median(ratios),
            "seconds": statistics.median(ts),
            "extra_us_per_sample": statistics.median(extra_us),
        }
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small epochs, 3 reps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--cpu-time", action="store_true", help="main-process CPU time, not the wall clock"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], metavar="N")
    parser.add_argument(
        "--datasets", nargs="+", default=["tiny", "0.2 ms"], choices=["tiny", "0.2 ms"]
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256], metavar="B")
    args = parser.parse_args(argv)
    reps = 3 if args.quick else args.reps
    scale = 4 if args.quick else 1
    clock = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(1)
    cases = [
        ("tiny", Tiny(32768 // scale)),
        ("0.2 ms", Work(4096 // scale)),
    ]
    rows = []
    for label, dataset in cases:
        if label not in args.datasets:
            continue
        for num_workers in args.workers:
            for batch_size in args.batch_sizes:
                result = measure(dataset, batch_size, num_workers, reps, clock)
                rows.append(
                    {
                        "dataset": label,
                        "num_workers": num_workers,
                        "batch_size": batch_size,
                        "n": len(dataset),
                        "loaders": result,
                    }
                )
                print(format_row(rows[-1]), flush=True)
    save(args.out, "throughput-cpu" if args.cpu_time else "throughput", rows, table(rows))
    return {"rows": rows}


def format_row(row: dict[str, Any]) -> str:
    parts = [f"{row['dataset']:>7} nw={row['num_workers']} bs={row['batch_size']:>3}"]
    for name, r in row["loaders"].items():
        if name != "DataLoader":
            parts.append(f"{name}: {r['ratio']:.3f}")
    return "  ".join(parts)


def table(rows: list[dict[str, Any]]) -> str:
    names = [n for n in rows[0]["loaders"] if n != "DataLoader"]
    header = "| dataset | workers | batch | DataLoader s/epoch | " + " | ".join(names) + " |"
    lines = [header, "|" + "---|" * (4 + len(names))]
    for row in rows:
        cells = [
            row["dataset"],
            str(row["num_workers"]),
            str(row["batch_size"]),
            f"{row['loaders']['DataLoader']['seconds']:.3f}",
        ]
        for name in names:
            r = row["loaders"][name]
            cells.append(f"{r['ratio']:.3f} ({r['extra_us_per_sample']:+.1f} us/sample)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
