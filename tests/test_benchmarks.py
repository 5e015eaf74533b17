"""The benchmark scripts still run against the package (their timings are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_unit_cost_runs_and_reports_every_setting(tmp_path: Path) -> None:
    # It drives the per-unit internals (Producer.begin, the isolation window) directly,
    # so an internal change breaks it first: nox -s bench once failed on it unnoticed.
    result = subprocess.run(
        [sys.executable, "benchmarks/unit_cost.py", "--reps", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for setting in ("random, numpy, torch (default)", "torch only", "none (context rng only)"):
        assert setting in result.stdout
    assert (tmp_path / "unit_cost.json").exists()
