"""Runs for tests/integration/test_ledger_runs.py: a SIGKILL mid-line and a 2-rank torchrun.

``python _ledger_run.py kill DIR``: writes DIR/ledger, checkpoints after step 3 and is
SIGKILLed while writing the line of step 6 (its first half is on disk).
``python _ledger_run.py resume DIR``: resumes from that checkpoint into the same ledger.
``torchrun --nproc-per-node=2 _ledger_run.py torchrun DIR``: two runs on each rank,
DIR/a and DIR/b; in b the sample rank 1 reads at step PERTURBED_STEP has other values.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from reproloader import ReproLoader
from reproloader.ledger import read_ledger

KILL_STEP = 6
CHECKPOINT_AFTER = 3  # steps 0-3 handed out
PERTURBED_STEP = 3


class Noisy(Dataset[torch.Tensor]):
    """Index plus a random draw; ``perturbed`` (an index) gets 1000 added."""

    def __init__(self, n: int = 32, perturbed: int | None = None) -> None:
        self.n = n
        self.perturbed = perturbed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        value = torch.full((2,), float(i)) + torch.rand(2)
        return value + 1000 if i == self.perturbed else value


def loader(ledger: Path, perturbed: int | None = None, **kwargs: Any) -> ReproLoader[Any]:
    return ReproLoader(
        Noisy(perturbed=perturbed), batch_size=4, shuffle=True, seed=5, ledger=ledger, **kwargs
    )


class KillMidLine:
    """The ledger's write, but the line of step KILL_STEP is cut in half by a SIGKILL."""

    def __init__(self, write: Any) -> None:
        self.write = write

    def __call__(self, data: bytes) -> int:
        if f'"step":{KILL_STEP},'.encode() in data:
            self.write(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return int(self.write(data))


def kill(directory: Path) -> None:
    run = loader(directory / "ledger")
    it = iter(run)
    run._ledger.write = KillMidLine(run._ledger.write)  # the test's knife
    for step, _ in enumerate(it):
        if step == CHECKPOINT_AFTER:
            torch.save(run.state_dict(), directory / "state.pt")


def resume(directory: Path) -> None:
    run = loader(directory / "ledger")
    run.load_state_dict(torch.load(directory / "state.pt", weights_only=True))
    for _ in range(2):
        list(run)


def distributed(directory: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    run_a = loader(directory / "a", shard=True)
    for _ in range(2):
        list(run_a)
    dist.barrier()
    # The index rank 1 read at PERTURBED_STEP in run a; run b changes that sample there.
    index = read_ledger(directory / "a")[1].by_step()[PERTURBED_STEP]["indices"][0]
    run_b = loader(directory / "b", perturbed=index if rank == 1 else None, shard=True)
    for _ in range(2):
        list(run_b)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    mode, where = sys.argv[1], Path(sys.argv[2])
    {"kill": kill, "resume": resume, "torchrun": distributed}[mode](where)
