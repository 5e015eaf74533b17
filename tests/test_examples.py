"""The examples run from a fresh interpreter, as a user would run them."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_debug_loss_spike_example_finds_the_poisoned_step_and_restarts_skipping_it(
    tmp_path: Path,
) -> None:
    out = run("debug_loss_spike.py", "--num-workers", "2", "--dir", str(tmp_path))
    assert "loss spikes (over 10 x the median before): steps [19, 50]" in out
    assert "2. ledger: step 19 is epoch 0, batch 19: samples [300, " in out
    assert "3. loader.batch_at(0, 19) is bitwise the batch training saw: yes" in out
    assert "ledger: sample 300 was read at steps [19, 50]" in out
    assert "4. restarted at step 16 skipping steps [19, 50]: 46 steps" in out
    assert "no spike: yes" in out
    assert "(steps 16-63 but [19, 50]) are bitwise the original's: yes" in out
    assert "[[0, 19, 20], [1, 18, 19]]" in out
    assert out.endswith("every check passed\n")
    # The page's CLI step: the batch of step 19, by the ledger, from the example's loader.
    from reproloader.cli import main
    from reproloader.ledger import diff_ledgers, read_ledger

    ledger, saved = tmp_path / "original" / "ledger", tmp_path / "spike.pt"
    args = ["batch", "examples.debug_loss_spike:make_loader", "--no-path", "--ledger", str(ledger)]
    assert main([*args, "--step", "19", "--out", str(saved)]) == 0
    x, y = torch.load(saved, weights_only=True)
    assert read_ledger(ledger)[0].by_step()[19]["indices"][0] == 300
    assert y[0].item() == 1000.0  # the poisoned label, first in the batch
    assert y[1:].abs().max() < 10
    assert x.shape == (16, 8)
    # ... and the page's diff: the first difference is the skipped step, the restart having
    # continued a copy of the run's ledger.
    diff = diff_ledgers(ledger, tmp_path / "restarted" / "ledger")
    assert diff.first is not None
    assert (diff.first.step_a, diff.first.what, diff.first.gap) == (19, "missing in B", "around")
    assert not diff.changes
