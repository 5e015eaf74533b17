"""Why a plain DataLoader is not reproducible, and what changing one class name does.

    python examples/quickstart.py

Each check runs the same code with torch's DataLoader and with ReproLoader. The
datasets are the kind found in real projects: a Generator made in ``__init__``,
augmentation drawing from numpy's and torch's global RNGs, and the popular
``worker_init_fn`` that reseeds numpy per worker.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reproloader import ReproLoader

# This demo runs 3 workers on purpose, also on 2-core machines.
warnings.filterwarnings("ignore", message="This DataLoader will create")


class InitGenerator(Dataset[float]):
    """Makes its Generator in __init__: every worker gets a copy of the same one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> float:
        return float(self.rng.random())


class GlobalAugment(Dataset[float]):
    """Augments with the global RNGs, as most transform libraries do."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> float:
        return i + float(np.random.random()) + float(torch.rand(())) + random.random()


class NumpyAugment(GlobalAugment):
    """Augments with numpy's global RNG only."""

    def __getitem__(self, i: int) -> float:
        return i + float(np.random.random())


def popular_worker_init_fn(worker_id: int) -> None:
    """Copied from countless blog posts: reseeds numpy from numpy's own state."""
    np.random.seed(np.random.get_state()[1][0] + worker_id)


def values(loader: Any) -> list[float]:
    return [float(v) for batch in loader for v in batch]


def checks(make: Any) -> dict[str, bool]:
    """True where the loader behaves as a reproducible pipeline should."""
    out = {}

    v = values(make(InitGenerator(64), batch_size=8, num_workers=2))
    out["workers draw distinct values"] = len(set(v)) == len(v)

    loader = make(InitGenerator(16), batch_size=8, num_workers=2)
    out["epochs get new values"] = values(loader) != values(loader)

    loader = make(
        NumpyAugment(16), batch_size=4, num_workers=2, worker_init_fn=popular_worker_init_fn
    )
    out["popular worker_init_fn: epochs differ"] = values(loader) != values(loader)

    runs = []
    for num_workers in (0, 1, 2, 3):
        torch.manual_seed(0)  # the usual recipe for a repeatable run
        runs.append(values(make(GlobalAugment(16), batch_size=4, num_workers=num_workers)))
    out["same values with 0/1/2/3 workers"] = all(r == runs[0] for r in runs)

    torch.manual_seed(0)
    loader = make(GlobalAugment(16), batch_size=4, shuffle=True, num_workers=2)
    before = torch.get_rng_state()
    values(loader)
    out["training loop's RNG left alone"] = torch.equal(torch.get_rng_state(), before)
    return out


def main() -> None:
    plain = checks(DataLoader)
    repro = checks(ReproLoader)
    width = max(map(len, plain))
    print(f"{'check':<{width}}  DataLoader  ReproLoader")
    for name in plain:
        print(
            f"{name:<{width}}  {'yes' if plain[name] else 'NO':^10}  {'yes' if repro[name] else 'NO':^11}"
        )
    assert all(repro.values()), "ReproLoader failed a check"
    print("\nReproLoader: every check passes. Same import, same arguments, one class name.")


if __name__ == "__main__":
    main()
