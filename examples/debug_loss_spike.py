"""Debug a loss spike: find its step in the run ledger, look at the batch, restart skipping it.

    python examples/debug_loss_spike.py [--dir runs/spike] [--num-workers 2]

A linear model trains for 2 epochs on 512 samples with random augmentation. One
sample (``POISONED``) has a corrupt label, so the loss spikes at the step that reads it.
The run writes a ledger and a checkpoint every 8 steps. Then the script does what you
would do by hand:

1. finds the spike in the loss log (loss > 10 x the median of the steps before);
2. reads the ledger: the spike step's epoch, batch and dataset indices;
3. makes that batch again with ``loader.batch_at`` (no iterating, no workers) and
   names the sample with the largest loss; the ledger says every step that read it;
4. restarts from the last checkpoint before the spike with ``skip_steps`` over those
   steps, continuing a copy of the ledger;
5. checks that every batch of the restarted run is bitwise the original's batch at
   the same step, the skipped ones aside (the two ledgers' digests).

It exits with status 1 if a check fails. The CLI does steps 2, 3 and 5 (the first
difference) too, on the same files (docs/debug-loss-spike.md):

    reproloader ledger DIR/original/ledger --steps 19 50
    reproloader batch examples.debug_loss_spike:make_loader --ledger DIR/original/ledger --step 19 --out spike.pt
    reproloader diff DIR/original/ledger DIR/restarted/ledger
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from reproloader import ReproLoader
from reproloader.checkpoint import load_checkpoint, save_checkpoint
from reproloader.ledger import read_ledger

POISONED = 300
"""The sample whose label is corrupt."""
EPOCHS = 2
EVERY = 8
"""Checkpoint every EVERY steps."""
SPIKE = 10.0
"""A step spikes when its loss is over SPIKE x the median loss of the steps before it."""

Sample = tuple[torch.Tensor, torch.Tensor]


class Regression(Dataset[Sample]):
    """512 samples (x, y) with y = x @ w + 0.5; x gets random noise as augmentation."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(512, 8, generator=generator)
        self.y = (self.x @ torch.linspace(-1, 1, 8) + 0.5).unsqueeze(1)
        self.y[POISONED] = 1000.0  # the poisoned sample: a corrupt label

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int, *, rng: np.random.Generator) -> Sample:
        noise = torch.from_numpy(rng.normal(0.0, 0.05, 8).astype(np.float32))
        return self.x[index] + noise, self.y[index]


def make_loader(num_workers: int = 0, ledger: Path | None = None) -> ReproLoader[Any]:
    """The run's loader; ``reproloader batch examples.debug_loss_spike:make_loader`` calls it."""
    return ReproLoader(
        Regression(),
        batch_size=16,
        shuffle=True,
        num_workers=num_workers,
        seed=25,
        ledger=ledger,
    )


def train(
    loader: ReproLoader[Any], model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path
) -> tuple[dict[int, float], dict[int, Sample]]:
    """Train until EPOCHS; the loss of each step, and each step's batch (kept for the checks)."""
    losses: dict[int, float] = {}
    seen: dict[int, Sample] = {}  # only so that this example can check batch_at; a run keeps none
    while loader.epoch < EPOCHS:
        for x, y in loader:
            epoch, index = loader.last_position  # type: ignore[misc]
            step = epoch * len(loader) + index  # the ledger's step, skipped steps counted
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses[step], seen[step] = loss.item(), (x, y)
            if (step + 1) % EVERY == 0:  # a checkpoint to restart from, at step + 1
                save_checkpoint(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "loader": loader.state_dict(),
                        "step": step + 1,
                    },
                    directory / f"step-{step + 1:04d}.pt",
                )
    return losses, seen


def fresh_model() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.05)


def spikes(losses: dict[int, float]) -> list[int]:
    """Steps whose loss is over SPIKE x the median of the steps before (after 8 steps)."""
    steps = sorted(losses)
    return [
        s
        for n, s in enumerate(steps)
        if n >= 8 and losses[s] > SPIKE * statistics.median(losses[t] for t in steps[:n])
    ]


def check(name: str, passed: bool, failures: list[str]) -> str:
    if not passed:
        failures.append(name)
    return "yes" if passed else "NO"


def look(
    ledger: Path, spike: int, seen: Sample, directory: Path, failures: list[str]
) -> tuple[int, int, list[int]]:
    """Steps 2 and 3; the culprit sample, the checkpoint to restart from, the steps to skip."""
    by_step = read_ledger(ledger)[0].by_step()  # rank 0's batches by global step
    record = by_step[spike]
    epoch, index, indices = record["epoch"], record["batch"], record["indices"]
    print(f"2. ledger: step {spike} is epoch {epoch}, batch {index}: samples {indices}")

    inspector = make_loader()  # no workers, no ledger: a batch is a function of its position
    x, y = inspector.batch_at(epoch, index)
    same = torch.equal(x, seen[0]) and torch.equal(y, seen[1])
    same = same and inspector.indices_at(epoch, index) == indices
    print(
        f"3. loader.batch_at({epoch}, {index}) is bitwise the batch training saw: "
        + check("batch_at", same, failures)
    )
    before = spike // EVERY * EVERY  # the last checkpoint before the spike
    probe, _ = fresh_model()
    probe.load_state_dict(load_checkpoint(directory / f"step-{before:04d}.pt")["model"])
    with torch.no_grad():
        per_sample = ((probe(x) - y) ** 2).squeeze(1)
    worst = int(per_sample.argmax())
    culprit = indices[worst]
    others = torch.cat([per_sample[:worst], per_sample[worst + 1 :]])
    print(
        f"   its loss per sample (step-{before} weights): sample {culprit} "
        f"{per_sample[worst]:,.0f}, the {len(others)} others at most {others.max():.2f}; "
        f"label {y[worst].item():g}"
    )
    steps = [s for s, r in by_step.items() if culprit in r["indices"]]
    print(f"   ledger: sample {culprit} was read at steps {steps}")
    return culprit, before, steps


def same_batches(a: Path, b: Path, expected: list[int]) -> bool:
    """Whether ledger ``b`` records the steps ``expected``, each with ``a``'s digests."""
    first, second = read_ledger(a)[0].by_step(), read_ledger(b)[0].by_step()
    return sorted(second) == expected and all(
        first[s]["indices_digest"] == second[s]["indices_digest"]
        and first[s]["content_digest"] == second[s]["content_digest"]
        for s in expected
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0] if __doc__ else None,
        epilog="exit status: 0 every check passed; 1 a check failed",
    )
    parser.add_argument(
        "--dir", type=Path, help="a new or empty directory for the runs (default: a temporary one)"
    )
    parser.add_argument("--num-workers", type=int, default=0, help="the training runs' workers")
    args = parser.parse_args(argv)
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        parser.error(f"--dir {args.dir} is not empty: give a new or empty directory")
    runs = args.dir or Path(tempfile.mkdtemp(prefix="loss-spike-"))
    original, restarted = runs / "original", runs / "restarted"
    original.mkdir(parents=True)
    restarted.mkdir()
    failures: list[str] = []

    # 1. The run: a ledger, and a checkpoint every EVERY steps.
    loader = make_loader(args.num_workers, ledger=original / "ledger")
    model, optimizer = fresh_model()
    losses, seen = train(loader, model, optimizer, original)
    print(
        f"1. trained {len(losses)} steps ({EPOCHS} epochs of {len(loader)}, "
        f"num_workers={args.num_workers}): median loss {statistics.median(losses.values()):.3f}, "
        f"last {losses[max(losses)]:.3f}"
    )
    bad = spikes(losses)
    if not bad:
        print("FAILED: no loss spike found")
        return 1
    spike = bad[0]
    print(f"   loss spikes (over {SPIKE:g} x the median before): steps {bad}")
    print(f"   step {spike}: loss {losses[spike]:,.0f}")

    # 2, 3. What the ledger says of the step; its batch again; the sample that makes the loss.
    culprit, before, steps = look(original / "ledger", spike, seen[spike], original, failures)
    print(
        f"   it is the sample this example poisoned: {check('culprit', culprit == POISONED, failures)}"
    )

    # 4. Restart from the last checkpoint before the spike, skipping every step that read it.
    checkpoint = load_checkpoint(original / f"step-{before:04d}.pt")
    # The restart continues a copy of the run's ledger (as it would continue the ledger
    # itself in the run's directory): its record reads as one run, the original kept.
    shutil.copytree(original / "ledger", restarted / "ledger")
    loader = make_loader(args.num_workers, ledger=restarted / "ledger")
    loader.load_state_dict(checkpoint["loader"])
    for step in steps:
        loader.skip_steps(step)
    model, optimizer = fresh_model()
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    again, _ = train(loader, model, optimizer, restarted)
    calm = not spikes({**{s: losses[s] for s in range(before)}, **again})
    print(
        f"4. restarted at step {before} skipping steps {steps}: {len(again)} steps, "
        f"max loss {max(again.values()):.3f}, last {again[max(again)]:.3f}; no spike: "
        + check("no spike", calm, failures)
    )

    # 5. Every other batch is the original's: the two ledgers' digests, step by step.
    expected = [s for s in losses if s not in steps]
    equal = same_batches(original / "ledger", restarted / "ledger", expected)
    print(
        f"5. the restarted run's {len(again)} batches (steps {before}-{len(losses) - 1} but "
        f"{steps}) are bitwise the original's: " + check("bitwise", equal, failures)
    )
    print(f"   its skip list, in its checkpoints for a later resume: {loader.state_dict()['skip']}")
    print(f"files: {runs}")
    if failures:
        print(f"FAILED: {', '.join(failures)}")
        return 1
    print("every check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
