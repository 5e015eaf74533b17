"""A newcomer's first hour: the README's demo and the CLI's first commands, as a user runs them.

Each step runs in a fresh interpreter from the repository root and must end with the
exit status the README promises and without a traceback: a user error is one line
saying what is wrong and one saying how to fix it.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    return result


def first_command() -> str:
    text = (ROOT / "README.md").read_text()
    return text.partition("```bash\n")[2].splitlines()[0]


def test_the_readme_demo_runs() -> None:
    command = first_command()
    assert command.startswith("python3 -m venv .venv && .venv/bin/pip install torch==")
    demo = command.rpartition(".venv/bin/python ")[2]
    assert demo == "examples/quickstart.py"
    result = run(demo)
    assert result.returncode == 0
    assert "ReproLoader: every check passes" in result.stdout


@pytest.mark.parametrize("command", [[], ["doctor"], ["audit"]])
def test_help_exits_0_and_names_the_exit_statuses(command: list[str]) -> None:
    result = run("-m", "reproloader", *command, "--help")
    assert result.returncode == 0
    assert "exit status" in result.stdout


def test_doctor_exits_0_and_ends_with_its_counts() -> None:
    result = run("-m", "reproloader", "doctor")
    assert result.returncode == 0
    assert re.fullmatch(
        r"\d+ notes?, \d+ warnings?, \d+ failures?: .*--strict.*",
        result.stdout.splitlines()[-1],
    )


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (
            ["audit", "mypackage.data:train_loader"],
            "reproloader audit: cannot import 'mypackage.data': no module named 'mypackage'",
        ),
        (
            ["doctor", "--config", "no-such-file.toml"],
            "reproloader doctor: config file no-such-file.toml does not exist",
        ),
    ],
)
def test_a_user_error_is_two_lines_and_exit_2(args: list[str], problem: str) -> None:
    result = run("-m", "reproloader", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0] == problem
    assert lines[1].startswith("  fix: ")


def test_auditing_the_example_pipeline_finds_its_bug_and_exits_1() -> None:
    result = run(
        "-m",
        "reproloader",
        "audit",
        "--quiet",
        "--no-spawn",
        "--no-fresh",
        "examples.audit_pipeline:train_loader",
    )
    assert result.returncode == 1
    assert result.stderr == ""
    assert re.search(r"RNG objects stored in the dataset +YES", result.stdout)
