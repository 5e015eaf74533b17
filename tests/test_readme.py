"""Every Python block of the README runs on its own, in a fresh interpreter, as a reader pastes it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT
from tests.test_docs import python_blocks

README = ROOT / "README.md"
BLOCKS = python_blocks(README)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("number", range(len(BLOCKS)), ids=lambda n: f"block{n + 1}")
def test_readme_block_runs_alone_in_a_fresh_interpreter(number: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCKS[number]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, f"README block {number + 1} failed:\n{result.stderr[-3000:]}"
