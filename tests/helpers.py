"""Running the project's scripts as a user would: a fresh interpreter, a time limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_script(path: Path, *args: str, timeout: float = 300) -> str:
    """Run ``python path args`` from the repository root; its stdout (it must exit 0)."""
    result = subprocess.run(
        [sys.executable, str(path), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, f"{path.name} {' '.join(args)} failed:\n{result.stderr[-4000:]}"
    return result.stdout
