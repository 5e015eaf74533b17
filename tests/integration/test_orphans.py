"""Workers die with their parent, even while inside ``worker_init_fn`` (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_script

PARENT = Path(__file__).with_name("_orphan_parent.py")
METHODS = [
    "fork",
    pytest.param("spawn", marks=pytest.mark.slow),
    pytest.param("forkserver", marks=pytest.mark.slow),
]

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux only"
)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat.rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X", b"x")


def wait_for(condition: object, seconds: float) -> bool:
    """Poll ``condition()`` until it holds or ``seconds`` have passed; whether it held."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("method", METHODS)
def test_workers_in_worker_init_fn_die_when_the_parent_is_sigkilled(
    tmp_path: Path, method: str
) -> None:
    pids: list[int] = []
    with subprocess.Popen(
        [sys.executable, str(PARENT), method, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as parent:
        try:
            files = [tmp_path / "worker0.pid", tmp_path / "worker1.pid"]
            started = wait_for(
                lambda: parent.poll() is not None or all(f.exists() for f in files), 120
            )
            assert started, "the workers did not reach worker_init_fn in 120 s"
            assert parent.poll() is None, parent.communicate()[1].decode()[-3000:]
            pids = [int(f.read_text()) for f in files]
            assert all(alive(pid) for pid in pids)
            parent.send_signal(signal.SIGKILL)
            parent.wait(timeout=60)
            # The kernel kills them at once; the bound only keeps a failure finite.
            assert wait_for(lambda: not any(alive(pid) for pid in pids), 10), (
                f"workers {[p for p in pids if alive(p)]} outlived their parent"
            )
        finally:
            for pid in pids:  # never leave an orphan behind, even when the test fails
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def test_workers_started_by_a_thread_that_ends_keep_serving_the_next_epoch(
    tmp_path: Path,
) -> None:
    # The parent-death signal follows the thread that forked the worker: the workers
    # of an iterator started in a short-lived thread must not get it.
    out = run_script(PARENT, "fork", str(tmp_path), "thread", timeout=120)
    assert out.split() == ["4", "4"]


# A parent that starts a child and dies at once; the child waits until it has been
# reparented, and only then asks for the parent-death signal: too late for the signal.
LATE_CHILD = textwrap.dedent(
    """
    import multiprocessing, os, sys, time
    from pathlib import Path
    from reproloader._runtime.lifetime import die_with_parent

    def child(directory):
        parent = multiprocessing.parent_process().pid
        while os.getppid() == parent:
            time.sleep(0.01)
        die_with_parent()
        Path(directory, "survived").write_text(str(os.getpid()))

    if __name__ == "__main__":
        process = multiprocessing.get_context(sys.argv[2]).Process(target=child, args=(sys.argv[1],))
        process.start()
        Path(sys.argv[1], "child.pid").write_text(str(process.pid))
        os._exit(0)
    """
)


@pytest.mark.parametrize("method", METHODS[:2])
def test_a_worker_whose_parent_died_before_it_set_the_signal_kills_itself(
    tmp_path: Path, method: str
) -> None:
    script = tmp_path / "late_child.py"
    script.write_text(LATE_CHILD)
    subprocess.run(
        [sys.executable, str(script), str(tmp_path), method], cwd=ROOT, check=True, timeout=60
    )
    pid = int((tmp_path / "child.pid").read_text())
    try:
        assert wait_for(lambda: not alive(pid), 60), "the orphaned child is still running"
        assert not (tmp_path / "survived").exists()
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
