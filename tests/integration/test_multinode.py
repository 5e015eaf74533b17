"""Several nodes and torchrun's restarts, on one machine (gloo, loopback, CPU).

Each test launches examples/ddp_resume.py with torchrun, as a user would: two torchrun
processes with a static rendezvous on 127.0.0.1 stand for two nodes.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.integration.test_torchrun import EXAMPLE, _reference_draws, final_weights, records

# The tests that share the module-scoped uninterrupted baseline run on one xdist process
# (noxfile: --dist loadgroup), so it runs once; the others go wherever a process is free.
SHARES_BASELINE = pytest.mark.xdist_group("multinode")

STEPS = 15  # 160 samples, 4 ranks x batch 4: 10 steps per epoch, so 1.5 epochs
COMMON = ("--steps", str(STEPS), "--workers", "0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def launcher(*options: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *options, str(EXAMPLE)]


def report(result: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(result.args[4:])}\nstdout: {result.stdout[-1500:]}\nstderr: {result.stderr[-3000:]}"


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def two_nodes(directory: Path, *args: str) -> list[subprocess.CompletedProcess[str]]:
    """Node ranks 0 and 1, two processes each, started together; both results."""
    port = str(free_port())
    nodes = []
    for node in (0, 1):
        command = launcher(
            "--nnodes=2",
            "--nproc-per-node=2",
            f"--node-rank={node}",
            "--master-addr=127.0.0.1",
            f"--master-port={port}",
        )
        nodes.append(
            subprocess.Popen(
                [*command, "--dir", str(directory), *COMMON, *args],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for process in nodes:
        try:
            out, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def standalone(
    nproc: int, directory: Path, *args: str, launch: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command = launcher("--standalone", f"--nproc-per-node={nproc}", *launch)
    return run([*command, "--dir", str(directory), *COMMON, *args])


@pytest.fixture(scope="session")  # not torn down when xdist interleaves other modules
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, torch.Tensor]]:
    """Final weights of an uninterrupted 4-process run, one node."""
    directory = tmp_path_factory.mktemp("four_uninterrupted")
    result = standalone(4, directory)
    assert result.returncode == 0, report(result)
    return final_weights(directory, 4)


def assert_equal_weights(
    got: list[dict[str, torch.Tensor]], reference: list[dict[str, torch.Tensor]], what: str
) -> None:
    assert len(got) == len(reference)
    for rank, (resumed, expected) in enumerate(zip(got, reference, strict=True)):
        for name, tensor in expected.items():
            assert torch.equal(resumed[name], tensor), f"rank {rank}: {name} differs ({what})"


@SHARES_BASELINE
def test_two_nodes_one_killed_mid_epoch_resume_bitwise_equal(
    uninterrupted: list[dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    # Rank 2 (node 1) dies after step 7; the checkpoint of step 4 is the last one.
    killed = two_nodes(tmp_path, "--kill-after", "7", "--kill-rank", "2")
    assert all(r.returncode != 0 for r in killed), "\n".join(map(report, killed))
    assert "SIGKILL" in killed[1].stderr, report(killed[1])
    assert "killing rank 2 now, after step 7" in killed[1].stdout, report(killed[1])
    resumed = two_nodes(tmp_path, "--resume")
    for result in resumed:
        assert result.returncode == 0, report(result)
    assert "rank 3 resumed at step 4, epoch 0" in resumed[1].stdout, report(resumed[1])
    assert resumed[0].stdout.splitlines()[-1].startswith("done: trained steps 5-15 on 4 processes")
    assert_equal_weights(final_weights(tmp_path, 4), uninterrupted, "two nodes, rank 2 killed")


def test_elastic_four_to_two_processes_covers_every_remaining_sample_once(
    tmp_path: Path,
) -> None:
    common = ("--scope", "sample", "--record")
    first = standalone(4, tmp_path, *common, "--stop-after", "3")
    assert first.returncode == 0, report(first)
    # Bounded by the epoch: the new world size changes the steps.
    rest = standalone(2, tmp_path, *common, "--resume", "--epochs", "1", "--steps", "1000")
    assert rest.returncode == 0, report(rest)
    rows = [r for r in records(tmp_path, "first") + records(tmp_path, "resumed") if r[0] == 0]
    assert {len(records(tmp_path, "first")), len(records(tmp_path, "resumed"))} == {
        3 * 16,
        160 - 48,
    }
    seen = Counter(int(index) for _, index, _ in rows)
    repeated = sorted(i for i, c in seen.items() if c > 1)
    missing = sorted(set(range(160)) - set(seen))
    assert not missing, f"every sample of epoch 0 once: missing {missing}"
    assert not repeated, f"every sample of epoch 0 once: repeated {repeated}"
    assert {int(index): value for _, index, value in rows} == _reference_draws()


@SHARES_BASELINE
def test_torchrun_restarts_the_group_and_the_script_resumes_by_itself(
    uninterrupted: list[dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    # Rank 1 dies after step 6 in the first attempt only; torchrun restarts all four.
    args = ("--auto-resume", "--kill-after", "6", "--kill-rank", "1")
    result = standalone(4, tmp_path, *args, launch=("--max-restarts=2",))
    assert result.returncode == 0, report(result)
    assert "killing rank 1 now, after step 6" in result.stdout, report(result)
    assert "rank 0 resumed at step 4, epoch 0" in result.stdout, report(result)
    assert result.stdout.splitlines()[-1].startswith("done: trained steps 5-15"), report(result)
    assert_equal_weights(final_weights(tmp_path, 4), uninterrupted, "restarted by torchrun")
