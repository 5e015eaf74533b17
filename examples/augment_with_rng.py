"""Random augmentation through the ``rng`` argument: visible in the signature, reproducible.

    python examples/augment_with_rng.py

A dataset whose ``__getitem__`` takes ``rng`` gets a ``numpy.random.Generator`` for the
unit being produced. In sample scope that is a stream of the sample's own, derived
from (seed, epoch, index): the same image gets the same crop and flip whatever the
batch size, the number of workers or the number of GPUs, and a new one every epoch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from reproloader import ReproLoader


class RandomCrops(Dataset[torch.Tensor]):
    """16 tiny "images" (1x8x8); each item is a random 4x4 crop, flipped half the time."""

    def __init__(self) -> None:
        self.images = torch.arange(16 * 64, dtype=torch.float32).reshape(16, 1, 8, 8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int, *, rng: np.random.Generator) -> torch.Tensor:
        top, left = rng.integers(0, 5, size=2)
        crop = self.images[index, :, top : top + 4, left : left + 4]
        return crop.flip(-1) if rng.random() < 0.5 else crop


def crops_by_index(batch_size: int, num_workers: int, epoch: int) -> dict[int, torch.Tensor]:
    loader = ReproLoader(
        RandomCrops(),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        seed=2024,
        config={"rng_scope": "sample"},
    )
    loader.set_epoch(epoch)
    out = {}
    for batch in loader:
        for crop in batch:
            index = int(crop.min().item()) // 64  # the image a crop came from
            out[index] = crop
    return out


def main() -> None:
    reference = crops_by_index(batch_size=4, num_workers=0, epoch=0)
    for batch_size, num_workers in [(2, 2), (16, 1), (5, 0)]:
        other = crops_by_index(batch_size, num_workers, epoch=0)
        same = all(torch.equal(reference[i], other[i]) for i in reference)
        print(
            f"batch_size={batch_size:>2} num_workers={num_workers}: same crops as batch 4 in-process: {same}"
        )
        assert same
    next_epoch = crops_by_index(batch_size=4, num_workers=0, epoch=1)
    changed = sum(not torch.equal(reference[i], next_epoch[i]) for i in reference)
    print(f"epoch 1: {changed} of {len(reference)} images got another crop or flip")
    assert changed > 0


if __name__ == "__main__":
    main()
