"""The Lightning and accelerate examples run, stop, resume and end bitwise equal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize(
    ("script", "package", "stop"),
    [
        ("lightning_train.py", "lightning", ["--max-steps", "17"]),
        ("accelerate_train.py", "accelerate", ["--stop-after", "13"]),
    ],
)
def test_example_resumes_to_bitwise_equal_weights(
    script: str, package: str, stop: list[str], tmp_path: Path
) -> None:
    pytest.importorskip(package)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run(script, "--dir", str(straight))
    run(script, "--dir", str(interrupted), *stop)
    run(script, "--dir", str(interrupted), "--resume")
    assert "bitwise equal" in run(script, "--compare", str(straight), str(interrupted))
