"""The examples run from a fresh interpreter, as a user would run them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, run_script


def run(name: str, *args: str) -> str:
    return run_script(ROOT / "examples" / name, *args, timeout=120)


def test_augmentation_example_gives_the_same_crops_for_any_layout() -> None:
    out = run("augment_with_rng.py")
    assert out.count(": True") == 3
    assert "images got another crop or flip" in out


def test_quickstart_shows_dataloader_failing_and_reproloader_passing() -> None:
    out = run("quickstart.py")
    rows = [line.strip() for line in out.splitlines() if line.strip().endswith(("yes", "NO"))]
    assert len(rows) == 5
    assert all(line.split()[-1] == "yes" for line in rows)
    assert all(line.split()[-2] == "NO" for line in rows)


def test_a_planned_kill_is_announced_before_it_happens(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "resume_after_kill.py"),
            "--dir",
            str(tmp_path),
            "--steps",
            "6",
            "--every",
            "2",
            "--kill-after",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "--kill-after 3: this run SIGKILLs itself after step 3, like a crash; the shell then "
        "reports 'Killed', which is the point. Run the same command without --kill-after to "
        "resume from the last checkpoint."
    )
    assert lines[-1] == "killing this process now, after step 3, as announced"
    out = run("resume_after_kill.py", "--dir", str(tmp_path), "--steps", "6", "--every", "2")
    assert out.startswith("resumed at step 2, epoch 0\n")
    assert out.endswith(f"done after 6 steps; final weights in {tmp_path / 'final.pt'}\n")


@pytest.mark.parametrize(
    ("script", "package", "label"),
    [("lightning_train.py", "lightning", "Lightning"), ("accelerate_train.py", "accelerate", None)],
)
def test_a_framework_example_names_its_extra_when_the_framework_is_missing(
    script: str, package: str, label: str | None, tmp_path: Path
) -> None:
    # None in sys.modules makes `import package` fail as if it were not installed.
    hide_and_run = (
        f"import runpy, sys; sys.modules[{package!r}] = None; "
        f"sys.argv = [{script!r}, '--dir', {str(tmp_path)!r}]; "
        f"runpy.run_path({str(ROOT / 'examples' / script)!r}, run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide_and_run],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"{script} needs {label or package}, which is not installed: "
        f"pip install 'reproloader[{package}]' (from a clone: pip install -e '.[{package}]')\n"
    )


def test_inspect_and_skip_example_shows_a_step_and_restarts_skipping_exactly() -> None:
    out = run("inspect_and_skip.py", "--step", "11", "--skip", "9", "14")
    assert "step 11 is batch 1 of epoch 1: samples [" in out
    assert "batch_at gives bitwise the batch the run got: True" in out
    assert "worker scope is refused: rng_scope='worker' continues one stream" in out
    assert "restarted at step 8, skipping steps 9-13: 7 steps" in out
    assert "every other step is bitwise the original's: True" in out
    assert out.endswith("[[0, 9, 10], [1, 0, 4]]\n")
