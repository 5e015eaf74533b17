"""timm: ``create_transform(auto_augment=..., re_prob=...)`` and ``Mixup`` in the collate_fn.

Both draw from the process-wide RNGs (python ``random``, numpy's and torch's), which
ReproLoader reseeds per batch, in the workers and in the main process alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from reproloader import ReproLoader
from tests.frameworks._pipelines import check_exact, require

timm_data = require("timm.data")
Image = require("PIL.Image")


class Images(Dataset[Any]):
    def __init__(self, n: int = 16) -> None:
        pixels = np.random.default_rng(0).integers(0, 256, (n, 40, 40, 3), dtype=np.uint8)
        self.images = [Image.fromarray(a) for a in pixels]
        self.transform = timm_data.create_transform(
            32, is_training=True, auto_augment="rand-m9-mstd0.5", re_prob=0.25
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), i % 4


class MixupCollate:
    """Stacks a batch and applies timm's Mixup/CutMix to it."""

    def __init__(self) -> None:
        self.mixup = timm_data.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, num_classes=4)

    def __call__(self, batch: list[tuple[torch.Tensor, int]]) -> Any:
        x = torch.stack([image for image, _ in batch])
        y = torch.tensor([label for _, label in batch])
        return self.mixup(x, y)


def make(**kwargs: Any) -> ReproLoader[Any]:
    return ReproLoader(
        Images(), batch_size=4, shuffle=True, seed=0, collate_fn=MixupCollate(), **kwargs
    )


def test_rand_augment_random_erasing_and_mixup_are_exact() -> None:
    check_exact(make)
