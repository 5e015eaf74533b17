"""Any batch on demand, and a restart that skips steps, everything else bitwise the same.

    python examples/inspect_and_skip.py [--step 11] [--skip 9 14]

A run trains for two epochs with two workers. Afterwards, in this process and without
workers, ``loader.batch_at`` makes the batch of a given global step again (random
augmentation included) and ``indices_at`` names its samples. Then the run restarts
from a checkpoint taken before the skipped steps, leaves them out with
``skip_steps``, and checks that every batch it gets is the original run's batch at
the same step.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.utils.data import Dataset

from reproloader import BatchUnavailableError, ReproLoader


class Augmented(Dataset[torch.Tensor]):
    """60 samples: [index, index + noise], the noise drawn from the ``rng`` argument."""

    def __len__(self) -> int:
        return 60

    def __getitem__(self, index: int, *, rng: np.random.Generator) -> torch.Tensor:
        return torch.tensor([float(index), index + rng.normal()])


def make_loader(num_workers: int = 0, rng_scope: str = "batch") -> ReproLoader[torch.Tensor]:
    return ReproLoader(
        Augmented(),
        batch_size=6,
        shuffle=True,
        num_workers=num_workers,
        seed=25,
        rng_scope=rng_scope,  # type: ignore[arg-type]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step", type=int, default=11, help="the global step to show")
    parser.add_argument(
        "--skip",
        type=int,
        nargs=2,
        default=[9, 14],
        metavar=("START", "STOP"),
        help="global steps START..STOP-1 to leave out of the restarted run",
    )
    args = parser.parse_args()

    # The original run: 10 steps an epoch, two epochs, two workers.
    run = make_loader(num_workers=2)
    per_epoch = len(run)
    steps = [batch for _ in range(2) for batch in run]
    print(f"original run: {len(steps)} steps, {per_epoch} an epoch, num_workers=2")

    # Any step on demand, in this process, without iterating to it.
    loader = make_loader()
    epoch, index = divmod(args.step, per_epoch)
    batch = loader.batch_at(epoch, index)
    print(
        f"step {args.step} is batch {index} of epoch {epoch}: samples {loader.indices_at(epoch, index)}"
    )
    print(f"batch_at gives bitwise the batch the run got: {torch.equal(batch, steps[args.step])}")

    # What it will not answer inexactly: worker scope's streams run across batches.
    try:
        make_loader(rng_scope="worker").batch_at(epoch, index)
    except BatchUnavailableError as error:
        print(f"worker scope is refused: {str(error).split(':')[1].strip().split(',')[0]}")

    # Restart from a checkpoint taken before the skipped steps, leaving them out.
    start, stop = args.skip
    original = make_loader()
    batches = iter(original)
    for _ in range(min(start, per_epoch) - 1):
        next(batches)
    checkpoint = original.state_dict()  # as a training loop would have saved it
    restarted = make_loader(num_workers=2)
    restarted.load_state_dict(checkpoint)
    restarted.skip_steps(start, stop)
    got = {}
    while restarted.epoch < 2:
        for batch in restarted:
            e, i = restarted.last_position  # type: ignore[misc]
            got[e * per_epoch + i] = batch
    resumed_at = min(start, per_epoch) - 1
    expected = [s for s in range(resumed_at, len(steps)) if not start <= s < stop]
    same = sorted(got) == expected and all(torch.equal(got[s], steps[s]) for s in got)
    print(f"restarted at step {resumed_at}, skipping steps {start}-{stop - 1}: {len(got)} steps")
    print(f"every other step is bitwise the original's: {same}")
    print(
        f"the skip list is in the checkpoint for the next resume: {restarted.state_dict()['skip']}"
    )


if __name__ == "__main__":
    main()
