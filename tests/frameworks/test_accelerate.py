"""ReproLoader with Hugging Face accelerate (nox -s integration installs it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import launcher

pytest.importorskip("accelerate")

SCRIPT = Path(__file__).with_name("_accelerate_run.py")


def run(processes: int, phase: str, out: Path) -> None:
    result = subprocess.run(
        [*launcher(processes), str(SCRIPT), phase, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]


def records(out: Path, phase: str, rank: int) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (out / f"{phase}_rank{rank}.jsonl").read_text().splitlines()
    ]


# Each reference run is made once per process (a module-scoped fixture would be made
# again whenever an xdist process runs another module's test in between); the tests of
# one process count run on one xdist process (noxfile: --dist loadgroup), in parallel.
_REFERENCES: dict[int, Path] = {}


@pytest.fixture(
    params=[
        pytest.param(n, id=name, marks=pytest.mark.xdist_group(f"accelerate-{n}"))
        for n, name in ((1, "one process"), (2, "two processes"))
    ],
)
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[int, Path]:
    if request.param not in _REFERENCES:
        out = tmp_path_factory.mktemp(f"accelerate{request.param}")
        run(request.param, "ref", out)
        _REFERENCES[request.param] = out
    return request.param, _REFERENCES[request.param]


def test_batches_repeat_and_epochs_count(reference: tuple[int, Path], tmp_path: Path) -> None:
    processes, out = reference
    run(processes, "ref", tmp_path)
    for rank in range(processes):
        rows = records(out, "ref", rank)
        assert records(tmp_path, "ref", rank) == rows
        assert sorted({r["epoch"] for r in rows}) == [0, 1, 2]
    ids = [
        i
        for rank in range(processes)
        for r in records(out, "ref", rank)
        if r["epoch"] == 0
        for i in r["ids"]
    ]
    assert sorted(ids) == list(range(40))


@pytest.mark.parametrize("where", ["mid", "end"])
def test_resume_through_save_state(reference: tuple[int, Path], where: str, tmp_path: Path) -> None:
    processes, out = reference
    run(processes, f"stop_{where}", tmp_path)
    run(processes, f"resume_{where}", tmp_path)
    for rank in range(processes):
        expected = {(r["epoch"], r["index"]): r for r in records(out, "ref", rank)}
        head = records(tmp_path, f"stop_{where}", rank)
        resumed = records(tmp_path, f"resume_{where}", rank)
        assert head + resumed == list(expected.values())
