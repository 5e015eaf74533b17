"""Batch on demand: ``batch_at`` at 10 %, 50 % and 90 % of a 10**8-sample shuffled epoch.

A map-style dataset with a random augmentation (an index plus a torch draw, about as
cheap as throughput.py's ``Tiny``), ``batch_size=32``, ``shuffle=True``,
``num_workers=0``: 3,125,000 batches an epoch. For each position:

- *batch_at, cold*: a fresh loader's first ``batch_at`` there (it derives the epoch's
  shuffle keys once; building the loader is not timed), the median of ``--reps``
  fresh loaders;
- *batch_at, warm*: ``batch_at`` again on the same loader, median of ``--reps``;
- *indices_at, warm*: the indices only, median of ``--reps``;
- *iterate there*: what getting that batch costs without ``batch_at``: iterating the
  epoch from its start. Iterating to 10 % of 10**8 samples takes minutes, so it is
  **extrapolated**: ``--iterate`` batches are timed from a fresh iterator, and the
  per-batch time is multiplied by the batch's index. The output says so on each row.

Every ``batch_at`` result is checked against iterating in one place (batch 300 of the
same epoch: iterated, and asked for), so the timings are of the right batch.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _report import save
from torch.utils.data import Dataset

from reproloader import ReproLoader

N = 10**8
BATCH = 32
POSITIONS = (0.1, 0.5, 0.9)


class Augmented(Dataset[torch.Tensor]):
    """Item ``i``: ``[i, i + torch.rand()]``, any length, no storage."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), i + float(torch.rand(()))], dtype=torch.float64)


def make(n: int) -> ReproLoader[Any]:
    return ReproLoader(Augmented(n), batch_size=BATCH, shuffle=True, num_workers=0, seed=0)


def timed(call: Any, *args: Any) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def per_batch_iterating(n: int, batches: int) -> float:
    """Seconds per batch iterating a fresh loader from the start of its epoch."""
    loader = make(n)
    iterator = iter(loader)
    next(iterator)  # the iterator's start is not a per-batch cost
    start = time.perf_counter()
    for _ in itertools.islice(iterator, batches):
        pass
    return (time.perf_counter() - start) / batches


def check(n: int) -> None:
    """``batch_at`` gives the batch iteration gives (batch 300 of epoch 0)."""
    loader = make(n)
    iterated = next(itertools.islice(iter(make(n)), 300, None))
    if not torch.equal(loader.batch_at(0, 300), iterated):
        raise AssertionError("batch_at(0, 300) differs from the iterated batch 300")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=N)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--iterate", type=int, default=3000, help="batches timed iterating")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    check(args.n)
    per_batch = statistics.median(per_batch_iterating(args.n, args.iterate) for _ in range(3))
    batches = len(make(args.n))
    rows = []
    for fraction in POSITIONS:
        k = int(fraction * batches)
        fresh = [make(args.n) for _ in range(args.reps)]  # built beforehand: not timed
        cold = statistics.median(timed(loader.batch_at, 0, k) for loader in fresh)
        warm_loader = fresh[0]  # its epoch's keys are derived now
        warm = statistics.median(timed(warm_loader.batch_at, 0, k) for _ in range(args.reps))
        indices = statistics.median(timed(warm_loader.indices_at, 0, k) for _ in range(args.reps))
        iterate = per_batch * k
        rows.append(
            {
                "samples": args.n,
                "position": fraction,
                "batch_index": k,
                "batch_at_cold_ms": cold * 1e3,
                "batch_at_warm_ms": warm * 1e3,
                "indices_at_ms": indices * 1e3,
                "iterate_there_s_extrapolated": iterate,
                "iterated_batches_timed": args.iterate,
                "speedup_warm": iterate / warm,
            }
        )
        print(format_row(rows[-1]), flush=True)
    save(args.out, "batch_at", rows, table(rows, per_batch))
    return {"rows": rows}


def format_row(r: dict[str, Any]) -> str:
    return (
        f"{r['samples']:.0e} samples, {r['position']:.0%} (batch {r['batch_index']:,}): "
        f"batch_at {r['batch_at_cold_ms']:.2f} ms cold, {r['batch_at_warm_ms']:.2f} ms warm, "
        f"indices_at {r['indices_at_ms']:.3f} ms; iterating there "
        f"~{r['iterate_there_s_extrapolated']:,.0f} s (extrapolated from "
        f"{r['iterated_batches_timed']} batches)"
    )


def table(rows: list[dict[str, Any]], per_batch: float) -> str:
    header = (
        "| position | batch | batch_at, cold (ms) | batch_at, warm (ms) | indices_at (ms) "
        "| iterating there (s, extrapolated) | iterating / batch_at warm |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    lines.extend(
        f"| {r['position']:.0%} | {r['batch_index']:,} | {r['batch_at_cold_ms']:.2f} | "
        f"{r['batch_at_warm_ms']:.2f} | {r['indices_at_ms']:.3f} | "
        f"{r['iterate_there_s_extrapolated']:,.0f} | {r['speedup_warm']:,.0f}x |"
        for r in rows
    )
    n = rows[0]["samples"] if rows else N
    lines.append("")
    lines.append(
        f"{n:.0e} samples, batch {BATCH}, shuffle=True, num_workers=0. Iterating there is "
        f"extrapolated: {rows[0]['iterated_batches_timed'] if rows else 0} batches were "
        f"timed from a fresh iterator ({per_batch * 1e6:.0f} us a batch) and multiplied by "
        "the batch's index, not iterated there."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
