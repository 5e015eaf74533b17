"""A Lightning Trainer with a ReproLoader, resumable mid-epoch through Lightning's checkpoints.

Needs Lightning: ``pip install 'reproloader[lightning]'`` (from a clone:
``pip install -e '.[lightning]'``).

    python examples/lightning_train.py --dir /tmp/pl                    # 40 steps (4 epochs)
    python examples/lightning_train.py --dir /tmp/pl2 --max-steps 17    # stops mid-epoch
    python examples/lightning_train.py --dir /tmp/pl2 --resume          # continues to 40
    python examples/lightning_train.py --compare /tmp/pl /tmp/pl2       # bitwise equal weights?
    python examples/lightning_train.py --dir /tmp/pl3 --devices 2       # DDP on 2 CPU processes

Two lines make Lightning and ReproLoader work together (see docs/integrations.md):
the loader shards itself (``shard=True``, so Lightning does not inject a sampler),
and ``train_dataloader`` sets the loader's epoch from the fit loop, because Lightning
builds a new loader for every fit and restores its state only mid-epoch.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from reproloader import ReproConfig, ReproLoader, seed_everything
from reproloader.checkpoint import capture_rng_state, restore_rng_state

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
except ModuleNotFoundError as missing:
    if missing.name is None or missing.name.partition(".")[0] != "lightning":
        raise
    sys.exit(
        "lightning_train.py needs Lightning, which is not installed: "
        "pip install 'reproloader[lightning]' (from a clone: pip install -e '.[lightning]')"
    )

warnings.filterwarnings("ignore", ".*does not have many workers.*")
CONFIG = ReproConfig(seed=2024)
STEPS = 40  # 4 epochs of 10 steps


class NoisyRegression(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, n: int = 80) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=generator)
        self.y = self.x @ torch.linspace(-1, 1, 8) + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + 0.05 * torch.randn(8), self.y[i].reshape(1)  # augmentation


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1))

    def train_dataloader(self) -> ReproLoader[Any]:
        loader = ReproLoader(
            NoisyRegression(), batch_size=8, shuffle=True, shard=True, num_workers=2, config=CONFIG
        )
        # The epoch Lightning is at, also after resuming from an end-of-epoch checkpoint.
        loader.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return loader

    def training_step(self, batch: Any, index: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    # The training loop's own RNG (dropout) goes into the checkpoint too.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng"] = capture_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_rng_state(checkpoint["rng"])


def train(directory: Path, max_steps: int, devices: int, resume: bool) -> None:
    seed_everything(CONFIG).restore()  # seed the process; keep torch's default kernels
    model = Regressor()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=directory, every_n_train_steps=5, save_last=True)],
    )
    trainer.fit(model, ckpt_path=str(directory / "last.ckpt") if resume else None)
    if trainer.global_rank == 0:
        torch.save(model.state_dict(), directory / "final.pt")
        print(
            f"trained {trainer.global_step} steps{' after resuming' if resume else ''}, "
            f"epoch {trainer.current_epoch}; checkpoints in {directory}, final weights in "
            f"{directory / 'final.pt'}"
        )
        if max_steps < STEPS and not resume:
            print(f"continue with: python examples/lightning_train.py --dir {directory} --resume")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--max-steps", type=int, default=STEPS)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue from DIR/last.ckpt")
    parser.add_argument("--compare", type=Path, nargs=2, metavar="DIR")
    args = parser.parse_args(argv)
    if args.compare:
        a, b = (torch.load(d / "final.pt", weights_only=True) for d in args.compare)
        equal = all(torch.equal(a[k], b[k]) for k in a)
        print("final weights bitwise equal" if equal else "final weights DIFFER")
        return 0 if equal else 1
    if args.dir is None:
        parser.error("--dir is required unless --compare is given")
    train(args.dir, args.max_steps, args.devices, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
