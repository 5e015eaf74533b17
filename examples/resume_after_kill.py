"""Train, get killed mid-epoch, resume: the final weights equal an uninterrupted run's.

    python examples/resume_after_kill.py --dir /tmp/a                    # runs straight through
    python examples/resume_after_kill.py --dir /tmp/b --kill-after 23    # SIGKILLs itself at step 23
    python examples/resume_after_kill.py --dir /tmp/b                    # resumes from its checkpoint
    python examples/resume_after_kill.py --compare /tmp/a /tmp/b         # bitwise equal?

The model has dropout (the training loop's own randomness) and the data has random
augmentation drawn in 2 worker processes from torch's and numpy's global RNGs. Every
5 steps the run writes an atomic checkpoint: model, optimizer, the loader's state and
the training loop's RNG states.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from reproloader import ReproLoader
from reproloader.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


class NoisyRegression(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """y = a linear function of x; each sample gets random noise as augmentation."""

    def __init__(self, n: int = 100) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 8, generator=generator)
        self.y = self.x @ torch.linspace(-1, 1, 8) + 0.5

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        scale = float(np.random.uniform(0.0, 0.1))  # numpy's global RNG, in a worker
        return self.x[i] + scale * torch.randn(8), self.y[i].reshape(1)


def train(directory: Path, steps: int, every: int, kill_after: int | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint = directory / "checkpoint.pt"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = ReproLoader(NoisyRegression(), batch_size=8, shuffle=True, num_workers=2, seed=1234)
    step = 0
    if checkpoint.exists():
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        loader.load_state_dict(state["loader"])
        restore_rng_state(state["rng"])
        step = state["step"]
        print(f"resumed at step {step}, epoch {loader.epoch}", flush=True)
    if kill_after is not None:
        print(
            f"--kill-after {kill_after}: this run SIGKILLs itself after step {kill_after}, "
            "like a crash; the shell then reports 'Killed', which is the point. Run the "
            "same command without --kill-after to resume from the last checkpoint.",
            flush=True,
        )

    while step < steps:
        for x, y in loader:
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            print(f"step {step} epoch {loader.epoch} loss {loss.item():.6f}", flush=True)
            if step % every == 0:
                save_checkpoint(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(),
                        "rng": capture_rng_state(),
                        "step": step,
                    },
                    checkpoint,
                )
            if step == kill_after:
                print(f"killing this process now, after step {step}, as announced", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: a real crash
            if step == steps:
                break
    torch.save(model.state_dict(), directory / "final.pt")
    print(f"done after {step} steps; final weights in {directory / 'final.pt'}", flush=True)


def compare(a: Path, b: Path) -> bool:
    first = torch.load(a / "final.pt", weights_only=True)
    second = torch.load(b / "final.pt", weights_only=True)
    equal = first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    print("final weights bitwise equal" if equal else "final weights DIFFER")
    return equal


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, help="where checkpoints and final weights go")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--every", type=int, default=5, help="checkpoint every N steps")
    parser.add_argument(
        "--kill-after", type=int, default=None, help="SIGKILL this process after step N"
    )
    parser.add_argument("--compare", type=Path, nargs=2, metavar="DIR")
    args = parser.parse_args(argv)
    if args.compare:
        return 0 if compare(*args.compare) else 1
    if args.dir is None:
        parser.error("--dir is required unless --compare is given")
    train(args.dir, args.steps, args.every, args.kill_after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
