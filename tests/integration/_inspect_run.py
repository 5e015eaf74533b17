"""Run under torchrun (2 gloo ranks): batch_at and skipping with shard=True, on real ranks.

Each rank iterates two epochs of a sharded loader (2 workers, batch scope) and of one
that leaves out global steps 2-4 (and resumes it from a state taken mid-way), and
asks ``batch_at`` for every step of its own rank and of the other one. It writes what
it saw to ``rank<r>.json``; the test compares the ranks' files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from reproloader import ReproLoader, get_context


class Noisy(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 29  # 2 ranks x batch 3: 5 steps an epoch, the last one short

    def __getitem__(self, i: int) -> torch.Tensor:
        noise = float(np.random.random()) + float(torch.rand(())) + get_context().rng.random()
        return torch.tensor([float(i), noise], dtype=torch.float64)


def build(scope: str, workers: int) -> ReproLoader[Any]:
    return ReproLoader(
        Noisy(),
        batch_size=3,
        shuffle=True,
        shard=True,
        num_workers=workers,
        seed=21,
        rng_scope=scope,  # type: ignore[arg-type]
        multiprocessing_context="fork" if workers else None,
    )


def rows(batch: torch.Tensor) -> list[list[float]]:
    return batch.tolist()  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    out: dict[str, Any] = {}
    for scope, workers in (("batch", 2), ("sample", 0)):
        loader = build(scope, workers)
        iterated = [[rows(b) for b in loader] for _ in range(2)]
        asker = build(scope, 0)
        on_demand = {
            str(r): [
                [rows(asker.batch_at(e, k, rank=r)) for k in range(len(iterated[0]))]
                for e in range(2)
            ]
            for r in range(world_size)
        }
        skipping = build(scope, workers)
        skipping.skip_steps(2, 5)  # 5 steps an epoch: steps 2-4 of epoch 0
        skipping.skip_steps(6)  # and step 1 of epoch 1
        it = iter(skipping)
        first = [rows(next(it))]
        state = skipping.state_dict()  # mid-epoch, after step 0
        skipped_run = [first + [rows(b) for b in it], [rows(b) for b in skipping]]
        resumed = build(scope, workers)
        resumed.load_state_dict(state)  # the skip list comes with it
        after_resume = [[rows(b) for b in resumed], [rows(b) for b in resumed]]
        out[scope] = {
            "iterated": iterated,
            "on_demand": on_demand,
            "skipped_run": skipped_run,
            "state_skip": state["skip"],
            "state_position": state["position"],
            "after_resume": after_resume,
        }
    (args.dir / f"rank{rank}.json").write_text(json.dumps(out))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
