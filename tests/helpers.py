"""Running the project's scripts as a user would (a fresh interpreter, a time limit); comparing states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

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


def launcher(processes: int) -> list[str]:
    """The command that starts a script: python alone for one process, else torchrun (gloo, standalone)."""
    if processes == 1:
        return [sys.executable]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
    ]


def same_state(a: Any, b: Any) -> bool:
    """Equality of two states, tensors compared by dtype and value (``==`` on them raises)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and torch.equal(a, b)
        )
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(same_state(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and bool(a == b)
