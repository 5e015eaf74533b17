"""One Lightning run, recording what each training step saw.

    python _lightning_run.py MODE PHASE OUTDIR

MODE: single (one process) | ddp (2 processes, Lightning's injected DistributedSampler)
      | ddp-shard (2 processes, ReproLoader(shard=True))
PHASE: ref (3 epochs straight through) | stop_mid / resume_mid (checkpoint after step 7)
       | stop_end / resume_end (checkpoint at the end of epoch 0)
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings

import lightning.pytorch as pl
import torch
from torch.utils.data import Dataset

from reproloader import ReproLoader

warnings.filterwarnings("ignore")  # Lightning's advice about workers and logging
MODE, PHASE, OUT = sys.argv[1], sys.argv[2], sys.argv[3]


class Noisy(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), torch.rand(()).item()])


class Stop(Exception):
    pass


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def train_dataloader(self) -> ReproLoader[torch.Tensor]:
        loader = ReproLoader(
            Noisy(), batch_size=4, shuffle=True, num_workers=2, seed=7, shard=MODE == "ddp-shard"
        )
        # Lightning rebuilds this loader on every fit; its epoch comes from the loop.
        loader.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return loader

    def training_step(self, batch: torch.Tensor, index: int) -> torch.Tensor:
        loader = self.trainer.train_dataloader
        record = {
            "rank": self.global_rank,
            "epoch": self.current_epoch,
            "index": index,
            "loader_epoch": loader.epoch,
            "loader": type(loader).__name__,
            "sampler": type(loader.sampler).__name__,
            "ids": [int(x) for x in batch[:, 0].tolist()],
            "values": batch[:, 1].tolist(),
        }
        with open(os.path.join(OUT, f"{PHASE}_rank{self.global_rank}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        return self.layer(batch).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class StopAt(pl.Callback):
    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if PHASE == "stop_mid" and trainer.global_step == 7:
            trainer.save_checkpoint(os.path.join(OUT, "mid.ckpt"))
            raise Stop

    def on_train_epoch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if PHASE == "stop_end" and trainer.current_epoch == 0:
            trainer.save_checkpoint(os.path.join(OUT, "end.ckpt"))

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if PHASE == "stop_end" and trainer.current_epoch == 1:
            raise Stop


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1 if MODE == "single" else 2,
        strategy="auto" if MODE == "single" else "ddp",
        max_epochs=3,
        limit_val_batches=0,
        enable_checkpointing=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StopAt()],
    )
    checkpoint = {"resume_mid": "mid.ckpt", "resume_end": "end.ckpt"}.get(PHASE)
    with contextlib.suppress(Stop):
        trainer.fit(Model(), ckpt_path=os.path.join(OUT, checkpoint) if checkpoint else None)


if __name__ == "__main__":
    main()
