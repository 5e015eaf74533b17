from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reproloader import DoctorReport, Finding, cli, doctor


def test_doctor_reports_versions_settings_and_findings() -> None:
    report = doctor()
    assert report.versions["torch"]
    assert "deterministic_algorithms" in report.settings
    assert {f.check for f in report.findings} >= {
        "deterministic algorithms",
        "cuBLAS workspace",
        "hash seed",
    }


def test_doctor_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for heading in (
        "versions",
        "determinism settings",
        "environment",
        "start method:",
        "CUDA:",
        "checks",
    ):
        assert heading in out


def test_doctor_json_is_machine_readable() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reproloader", "doctor", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(result.stdout)
    assert data["versions"]["torch"]
    assert isinstance(data["ok"], bool)
    assert all(
        {"check", "passed", "severity", "evidence", "fix"} <= set(f) for f in data["findings"]
    )


def _report(*findings: Finding) -> DoctorReport:
    return DoctorReport(
        versions={},
        settings={},
        environment={},
        start_method="fork",
        cuda={"available": False, "runtime": None, "cudnn": None, "devices": []},
        findings=list(findings),
    )


@pytest.mark.parametrize(
    ("finding", "code"),
    [
        (Finding("x", False, "warning", "off", "fix it"), 1),
        (Finding("x", False, "info", "note", "maybe"), 0),
        (Finding("x", True, "warning", "on"), 0),
    ],
)
def test_strict_exits_non_zero_only_when_something_is_off(
    finding: Finding, code: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("reproloader._diagnose.doctor.doctor", lambda: _report(finding))
    assert cli.main(["doctor", "--strict"]) == code
    assert cli.main(["doctor"]) == 0
    if code:
        assert "fix: fix it" in capsys.readouterr().out


def test_doctor_applies_a_config_file_first(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "repro.toml"
    path.write_text("[determinism]\nwarn_only = true\n")
    result = subprocess.run(
        [sys.executable, "-m", "reproloader", "doctor", "--json", "--config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(result.stdout)
    assert data["settings"]["deterministic_algorithms"] is True
    assert data["settings"]["warn_only"] is True


def test_doctor_ends_with_counts_and_what_strict_fails_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    findings = [
        Finding("a", False, "info", "x", "f"),
        Finding("b", False, "info", "x", "f"),
        Finding("c", False, "warning", "x", "f"),
        Finding("d", True, "error", "x"),
    ]
    monkeypatch.setattr("reproloader._diagnose.doctor.doctor", lambda: _report(*findings))
    assert cli.main(["doctor"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "2 notes, 1 warning, 0 failures: --strict exits 1 "
        "(it fails on warnings and failures; notes are for information)"
    )
    monkeypatch.setattr("reproloader._diagnose.doctor.doctor", lambda: _report(*findings[:1]))
    assert cli.main(["doctor", "--strict"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "1 note, 0 warnings, 0 failures: nothing for --strict to fail on "
        "(it fails on warnings and failures; notes are for information)"
    )
    assert _report(*findings).to_dict()["counts"] == {"notes": 2, "warnings": 1, "failures": 0}


@pytest.mark.parametrize("command", [[], ["doctor"], ["audit"]])
def test_every_help_says_what_the_exit_statuses_mean(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0" in out
    assert "1 " in out.partition("exit status:")[2]
    assert "2 " in out.partition("exit status:")[2]


def user_error(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    """Run the CLI; it must exit 2 with a problem line and a fix line on stderr, nothing else."""
    assert cli.main(list(argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 2, captured.err
    assert lines[1].startswith("  fix: ")
    return lines


PIPELINE = """
import torch
from torch.utils.data import DataLoader, Dataset


class Broken(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        raise KeyError(i)


def train_loader():
    return DataLoader(list(range(8)), batch_size=4)


def raises():
    raise RuntimeError("no data here")


def number():
    return 3


def broken_loader():
    return DataLoader(Broken(), batch_size=2)
"""


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory holding pipeline17.py, importable as the CLI imports targets."""
    (tmp_path / "pipeline17.py").write_text(PIPELINE)
    (tmp_path / "needs_a_package17.py").write_text("import no_such_package_17\n")
    (tmp_path / "fails_on_import17.py").write_text("x = 1\nx = 1 / 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name in ("pipeline17", "needs_a_package17", "fails_on_import17"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("target", "problem", "fix"),
    [
        (
            "mypackage.data:train_loader",
            "cannot import 'mypackage.data': no module named 'mypackage'",
            (
                "run from the directory that holds mypackage/ or mypackage.py, or install it "
                "(pip install -e .), or check the spelling"
            ),
        ),
        (
            "pipeline17:nope",
            "'pipeline17' has no attribute 'nope'",
            (
                "name a function that returns a DataLoader or a Dataset; pipeline17 defines "
                "broken_loader, number, raises, train_loader"
            ),
        ),
        (
            "pipeline17.train_loader",
            "expected 'module:function', got 'pipeline17.train_loader'",
            (
                "name the module and a function in it that returns a DataLoader, "
                "e.g. mypackage.data:train_loader"
            ),
        ),
        (
            "pipeline17:",
            "expected 'module:function', got 'pipeline17:'",
            (
                "name the module and a function in it that returns a DataLoader, "
                "e.g. mypackage.data:train_loader"
            ),
        ),
        (
            "pipeline17:number",
            "pipeline17:number gave int, not a DataLoader or a Dataset",
            "name a function that returns a DataLoader (a ReproLoader too) or a Dataset",
        ),
        (
            "needs_a_package17:x",
            (
                "importing 'needs_a_package17' raised ModuleNotFoundError: No module named "
                "'no_such_package_17' ({dir}/needs_a_package17.py, line 1)"
            ),
            "install what it imports, then check with: python -c 'import needs_a_package17'",
        ),
        (
            "fails_on_import17:x",
            (
                "importing 'fails_on_import17' raised ZeroDivisionError: division by zero "
                "({dir}/fails_on_import17.py, line 2)"
            ),
            "see the full traceback with: python -c 'import fails_on_import17'",
        ),
        (
            "pipeline17:raises",
            "pipeline17:raises() raised RuntimeError: no data here ({dir}/pipeline17.py, line 19)",
            (
                "call it in python to see the full traceback: "
                "python -c 'import pipeline17 as m; m.raises()'"
            ),
        ),
        (
            "pipeline17:broken_loader",
            (
                "pipeline17:broken_loader could not make a batch: KeyError: 0 "
                "({dir}/pipeline17.py, line 11)"
            ),
            "iterate the loader once in python (next(iter(loader))) to see the traceback",
        ),
    ],
)
def test_an_audit_that_cannot_run_says_why_in_two_lines_and_exits_2(
    target: str, problem: str, fix: str, pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = user_error(capsys, "audit", "--quiet", "--no-fresh", "--no-spawn", target)
    assert lines[0] == f"reproloader audit: {problem.format(dir=pipeline)}"
    assert lines[1] == f"  fix: {fix}"


def test_an_audit_that_runs_exits_0_or_1_not_2(
    pipeline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(
        ["audit", "--quiet", "--no-fresh", "--no-spawn", "pipeline17:train_loader"]
    ) in (
        0,
        1,
    )
    assert "problem" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "text", "environ", "problem", "fix"),
    [
        (
            "missing.toml",
            None,
            {},
            "config file {path} does not exist",
            "give the path of a .toml or .json ReproConfig file (or a pyproject.toml)",
        ),
        (
            "c.toml",
            "seed = \n",
            {},
            "config file {path} is not valid TOML: Invalid value (at line 1, column 8)",
            "correct {path}: a .toml or .json table of ReproConfig fields",
        ),
        (
            "c.toml",
            'rng_scop = "sample"\n',
            {},
            (
                "config file {path}, field rng_scop: names no ReproConfig field (known: seed, "
                "rng_scope, start_method, reseed_globals, reseed_dataset_rngs, rng_search_budget, "
                "iterable_resume, determinism)"
            ),
            "correct that value (ReproConfig's fields and values: docs/determinism.md)",
        ),
        (
            "c.yaml",
            "seed: 1\n",
            {},
            "cannot read a config from {path}: use a .json or .toml file",
            "give a .toml or .json file (or a pyproject.toml with [tool.reproloader])",
        ),
        (
            "c.toml",
            "seed = 1\n",
            {"REPROLOADER_SEED": "abc"},
            (
                "environment variable REPROLOADER_SEED='abc': Input should be a valid integer, "
                "got 'abc'"
            ),
            "correct or unset that REPROLOADER_* variable (the fields: docs/determinism.md)",
        ),
    ],
)
def test_a_bad_config_file_or_variable_is_two_lines_and_exit_2(
    name: str,
    text: str | None,
    environ: dict[str, str],
    problem: str,
    fix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    lines = user_error(capsys, "doctor", "--config", str(path))
    assert lines == [
        f"reproloader doctor: {problem.format(path=path)}",
        f"  fix: {fix.format(path=path)}",
    ]
