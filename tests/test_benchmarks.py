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


def run_benchmark(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``benchmarks/SCRIPT ARGS`` from the checkout's root; it must succeed."""
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_unit_cost_runs_and_reports_every_setting(tmp_path: Path) -> None:
    # It drives the per-unit internals (Producer.begin, the isolation window) directly,
    # so an internal change breaks it first: nox -s bench once failed on it unnoticed.
    result = run_benchmark("unit_cost.py", "--reps", "1", "--out", str(tmp_path))
    for setting in ("random, numpy, torch (default)", "torch only", "none (context rng only)"):
        assert setting in result.stdout
        assert f"in an epoch of 0.2 ms samples: ready a batch, {setting}" in result.stdout
    assert (tmp_path / "unit_cost.json").exists()


def test_ledger_benchmark_runs_and_reports_its_cost(tmp_path: Path) -> None:
    result = run_benchmark(
        "ledger.py",
        "--quick",
        "--reps",
        "1",
        "--cases",
        "image",
        "--workers",
        "0",
        "--out",
        str(tmp_path),
    )
    assert "xxhash.xxh3_128 (chosen)" in result.stdout
    assert "image nw=0 bs= 32" in result.stdout
    assert "| ledger cost (ReproLoader / + ledger) |" in (tmp_path / "ledger.md").read_text()


def _can_compile() -> bool:
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return bool(compiler) and shutil.which(compiler[0]) is not None and headers.exists()


@pytest.mark.skipif(not _can_compile(), reason="needs a C compiler and Python's headers")
def test_the_compiled_fill_experiment_reproduces_the_packages_streams() -> None:
    # Its throughput numbers stand for the package only while it writes the same
    # states: a change of the GLOBALS stream's layout must fail here, not skew them.
    result = run_benchmark("compiled_fill.py", "--check-only")
    assert "identical to the package's" in result.stdout


def test_batch_at_benchmark_runs_checks_its_batch_and_says_it_extrapolates(tmp_path: Path) -> None:
    result = run_benchmark(
        "batch_at.py", "--n", "100000", "--reps", "1", "--iterate", "20", "--out", str(tmp_path)
    )
    for position in ("10%", "50%", "90%"):
        assert f"1e+05 samples, {position} (batch " in result.stdout
    assert "(extrapolated from 20 batches)" in result.stdout
    assert (tmp_path / "batch_at.json").exists()
