"""torchvision transforms.v2 on FakeData: exact as they are.

The v2 transforms draw from torch's global RNG, which ReproLoader reseeds per batch.
PyPI's torchvision wheels load only beside the torch release they were built for;
the tests skip elsewhere.
"""

from __future__ import annotations

from typing import Any

import torch

from reproloader import ReproLoader
from tests.frameworks._pipelines import check_exact, require

torchvision = require("torchvision")
v2 = require("torchvision.transforms.v2")


def make(**kwargs: Any) -> ReproLoader[Any]:
    transform = v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(32, antialias=True),
            v2.ColorJitter(0.4, 0.4, 0.4),
            v2.RandAugment(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    dataset = torchvision.datasets.FakeData(
        size=16, image_size=(3, 40, 40), num_classes=4, transform=transform
    )
    return ReproLoader(dataset, batch_size=4, shuffle=True, seed=0, **kwargs)


def test_transforms_v2_on_fake_data_are_exact() -> None:
    check_exact(make)
