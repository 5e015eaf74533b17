"""The benchmark scripts still run against the package (their timings are not checked here)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

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


def _can_compile() -> bool:
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return bool(compiler) and shutil.which(compiler[0]) is not None and headers.exists()


@pytest.mark.skipif(not _can_compile(), reason="needs a C compiler and Python's headers")
def test_the_compiled_fill_experiment_reproduces_the_packages_streams() -> None:
    # Its throughput numbers stand for the package only while it writes the same
    # states: a change of the GLOBALS stream's layout must fail here, not skew them.
    result = subprocess.run(
        [sys.executable, "benchmarks/compiled_fill.py", "--check-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "identical to the package's" in result.stdout
