"""The audit finds each classic failure on DataLoader and none on ReproLoader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torchdata.stateful_dataloader import StatefulDataLoader

from reproloader import AuditReport, Finding, ReproLoader, audit
from reproloader._diagnose.experiments import Pipeline
from reproloader._runtime.bridge import quiet_torchdata
from tests.datasets import (
    GlobalDraws,
    InitGenerator,
    NumpyGlobal,
    SetOrder,
    Stream,
    UnseededGenerator,
    Urandom,
    record_worker_init,
)

DUPLICATED = "random streams duplicated across workers"
REPEATING = "random values repeating across epochs"
LAYOUT = "results depend on num_workers or start method"
SAME_SEED = "two runs with the same seed differ"
RESUME = "mid-epoch resume reproduces the stream"
SETTINGS = "process-wide determinism settings"
RNG_OBJECTS = "RNG objects stored in the dataset"
REACH = "RNGs beyond the loader's reach"
ROOT = Path(__file__).resolve().parents[2]


def failed(report: AuditReport) -> set[str]:
    return {f.check for f in report.findings if not f.passed}


def quick(loader: Any) -> AuditReport:
    return audit(loader, start_methods=(), fresh_processes=False)


CASES = {
    "Generator made in __init__": (
        lambda: InitGenerator(32),
        {},
        {DUPLICATED, REPEATING, LAYOUT, SAME_SEED, RNG_OBJECTS},
    ),
    "popular worker_init_fn": (
        lambda: NumpyGlobal(32),
        {"worker_init_fn": record_worker_init},
        {REPEATING, LAYOUT},
    ),
    "global RNG augmentation": (lambda: GlobalDraws(32), {}, {LAYOUT}),
    "unseeded Generator": (lambda: UnseededGenerator(32), {}, {SAME_SEED, RNG_OBJECTS}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dataloader_failure_is_found_and_reproloader_is_clean(case: str) -> None:
    make_dataset, kwargs, expected = CASES[case]
    plain = quick(DataLoader(make_dataset(), batch_size=4, num_workers=2, **kwargs))
    assert expected <= failed(plain), (case, plain.findings)
    assert not plain.ok
    repro = quick(ReproLoader(make_dataset(), batch_size=4, num_workers=2, seed=0, **kwargs))
    assert failed(repro) == set(), (case, repro.findings)
    assert repro.ok


def test_broken_resume_is_found_on_stateful_dataloader_and_not_on_reproloader() -> None:
    with quiet_torchdata():
        stateful = StatefulDataLoader(GlobalDraws(32), batch_size=4)
    assert RESUME in failed(quick(stateful))
    report = quick(ReproLoader(GlobalDraws(32), batch_size=4, seed=0))
    assert next(f for f in report.findings if f.check == RESUME).passed


def test_each_finding_has_evidence_and_a_fix() -> None:
    report = quick(DataLoader(InitGenerator(32), batch_size=4, num_workers=2))
    duplicated = next(f for f in report.findings if f.check == DUPLICATED)
    assert (
        "worker 0 and worker 1 produced equal values for samples [0, 1, 2, 3]"
        in duplicated.evidence
    )
    assert all(f.fix for f in report.findings if not f.passed)


def test_determinism_settings_come_from_doctor(monkeypatch: pytest.MonkeyPatch) -> None:
    from reproloader import DoctorReport

    off = Finding(
        "cuDNN benchmark",
        False,
        "warning",
        "torch.backends.cudnn.benchmark is True",
        "set it False",
    )
    report = DoctorReport({}, {}, {}, "fork", {}, [off])
    monkeypatch.setattr("reproloader._diagnose.audit.doctor", lambda: report)
    finding = next(
        f
        for f in quick(ReproLoader(GlobalDraws(8), batch_size=4, seed=0)).findings
        if f.check == SETTINGS
    )
    assert not finding.passed
    assert "cudnn.benchmark is True" in finding.evidence


@pytest.mark.parametrize("loader_cls", [DataLoader, ReproLoader])
def test_os_urandom_is_found_whatever_the_loader(loader_cls: type) -> None:
    kwargs = {"seed": 0} if loader_cls is ReproLoader else {}
    assert SAME_SEED in failed(quick(loader_cls(Urandom(), batch_size=4, **kwargs)))


@pytest.mark.slow
def test_hash_randomization_is_found_in_fresh_processes() -> None:
    report = audit(ReproLoader(SetOrder(), batch_size=4, seed=0), start_methods=())
    finding = next(f for f in report.findings if f.check == SAME_SEED)
    assert not finding.passed
    assert "PYTHONHASHSEED" in finding.evidence


def test_iterable_datasets_are_audited_too() -> None:
    report = quick(ReproLoader(Stream(32), batch_size=4, num_workers=2, seed=0))
    assert report.ok, report.findings
    layout = next(f for f in report.findings if f.check == LAYOUT)
    assert (layout.passed, layout.severity) == (True, "info")


def test_a_dataset_alone_is_audited_in_a_dataloader(monkeypatch: pytest.MonkeyPatch) -> None:
    audited: list[Any] = []

    class Spy(Pipeline):
        def __init__(self, loader: Any, workers: int) -> None:
            audited.append(loader)
            super().__init__(loader, workers)

    monkeypatch.setattr("reproloader._diagnose.audit.Pipeline", Spy)
    dataset = GlobalDraws(8)
    report = quick(dataset)
    assert report.target == "DataLoader over GlobalDraws"
    (loader,) = audited
    assert type(loader) is DataLoader
    assert (loader.dataset, loader.batch_size) == (dataset, 4)
    # A plain DataLoader's findings: its global RNG draws depend on num_workers.
    assert LAYOUT in failed(report)
    assert report.findings == quick(DataLoader(GlobalDraws(8), batch_size=4)).findings


def test_the_callers_rng_is_left_alone() -> None:
    import random

    import numpy as np
    import torch

    before = (random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state())
    quick(DataLoader(GlobalDraws(8), batch_size=4, num_workers=2))
    assert random.getstate() == before[0]
    assert np.random.get_state()[1].tolist() == before[1]
    assert torch.equal(torch.get_rng_state(), before[2])


def test_a_bad_target_is_explained() -> None:
    with pytest.raises(
        TypeError, match="audit\\(\\) takes a DataLoader, a Dataset, a function that returns one"
    ):
        audit(42)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reproloader", "audit", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_cli_fails_on_dataloader_and_passes_on_reproloader_with_fresh_processes() -> None:
    plain = run_cli("tests.datasets:dataloader_unseeded", "--json", "--no-spawn")
    assert plain.returncode == 1, plain.stderr
    data = json.loads(plain.stdout)
    assert data["ok"] is False
    assert {f["check"] for f in data["findings"] if not f["passed"]} >= {SAME_SEED, RNG_OBJECTS}
    repro = run_cli("tests.datasets:reproloader_unseeded", "--no-spawn")
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert "two fresh processes, agree" in repro.stdout
    assert "no problem found" in repro.stdout
    assert "auditing [1/9]" in repro.stderr  # progress


def test_cli_table_names_each_problem() -> None:
    result = run_cli(
        "tests.datasets:dataloader_init_generator", "--no-spawn", "--no-fresh", "--quiet"
    )
    assert result.returncode == 1
    assert "random streams duplicated across workers       YES" in result.stdout
    assert "fix: use ReproLoader" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        (GlobalDraws(8), "random, numpy, torch"),
        (NumpyGlobal(8), "numpy"),
        (InitGenerator(8), "none of"),
    ],
)
def test_the_process_wide_rngs_a_pipeline_uses_are_named(dataset: Any, expected: str) -> None:
    finding = next(
        f
        for f in quick(ReproLoader(dataset, batch_size=4, seed=0)).findings
        if f.check == "process-wide RNGs the pipeline draws from"
    )
    assert (finding.passed, finding.severity) == (True, "info")
    assert expected in finding.evidence


def finding(report: AuditReport, check: str) -> Finding:
    return next(f for f in report.findings if f.check == check)


class ClockSeeded(IterableDataset[float]):
    """Seeds a random.Random from the clock when iteration starts, as webdataset's
    ``.shuffle(n)`` does without ``rng=``: no loader can reach it."""

    def __iter__(self) -> Any:
        import random
        import time

        rng = random.Random(time.time_ns())
        return (rng.random() for _ in range(16))


@pytest.mark.parametrize("loader_cls", [DataLoader, ReproLoader])
def test_an_rng_seeded_from_the_clock_inside_the_pipeline_is_named(loader_cls: type) -> None:
    kwargs = {"seed": 0} if loader_cls is ReproLoader else {}
    found = finding(quick(loader_cls(ClockSeeded(), batch_size=4, **kwargs)), SAME_SEED)
    assert not found.passed
    assert (
        "agree when time.time and os.urandom are frozen: an RNG inside the pipeline is "
        "seeded from the clock or os.urandom" in found.evidence
    )
    assert found.fix.startswith("give that RNG a seed from the run")


class ForeignRng:
    """An RNG of a library the loader does not know: it draws, and has a seed."""

    def __init__(self) -> None:
        self.state = 0

    def seed(self, value: int) -> None:
        self.state = value

    def random(self) -> float:
        self.state = (self.state * 1103515245 + 12345) % 2**31
        return self.state / 2**31


class Unreachable(Dataset[torch.Tensor]):
    """One RNG the loader cannot reseed, and one beyond its search budget."""

    def __init__(self) -> None:
        self.noise = ForeignRng()
        self.deep = [[[[{"rng": np.random.default_rng(0)}]]]]

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([float(i), self.noise.random()])


def test_rngs_beyond_reach_are_reported_with_path_and_fix() -> None:
    loader = ReproLoader(Unreachable(), batch_size=4, seed=0, config={"rng_search_budget": 3})
    with pytest.warns(UserWarning, match="cannot be reseeded|stopped here"):
        report = quick(loader)
    found = finding(report, REACH)
    assert (found.passed, found.severity) == (False, "warning")
    assert found.evidence == (
        "dataset.noise: ForeignRng cannot be reseeded in place by the loader; "
        "dataset.deep[0]: the RNG search read 3 objects and stopped here; RNGs beyond it "
        "are not reseeded"
    )
    assert found.fix.startswith(
        "dataset.noise: pass a numpy Generator (rng=...) or draw from "
        "reproloader.get_context().rng; dataset.deep[0]: draw from"
    )
    assert finding(quick(ReproLoader(InitGenerator(8), batch_size=4, seed=0)), REACH).passed


class LossyState(IterableDataset[float]):
    """Shuffles through a buffer, like a Hugging Face iterable dataset's .shuffle(); its
    state_dict holds where the source stands but not the buffer."""

    def __init__(self, n: int = 32, buffer: int = 6) -> None:
        self.n = n
        self.buffer = buffer
        self.rng = np.random.default_rng(0)
        self._resume = 0
        self._read = 0

    def __iter__(self) -> Any:
        start, self._resume = self._resume, 0
        buffer: list[int] = []
        for x in range(start, self.n):
            self._read = x + 1
            buffer.append(x)
            if len(buffer) == self.buffer:
                yield float(buffer.pop(int(self.rng.integers(len(buffer)))))
        while buffer:
            yield float(buffer.pop(int(self.rng.integers(len(buffer)))))

    def state_dict(self) -> dict[str, int]:
        return {"read": self._read}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = state["read"]


def test_an_iterable_dataset_whose_own_state_resumes_inexactly_is_named() -> None:
    found = finding(quick(ReproLoader(LossyState(), batch_size=4, seed=0)), RESUME)
    assert (found.passed, found.severity) == (False, "error")
    assert "went through the dataset's own state (dataset.state_dict() of LossyState)" in (
        found.evidence
    )
    assert found.fix.startswith("make LossyState.state_dict() hold the whole position")
