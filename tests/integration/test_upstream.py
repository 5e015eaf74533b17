"""upstream/run.py substitutes ReproLoader in every process the upstream tests start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_script

# A stand-in for PyTorch's test/test_dataloader.py: each test looks at DataLoader from
# another kind of process. Module-level names so a spawned worker can unpickle them.
FAKE_SUITE = """
import subprocess
import sys

import torch.utils.data
from torch.utils.data import DataLoader, Dataset

from reproloader import ReproLoader


class LoaderName(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.utils.data.DataLoader.__name__


def test_in_the_pytest_process():
    assert DataLoader.__name__ == "ReproLoader"
    assert type(DataLoader([1, 2], batch_size=1)) is ReproLoader


def test_in_a_subprocess():
    code = "import torch.utils.data as d; print(d.DataLoader.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ReproLoader"


def test_in_a_spawned_worker():
    loader = DataLoader(
        LoaderName(), batch_size=None, num_workers=1, multiprocessing_context="spawn"
    )
    assert list(loader) == ["ReproLoader", "ReproLoader"]


def test_subclasses_and_isinstance_still_see_a_dataloader():
    class Mine(DataLoader):
        pass

    real = [c for c in Mine.__mro__ if c.__module__ == "torch.utils.data.dataloader"]
    assert [c.__name__ for c in real] == ["DataLoader"]
    assert isinstance(Mine([1]), DataLoader)
"""

TESTS = [
    "test_in_the_pytest_process",
    "test_in_a_subprocess",
    "test_in_a_spawned_worker",
    "test_subclasses_and_isinstance_still_see_a_dataloader",
]


@pytest.mark.slow
def test_runner_substitutes_in_every_process_and_baseline_does_not(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_dataloader.py").write_text(FAKE_SUITE)
    report = tmp_path / "report.json"

    out = run_script(
        ROOT / "upstream" / "run.py",
        str(tmp_path),
        "--baseline",
        "--json",
        str(report),
        timeout=600,
    )

    baseline, substituted = json.loads(report.read_text())
    assert substituted["loader"] == "ReproLoader"
    assert (substituted["passed"], substituted["failed"]) == (4, 0), substituted["failures"]
    # On DataLoader itself the three name checks fail: the stand-in suite can tell.
    assert baseline["loader"] == "DataLoader"
    assert baseline["passed"] == 1
    assert sorted(baseline["failures"]) == sorted(
        f"test_dataloader.py::{name}" for name in TESTS[:3]
    )
    assert "torch      ReproLoader          4 of 4 pass" in out
    assert "torchdata: not found under the given paths, skipped" in out
