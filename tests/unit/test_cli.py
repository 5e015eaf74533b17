from __future__ import annotations

import json
import subprocess
import sys

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
