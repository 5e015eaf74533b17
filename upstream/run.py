"""``nox -s upstream -- PATH...``: PyTorch's and torchdata's own loader tests, run on ReproLoader.

PyTorch's ``test/test_dataloader.py`` runs with ``torch.utils.data.DataLoader`` replaced by
``ReproLoader``; torchdata's ``test/stateful_dataloader/`` runs with
``torchdata.stateful_dataloader.StatefulDataLoader`` replaced. The replacement is made in every
Python process the tests start (see ``upstream/startup/sitecustomize.py``), and ``--baseline``
first runs each suite as written, on the original class.

The test files are not part of this repository: give the folder of a checkout (or any copy)
of ``pytorch/pytorch`` and ``pytorch/data``, or a folder holding both. See docs/dropin.md.

    python upstream/run.py /tmp/upstream --baseline --json upstream.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STARTUP = HERE / "startup"
ENV = "REPROLOADER_SUBSTITUTE"


@dataclass(frozen=True)
class Suite:
    """One upstream suite: where its tests live and which names ReproLoader replaces."""

    name: str
    original: str
    targets: tuple[str, ...]

    def find(self, path: Path) -> Path | None:
        """The suite's test file or folder in a checkout at ``path`` (or a folder holding one)."""
        for candidate in self._candidates(path):
            if candidate.exists():
                return candidate
        return None

    def _candidates(self, path: Path) -> list[Path]:
        if self.name == "torch":
            if path.is_file() and path.name == "test_dataloader.py":
                return [path] if path.parent.name != "stateful_dataloader" else []
            relative = Path("test", "test_dataloader.py")
        else:
            if path.is_dir() and path.name == "stateful_dataloader":
                return [path]
            relative = Path("test", "stateful_dataloader")
        if not path.is_dir():
            return []
        return [path / relative, *(child / relative for child in sorted(path.iterdir()))]


SUITES = (
    Suite(
        "torch",
        "torch.utils.data.DataLoader",
        ("torch.utils.data:DataLoader", "torch.utils.data.dataloader:DataLoader"),
    ),
    Suite(
        "torchdata",
        "torchdata.stateful_dataloader.StatefulDataLoader",
        (
            "torchdata.stateful_dataloader:StatefulDataLoader",
            "torchdata.stateful_dataloader.stateful_dataloader:StatefulDataLoader",
        ),
    ),
)

# Checked in a fresh interpreter with the run's environment: site.py reports an error in
# sitecustomize and carries on, so a broken substitution would otherwise go unnoticed.
_PREFLIGHT = """
import importlib, sys
from reproloader import ReproLoader
for target in sys.argv[1:]:
    module, attribute = target.split(":")
    got = getattr(importlib.import_module(module), attribute)
    if got is not ReproLoader:
        sys.exit(f"{target} is {got!r} at interpreter start, expected ReproLoader")
"""


@dataclass
class Result:
    """What one pytest run of one suite gave."""

    suite: str
    loader: str
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    not_collected: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    exit_code: int = 0

    def line(self) -> str:
        """One summary line: the counts, with the share of runnable tests that passed."""
        ran = len(self.passed) + len(self.failed)
        text = (
            f"{self.suite:<10} {self.loader:<20} {len(self.passed)} of {ran} pass: "
            f"{len(self.passed)} passed, {len(self.failed)} failed, {len(self.skipped)} skipped"
        )
        if self.not_collected:
            text += f", {len(self.not_collected)} file(s) not collected"
        return f"{text} ({self.seconds:.0f} s)"

    def as_json(self) -> dict[str, object]:
        """The result as plain data."""
        return {
            "suite": self.suite,
            "loader": self.loader,
            "passed": len(self.passed),
            "failed": len(self.failed),
            "skipped": len(self.skipped),
            "failures": self.failed,
            "not_collected": self.not_collected,
            "seconds": round(self.seconds, 1),
            "pytest_exit_code": self.exit_code,
        }


def environment(suite: Suite, *, substitute: bool) -> dict[str, str]:
    """The environment of a run: this folder's sitecustomize and this checkout first on the path."""
    env = dict(os.environ)
    paths = [str(STARTUP), str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop(ENV, None)
    if substitute:
        env[ENV] = ",".join(suite.targets)
    return env


def preflight(suite: Suite, env: dict[str, str]) -> None:
    """Fail unless a fresh interpreter with ``env`` starts with ReproLoader in place."""
    check = subprocess.run(
        [sys.executable, "-c", _PREFLIGHT, *suite.targets],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check.returncode != 0:
        raise SystemExit(
            f"the substitution for the {suite.name} suite is not in place "
            f"(PYTHONPATH={env['PYTHONPATH']}):\n{check.stderr.strip()}"
        )


def test_id(case: ET.Element) -> str:
    """``file.py::Class::test`` from a junit ``testcase`` element."""
    parts = case.get("classname", "").split(".")
    name = case.get("name", "")
    if len(parts) > 1 and parts[-1][:1].isupper():
        return f"{'/'.join(parts[:-1])}.py::{parts[-1]}::{name}"
    return f"{'/'.join(parts)}.py::{name}" if parts[0] else name


def first_line(text: str | None) -> str:
    """The first non-empty line of a failure message, shortened."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:300]
    return ""


def read_junit(path: Path, result: Result) -> None:
    """Sort every test case of a junit report into passed, failed, skipped, not collected."""
    for case in ET.parse(path).getroot().iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            if problem.get("message") == "collection failure":
                # The last "E   ..." line is the exception, e.g. a missing module.
                lines = [x for x in (problem.text or "").splitlines() if x.startswith("E ")]
                reason = lines[-1][1:] if lines else problem.text
                result.not_collected[case.get("name", "")] = first_line(reason)
            else:
                result.failed[test_id(case)] = first_line(problem.get("message"))
        elif case.find("skipped") is not None:
            result.skipped.append(test_id(case))
        else:
            result.passed.append(test_id(case))


def run_suite(
    suite: Suite, tests: Path, *, substitute: bool, timeout: int, extra: list[str]
) -> Result:
    """Run one suite with pytest in a subprocess and read back its junit report."""
    env = environment(suite, substitute=substitute)
    if substitute:
        preflight(suite, env)
    folder = tests if tests.is_dir() else tests.parent
    result = Result(suite.name, "ReproLoader" if substitute else suite.original.split(".")[-1])
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "junit.xml"
        command = [
            sys.executable,
            "-m",
            "pytest",
            str(tests),
            "-q",
            "-p",
            "no:cacheprovider",
            # The upstream files run as their authors run them: no configuration file of
            # this repository (filterwarnings=error) or of a folder above them applies.
            "-c",
            os.devnull,
            "--rootdir",
            str(folder),
            "--continue-on-collection-errors",
            "--tb=short",
            f"--timeout={timeout}",
            f"--junitxml={report}",
            *extra,
        ]
        start = time.monotonic()
        completed = subprocess.run(command, cwd=folder, env=env, check=False)
        result.seconds = time.monotonic() - start
        result.exit_code = completed.returncode
        if not report.exists():
            raise SystemExit(
                f"pytest wrote no report for {suite.name} (exit {completed.returncode})"
            )
        read_junit(report, result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Find the suites under the given paths, run them, print passed/failed per suite."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="checkouts or folders holding them")
    parser.add_argument(
        "--suite", choices=[s.name for s in SUITES], action="append", help="default: every found"
    )
    parser.add_argument(
        "--baseline", action="store_true", help="first run each suite on its original class"
    )
    parser.add_argument("--timeout", type=int, default=120, help="seconds per test (default 120)")
    parser.add_argument("--json", type=Path, help="write counts and failures here")
    parser.add_argument(
        "--pytest-args", default="", help='more pytest arguments, one string: "-k worker"'
    )
    args = parser.parse_args(argv)

    chosen = [s for s in SUITES if args.suite is None or s.name in args.suite]
    found: list[tuple[Suite, Path]] = []
    for suite in chosen:
        located = next((p for p in map(suite.find, args.paths) if p is not None), None)
        if located is None:
            if args.suite is not None:
                parser.error(f"no {suite.name} suite under {', '.join(map(str, args.paths))}")
            print(f"{suite.name}: not found under the given paths, skipped", flush=True)
        else:
            found.append((suite, located.resolve()))
    if not found:
        parser.error("found neither test/test_dataloader.py nor test/stateful_dataloader/")

    results: list[Result] = []
    for suite, tests in found:
        for substitute in ([False] if args.baseline else []) + [True]:
            what = "ReproLoader" if substitute else suite.original
            print(f"\n== {suite.name}: {tests} on {what}", flush=True)
            results.append(
                run_suite(
                    suite,
                    tests,
                    substitute=substitute,
                    timeout=args.timeout,
                    extra=shlex.split(args.pytest_args),
                )
            )

    print("\n== upstream results")
    for result in results:
        print(result.line())
        for name, reason in result.not_collected.items():
            print(f"    not collected: {name}: {reason}")
        for test, message in sorted(result.failed.items()):
            print(f"    FAILED {test}: {message}")
    if args.json:
        args.json.write_text(json.dumps([r.as_json() for r in results], indent=2) + "\n")
    # Failing tests are the measurement, not an error of this script; a run that could
    # not test anything is.
    return 0 if all(r.passed or r.failed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
