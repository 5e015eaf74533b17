"""GPU checks of the determinism config; skipped where there is no CUDA device."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reproloader import ReproConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
SCRIPT = Path(__file__).with_name("_train_conv.py")


def train(mode: str) -> str:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), mode], capture_output=True, text=True, timeout=600, check=True
    )
    return result.stdout.strip()


def test_two_trainings_under_the_config_give_bitwise_equal_weights() -> None:
    assert train("deterministic") == train("deterministic")


def test_an_op_without_a_deterministic_implementation_raises() -> None:
    values = torch.rand(1000, device="cuda")
    with (
        ReproConfig().apply(),
        pytest.raises(RuntimeError, match="does not have a deterministic implementation"),
    ):
        torch.histc(values, bins=10)


def test_warn_only_warns_instead() -> None:
    values = torch.rand(1000, device="cuda")
    with (
        ReproConfig(determinism={"warn_only": True}).apply(),
        pytest.warns(UserWarning, match="does not have a deterministic implementation"),
    ):
        torch.histc(values, bins=10)
