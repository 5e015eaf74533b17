"""Cost of the search for RNG objects, and of reseeding what it finds.

The search runs once per epoch in each producing process; reseeding runs before every
unit. Pipelines: an albumentations-like ``Compose`` of 25 ``OneOf`` blocks of four
transforms, each transform holding a numpy Generator, a ``random.Random`` and a few
parameter containers (the real albumentations is measured too where it imports); a
dataset holding a list of 10**6 file names and a list of 10**6 ints. Best and median
of ``--reps`` calls.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from _report import save

from reproloader._runtime.discovery import discover
from reproloader._runtime.rngs import AttributeRngs


class Transform:
    def __init__(self, seed: int) -> None:
        self.p = 0.5
        self.params = {"limit": (0.1, 0.2), "mode": "reflect"}
        self.targets = {"image": self.apply}
        self.random_generator = np.random.default_rng(seed)
        self.py_random = random.Random(seed)

    def apply(self, x: Any) -> Any:
        return x


class Group(Transform):
    def __init__(self, seed: int, transforms: list[Any]) -> None:
        super().__init__(seed)
        self.transforms = transforms


def synthetic() -> Any:
    blocks = [Group(i, [Transform(4 * i + j) for j in range(4)]) for i in range(25)]
    return Group(1000, blocks)


def albumentations_pipeline() -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check online
    try:
        import albumentations as A
    except Exception:  # noqa: BLE001 - optional: measured where it imports
        return None
    blocks = [
        A.OneOf([A.RandomBrightnessContrast(), A.GaussNoise(), A.Blur(), A.MotionBlur()])
        for _ in range(25)
    ]
    return A.Compose(blocks, seed=1)


class Holder:
    def __init__(self, transform: Any) -> None:
        self.transform = transform
        self.paths = [f"img_{i:07d}.jpg" for i in range(10**6)]
        self.labels = list(range(10**6))


def timed(fn: Any, reps: int) -> tuple[float, float]:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    cases = {"synthetic OneOf x25": synthetic(), "albumentations OneOf x25": None}
    cases["albumentations OneOf x25"] = albumentations_pipeline()
    rows = []
    for name, transform in cases.items():
        if transform is None:
            continue
        dataset = Holder(transform)
        found = discover({"dataset": dataset})
        search = timed(lambda d=dataset: discover({"dataset": d}), args.reps)
        rngs = AttributeRngs(found.rngs)
        words = np.random.default_rng(0).integers(0, 2**63, rngs.n_words, dtype=np.uint64)
        reseed = timed(lambda r=rngs, w=words: r.reseed(w), args.reps * 10)
        rows.append(
            {
                "pipeline": name + ", 2 lists of 10**6 items",
                "objects read": found.visited,
                "rngs": len(found.rngs),
                "search best ms": round(search[0] * 1e3, 2),
                "search median ms": round(search[1] * 1e3, 2),
                "reseed per unit ms": round(reseed[1] * 1e3, 3),
            }
        )
    header = list(rows[0])
    table = "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows),
        ]
    )
    save(args.out, "discovery", rows, table + "\n")


if __name__ == "__main__":
    main()
