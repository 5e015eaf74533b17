"""User code that must type-check against reproloader's public signatures (mypy only)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import reproloader
from reproloader import ReproConfig, ReproLoader, SeededRandomSampler, WorkerContext, get_context
from reproloader.ledger import read_ledger


class Squares(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        noise = 0.0 if rng is None else float(rng.normal())
        return torch.tensor(i * i + noise)


def build() -> DataLoader[torch.Tensor]:
    config = ReproConfig(seed=1, rng_scope="sample", start_method="spawn")
    loader: ReproLoader[torch.Tensor] = ReproLoader(
        Squares(), batch_size=4, shuffle=True, num_workers=2, config=config
    )
    loader.set_epoch(3)
    epoch: int = loader.epoch
    seed: int = loader.seed
    del epoch, seed
    return loader


def inside_a_dataset() -> float:
    ctx: WorkerContext = get_context()
    return float(ctx.rng.random()) + ctx.epoch + ctx.rank + ctx.worker_id


sampler = SeededRandomSampler(range(4), seed=0, epoch=1)
order: list[int] = list(sampler)
version: str = reproloader.__version__


def look_into_a_run(loader: ReproLoader[torch.Tensor]) -> None:
    batch = loader.batch_at(1, 7, rank=0, world_size=2)
    indices = loader.indices_at(1, 7, replay=True)
    loader.skip_batches(2, 10, 20)
    loader.skip_steps(48_000, 48_200)
    skipped: list[tuple[int, int, int]] = loader.skipped
    where: tuple[int, int] | None = loader.last_position
    try:
        loader.batch_at(0, 0)
    except reproloader.BatchUnavailableError as error:
        message: str = str(error)
        del message
    del batch, indices, skipped, where


def record_and_compare_runs(directory: str) -> bool:
    recorded: ReproLoader[torch.Tensor] = ReproLoader(
        Squares(), batch_size=4, ledger=reproloader.Ledger(directory, content="full")
    )
    by_path: ReproLoader[torch.Tensor] = ReproLoader(Squares(), batch_size=4, ledger=directory)
    ledger: reproloader.Ledger | None = recorded.ledger
    diff: reproloader.LedgerDiff = reproloader.diff_ledgers(directory, f"{directory}-restarted")
    if diff.first is not None:
        print(diff.first.describe(), diff.first.step_a, diff.first.gap)
    causes: list[str] = [change.cause for change in diff.changes]
    by_step: dict[int, dict[str, object]] = read_ledger(directory)[0].by_step()
    del by_path, ledger, causes, by_step
    return diff.same
