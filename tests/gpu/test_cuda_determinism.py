"""GPU checks of the determinism config, each in a fresh process; skipped without CUDA.

Every check runs a script under ``python -W error`` that applies the config before
anything starts CUDA, the order the config needs (CUBLAS_WORKSPACE_CONFIG is read when
cuBLAS makes its handles; set later, apply() warns with CublasTooLateWarning, which
``-W error`` turns into a failure). Each guarantee has a negative control: the same
run without the config is shown to behave otherwise. The scripts also run on the CPU
here (``test_scripts_run_on_the_cpu``), so they are known to work before a GPU is lent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).parent
NOT_DETERMINISTIC = "does not have a deterministic implementation"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def run(script: str, *args: str) -> dict[str, Any]:
    """Run ``script`` in a fresh interpreter, every warning an error; its JSON output."""
    result = subprocess.run(
        [sys.executable, "-W", "error", str(HERE / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.cuda
@cuda
def test_two_trainings_under_the_config_give_bitwise_equal_weights() -> None:
    first = run("_train_conv.py", "deterministic")
    assert first == run("_train_conv.py", "deterministic")
    assert first["atomics_distinct"] == 1


@pytest.mark.cuda
@cuda
def test_without_the_config_the_same_atomics_differ_run_to_run() -> None:
    # The negative control of the test above: what the config removes is really there.
    assert run("_train_conv.py", "default")["atomics_distinct"] > 1


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize(
    ("mode", "outcome"), [("deterministic", "raised"), ("warn_only", "warned"), ("default", "ran")]
)
def test_an_op_without_a_deterministic_implementation(mode: str, outcome: str) -> None:
    # deterministic: raises; warn_only: warns instead; without the config (the
    # negative control): runs silently.
    result = run("_histc.py", mode)
    assert result["outcome"] == outcome, result
    if outcome != "ran":
        assert NOT_DETERMINISTIC in result["message"]


@pytest.mark.parametrize("mode", ["deterministic", "default"])
def test_scripts_run_on_the_cpu(mode: str) -> None:
    # The CPU stands in for the GPU: the same order of calls under -W error, the same
    # output. CPU index_add and histc are deterministic, so there is nothing to differ.
    small = ("--steps", "2", "--batch", "8", "--probe", "4096")
    result = run("_train_conv.py", mode, "--device", "cpu", *small)
    assert len(result["digest"]) == 64
    assert result["atomics_distinct"] == 1
    assert run("_histc.py", mode, "--device", "cpu") == {"outcome": "ran", "message": ""}
