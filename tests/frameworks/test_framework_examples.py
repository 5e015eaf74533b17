"""The Lightning, accelerate and transformers examples run, stop, resume and end bitwise equal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import ROOT, run_script


def run(script: str, *args: str) -> str:
    return run_script(ROOT / "examples" / script, *args)


@pytest.mark.parametrize(
    ("script", "package", "stop"),
    [
        ("lightning_train.py", "lightning", ["--max-steps", "17"]),
        ("accelerate_train.py", "accelerate", ["--stop-after", "13"]),
        ("transformers_train.py", "transformers", ["--stop-after", "13"]),
    ],
)
def test_example_resumes_to_bitwise_equal_weights(
    script: str, package: str, stop: list[str], tmp_path: Path
) -> None:
    pytest.importorskip(package)
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run(script, "--dir", str(straight))
    stopped = run(script, "--dir", str(interrupted), *stop)
    assert f"continue with: python examples/{script} --dir {interrupted} --resume" in stopped
    assert "trained" in run(script, "--dir", str(interrupted), "--resume")
    assert "bitwise equal" in run(script, "--compare", str(straight), str(interrupted))
