"""albumentations 2.x: a Compose with OneOf, SomeOf and Sequential, seeded or not.

Each transform keeps its own numpy Generator and random.Random, nested up to six
attributes below the dataset; ReproLoader finds and reseeds every one per batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from reproloader import ReproLoader
from tests.frameworks._pipelines import check_exact, require, run

A = require("albumentations")


def pipeline(seed: int | None) -> Any:
    return A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.OneOf(
                [A.RandomBrightnessContrast(p=1), A.GaussNoise(p=1), A.Blur(p=1)],
                p=0.9,
            ),
            A.SomeOf([A.Rotate(limit=30, p=1), A.ToGray(p=1), A.CoarseDropout(p=1)], n=2),
            A.Sequential([A.Affine(scale=(0.9, 1.1), p=0.5), A.RandomCrop(16, 16)], p=1),
        ],
        seed=seed,
    )


class Images(Dataset[torch.Tensor]):
    def __init__(self, seed: int | None = 137, n: int = 16) -> None:
        self.images = np.random.default_rng(0).integers(0, 256, (n, 24, 24, 3), dtype=np.uint8)
        self.transform = pipeline(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.transform(image=self.images[i])["image"]).float()


def make(**kwargs: Any) -> ReproLoader[torch.Tensor]:
    return ReproLoader(Images(), batch_size=4, shuffle=True, seed=0, **kwargs)


def make_unseeded(**kwargs: Any) -> ReproLoader[torch.Tensor]:
    return ReproLoader(Images(seed=None), batch_size=4, seed=0, **kwargs)


def test_compose_with_one_of_is_exact() -> None:
    check_exact(make)


def test_the_compose_seed_does_not_matter_the_loader_seed_does() -> None:
    # Every generator is reseeded from the loader's tree, so Compose(seed=None), whose
    # generators start from the operating system's entropy, repeats all the same.
    assert run(make_unseeded, epochs=1) == run(make_unseeded, epochs=1)
    assert run(make_unseeded, epochs=1, num_workers=2) == run(make_unseeded, epochs=1)
