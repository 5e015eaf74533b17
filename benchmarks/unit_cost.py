"""Per-unit cost of reseeding, by which global RNGs are reseeded (sample scope's hot path).

Two numbers per setting: the cost of readying a unit alone (``Producer.begin``, timed
with timeit), and the added cost per sample in a loop that also builds a small tensor
per sample, as a dataset would (caches are colder there). Both against the same loop
without reseeding, interleaved, best of ``--reps``.
"""

from __future__ import annotations

import argparse
import itertools
import time
import timeit
from pathlib import Path
from typing import Any

import torch
from _report import save

from reproloader._runtime.producer import Plan, Producer
from reproloader.seeding import Purpose, SeedTree

SETTINGS = {
    "random, numpy, torch (default)": frozenset({"random", "numpy", "torch"}),
    "torch only": frozenset({"torch"}),
    "none (context rng only)": frozenset(),
}


def producer(globals_: frozenset[str]) -> Producer:
    plan = Plan(
        tree=SeedTree(0),
        scope="sample",
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


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    n = 20000
    rows = []
    for name, globals_ in SETTINGS.items():
        p = producer(globals_)
        units = itertools.count()
        begin = (
            min(
                timeit.repeat(
                    lambda p=p, units=units: p.begin(
                        Purpose.SAMPLE, (0,), next(units), epoch=0, batch_index=0
                    ),
                    number=n,
                    repeat=args.reps,
                )
            )
            / n
        )
        best_with, best_without = float("inf"), float("inf")
        for _ in range(args.reps):
            start = time.perf_counter()
            for i in range(4096):
                p.begin(Purpose.SAMPLE, (0,), i, epoch=0, batch_index=0)
                torch.full((8,), float(i)) + torch.rand(8)
            best_with = min(best_with, (time.perf_counter() - start) / 4096)
            start = time.perf_counter()
            for i in range(4096):
                torch.full((8,), float(i)) + torch.rand(8)
            best_without = min(best_without, (time.perf_counter() - start) / 4096)
        rows.append(
            {
                "reseed_globals": name,
                "begin_us": begin * 1e6,
                "in_loop_us": (best_with - best_without) * 1e6,
            }
        )
        print(
            f"{name:<32} begin {begin * 1e6:5.1f} us   added per sample in a loop {rows[-1]['in_loop_us']:5.1f} us"
        )
    save(args.out, "unit_cost", rows)
    return rows


if __name__ == "__main__":
    main()
