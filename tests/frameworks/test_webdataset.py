"""webdataset: a pipeline with ``.shuffle(n)``, with and without ``rng=``.

``.shuffle(n, rng=random.Random(0))`` keeps its RNG on the pipeline, where
ReproLoader finds and reseeds it per batch: exact. Without ``rng=``, webdataset
seeds a ``random.Random`` from the clock inside its generator, out of any loader's
reach: the audit names it.
"""

from __future__ import annotations

import gc
import io
import random
import tarfile
from typing import Any

import pytest
import torch

from reproloader import ReproLoader, audit
from tests.frameworks._pipelines import check_exact, require, run

wds = require("webdataset")

# webdataset leaves a shard's file open when a pass stops early (the resume tests do).
pytestmark = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(autouse=True)
def _close_left_open_shards() -> Any:
    # Collect here, where the filters above apply: left to the end of the session, the
    # open files' ResourceWarnings become errors there (filterwarnings = error).
    yield
    gc.collect()


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two tiny tar shards of 16 samples each, holding their index as ``.cls``."""
    where = tmp_path_factory.mktemp("shards")
    paths = []
    for k in range(2):
        path = where / f"shard-{k:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(16 * k, 16 * k + 16):
                data = str(i).encode()
                info = tarfile.TarInfo(f"{i:06d}.cls")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        paths.append(str(path))
    return paths


def decode(sample: dict[str, Any]) -> torch.Tensor:
    return torch.tensor([int(sample["cls"]), torch.randint(0, 1000, ()).item()])


class Factory:
    """Builds the loader; a class, so that spawned workers can unpickle the pipeline."""

    def __init__(self, shards: list[str], rng: bool) -> None:
        self.shards = shards
        self.rng = rng

    def __call__(self, **kwargs: Any) -> ReproLoader[Any]:
        extra = {"rng": random.Random(0)} if self.rng else {}
        pipeline = (
            wds.WebDataset(
                self.shards,
                shardshuffle=False,
                nodesplitter=None,
                workersplitter=wds.split_by_worker,
            )
            .shuffle(8, **extra)
            .map(decode)
        )
        return ReproLoader(pipeline, batch_size=4, seed=0, **kwargs)


def test_shuffle_with_rng_is_exact(shards: list[str]) -> None:
    check_exact(Factory(shards, rng=True), same_across_workers=False)


def test_shuffle_without_rng_is_reported_by_the_audit(shards: list[str]) -> None:
    make = Factory(shards, rng=False)
    assert run(make, epochs=1) != run(make, epochs=1)  # the documented limit
    report = audit(make(), start_methods=(), fresh_processes=False)
    same_seed = next(f for f in report.findings if f.check == "two runs with the same seed differ")
    assert not same_seed.passed
    assert "seeded from the clock or os.urandom" in same_seed.evidence
    assert "rng=random.Random(seed)" in same_seed.fix
