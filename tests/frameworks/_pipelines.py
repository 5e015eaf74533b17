"""One harness for the third-party pipeline tests: run a loader factory, compare batches.

Each test module builds a small pipeline with a real package and checks, with this
harness, what docs/pipelines.md promises for it: the same batches with 0 and 2
workers, fork and spawn; epochs that differ; a mid-epoch resume that continues the
stream exactly (or the documented limit, reported).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

# Set before any of the packages is imported, here and in spawned workers (which
# inherit the environment): no update checks or hub look-ups over the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

Factory = Callable[..., Any]
Batches = list[Any]


def require(name: str) -> ModuleType:
    """Import ``name``, or skip the module: missing, or not loadable beside this torch.

    PyPI's torchvision wheels are built for one torch release each and fail at import
    (not with ImportError) beside another, and timm imports torchvision.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - any failure to load means: not testable here
        pytest.skip(
            f"{name} does not import beside torch {torch.__version__}: "
            f"{type(error).__name__}: {str(error)[:200]}",
            allow_module_level=True,
        )


def plain(batch: Any) -> Any:
    """A batch as nested lists of Python numbers, for exact comparison and readable diffs."""
    if isinstance(batch, torch.Tensor):
        return batch.detach().cpu().tolist()
    if isinstance(batch, np.ndarray):
        return batch.tolist()
    if isinstance(batch, dict):
        return {key: plain(value) for key, value in sorted(batch.items())}
    if isinstance(batch, (list, tuple)):
        return [plain(value) for value in batch]
    return batch


def run(make: Factory, epochs: int = 2, **kwargs: Any) -> list[Batches]:
    """The batches of ``epochs`` passes over ``make(**kwargs)``."""
    loader = make(**kwargs)
    return [[plain(batch) for batch in loader] for _ in range(epochs)]


def resumed(make: Factory, stop: int = 2, **kwargs: Any) -> Batches:
    """The first pass, stopped after ``stop`` batches and finished by a new loader."""
    first = make(**kwargs)
    it = iter(first)
    head = [plain(next(it)) for _ in range(stop)]
    state = first.state_dict()
    del it
    again = make(**kwargs)
    again.load_state_dict(state)
    return head + [plain(batch) for batch in again]


def check_exact(make: Factory, *, same_across_workers: bool = True) -> None:
    """Repeatable; epochs differ; 0 and 2 workers, fork and spawn agree; resume is exact.

    ``same_across_workers=False`` is for iterable datasets, whose workers read
    different shards: there 2 workers are compared across start methods only.
    """
    reference = run(make)
    assert run(make) == reference, "two runs with the same seed differ"
    assert reference[0] != reference[1], "epoch 0 and epoch 1 gave the same batches"
    forked = run(make, num_workers=2, multiprocessing_context="fork")
    spawned = run(make, num_workers=2, multiprocessing_context="spawn", persistent_workers=True)
    if same_across_workers:
        assert forked == reference, "2 forked workers differ from the main process"
    assert spawned == forked, "spawned workers differ from forked ones"
    assert resumed(make) == reference[0], "resume after 2 batches differs"
    two_workers = reference[0] if same_across_workers else forked[0]
    assert resumed(make, num_workers=2) == two_workers, "resume with 2 workers differs"
