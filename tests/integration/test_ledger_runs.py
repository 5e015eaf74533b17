"""The run ledger across processes: a SIGKILL mid-line then a resume, and a 2-rank torchrun diff."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from reproloader import cli, diff_ledgers
from reproloader.ledger import read_ledger

SCRIPT = Path(__file__).resolve().parent / "_ledger_run.py"


def script(*args: str, expect: int = 0, torchrun: int = 0) -> None:
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun}"]
        if torchrun
        else []
    )
    result = subprocess.run(
        [sys.executable, *launcher, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == expect, f"{args}: {result.stdout[-2000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def module() -> object:
    spec = importlib.util.spec_from_file_location("_ledger_run", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def test_sigkill_mid_line_leaves_a_torn_line_that_resume_and_diff_tolerate(
    module: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "reference"
    run = module.loader(reference)  # type: ignore[attr-defined]
    for _ in range(2):
        list(run)
    script("kill", str(tmp_path), expect=-9)
    ledger = tmp_path / "ledger"
    killed = read_ledger(ledger)[0]
    assert killed.torn == [(8, "last")]  # header, steps 0-5, then half of step 6's line
    assert sorted(r["step"] for r in killed.records().values()) == list(range(6))
    assert cli.main(["diff", str(reference), str(ledger)]) == 1
    out = capsys.readouterr().out
    assert "first difference at epoch 0, batch 6, rank 0 (step 6): recorded in A only" in out
    assert "the last line (8) is torn: the process was killed while writing it" in out

    script("resume", str(tmp_path))
    resumed = read_ledger(ledger)[0]
    assert resumed.torn == [(8, "middle")]
    assert [s.header["resumed_at"] for s in resumed.segments] == [
        None,
        {"epoch": 0, "batch": 4, "step": 4},
    ]
    diff = diff_ledgers(reference, ledger)
    assert diff.same
    assert diff.first is None
    assert diff.compared == 16
    assert any("line 8 is torn (a killed run, resumed after it)" in n for n in diff.notes)


def test_torchrun_diff_finds_the_perturbed_sample_at_its_step_and_rank(tmp_path: Path) -> None:
    script("torchrun", str(tmp_path), torchrun=2)
    for run in ("a", "b"):
        ranks = read_ledger(tmp_path / run)
        assert sorted(ranks) == [0, 1]
        assert {r.header["world_size"] for r in ranks.values()} == {2}
    diff = diff_ledgers(tmp_path / "a", tmp_path / "b")
    assert diff.first is not None
    first = diff.first
    assert (first.epoch, first.batch, first.rank, first.step_a, first.what) == (
        0,
        3,
        1,
        3,
        "values",
    )
    assert diff.changes == []
    assert not diff.same
    assert cli.main(["diff", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    # Only rank 1's sample changed: rank 0's files alone are the same.
    rank0 = [tmp_path / run / "rank-00000.jsonl" for run in ("a", "b")]
    assert diff_ledgers(*rank0).same
