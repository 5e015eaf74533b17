"""batch_at and skipping with shard=True on 2 real gloo ranks (one torchrun launch)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist

from tests.helpers import launcher

SCRIPT = Path(__file__).with_name("_inspect_run.py")


@pytest.fixture(scope="session")  # not torn down when xdist interleaves other modules
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("inspect_torchrun")
    command = [
        *launcher(2),
        str(SCRIPT),
        "--dir",
        str(directory),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, (
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}"
    )
    return [json.loads((directory / f"rank{r}.json").read_text()) for r in range(2)]


pytestmark = [
    pytest.mark.skipif(not dist.is_available(), reason="no torch.distributed"),
    # One torchrun launch (module-scoped) serves every test: one xdist process runs them.
    pytest.mark.xdist_group("inspect_torchrun"),
]


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_batch_at_on_any_rank_is_each_ranks_iterated_step(
    ranks: list[dict[str, Any]], scope: str
) -> None:
    iterated = [run[scope]["iterated"] for run in ranks]
    assert iterated[0] != iterated[1], "each rank has its own part of a step"
    for asker, run in enumerate(ranks):
        for rank in range(2):
            assert run[scope]["on_demand"][str(rank)] == iterated[rank], (
                f"rank {asker} asked for rank {rank}'s batches"
            )


@pytest.mark.parametrize("scope", ["batch", "sample"])
def test_every_rank_skips_the_same_global_steps_and_keeps_them_after_a_resume(
    ranks: list[dict[str, Any]], scope: str
) -> None:
    for rank, run in enumerate(ranks):
        part = run[scope]
        epoch0, epoch1 = part["iterated"]
        assert part["skipped_run"] == [epoch0[:2], [epoch1[0], *epoch1[2:]]], f"rank {rank}"
        assert part["state_skip"] == [[0, 2, 5], [1, 1, 2]]
        assert part["after_resume"] == [part["skipped_run"][0][1:], part["skipped_run"][1]]
