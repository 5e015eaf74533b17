"""Controlled experiments on a user's loader, for the audit.

The audit learns about randomness from the batches alone, so it needs to run the
user's pipeline under conditions it chooses: the same indices again, in another
worker, another epoch, another process. :func:`rebuild` makes a loader like the
user's with some arguments changed (the way frameworks re-create loaders from
their attributes), :class:`FixedBatches` feeds it chosen indices, and
:class:`Pipeline` runs the result under one set of conditions; :func:`payload`
and :func:`fresh_run` carry a pipeline into a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import itertools
import os
import pickle
import random
import time
import traceback
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from reproloader._diagnose.compare import Vector, numbers
from reproloader._runtime.bridge import quiet_torchdata
from reproloader.exceptions import ReproError

__all__ = [
    "FixedBatches",
    "Pipeline",
    "TargetError",
    "first_batch_indices",
    "fresh_run",
    "frozen_entropy",
    "load_target",
    "payload",
    "raised",
    "rebuild",
    "take",
]


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
    if kwargs.get("ledger") is not None:
        kwargs["ledger"] = None  # experiments are not the run: they must not write its ledger
    kwargs.update(changes)
    with quiet_torchdata():
        return cls(**kwargs)


_FROZEN_TIME: Final = 1_700_000_000.0


@contextlib.contextmanager
def frozen_entropy() -> Iterator[None]:
    """Inside: the clock stands still and ``os.urandom`` returns zeros.

    ``time.time``, ``time.time_ns``, ``os.urandom`` and the ``random`` module's own
    handle on it (behind ``SystemRandom``, ``secrets`` and unseeded numpy Generators)
    are replaced. If two runs differ normally but agree in here, something in the
    pipeline seeds itself from the clock or the operating system's entropy.
    """
    patched = [
        (time, "time", lambda: _FROZEN_TIME),
        (time, "time_ns", lambda: int(_FROZEN_TIME * 1e9)),
        (os, "urandom", bytes),
        (random, "_urandom", bytes),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patched]
    try:
        for module, name, value in patched:
            setattr(module, name, value)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


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


class TargetError(ReproError, ValueError):
    """A ``"module:function"`` target that does not give a pipeline to audit.

    Attributes:
        problem: what went wrong, in one line.
        fix: one way to fix it.
    """

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}\nfix: {fix}")
        self.problem = problem
        self.fix = fix


def _where(error: BaseException) -> str:
    """`` (file.py, line N)``: where an error from the user's code was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" ({frame.filename}, line {frame.lineno})"


def raised(error: BaseException) -> str:
    """``KeyError: 0 (data.py, line 9)``: an error from the user's code, in one line."""
    return f"{type(error).__name__}: {error}{_where(error)}"


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        # Missing: the module itself or a package above it. Anything else missing was
        # imported by the module's own code, which is the next case.
        if error.name is not None and (module + ".").startswith(error.name + "."):
            top = module.partition(".")[0]
            raise TargetError(
                f"cannot import {module!r}: no module named {error.name!r}",
                f"run from the directory that holds {top}/ or {top}.py, or install it "
                "(pip install -e .), or check the spelling",
            ) from error
        raise TargetError(
            f"importing {module!r} raised {raised(error)}",
            f"install what it imports, then check with: python -c 'import {module}'",
        ) from error
    except Exception as error:
        raise TargetError(
            f"importing {module!r} raised {raised(error)}",
            f"see the full traceback with: python -c 'import {module}'",
        ) from error


def _functions(module: Any) -> list[str]:
    """The public functions a module defines: the likely targets in it."""
    return sorted(
        name
        for name, value in vars(module).items()
        if inspect.isfunction(value)
        and not name.startswith("_")
        and value.__module__ == module.__name__
    )


def _resolve(target: str) -> Any:
    """The object that ``"module:attribute"`` names, or a :class:`TargetError`."""
    module, colon, name = target.partition(":")
    if not colon or not module or not name or ":" in name:
        raise TargetError(
            f"expected 'module:function', got {target!r}",
            "name the module and a function in it that returns a DataLoader, "
            "e.g. mypackage.data:train_loader",
        )
    obj: Any = _import(module)
    for depth, part in enumerate(name.split(".")):
        if not hasattr(obj, part):
            owner = module if depth == 0 else f"{module}:{'.'.join(name.split('.')[:depth])}"
            known = _functions(obj) if depth == 0 else []
            raise TargetError(
                f"{owner!r} has no attribute {part!r}",
                "name a function that returns a DataLoader or a Dataset"
                + (f"; {module} defines {', '.join(known[:8])}" if known else ""),
            )
        obj = getattr(obj, part)
    return obj


def load_target(target: Any) -> Any:
    """A loader from a loader, a dataset, a factory, or ``"module:attribute"``.

    Raises:
        TargetError: a ``"module:attribute"`` target that cannot be imported, names
            nothing, raises when called, or gives no DataLoader or Dataset.
        TypeError: any other target that is not a DataLoader, a Dataset or a function.
    """
    named = target if isinstance(target, str) else None
    if named is not None:
        target = _resolve(named)
    if callable(target) and not isinstance(target, (DataLoader, Dataset)):
        try:
            target = target()
        except Exception as error:
            if named is None:
                raise
            raise TargetError(
                f"{named}() raised {raised(error)}",
                f"call it in python to see the full traceback: python -c 'import "
                f"{named.partition(':')[0]} as m; m.{named.partition(':')[2]}()'",
            ) from error
    if isinstance(target, Dataset):
        return DataLoader(target, batch_size=4)
    if isinstance(target, DataLoader):
        return target
    if named is not None:
        raise TargetError(
            f"{named} gave {type(target).__name__}, not a DataLoader or a Dataset",
            "name a function that returns a DataLoader (a ReproLoader too) or a Dataset",
        )
    raise TypeError(
        f"audit() takes a DataLoader, a Dataset, a function that returns one, or "
        f"'module:function'; got {target!r} of type {type(target).__name__}"
    )


class Pipeline:
    """The audited loader, and how to run it under chosen conditions."""

    def __init__(self, loader: Any, workers: int) -> None:
        self.loader = loader
        self.workers = workers
        self.iterable = isinstance(loader.dataset, IterableDataset)
        self.repro = hasattr(loader, "config") and hasattr(loader, "seed")
        self.indices = [] if self.iterable else first_batch_indices(loader)

    def describe(self) -> str:
        return f"{type(self.loader).__name__} over {type(self.loader.dataset).__name__}"

    def run(
        self,
        *,
        seed: int = 0,
        num_workers: int = 0,
        repeats: int = 1,
        epochs: int = 1,
        limit: int | None = None,
        start_method: str | None = None,
    ) -> list[list[Any]]:
        """Batches of ``epochs`` passes: ``repeats`` batches of the probe indices each."""
        changes: dict[str, Any] = {"num_workers": num_workers}
        if not self.iterable:
            changes["batch_sampler"] = FixedBatches([self.indices] * repeats)
        if start_method is not None and num_workers > 0:
            changes["multiprocessing_context"] = start_method
        if self.repro and seed:
            changes["seed"] = (self.loader.seed + seed) % 2**63
            changes["config"] = self.loader.config.model_copy(update={"seed": None})
        # How a DataLoader run is made repeatable: every global RNG seeded, as
        # seed_everything-style helpers do (a ReproLoader ignores these).
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        loader = rebuild(self.loader, **changes)
        return [take(loader, limit if self.iterable else None) for _ in range(epochs)]


def fresh_run(payload: bytes) -> list[Vector]:
    # In a fresh interpreter: build the pipeline and run the probe (module-level for spawn).
    target, workers = pickle.loads(payload)
    p = Pipeline(load_target(target), workers)
    return [numbers(b) for b in p.run(repeats=2, limit=2)[0]]


def payload(target: Any, loader: Any, workers: int) -> bytes:
    # A factory that can be imported travels by name, so the fresh process builds
    # everything itself; a loader travels as its dataset and arguments.
    if isinstance(target, str) or (
        callable(target)
        and not isinstance(target, (DataLoader, Dataset))
        and "<" not in getattr(target, "__qualname__", "<")
    ):
        return pickle.dumps((target, workers))
    fresh = rebuild(loader, num_workers=0)
    return pickle.dumps((Rebuilt(fresh), workers))


class Rebuilt:
    """A loader's class and arguments, picklable where the loader object is not."""

    def __init__(self, loader: Any) -> None:
        self.cls = type(loader)
        self.dataset = loader.dataset
        self.kwargs = {
            k: getattr(loader, k)
            for k in (
                "batch_size",
                "collate_fn",
                "drop_last",
                "worker_init_fn",
                "generator",
                "seed",
                "config",
            )
            if hasattr(loader, k)
        }
        if not isinstance(loader.dataset, IterableDataset) and loader.batch_size is not None:
            self.kwargs["sampler"] = loader.sampler

    def __call__(self) -> Any:
        return self.cls(self.dataset, **self.kwargs)
