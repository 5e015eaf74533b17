"""The examples run from a fresh interpreter, as a user would run them."""

from __future__ import annotations

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
