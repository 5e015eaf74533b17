"""The code in the docs runs, and the guarantees cite tests that exist (README: test_readme.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    """The page's Python blocks, except those marked ``# sketch`` (fragments of a larger program)."""
    return [b for b in FENCE.findall(page.read_text()) if not b.startswith("# sketch")]


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_python_blocks_run_in_order(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for block in python_blocks(page):
        exec(compile(block, str(page), "exec"), namespace)  # noqa: S102 - running our own docs is the point


def test_every_cited_test_exists() -> None:
    cited = set(
        re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)`", (ROOT / "docs/guarantees.md").read_text())
    )
    defined = {
        name
        for path in (ROOT / "tests").rglob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.MULTILINE)
    }
    assert cited, "the guarantees page cites no test"
    assert cited <= defined, sorted(cited - defined)
