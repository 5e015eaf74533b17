"""End to end under torchrun (gloo, CPU): kill and resume, DCP, and elastic resume.

Each test launches examples/ddp_resume.py with torchrun, as a user would.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from reproloader import ReproLoader

# The tests that share the module-scoped uninterrupted baseline run on one xdist process
# (noxfile: --dist loadgroup), so it runs once; the others go wherever a process is free.
SHARES_BASELINE = pytest.mark.xdist_group("torchrun")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ddp_resume.py"
STEPS = 30  # 160 samples, 2 ranks x batch 4: 20 steps per epoch, so 1.5 epochs


def torchrun(nproc: int, directory: Path, *args: str, expect_kill: bool = False) -> str:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        str(EXAMPLE),
        "--dir",
        str(directory),
        "--steps",
        str(STEPS),
        *args,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    report = (
        f"{' '.join(command[4:])}\nstdout: {result.stdout[-1500:]}\nstderr: {result.stderr[-3000:]}"
    )
    if expect_kill:
        assert result.returncode != 0, f"the run was to die with SIGKILL\n{report}"
        assert "SIGKILL" in result.stderr, report
    else:
        assert result.returncode == 0, report
    return result.stdout


LINE = re.compile(
    r"step \d+ epoch \d+ loss -?[\d.]+ \(rank 0\)|rank \d resumed at step \d+, epoch \d+"
    r"|--kill-after .*|killing every rank now, .*|done: .*"
)


def assert_whole_lines(out: str) -> None:
    """Every line is one whole message: the ranks' lines never interleave."""
    for line in out.splitlines():
        assert LINE.fullmatch(line), f"a garbled line: {line!r}\n{out}"


def final_weights(directory: Path, nproc: int) -> list[dict[str, torch.Tensor]]:
    return [torch.load(directory / f"final_rank{r}.pt", weights_only=True) for r in range(nproc)]


@pytest.fixture(scope="session")  # not torn down when xdist interleaves other modules
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    directory = tmp_path_factory.mktemp("ddp_uninterrupted")
    torchrun(2, directory)
    return final_weights(directory, 2)


@SHARES_BASELINE
@pytest.mark.parametrize("checkpoint", ["torch", "dcp"])
def test_sigkill_mid_epoch_then_resume_gives_bitwise_equal_weights_on_every_rank(
    checkpoint: str, uninterrupted: list[dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    kill_after = random.Random().randrange(5, STEPS - 1)
    print(f"killing after step {kill_after}")  # shown when the test fails
    killed = torchrun(
        2, tmp_path, "--checkpoint", checkpoint, "--kill-after", str(kill_after), expect_kill=True
    )
    assert_whole_lines(killed)
    assert killed.startswith(f"--kill-after {kill_after}: every rank SIGKILLs itself after step")
    assert killed.endswith(f"killing every rank now, after step {kill_after}, as announced\n")
    out = torchrun(2, tmp_path, "--checkpoint", checkpoint, "--resume")
    assert "rank 1 resumed at step" in out
    assert_whole_lines(out)
    assert out.splitlines()[-1].startswith(
        f"done: trained steps {kill_after - kill_after % 4 + 1}-"
    )
    for rank, (resumed, reference) in enumerate(
        zip(final_weights(tmp_path, 2), uninterrupted, strict=True)
    ):
        for name, tensor in reference.items():
            assert torch.equal(resumed[name], tensor), (
                f"rank {rank}: {name} differs (killed after {kill_after})"
            )


def _reference_draws() -> dict[int, float]:
    """Sample scope: each sample's draw in epoch 0, which no world size changes."""
    spec = importlib.util.spec_from_file_location("ddp_resume", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loader = ReproLoader(
        module.Augmented(160), batch_size=8, seed=2026, config={"rng_scope": "sample"}
    )
    return {int(i): v for batch in loader for i, v in batch[2].tolist()}


def records(directory: Path, part: str) -> list[list[Any]]:
    return [
        row
        for path in sorted(directory.glob(f"record_rank*_{part}.json"))
        for row in json.loads(path.read_text())
    ]


@pytest.mark.parametrize(("saved_with", "resumed_with"), [(2, 1), (1, 2), (2, 3)])
def test_elastic_resume_covers_every_sample_once_with_its_own_augmentation(
    saved_with: int, resumed_with: int, tmp_path: Path
) -> None:
    common = ("--scope", "sample", "--workers", "0", "--record")
    torchrun(saved_with, tmp_path, *common, "--stop-after", "7")
    # Bounded by the epoch, not by a step count: the new world size changes the steps.
    torchrun(resumed_with, tmp_path, *common, "--resume", "--epochs", "1", "--steps", "1000")
    rows = [r for r in records(tmp_path, "first") + records(tmp_path, "resumed") if r[0] == 0]
    seen = Counter(int(index) for _, index, _ in rows)
    missing = sorted(set(range(160)) - set(seen))
    repeated = sorted(i for i, c in seen.items() if c > 1)
    assert not missing, (
        f"every sample of epoch 0 exactly once: missing {missing}, repeated {repeated}"
    )
    assert not repeated, f"every sample of epoch 0 exactly once: repeated {repeated}"
    reference = _reference_draws()
    assert {int(index): value for _, index, value in rows} == reference
