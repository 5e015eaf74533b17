"""Datasets and helpers shared by the tests.

They live in an importable module (not in test files' locals) so that workers
started with spawn or forkserver can unpickle them.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from reproloader import get_context


def draws() -> list[float]:
    """One draw from each process-wide RNG: python random, numpy, torch."""
    return [random.random(), float(np.random.random()), float(torch.rand(()))]


class GlobalDraws(Dataset[torch.Tensor]):
    """Item i: [i, random.random(), np.random.random(), torch.rand()]. Plain torch code."""

    def __init__(self, n: int = 24) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), *draws()], dtype=torch.float64)


class AllSources(GlobalDraws):
    """Also draws from the context's Generator and an RNG stored in __init__."""

    def __init__(self, n: int = 24) -> None:
        super().__init__(n)
        self.rng = np.random.default_rng(0)

    def __getitem__(self, i: int) -> torch.Tensor:
        ctx = get_context()
        return torch.tensor(
            [float(i), *draws(), ctx.rng.random(), self.rng.random()], dtype=torch.float64
        )


class InitGenerator(Dataset[float]):
    """The classic bug: a Generator made in __init__, copied into every worker."""

    def __init__(self, n: int = 64) -> None:
        self.n = n
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> float:
        return float(self.rng.random())


class NumpyGlobal(Dataset[float]):
    """Draws from numpy's global RNG only."""

    def __init__(self, n: int = 64) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> float:
        return float(np.random.random())


class RngArgument(Dataset[torch.Tensor]):
    """Takes the unit's Generator as an ``rng`` argument."""

    def __init__(self, n: int = 24) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        assert rng is not None, "ReproLoader passes rng"
        return torch.tensor([float(i), rng.random()], dtype=torch.float64)


class RngArgumentItems(RngArgument):
    """Batched access: ``__getitems__(indices, rng)``."""

    def __getitems__(self, indices: list[int], rng: np.random.Generator) -> list[torch.Tensor]:
        values = rng.random(len(indices))
        return [
            torch.tensor([float(i), v], dtype=torch.float64)
            for i, v in zip(indices, values, strict=True)
        ]


class EpochAware(Dataset[torch.Tensor]):
    """Returns the epoch that ``set_epoch`` last gave it, in whichever process."""

    def __init__(self, n: int = 8) -> None:
        self.n = n
        self.epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i, self.epoch])


class Stream(IterableDataset[torch.Tensor]):
    """An iterable dataset sharded over workers, drawing from every global RNG."""

    def __init__(self, n: int = 20) -> None:
        self.n = n

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in range(start, self.n, step):
            yield torch.tensor([float(i), *draws()], dtype=torch.float64)


class Offset(Dataset[float]):
    """Items expose ``offset``, which a worker_init_fn sets from a random draw."""

    offset = -1.0

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> float:
        return self.offset


def draw_offset(worker_id: int) -> None:
    """A worker_init_fn that configures the worker's dataset copy with a random draw."""
    info = get_worker_info()
    assert info is not None
    info.dataset.offset = random.random() + np.random.random() + float(torch.rand(()))


def record_worker_init(worker_id: int) -> None:
    """The widely copied worker_init_fn that makes numpy repeat every epoch."""
    np.random.seed(np.random.get_state()[1][0] + worker_id)


def collect(loader: Iterable[Any], epochs: int = 1) -> list[list[Any]]:
    """All batches of ``epochs`` passes over ``loader``."""
    return [list(loader) for _ in range(epochs)]


def flat(batches: Iterable[Any]) -> torch.Tensor:
    """Concatenate batches (tensors, or lists of floats) into one float64 tensor."""
    parts = [torch.as_tensor(b, dtype=torch.float64).reshape(-1) for b in batches]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)


def same(a: list[list[Any]], b: list[list[Any]]) -> bool:
    """Bitwise equality of two ``collect`` results."""
    return len(a) == len(b) and all(
        len(x) == len(y) and torch.equal(flat(x), flat(y)) for x, y in zip(a, b, strict=True)
    )


class CountingMap(AllSources):
    """Counts the items it produces in this process."""

    calls = 0

    def __getitem__(self, i: int) -> torch.Tensor:
        type(self).calls += 1
        return super().__getitem__(i)


class _StreamIterator:
    """An iterator with its own state_dict: resumable without replaying."""

    produced = 0

    def __init__(self, n: int, start: int, step: int) -> None:
        self.i, self.n, self.step = start, n, step

    def __iter__(self) -> _StreamIterator:
        return self

    def __next__(self) -> torch.Tensor:
        if self.i >= self.n:
            raise StopIteration
        type(self).produced += 1
        item = torch.tensor([float(self.i), *draws()], dtype=torch.float64)
        self.i += self.step
        return item

    def state_dict(self) -> dict[str, int]:
        return {"i": self.i}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.i = state["i"]


class StatefulStream(IterableDataset[torch.Tensor]):
    """An iterable dataset whose iterator is Stateful."""

    def __init__(self, n: int = 20) -> None:
        self.n = n

    def __iter__(self) -> _StreamIterator:
        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info is not None else (0, 1)
        return _StreamIterator(self.n, start, step)


class StateAfterIter(IterableDataset[torch.Tensor]):
    """An iterable dataset with its own state that exists only once ``__iter__`` ran.

    As in torchdata's own tests, ``state_dict`` before ``__iter__`` raises.
    """

    def __init__(self, n: int = 20) -> None:
        self.n = n

    def __iter__(self) -> Iterator[torch.Tensor]:
        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info is not None else (0, 1)
        self.iter_state = self.__dict__.pop("resume_from", None) or {"next": start}
        while self.iter_state["next"] < self.n:
            i = self.iter_state["next"]
            self.iter_state = {"next": i + step}
            yield torch.tensor([float(i), random.random()], dtype=torch.float64)

    def state_dict(self) -> dict[str, int]:
        return dict(self.iter_state)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume_from = dict(state)  # where the next __iter__ starts


class Curriculum(Dataset[torch.Tensor]):
    """A map-style dataset with its own state: a difficulty that grows per item served."""

    def __init__(self, n: int = 20) -> None:
        self.n = n
        self.level = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        self.level += 1
        return torch.tensor([float(i), float(self.level), random.random()], dtype=torch.float64)

    def state_dict(self) -> dict[str, int]:
        return {"level": self.level}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.level = state["level"]


class UnseededGenerator(InitGenerator):
    """Makes an unseeded Generator in __init__: every construction draws anew."""

    def __init__(self, n: int = 16) -> None:
        super().__init__(n)
        self.rng = np.random.default_rng()


class Urandom(Dataset[float]):
    """Reads the operating system's entropy: no loader can make this repeatable."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> float:
        return int.from_bytes(os.urandom(4), "little") / 2**32


class SetOrder(Dataset[torch.Tensor]):
    """Iterates a set of strings, whose order depends on PYTHONHASHSEED."""

    words = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        order = list(set(self.words))
        return torch.tensor([float(order.index(word)) for word in self.words])


def dataloader_init_generator() -> DataLoader[float]:
    """A factory for `reproloader audit tests.datasets:dataloader_init_generator`."""
    return DataLoader(InitGenerator(32), batch_size=4, num_workers=2)


def reproloader_init_generator() -> Any:
    """The same pipeline with ReproLoader."""
    from reproloader import ReproLoader

    return ReproLoader(InitGenerator(32), batch_size=4, num_workers=2, seed=0)


def dataloader_unseeded() -> DataLoader[float]:
    return DataLoader(UnseededGenerator(16), batch_size=4)


def reproloader_unseeded() -> Any:
    from reproloader import ReproLoader

    return ReproLoader(UnseededGenerator(16), batch_size=4, seed=0)


class KeywordOnlyRng(RngArgument):
    """Takes the Generator as a keyword-only argument, the form the docs recommend."""

    def __getitem__(self, i: int, *, rng: np.random.Generator) -> torch.Tensor:  # type: ignore[override]
        return torch.tensor([float(i), rng.random()], dtype=torch.float64)


def noisy_collate(batch: list[torch.Tensor]) -> torch.Tensor:
    """A collate_fn that draws (MixUp-like) from torch's and python's global RNGs.

    Column 0 (the dataset index of ``AllSources``' items) is left as it is.
    """
    stacked = torch.stack(batch)
    stacked[:, 1:] += float(torch.rand(())) + random.random()
    return stacked
