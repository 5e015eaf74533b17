"""A pipeline with the most common data-loading bug, for ``reproloader audit`` to find.

    reproloader audit examples.audit_pipeline:train_loader   # 5 problems found, exit 1
    reproloader audit examples.audit_pipeline:fixed_loader   # no problem found, exit 0

Run them from the repository root (the audit imports the target from the current
directory). ``train_loader`` is a plain DataLoader over a dataset that makes its
numpy Generator in ``__init__``, so every worker copies it; ``fixed_loader`` is the
same dataset in a ReproLoader.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reproloader import ReproLoader


class Augmented(Dataset[torch.Tensor]):
    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)  # the bug: every worker copies this Generator

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i)]) + self.rng.normal()


def train_loader() -> DataLoader[torch.Tensor]:
    return DataLoader(Augmented(), batch_size=8, shuffle=True, num_workers=2)


def fixed_loader() -> ReproLoader[torch.Tensor]:
    return ReproLoader(Augmented(), batch_size=8, shuffle=True, num_workers=2, seed=0)


if __name__ == "__main__":
    print(__doc__)
