"""Resume cost: time from load_state_dict to the first batch, against a fresh loader.

A 1,000,000-sample shuffled epoch, batch 32. For each loader and worker count, one
pass takes states at 1 %, 50 % and 90 % of the epoch; then, ``--reps`` times and in
turn, a fresh loader's first batch and each resumed loader's first batch are timed.
The ratio resumed / fresh says what resuming costs beyond starting an epoch.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _report import save
from throughput import Tiny
from torch.utils.data import Dataset
from torchdata.stateful_dataloader import StatefulDataLoader

from reproloader import ReproLoader

LOADERS = {
    "ReproLoader": lambda ds, nw: ReproLoader(
        ds, batch_size=32, shuffle=True, num_workers=nw, seed=0
    ),
    "StatefulDataLoader": lambda ds, nw: StatefulDataLoader(
        ds, batch_size=32, shuffle=True, num_workers=nw, generator=torch.Generator().manual_seed(0)
    ),
}
POSITIONS = (0.01, 0.50, 0.90)


def states_at(make: Any, dataset: Dataset[Any], num_workers: int) -> dict[float, dict[str, Any]]:
    loader = make(dataset, num_workers)
    batches = len(loader)
    wanted = {max(1, int(p * batches)): p for p in POSITIONS}
    states = {}
    for i, _ in enumerate(loader, start=1):
        if i in wanted:
            states[wanted[i]] = loader.state_dict()
            if len(states) == len(wanted):
                break
    return states


def first_batch_seconds(make: Any, dataset: Dataset[Any], num_workers: int, state: Any) -> float:
    loader = make(dataset, num_workers)
    start = time.perf_counter()
    if state is not None:
        loader.load_state_dict(state)
    next(iter(loader))
    elapsed = time.perf_counter() - start
    del loader
    return elapsed


def state_bytes(state: dict[str, Any]) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    dataset = Tiny(args.n)
    rows = []
    for num_workers in (0, 2):
        states = {name: states_at(make, dataset, num_workers) for name, make in LOADERS.items()}
        times: dict[tuple[str, float | None], list[float]] = {}
        for _ in range(args.reps):
            for name, make in LOADERS.items():
                times.setdefault((name, None), []).append(
                    first_batch_seconds(make, dataset, num_workers, None)
                )
                for p in POSITIONS:
                    t = first_batch_seconds(make, dataset, num_workers, states[name][p])
                    times.setdefault((name, p), []).append(t)
        for name in LOADERS:
            fresh = statistics.median(times[(name, None)])
            for p in POSITIONS:
                resumed = statistics.median(times[(name, p)])
                rows.append(
                    {
                        "loader": name,
                        "num_workers": num_workers,
                        "position": p,
                        "fresh_ms": fresh * 1e3,
                        "resume_ms": resumed * 1e3,
                        "ratio": resumed / fresh,
                        "state_bytes": state_bytes(states[name][p]),
                    }
                )
                print(format_row(rows[-1]), flush=True)
    save(args.out, "resume", rows, table(rows))
    return {"rows": rows}


def format_row(r: dict[str, Any]) -> str:
    return (
        f"{r['loader']:>18} nw={r['num_workers']} at {r['position']:>4.0%}: "
        f"resume {r['resume_ms']:7.1f} ms, fresh {r['fresh_ms']:6.1f} ms, "
        f"ratio {r['ratio']:5.2f}, state {r['state_bytes']} B"
    )


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| loader | workers | position | resume to first batch | fresh first batch | ratio | state size |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['loader']} | {r['num_workers']} | {r['position']:.0%} | {r['resume_ms']:.1f} ms "
        f"| {r['fresh_ms']:.1f} ms | {r['ratio']:.2f} | {r['state_bytes']:,} B |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
