"""Run under torchrun: gather every rank's loader state, save it once, resume every rank from it.

Each rank iterates a loader whose workers hold per-rank state (worker scope, or an
iterable dataset), stops after ``--stop`` batches, and the ranks gather their states
with ``reproloader.distributed.gather_state``: rank 0 alone saves the result with
``torch.save``, or it goes into a torch.distributed.checkpoint as one byte string
(DCP keeps rank 0's copy of non-tensor values only). Then every rank builds a fresh loader, loads the
saved state, and writes the batches that follow beside the uninterrupted run's.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, IterableDataset

from reproloader import ReproConfig, ReproLoader, get_context
from reproloader.distributed import gather_state


class Noisy(Dataset[float]):
    def __len__(self) -> int:
        return 48

    def __getitem__(self, i: int) -> float:
        return i + float(np.random.random()) + get_context().rng.random()


class Stream(IterableDataset[float]):
    def __iter__(self) -> Any:
        rank = dist.get_rank()
        for i in range(rank, 48, dist.get_world_size()):
            yield i + float(torch.rand(())) + get_context().rng.random()


def build(kind: str) -> ReproLoader[Any]:
    if kind == "worker-scope":
        return ReproLoader(
            Noisy(),
            batch_size=4,
            shuffle=True,
            num_workers=2,
            seed=11,
            config=ReproConfig(rng_scope="worker"),
            multiprocessing_context="fork",
        )
    return ReproLoader(Stream(), batch_size=4, num_workers=1, seed=11)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--kind", choices=["worker-scope", "iterable"], required=True)
    parser.add_argument("--checkpoint", choices=["torch", "dcp"], required=True)
    parser.add_argument("--stop", type=int, default=3)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()

    uninterrupted = [b.tolist() for b in build(args.kind)]

    loader = build(args.kind)
    it = iter(loader)
    for _ in range(args.stop):
        next(it)
    gathered = gather_state(loader)  # a collective: every rank calls it
    if args.checkpoint == "torch":
        if rank == 0:
            torch.save({"loader": gathered}, args.dir / "checkpoint.pt")
        dist.barrier()
        saved = torch.load(args.dir / "checkpoint.pt", weights_only=True)["loader"]
    else:
        import torch.distributed.checkpoint as dcp

        # DCP loads into a template of the saved structure, which a restarted job does
        # not know for a gathered state: store it as one opaque byte string (DCP keeps
        # rank 0's copy of such values).
        buffer = io.BytesIO()
        torch.save(gathered, buffer)
        buffer.seek(0)
        dcp.save({"loader": buffer}, checkpoint_id=str(args.dir / "dcp"))
        template: dict[str, Any] = {"loader": io.BytesIO()}
        dcp.load(template, checkpoint_id=str(args.dir / "dcp"))
        template["loader"].seek(0)
        saved = torch.load(template["loader"], weights_only=True)
    del it, loader

    resumed = build(args.kind)
    resumed.load_state_dict(saved)
    after = [b.tolist() for b in resumed]
    (args.dir / f"rank{rank}.json").write_text(
        json.dumps({"expected": uninterrupted[args.stop :], "resumed": after})
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
