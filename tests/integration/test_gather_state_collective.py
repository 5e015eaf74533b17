"""gather_state's collective: every rank's state, gathered over a real gloo process group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from reproloader import ReproLoader
from reproloader.distributed import gather_state
from tests.datasets import Stream

WORLD_SIZE = 2


def _rank(rank: int, directory: str) -> None:
    # Started by mp.spawn in a fresh interpreter: one gloo rank over a file store.
    store = Path(directory) / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        # An iterable dataset: each rank's state holds its own workers' positions.
        loader = ReproLoader(Stream(20), batch_size=2, num_workers=1, seed=0)
        it = iter(loader)
        for _ in range(rank + 1):  # the ranks stop at different positions
            next(it)
        own = loader.state_dict()
        gathered = gather_state(loader)
        result = {"own": own, "gathered": gathered}
        (Path(directory) / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_gather_state_returns_every_ranks_state(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(str(tmp_path),), nprocs=WORLD_SIZE, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]
    own = [r["own"] for r in results]
    assert [s["rank"] for s in own] == list(range(WORLD_SIZE))
    assert [s["position"] for s in own] == [1, 2]
    for rank, result in enumerate(results):
        gathered = result["gathered"]
        assert gathered["world_size"] == WORLD_SIZE, f"rank {rank}"
        assert gathered["ranks"] == own, f"rank {rank} holds every rank's state, in rank order"
