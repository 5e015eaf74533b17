"""Write the compatibility fixtures: states and checkpoints this version of reproloader saves.

Run from the repository root, with the reproloader under test importable::

    PYTHONPATH=. python tests/compat/make_fixtures.py

It writes ``tests/compat/v<VERSION>/`` (``VERSION`` is ``reproloader.state.VERSION``,
the state format this version writes) and a ``manifest.json`` there that says, for
each file, which builder below makes the loader it came from and after how many
batches (counted from the first batch of epoch 0) the state was taken.
``tests/compat/test_compat.py`` loads every ``v*/`` directory, forever: committed
fixtures are never regenerated or edited, and builders that a manifest names are
never changed (add new ones instead). A release that writes a new state or checkpoint
format runs this script once more, which adds a new ``v<N>/`` directory.

The loaders do not shuffle, so the fixtures stay valid across changes of the shuffle
order (a ``stream`` change, with a new state version). The random values of the
batches are not stored either: the test compares a resumed loader with an
uninterrupted run of the same version, at the same position.
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from reproloader import ReproLoader, get_context
from reproloader.checkpoint import capture_rng_state, save_checkpoint
from reproloader.state import VERSION

HERE = Path(__file__).resolve().parent


def draws() -> list[float]:
    """One draw from every RNG a dataset may use: the context's, python's, numpy's, torch's."""
    return [
        float(get_context().rng.random()),
        random.random(),
        float(np.random.random()),
        float(torch.rand(())),
    ]


class Augmented(Dataset[torch.Tensor]):
    """Item ``i``: ``[i, four random draws]``, as a random augmentation would draw."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), *draws()], dtype=torch.float64)


class Stream(IterableDataset[torch.Tensor]):
    """Samples ``0..19``, split over the workers, each with four random draws."""

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(start, 20, step):
            yield torch.tensor([float(i), *draws()], dtype=torch.float64)


def batch_scope_map_style() -> ReproLoader[Any]:
    return ReproLoader(Augmented(), batch_size=3, shuffle=False, seed=11)


def worker_scope_two_workers() -> ReproLoader[Any]:
    return ReproLoader(
        Augmented(),
        batch_size=2,
        shuffle=False,
        num_workers=2,
        seed=12,
        config={"rng_scope": "worker"},
        multiprocessing_context="fork" if sys.platform.startswith("linux") else None,
    )


def iterable_two_workers() -> ReproLoader[Any]:
    return ReproLoader(
        Stream(),
        batch_size=2,
        num_workers=2,
        seed=13,
        multiprocessing_context="fork" if sys.platform.startswith("linux") else None,
    )


BUILDERS: dict[str, Callable[[], ReproLoader[Any]]] = {
    "batch_scope_map_style": batch_scope_map_style,
    "worker_scope_two_workers": worker_scope_two_workers,
    "iterable_two_workers": iterable_two_workers,
}


def model_state() -> dict[str, torch.Tensor]:
    """The "model" in the checkpoint fixtures: fixed values, no RNG involved."""
    return {
        "weight": torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7,
        "bias": torch.tensor([0.5, -1.0, 2.0]),
    }


def state_after(builder: str, batches: int) -> dict[str, Any]:
    """The state of a fresh ``BUILDERS[builder]()`` loader after ``batches`` batches."""
    loader = BUILDERS[builder]()
    taken = 0
    while True:
        for _ in loader:
            taken += 1
            if taken == batches:
                return loader.state_dict()


def main() -> None:
    directory = HERE / f"v{VERSION}"
    if directory.exists():
        sys.exit(f"{directory} exists; committed fixtures are never regenerated")
    directory.mkdir()
    manifest: dict[str, dict[str, Any]] = {}
    # Mid-epoch in the second epoch (7 batches per epoch), in the first for the others.
    for name, builder, batches in [
        ("state_batch_scope_map_style.pt", "batch_scope_map_style", 10),
        ("state_worker_scope_two_workers.pt", "worker_scope_two_workers", 5),
        ("state_iterable_two_workers.pt", "iterable_two_workers", 3),
    ]:
        torch.save(state_after(builder, batches), directory / name)
        manifest[name] = {"kind": "state", "builder": builder, "batches": batches}
    checkpoint = {
        "model": model_state(),
        "loader": state_after("batch_scope_map_style", 10),
        "rng": capture_rng_state(),
        "step": 10,
    }
    save_checkpoint(checkpoint, directory / "checkpoint.pt")
    manifest["checkpoint.pt"] = {
        "kind": "checkpoint",
        "builder": "batch_scope_map_style",
        "batches": 10,
        "format": 1,
    }
    # What save_checkpoint wrote before it added a header: a plain torch.save file.
    torch.save(checkpoint, directory / "checkpoint_format0.pt")
    manifest["checkpoint_format0.pt"] = {
        "kind": "checkpoint",
        "builder": "batch_scope_map_style",
        "batches": 10,
        "format": 0,
    }
    text = json.dumps(
        {"reproloader_state_version": VERSION, "torch": torch.__version__, "files": manifest},
        indent=2,
    )
    (directory / "manifest.json").write_text(text + "\n")
    print(f"wrote {len(manifest)} fixtures to {directory}")


if __name__ == "__main__":
    main()
