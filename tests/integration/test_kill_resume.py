"""A training process killed with SIGKILL mid-epoch resumes to bitwise equal weights."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "resume_after_kill.py"
STEPS = 40  # 13 batches per epoch: the run spans 4 epochs


def train(directory: Path) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--dir", str(directory), "--steps", str(STEPS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def kill_at(directory: Path, step: int) -> None:
    """Start training and SIGKILL it from outside as soon as it reports ``step``."""
    with subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--dir", str(directory), "--steps", str(STEPS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(f"step {step} "):
                process.send_signal(signal.SIGKILL)
                break
        assert process.wait(timeout=60) == -signal.SIGKILL


def weights(directory: Path) -> dict[str, torch.Tensor]:
    return torch.load(directory / "final.pt", weights_only=True)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    directory = tmp_path_factory.mktemp("uninterrupted")
    train(directory)
    return weights(directory)


@pytest.mark.parametrize(
    "kill_step", [12, random.Random().randrange(6, STEPS - 1)], ids=["fixed", "random"]
)
def test_sigkill_then_resume_gives_bitwise_equal_weights(
    kill_step: int, uninterrupted: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    kill_at(tmp_path, kill_step)
    assert (tmp_path / "checkpoint.pt").exists(), "a checkpoint survives the kill"
    assert not (tmp_path / "final.pt").exists()
    out = train(tmp_path)
    assert out.startswith("resumed at step "), out[:200]
    resumed = weights(tmp_path)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), (
            f"{name} differs after a kill at step {kill_step}"
        )
