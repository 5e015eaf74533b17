"""Where a benchmark's results go: ``NAME.json`` for the plots, ``NAME.md`` and stdout for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def save(out: Path, name: str, rows: list[dict[str, Any]], table: str | None = None) -> None:
    """Write ``rows`` as JSON and, given a table, write it as Markdown and print it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(rows, indent=2))
    if table is not None:
        (out / f"{name}.md").write_text(table)
        print()
        print(table)
