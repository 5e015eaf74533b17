"""Hugging Face accelerate with a ReproLoader, resumable mid-epoch through save_state/load_state.

Needs accelerate: ``pip install 'reproloader[accelerate]'`` (from a clone:
``pip install -e '.[accelerate]'``).

    python examples/accelerate_train.py --dir /tmp/acc                   # 30 steps
    python examples/accelerate_train.py --dir /tmp/acc2 --stop-after 13  # save_state, stop
    python examples/accelerate_train.py --dir /tmp/acc2 --resume         # load_state, continue
    python examples/accelerate_train.py --compare /tmp/acc /tmp/acc2     # bitwise equal weights?
    torchrun --standalone --nproc-per-node 2 examples/accelerate_train.py --dir /tmp/acc3

``accelerator.prepare()`` keeps a ReproLoader as it is (a plain DataLoader it would
rebuild), and ``save_state``/``load_state`` carry its position. It shards itself
(``shard=True``), and batches move with ``.to(accelerator.device)``.
"""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from reproloader import ReproLoader
from reproloader.checkpoint import capture_rng_state, restore_rng_state

try:
    from accelerate import Accelerator
except ModuleNotFoundError as missing:
    if missing.name is None or missing.name.partition(".")[0] != "accelerate":
        raise
    sys.exit(
        "accelerate_train.py needs accelerate, which is not installed: "
        "pip install 'reproloader[accelerate]' (from a clone: pip install -e '.[accelerate]')"
    )


class NoisyRegression(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, n: int = 80) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=generator)
        self.y = self.x @ torch.linspace(-1, 1, 8) + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + 0.05 * torch.randn(8), self.y[i].reshape(1)  # augmentation


class Progress:
    """The loop's step count and RNG state, saved by accelerate beside the loader."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "rng": capture_rng_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        restore_rng_state(state["rng"])


def train(directory: Path, steps: int, stop_after: int | None, resume: bool) -> None:
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    try:
        run(accelerator, directory, steps, stop_after, resume)
    finally:
        # DDP holds the process group in reference cycles; left to interpreter shutdown,
        # gloo's threads can abort the process as it exits. Free them, end the group.
        gc.collect()
        accelerator.end_training()


def run(
    accelerator: Accelerator, directory: Path, steps: int, stop_after: int | None, resume: bool
) -> None:
    torch.manual_seed(0)  # the same initial weights on every process
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = ReproLoader(
        NoisyRegression(), batch_size=8, shuffle=True, shard=True, num_workers=2, seed=2024
    )
    model, optimizer, loader = accelerator.prepare(
        model, optimizer, loader
    )  # the loader stays itself
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if resume:
        accelerator.load_state(str(directory / "state"))
        accelerator.print(f"resumed at step {progress.step}, epoch {loader.epoch}")
    while progress.step < steps:
        for x, y in loader:
            loss = nn.functional.mse_loss(model(x.to(accelerator.device)), y.to(accelerator.device))
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            progress.step += 1
            if progress.step in (stop_after, steps):
                break
        if progress.step == stop_after:
            accelerator.save_state(str(directory / "state"))
            accelerator.print(
                f"stopped after step {progress.step}, epoch {loader.epoch}, as asked "
                f"(--stop-after); state saved in {directory / 'state'}\n"
                f"continue with: python examples/accelerate_train.py --dir {directory} --resume"
            )
            return
    if accelerator.is_main_process:
        weights = accelerator.unwrap_model(model).state_dict()
        torch.save({k: v.cpu() for k, v in weights.items()}, directory / "final.pt")
        print(
            f"trained {progress.step} steps on {accelerator.num_processes} process(es), "
            f"epoch {loader.epoch}; final weights in {directory / 'final.pt'}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--stop-after", type=int, help="save_state after step N and stop")
    parser.add_argument("--resume", action="store_true", help="load_state from DIR/state first")
    parser.add_argument("--compare", type=Path, nargs=2, metavar="DIR")
    args = parser.parse_args(argv)
    if args.compare:
        a, b = (torch.load(d / "final.pt", weights_only=True) for d in args.compare)
        equal = all(torch.equal(a[k], b[k]) for k in a)
        print("final weights bitwise equal" if equal else "final weights DIFFER")
        return 0 if equal else 1
    if args.dir is None:
        parser.error("--dir is required unless --compare is given")
    args.dir.mkdir(parents=True, exist_ok=True)
    train(args.dir, args.steps, args.stop_after, args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
