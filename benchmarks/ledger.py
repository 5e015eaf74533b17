"""The run ledger's cost: ReproLoader with and without ``ledger=``, against DataLoader, in one run.

Cases: the 0.2 ms-sample dataset of ``throughput.py`` (batches of 32 and 256) and an
image-sized one (batches of 32 x 3 x 224 x 224 float32, 19 MB: 0.2 ms of CPU work
per sample plus the image), each with 0 and 2 workers. As in ``throughput.py``, each
repetition gives paired ratios (``time(DataLoader) / time(loader)``, loaders taking
batches in turn without workers, whole epochs one after the other with workers) and
the median over repetitions is reported. ``ledger cost`` is
``time(ReproLoader) / time(ReproLoader with a ledger)``: 0.99 means the ledger takes
1 % of the throughput. The budget (issue 25) is at most 1 % in every case.

Times are CPU seconds (``--wall`` for the wall clock): without workers the main
process's, with workers the main process's plus the workers' (reaped at each epoch's
end), so that other jobs on a shared machine do not count. On a loaded machine the
end-to-end ratio still moves by a percent or more from run to run, so each case also
times the ledger's own work in place, over one epoch without workers: the digests
(made where the batch is made: in a worker when there are workers) and the line the
main process writes. ``work share`` is that time over DataLoader's time per batch:
the ledger's cost without the noise of comparing two loaders.

It also times each digest candidate on one image-sized batch.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _report import save
from throughput import Tiny, Work, epoch_seconds, interleaved_epochs
from torch.utils.data import DataLoader, Dataset

from reproloader import ReproLoader
from reproloader._runtime.ledger import LedgerCollate, LedgerWriter, Recorded


class Image(Work):
    """0.2 ms of CPU work per sample (as ``Work``), returning a 3 x 224 x 224 float32 image."""

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        base = super().__getitem__(i)
        return torch.full((3, 224, 224), float(base[0]))


def _loaders(dataset: Dataset[Any], bs: int, nw: int, directory: Path) -> dict[str, Any]:
    return {
        "DataLoader": DataLoader(dataset, batch_size=bs, shuffle=True, num_workers=nw),
        "ReproLoader": ReproLoader(dataset, batch_size=bs, shuffle=True, num_workers=nw, seed=0),
        "ReproLoader + ledger": ReproLoader(
            dataset, batch_size=bs, shuffle=True, num_workers=nw, seed=0, ledger=directory
        ),
    }


def ledger_work(dataset: Dataset[Any], batch_size: int) -> float:
    """CPU seconds of the ledger's own work per batch, timed in place over one epoch.

    The digests (what the ledger's collate function adds to the user's) and the line
    written, in the main process (``num_workers=0``), with the caches the samples'
    own work left: what the ledger adds to each batch, without the noise of comparing
    two loaders.
    """
    spent = [0.0, 0.0]  # seconds, batches
    collate_call, writer_call = LedgerCollate.__call__, LedgerWriter.__call__

    def timed_collate(self: LedgerCollate, samples: Any) -> Recorded:
        user = self.collate_fn
        inner = [0.0]

        def timed_user(items: Any) -> Any:
            start = time.process_time()
            batch = user(items)
            inner[0] = time.process_time() - start
            return batch

        self.collate_fn = timed_user
        start = time.process_time()
        try:
            recorded = collate_call(self, samples)
        finally:
            self.collate_fn = user
        spent[0] += time.process_time() - start - inner[0]
        spent[1] += 1
        return recorded

    def timed_writer(self: LedgerWriter, data: Any) -> Any:
        start = time.process_time()
        batch = writer_call(self, data)
        spent[0] += time.process_time() - start
        return batch

    with tempfile.TemporaryDirectory() as tmp:
        loader = ReproLoader(dataset, batch_size=batch_size, shuffle=True, seed=0, ledger=tmp)
        for _ in loader:  # warm up: the file opened, xxhash imported
            pass
        LedgerCollate.__call__ = timed_collate  # type: ignore[method-assign]
        LedgerWriter.__call__ = timed_writer  # type: ignore[method-assign]
        try:
            for _ in loader:
                pass
        finally:
            LedgerCollate.__call__ = collate_call  # type: ignore[method-assign]
            LedgerWriter.__call__ = writer_call  # type: ignore[method-assign]
        del loader
    return spent[0] / spent[1]


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (workers, after each epoch)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(
    dataset: Dataset[Any], batch_size: int, num_workers: int, reps: int, wall: bool = False
) -> dict[str, Any]:
    clock: Callable[[], float] = time.perf_counter if wall else cpu_seconds
    if not wall and num_workers == 0:
        clock = time.process_time
    with tempfile.TemporaryDirectory() as tmp:
        loaders = _loaders(dataset, batch_size, num_workers, Path(tmp))
        for loader in loaders.values():  # warm up: imports, caches, first fork
            epoch_seconds(loader, clock)
        times: dict[str, list[float]] = {name: [] for name in loaders}
        for _ in range(reps):
            if num_workers == 0:
                for name, seconds in interleaved_epochs(loaders, clock).items():
                    times[name].append(seconds)
                continue
            for name, loader in loaders.items():
                times[name].append(epoch_seconds(loader, clock))
        lines = sum(1 for _ in (Path(tmp) / "rank-00000.jsonl").open())
        size = (Path(tmp) / "rank-00000.jsonl").stat().st_size
    base, repro, ledger = (times[k] for k in loaders)
    batches = -(-len(dataset) // batch_size)  # type: ignore[arg-type]
    work = ledger_work(dataset, batch_size)
    return {
        "ledger us per batch": work * 1e6,
        "work share": work / (statistics.median(base) / batches),
        "DataLoader s/epoch": statistics.median(base),
        "ReproLoader": statistics.median(b / t for b, t in zip(base, repro, strict=True)),
        "ReproLoader + ledger": statistics.median(b / t for b, t in zip(base, ledger, strict=True)),
        "ledger cost": statistics.median(r / t for r, t in zip(repro, ledger, strict=True)),
        "ledger bytes per batch": size / max(1, lines),
    }


def digests(reps: int = 15) -> list[dict[str, Any]]:
    """Each candidate's time on one 32 x 3 x 224 x 224 float32 batch (best of ``reps``)."""
    import xxhash

    data = memoryview(torch.rand(32, 3, 224, 224).view(torch.uint8).numpy().reshape(-1))
    candidates: dict[str, Callable[[], object]] = {
        "hashlib.sha256": lambda: hashlib.sha256(data).digest(),
        "hashlib.blake2b (16 bytes)": lambda: hashlib.blake2b(data, digest_size=16).digest(),
        "hashlib.md5": lambda: hashlib.md5(data).digest(),
        "zlib.crc32": lambda: zlib.crc32(data),
        "zlib.adler32": lambda: zlib.adler32(data),
        "xxhash.xxh3_64": lambda: xxhash.xxh3_64_intdigest(data),
        "xxhash.xxh3_128 (chosen)": lambda: xxhash.xxh3_128_intdigest(data),
        "numpy uint64 sum (not a digest)": lambda: np.frombuffer(data, np.uint64).sum(),
    }
    rows = []
    for name, fn in candidates.items():
        best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        rows.append({"digest": name, "ms per 19.3 MB batch": best * 1e3})
        print(f"{name:34} {best * 1e3:7.2f} ms", flush=True)
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument(
        "--quick", action="store_true", help="small epochs, at most 3 reps (--reps fewer)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], metavar="N")
    parser.add_argument("--wall", action="store_true", help="the wall clock, not CPU time")
    parser.add_argument(
        "--cases", nargs="+", default=["0.2 ms", "image"], choices=["0.2 ms", "image", "tiny"]
    )
    args = parser.parse_args(argv)
    reps = min(3, args.reps) if args.quick else args.reps
    scale = 4 if args.quick else 1
    torch.set_num_threads(1)
    digest_rows = digests(3 if args.quick else 15)
    cases = {
        "0.2 ms": (lambda: Work(4096 // scale), [32, 256]),
        "image": (lambda: Image(1024 // scale), [32]),
        "tiny": (lambda: Tiny(32768 // scale), [32, 256]),
    }
    rows = []
    for label in args.cases:
        make, sizes = cases[label]
        dataset = make()
        for num_workers in args.workers:
            for batch_size in sizes:
                result = measure(dataset, batch_size, num_workers, reps, args.wall)
                row = {"dataset": label, "num_workers": num_workers, "batch_size": batch_size}
                rows.append({**row, **result})
                print(
                    f"{label:>7} nw={num_workers} bs={batch_size:>3}  "
                    f"ReproLoader {result['ReproLoader']:.3f}  "
                    f"+ ledger {result['ReproLoader + ledger']:.3f}  "
                    f"ledger cost {result['ledger cost']:.4f}  "
                    f"work {result['ledger us per batch']:.0f} us/batch "
                    f"({100 * result['work share']:.2f} %)",
                    flush=True,
                )
    save(args.out, "ledger", rows, table(rows, digest_rows))
    return {"rows": rows, "digests": digest_rows}


def table(rows: list[dict[str, Any]], digest_rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            "| dataset | workers | batch | DataLoader s/epoch | ReproLoader | ReproLoader + ledger "
            "| ledger cost (ReproLoader / + ledger) | ledger work per batch "
            "| work share | ledger bytes/batch |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | {r['num_workers']} | {r['batch_size']} "
        f"| {r['DataLoader s/epoch']:.3f} | {r['ReproLoader']:.3f} "
        f"| {r['ReproLoader + ledger']:.3f} | {r['ledger cost']:.4f} "
        f"| {r['ledger us per batch']:.0f} us | {100 * r['work share']:.2f} % "
        f"| {r['ledger bytes per batch']:.0f} |"
        for r in rows
    ]
    lines += ["", "| digest | ms per 32 x 3 x 224 x 224 float32 batch |", "|---|---|"]
    lines += [f"| {d['digest']} | {d['ms per 19.3 MB batch']:.2f} |" for d in digest_rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
