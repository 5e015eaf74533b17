"""Controlled experiments on a user's loader, for the audit.

The audit learns about randomness from the batches alone, so it needs to run the
user's pipeline under conditions it chooses: the same indices again, in another
worker, another epoch, another process. :func:`rebuild` makes a loader like the
user's with some arguments changed (the way frameworks re-create loaders from
their attributes), and :class:`FixedBatches` feeds it chosen indices.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import IterableDataset, Sampler

from reproloader._compat import quiet_torchdata

__all__ = ["FixedBatches", "first_batch_indices", "numbers", "rebuild", "take"]


class FixedBatches(Sampler[list[Any]]):
    """A batch sampler that yields the given batches, in order."""

    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[list[Any]]:
        return (list(batch) for batch in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def rebuild(loader: Any, **changes: Any) -> Any:
    """A loader of the same class and arguments as ``loader``, with ``changes``.

    Arguments come from the loader's attributes of the same names. The batch sampler
    a DataLoader made from ``batch_size`` is left for the new loader to make again;
    ``batch_sampler=`` in ``changes`` replaces the batching altogether.
    """
    cls = type(loader)
    parameters = [
        p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in _VARIADIC
    ]
    kwargs = {p.name: getattr(loader, p.name) for p in parameters if hasattr(loader, p.name)}
    iterable = isinstance(loader.dataset, IterableDataset)
    if iterable:
        kwargs.pop("sampler", None)
        kwargs.pop("batch_sampler", None)
    elif "batch_sampler" in changes:
        kwargs.update(batch_size=1, sampler=None, drop_last=False)
        for name in ("shuffle", "shard"):
            if name in kwargs:
                kwargs[name] = False if name == "shard" else None
    elif loader.batch_size is not None:
        kwargs["batch_sampler"] = None  # made from batch_size; let the new loader make its own
    elif "batch_size" in kwargs:
        kwargs.update(batch_size=1, sampler=None, drop_last=False)  # a batch sampler was given
    if getattr(loader, "shard", False) and "sampler" in kwargs and not changes.get("batch_sampler"):
        kwargs["sampler"] = None  # shard=True makes its sampler itself
    if changes.get("num_workers", loader.num_workers) == 0:
        kwargs.update(prefetch_factor=None, persistent_workers=False, multiprocessing_context=None)
    if "multiprocessing_context" in changes and hasattr(loader, "config"):
        # A ReproLoader may name its start method in its config; the change wins.
        kwargs["config"] = loader.config.model_copy(update={"start_method": None})
    kwargs.update(changes)
    with quiet_torchdata():
        return cls(**kwargs)


def take(loader: Any, limit: int | None = None) -> list[Any]:
    """The first ``limit`` batches of one pass (all of them without a limit)."""
    return list(itertools.islice(iter(loader), limit))


def first_batch_indices(loader: Any, size: int = 4) -> list[Any]:
    """Indices of a batch like the loader's first: what the probes feed it again and again."""
    batch_sampler = loader.batch_sampler
    if batch_sampler is not None and loader.batch_size is None:
        first: list[Any] = next(iter(batch_sampler), [])
        return list(first)[:size] or [0]
    return list(itertools.islice(iter(loader.sampler), size)) or [0]


def numbers(batch: Any) -> npt.NDArray[np.float64]:
    """Every number in a batch (tensors, arrays, nested collections), flattened, in order."""
    parts: list[npt.NDArray[np.float64]] = []

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_complex():
                value = torch.view_as_real(value)
            parts.append(value.detach().cpu().to(torch.float64).reshape(-1).numpy())
        elif isinstance(value, np.ndarray):
            if np.issubdtype(value.dtype, np.number) or value.dtype == bool:
                parts.append(np.asarray(value, dtype=np.float64).reshape(-1))
        elif isinstance(value, (bool, int, float, np.number)):
            parts.append(np.array([float(value)]))
        elif isinstance(value, dict):
            for key in sorted(value, key=repr):
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(batch)
    return np.concatenate(parts) if parts else np.zeros(0)
