"""``gather_state`` on every rank, one saved copy, and every rank resumes its own part (2 gloo ranks)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import launcher

SCRIPT = Path(__file__).with_name("_gather_run.py")


@pytest.mark.parametrize(
    ("kind", "checkpoint"),
    [("worker-scope", "dcp"), ("iterable", "torch")],
)
def test_a_gathered_state_saved_by_rank_0_resumes_every_rank_exactly(
    tmp_path: Path, kind: str, checkpoint: str
) -> None:
    command = [
        *launcher(2),
        str(SCRIPT),
        "--dir",
        str(tmp_path),
        "--kind",
        kind,
        "--checkpoint",
        checkpoint,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, (
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-4000:]}"
    )
    seen = []
    for rank in range(2):
        run = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert run["resumed"], f"rank {rank} resumed no batch"
        assert run["resumed"] == run["expected"], f"rank {rank} resumed other batches"
        seen.append(run["resumed"])
    assert seen[0] != seen[1]  # each rank resumed its own part, not rank 0's
