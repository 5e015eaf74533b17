"""Scale: first batch, resume and peak memory from 10**6 to 10**10 samples; shuffle throughput.

**Latency and memory.** A map-style dataset that returns its index (a length, no
storage), ``batch_size=32``, ``shuffle=True``, ``num_workers=0``. Each measurement
runs in a fresh subprocess, after a warm-up on a 100-sample loader (imports, first
torch calls), so the numbers are what the size costs:

- *first batch*: build the loader, ``next(iter(loader))``;
- *resume*: build the loader, ``load_state_dict`` of a state at 90 % of the epoch,
  ``next(iter(loader))`` (ReproLoader only). The state is a fresh loader's
  ``state_dict()`` with ``position`` at 90 % of the batches: the state a loader
  gives there, which the benchmark checks against a real one at n = 10**4;
- *peak RSS*: the subprocess's ``ru_maxrss``, beside its value after the warm-up.

DataLoader(shuffle=True) runs beside it up to 10**8 (``--dataloader-max``): its
RandomSampler builds ``torch.randperm(n).tolist()``, O(n) time and memory.

**Indices per batch.** The sampler alone over a 10**6-sample epoch: the keyed
order's ``indices(...).tolist()`` per batch against the old order's slice and
``tolist()``, with its one permutation per epoch spread over the batches.

**Throughput.** Tiny samples (throughput.py's ``Tiny``, about 3 us each), one full
shuffled epoch per loader in turn, ``--reps`` times: ReproLoader as it is, and
ReproLoader with the order of earlier releases (``Generator(PCG64(node)).permutation(n)``
once per epoch, batches sliced from it), patched in here only. The ratio is the
median of ``time(old) / time(new)``: 1.0 or more means the keyed order is at least as
fast.

**Order start.** An epoch's first batch of indices with its order built (a new epoch
each time): the exact order up to 8192 samples, the Feistel's above, beside the
Feistel's first block for the same ``n``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _report import save
from throughput import Tiny, epoch_seconds
from torch.utils.data import DataLoader, Dataset

from reproloader import ReproLoader, SeededRandomSampler
from reproloader._runtime.shuffle import EXACT_MAX, Shuffle, round_keys
from reproloader.seeding import Purpose, SeedTree

SIZES = (10**6, 10**7, 10**8, 10**9, 10**10)
BATCH = 32


class Indices(Dataset[int]):
    """Item ``i`` is ``i``: any length, no storage."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def make(kind: str, n: int) -> Any:
    if kind == "ReproLoader":
        return ReproLoader(Indices(n), batch_size=BATCH, shuffle=True, num_workers=0, seed=0)
    return DataLoader(Indices(n), batch_size=BATCH, shuffle=True, num_workers=0)


def state_at(n: int, fraction: float) -> dict[str, Any]:
    """A ReproLoader state at ``fraction`` of the epoch, without running there."""
    loader = make("ReproLoader", n)
    state = loader.state_dict()
    state["position"] = int(fraction * len(loader))
    return state


def check_state_at() -> None:
    """The shortcut gives the state a loader really has there."""
    n = 10**4
    loader = make("ReproLoader", n)
    it = iter(loader)
    for _ in range(int(0.9 * len(loader))):
        next(it)
    assert loader.state_dict() == state_at(n, 0.9), "state_at no longer matches a real state"


def child(kind: str, case: str, n: int) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    torch.set_num_threads(1)
    next(iter(make(kind, 100)))  # warm-up
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    state = state_at(n, 0.9) if case == "resume" else None
    start = time.perf_counter()
    loader = make(kind, n)
    if state is not None:
        loader.load_state_dict(state)
    next(iter(loader))
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_rss": peak, "baseline_rss": baseline}


def run_child(kind: str, case: str, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, case, str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def latency(sizes: list[int], dataloader_max: int, reps: int) -> list[dict[str, Any]]:
    check_state_at()
    rows = []
    for n in sizes:
        for kind, case in [
            ("ReproLoader", "first batch"),
            ("ReproLoader", "resume"),
            ("DataLoader", "first batch"),
        ]:
            if kind == "DataLoader" and n > dataloader_max:
                continue
            runs = [run_child(kind, case, n) for _ in range(reps)]
            row = {
                "n": n,
                "loader": kind,
                "case": case,
                "seconds": statistics.median(r["seconds"] for r in runs),
                "peak_rss": max(r["peak_rss"] for r in runs),
                "baseline_rss": max(r["baseline_rss"] for r in runs),
                "reps": reps,
            }
            rows.append(row)
            print(
                f"n={n:.0e} {kind:>11} {case:>11}: {row['seconds'] * 1e3:9.1f} ms, "
                f"peak RSS {row['peak_rss'] / 2**20:7.0f} MiB "
                f"(after warm-up {row['baseline_rss'] / 2**20:.0f} MiB)",
                flush=True,
            )
    return rows


def old_indices(self: SeededRandomSampler, epoch: int, start: int, stop: int) -> Any:
    """The order of earlier releases: one PCG64 permutation per epoch, sliced."""
    cached = self.__dict__.get("_old_order")
    if cached is None or cached[0] != epoch:
        node = self._tree.node(Purpose.SHUFFLE, epoch)
        order = np.random.Generator(np.random.PCG64(node)).permutation(len(self.data_source))
        cached = self.__dict__["_old_order"] = (epoch, order)
    return cached[1][start:stop]


def throughput(n: int, reps: int) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    new_indices = SeededRandomSampler.indices
    rows = []
    for num_workers in (0, 2):
        for batch_size in (32, 256):
            loader = ReproLoader(
                Tiny(n), batch_size=batch_size, shuffle=True, num_workers=num_workers, seed=0
            )
            times: dict[str, list[float]] = {"old": [], "new": []}
            for rep in range(reps + 1):  # the first round warms up
                for name in ("old", "new"):
                    SeededRandomSampler.indices = old_indices if name == "old" else new_indices  # type: ignore[method-assign]
                    try:
                        seconds = epoch_seconds(loader)
                    finally:
                        SeededRandomSampler.indices = new_indices  # type: ignore[method-assign]
                    if rep:
                        times[name].append(seconds)
            ratios = [o / t for o, t in zip(times["old"], times["new"], strict=True)]
            row = {
                "n": n,
                "num_workers": num_workers,
                "batch_size": batch_size,
                "old_seconds": statistics.median(times["old"]),
                "new_seconds": statistics.median(times["new"]),
                "ratio": statistics.median(ratios),
                "reps": reps,
            }
            rows.append(row)
            print(
                f"tiny n={n} nw={num_workers} bs={batch_size}: old {row['old_seconds']:.3f} s, "
                f"new {row['new_seconds']:.3f} s, old/new {row['ratio']:.3f}",
                flush=True,
            )
    return rows


def per_batch(n: int, reps: int) -> list[dict[str, Any]]:
    """Index cost per batch over a whole epoch: the sampler alone, no dataset."""
    rows = []
    sampler = SeededRandomSampler(Indices(n), seed=0)
    for batch_size in (32, 256):
        batches = -(-n // batch_size)
        costs: dict[str, list[float]] = {"old": [], "new": []}
        for epoch in range(reps):
            start = time.perf_counter()
            order = old_indices(sampler, epoch, 0, n)
            for k in range(batches):
                order[k * batch_size : (k + 1) * batch_size].tolist()
            costs["old"].append((time.perf_counter() - start) / batches)
            start = time.perf_counter()
            for k in range(batches):
                sampler.indices(epoch, k * batch_size, min((k + 1) * batch_size, n)).tolist()
            costs["new"].append((time.perf_counter() - start) / batches)
        row = {
            "n": n,
            "batch_size": batch_size,
            "old_us": statistics.median(costs["old"]) * 1e6,
            "new_us": statistics.median(costs["new"]) * 1e6,
        }
        rows.append(row)
        print(
            f"indices per batch, n={n}, bs={batch_size}: old {row['old_us']:.2f} us "
            f"(permutation amortized, slice, tolist), new {row['new_us']:.2f} us",
            flush=True,
        )
    return rows


def order_start(reps: int) -> list[dict[str, Any]]:
    """An epoch's first batch of indices, order built: exact up to EXACT_MAX, else Feistel.

    For each ``n``, a new epoch per repetition (its order is built), against the
    Feistel's first block of the same ``n`` (what version 3 computed there).
    """
    rows = []
    for n in (8, 1000, EXACT_MAX, EXACT_MAX + 1, 65536, 10**10):
        sampler = SeededRandomSampler(Indices(n), seed=0)
        tree = SeedTree(0)
        exact: list[float] = []
        feistel: list[float] = []
        for epoch in range(reps + 1):  # the first round warms up
            start = time.perf_counter()
            sampler.indices(epoch, 0, min(n, BATCH))
            middle = time.perf_counter()
            Shuffle(n, round_keys(tree.node(Purpose.SHUFFLE, epoch))).indices(0, min(n, BATCH))
            end = time.perf_counter()
            if epoch:
                exact.append(middle - start)
                feistel.append(end - middle)
        row = {
            "n": n,
            "order": "exact" if n <= EXACT_MAX else "feistel",
            "first_batch_us": statistics.median(exact) * 1e6,
            "feistel_us": statistics.median(feistel) * 1e6,
        }
        rows.append(row)
        print(
            f"first batch of an epoch, n={n}: {row['first_batch_us']:.0f} us ({row['order']} "
            f"order), the Feistel's first block {row['feistel_us']:.0f} us",
            flush=True,
        )
    return rows


def table(
    latency_rows: list[dict[str, Any]],
    batch_rows: list[dict[str, Any]],
    throughput_rows: list[dict[str, Any]],
    order_rows: list[dict[str, Any]],
) -> str:
    lines = [
        "| n | loader | case | time | peak RSS | RSS after warm-up |",
        "|---|---|---|---|---|---|",
    ]
    lines.extend(
        f"| 10^{len(str(r['n'])) - 1} | {r['loader']} | {r['case']} | "
        f"{r['seconds'] * 1e3:,.1f} ms | {r['peak_rss'] / 2**20:,.0f} MiB | "
        f"{r['baseline_rss'] / 2**20:,.0f} MiB |"
        for r in latency_rows
    )
    lines += [
        "",
        "| indices of one batch, n | batch | old order (amortized) | keyed order (amortized) |",
        "|---|---|---|---|",
    ]
    for r in batch_rows:
        lines.append(
            f"| {r['n']:,} | {r['batch_size']} | {r['old_us']:.2f} us | {r['new_us']:.2f} us |"
        )
    lines += [
        "",
        "| tiny samples | workers | batch | old order s/epoch | keyed order s/epoch | old / new |",
        "|---|---|---|---|---|---|",
    ]
    for r in throughput_rows:
        lines.append(
            f"| {r['n']:,} | {r['num_workers']} | {r['batch_size']} | {r['old_seconds']:.3f} | "
            f"{r['new_seconds']:.3f} | {r['ratio']:.3f} |"
        )
    lines += [
        "",
        "| an epoch's first batch, n | order | time (order built) | the Feistel's first block |",
        "|---|---|---|---|",
    ]
    lines.extend(
        f"| {r['n']:,} | {r['order']} | {r['first_batch_us']:.0f} us | {r['feistel_us']:.0f} us |"
        for r in order_rows
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", nargs=3, metavar=("LOADER", "CASE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--dataloader-max", type=int, default=10**8)
    parser.add_argument("--latency-reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=65536, help="tiny samples per epoch")
    parser.add_argument("--reps", type=int, default=7, help="throughput repetitions")
    parser.add_argument("--quick", action="store_true", help="10**6 and 10**10 only, 1-2 reps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if args.child:
        kind, case, n = args.child
        print(json.dumps(child(kind, case, int(n))))
        return {}
    if args.quick:
        args.sizes, args.dataloader_max, args.latency_reps = [10**6, 10**10], 10**6, 1
        args.n, args.reps = 16384, 2
    latency_rows = latency(args.sizes, args.dataloader_max, args.latency_reps)
    batch_rows = per_batch(10**6, 3 if args.quick else 5)
    throughput_rows = throughput(args.n, args.reps)
    order_rows = order_start(3 if args.quick else 15)
    rows = [{"kind": "latency", **r} for r in latency_rows]
    rows += [{"kind": "per batch", **r} for r in batch_rows]
    rows += [{"kind": "throughput", **r} for r in throughput_rows]
    rows += [{"kind": "order start", **r} for r in order_rows]
    save(args.out, "scale", rows, table(latency_rows, batch_rows, throughput_rows, order_rows))
    return {"rows": rows}


if __name__ == "__main__":
    main()
