"""A training process killed with SIGKILL mid-epoch resumes to bitwise equal weights."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# The uninterrupted baseline is module-scoped: one xdist process runs the module (noxfile).
pytestmark = pytest.mark.xdist_group("kill_resume")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "resume_after_kill.py"
STEPS = 40  # 13 batches per epoch: the run spans 4 epochs


def train(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the example in ``directory``; stdout goes to a file, so that the wait ends
    when the trainer exits (its orphaned workers, after a kill, hold no pipe of ours)."""
    log = directory / f"log{len(list(directory.glob('log*')))}.txt"
    with log.open("w") as out:
        result = subprocess.run(
            [sys.executable, str(EXAMPLE), "--dir", str(directory), "--steps", str(STEPS), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    return subprocess.CompletedProcess(result.args, result.returncode, log.read_text())


def kill_at(directory: Path, step: int) -> None:
    """Train until ``step``, where the trainer SIGKILLs itself (no race with the parent)."""
    result = train(directory, "--kill-after", str(step))
    assert result.returncode == -signal.SIGKILL, result.stdout[-2000:]
    lines = result.stdout.splitlines()
    # The example announces the kill, then kills itself right after that step.
    assert lines[-1] == f"killing this process now, after step {step}, as announced", lines[-3:]
    assert lines[-2].startswith(f"step {step} "), result.stdout[-500:]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return torch.load(directory / "final.pt", weights_only=True)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")  # not torn down when xdist interleaves other modules
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    directory = tmp_path_factory.mktemp("uninterrupted")
    result = train(directory)
    assert result.returncode == 0, result.stdout[-2000:]
    return weights(directory)


# 12: mid-epoch, between checkpoints; a seeded draw adds another step, the same on
# every run (a failure names it in the test id, so it can be rerun).
SEEDED_STEP = random.Random(18).randrange(6, STEPS - 1)


@pytest.mark.parametrize("kill_step", [12, SEEDED_STEP], ids=["fixed", f"seeded-{SEEDED_STEP}"])
def test_sigkill_then_resume_gives_bitwise_equal_weights(
    kill_step: int, uninterrupted: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    kill_at(tmp_path, kill_step)
    assert (tmp_path / "checkpoint.pt").exists(), "a checkpoint survives the kill"
    assert not (tmp_path / "final.pt").exists()
    result = train(tmp_path)
    assert result.returncode == 0, result.stdout[-2000:]
    assert result.stdout.startswith("resumed at step "), result.stdout[:200]
    resumed = weights(tmp_path)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), (
            f"{name} differs after a kill at step {kill_step}"
        )
