"""Randomness drawn when iteration starts, and RNGs shared by two loaders (issue 14, 3 and 4)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from reproloader import ReproLoader, audit
from tests.datasets import same


class StartShuffled(IterableDataset[torch.Tensor]):
    """Draws its order when iteration starts, as a Hugging Face shuffle does, from
    ``self.rng`` or (``source="torch"``) from torch's global RNG.

    Its state_dict is complete apart from that draw: how many items it has yielded.
    Nothing else is random, so a resume is exact exactly when the draw at iteration
    start gives the same order as in the uninterrupted pass.
    """

    def __init__(self, source: str, n: int = 32) -> None:
        self.source = source
        self.n = n
        self.rng = np.random.default_rng(0)
        self._skip = 0
        self._yielded = 0

    def __iter__(self) -> Any:
        if self.source == "torch":
            order = torch.randperm(self.n).tolist()
        else:
            order = self.rng.permutation(self.n).tolist()
        info = get_worker_info()
        if info is not None:
            order = order[info.id :: info.num_workers]
        skip, self._skip = self._skip, 0
        self._yielded = skip
        for x in order[skip:]:
            self._yielded += 1
            yield torch.tensor(float(x), dtype=torch.float64)

    def state_dict(self) -> dict[str, int]:
        return {"yielded": self._yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._skip = state["yielded"]


def make(dataset: Any, **kwargs: Any) -> ReproLoader[Any]:
    return ReproLoader(dataset, batch_size=4, seed=3, **kwargs)


def _resumed_after_two(source: str, num_workers: int, config: dict[str, Any]) -> tuple[Any, Any]:
    reference = list(make(StartShuffled(source), num_workers=num_workers, config=config))
    first = make(StartShuffled(source), num_workers=num_workers, config=config)
    it = iter(first)
    head = [next(it), next(it)]
    state = first.state_dict()
    del it
    resumed = make(StartShuffled(source), num_workers=num_workers, config=config)
    resumed.load_state_dict(state)
    return reference, head + list(resumed)


@pytest.mark.parametrize("source", ["attribute", "torch"])
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("scope", ["batch", "worker"])
def test_randomness_drawn_at_iteration_start_is_the_same_after_a_replayed_resume(
    source: str, num_workers: int, scope: str
) -> None:
    config = {"rng_scope": scope, "iterable_resume": "replay"}
    reference, resumed = _resumed_after_two(source, num_workers, config)
    assert same([reference], [resumed])


def test_a_dataset_state_that_misses_the_start_draw_is_inexact_and_the_audit_says_so() -> None:
    # Through the dataset's own state (the default), the order drawn as its generator
    # starts is not in that state: the resume differs, and the audit reports it.
    reference, resumed = _resumed_after_two("attribute", 0, {"rng_scope": "batch"})
    assert not same([reference], [resumed])
    report = audit(lambda: make(StartShuffled("attribute")), fresh_processes=False)
    failing = [f for f in report.findings if not f.passed]
    assert any("resume" in f.check.lower() for f in failing), report


class Noisy(Dataset[torch.Tensor]):
    """Draws from a Generator it holds; one object is shared by two loaders below."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), self.rng.random()], dtype=torch.float64)


class NoisyStream(IterableDataset[torch.Tensor]):
    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def __iter__(self) -> Any:
        return (torch.tensor([float(i), self.rng.random()], dtype=torch.float64) for i in range(16))


@pytest.mark.parametrize("kind", [Noisy, NoisyStream], ids=["map", "iterable"])
def test_worker_scope_with_a_dataset_shared_by_two_zipped_loaders_is_exact(
    kind: type,
) -> None:
    def pair(dataset: Any) -> tuple[ReproLoader[Any], ReproLoader[Any]]:
        return tuple(  # type: ignore[return-value]
            ReproLoader(dataset, batch_size=4, seed=seed, config={"rng_scope": "worker"})
            for seed in (0, 1)
        )

    alone = [list(loader) for loader in pair(kind())]
    zipped = list(zip(*pair(kind()), strict=True))
    assert same([alone[0], alone[1]], [[a for a, _ in zipped], [b for _, b in zipped]]), (
        "zipped loaders over one dataset differ from each alone"
    )
